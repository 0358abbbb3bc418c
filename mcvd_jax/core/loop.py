"""`train_and_evaluate(config, workdir, family)`: the training loop of every family. No maths
here: the update is `core.train_step.make_train_step` around the family's loss, the data and media
are the family's (`core.family.TrainingSetup`), checkpoints `core.checkpointing.Checkpointer`. The
caller hands over the Family to run (the loop looks nothing up by name).

One mesh over every device (axis 'data'): the state is replicated, each global batch sharded on
its batch axis; every process feeds its own slice. A restart with the same command resumes from
the newest readable checkpoint and replays exactly the batches and keys an uninterrupted run uses.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import parameter_overview
from jax.sharding import NamedSharding, PartitionSpec as P

from mcvd_jax.core import paths
from mcvd_jax.core.checkpointing import Checkpointer
from mcvd_jax.core.compilation import jit
from mcvd_jax.core.family import Family, TrainingSetup
from mcvd_jax.core.modes import check_config
from mcvd_jax.core.optim import learning_rate_schedule, make_optimizer, optim_field
from mcvd_jax.core.preemption import PreemptionNotice, TrainingPreempted
from mcvd_jax.core.sharding import make_mesh
from mcvd_jax.core.train_step import (TrainState, abstract_train_state, init_train_state,
                                      make_train_step)
from mcvd_jax.core.warm_start import read_init_weights, warm_started
from mcvd_jax.core.writers import ProfileSteps, Progress, make_writer
from mcvd_jax.errors import ProjectError

_LOOP_METRICS = ("loss", "grad_norm", "lr", "ema_rate", "finite", "large_grad")


class WorkdirError(RuntimeError, ProjectError):
  """The workdir cannot be created or written."""


class NonFiniteLossError(RuntimeError, ProjectError):
  """The loss or the gradient became NaN/inf (training.nonfinite_loss='stop')."""


def check_workdir_writable(workdir: str) -> None:
  """Creates `workdir` (a local path or a URI, core.paths) and proves it writable, before anything
  is compiled."""
  probe = os.path.join(workdir, f".write_test_{os.getpid()}_{uuid.uuid4().hex[:8]}")
  try:
    paths.makedirs(workdir)
    paths.write_bytes(probe, b"")
    paths.remove(probe)
  except Exception as e:  # OSError locally; each remote filesystem raises its own errors
    reason = getattr(e, "strerror", None) or f"{type(e).__name__}: {e}"
    raise WorkdirError(f"workdir {workdir!r} is not writable ({reason}); choose another "
                       f"--workdir or fix its permissions") from e


def summarize_window(metrics: list[dict]) -> dict[str, float]:
  """Means over the dispatches since the last log: loss, grad_norm, the last lr and ema_rate,
  skipped updates (not finite; over optim.skip_grad_norm), each `<name>_sum/<group>` over the
  summed `count/<group>` as `<name>/<group>` (absent when the count is 0), and every other family
  metric over the finite updates."""
  fetched = jax.device_get(metrics)
  merged = {k: np.concatenate([np.atleast_1d(m[k]) for m in fetched]) for k in fetched[0]}
  finite = merged["finite"] > 0
  out = {"lr": float(merged["lr"][-1]), "skipped_updates": float(np.sum(~finite))}
  if "large_grad" in merged:
    out["skipped_large_grad"] = float(np.sum(merged["large_grad"]))
  if "ema_rate" in merged:  # the last update's, as lr (absent from hand-built metrics)
    out["ema_rate"] = float(merged["ema_rate"][-1])
  if finite.any():
    out["loss"] = float(np.mean(merged["loss"][finite]))
    out["grad_norm"] = float(np.mean(merged["grad_norm"][finite]))
  for key in merged:
    if key in _LOOP_METRICS or key.startswith("count/"):
      continue
    head, _, group = key.partition("/")
    if head.endswith("_sum") and f"count/{group}" in merged:
      count = float(np.sum(merged[f"count/{group}"][finite]))
      if count:
        out[f"{head[:-len('_sum')]}/{group}"] = float(np.sum(merged[key][finite]) / count)
    elif finite.any():
      out[key] = float(np.mean(merged[key][finite]))
  return out


def crossed(previous: int, current: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (previous, current]."""
  return every > 0 and current // every > previous // every


def optimizer_of(config: Any, setup: TrainingSetup):
  """(optax transformation, learning-rate schedule): the family's own, else the config's optim."""
  if setup.optimizer is not None:
    return setup.optimizer, setup.learning_rate
  num_steps = config.training.num_steps
  return (make_optimizer(config.optim, num_steps),
          learning_rate_schedule(config.optim, num_steps))


class Trainer:
  """The pieces built from a config; `train_and_evaluate` runs them. `checked`: the family's
  checked config from core.modes.check_config (checked here when not given)."""

  def __init__(self, config: Any, workdir: str, family: Family, checked: Any = None):
    self.config, self.workdir, self.family = config, workdir, family
    if checked is None:
      checked = check_config(config, family)
    self.setup: TrainingSetup = family.build(config, checked)
    self.mesh = make_mesh()
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(None, "data"))
    self.tx, schedule = optimizer_of(config, self.setup)
    root = jax.random.key(config.seed)
    self.init_key, self.train_key, self.sample_key = jax.random.split(root, 3)
    self.data_seed = int(config.seed)
    train_steps = make_train_step(self.setup.loss_fn, self.tx, ema_rate=config.training.ema_rate,
                                  train_key=self.train_key,
                                  nonfinite_loss=config.training.nonfinite_loss,
                                  learning_rate=schedule,
                                  skip_grad_norm=float(optim_field(config.optim,
                                                                   "skip_grad_norm")),
                                  stateful=self.setup.stateful,
                                  ema_warmup=bool(config.training.get("ema_warmup", False)))
    self.train_steps = jit(train_steps, in_shardings=(self.replicated, self.batch_sharding),
                           out_shardings=(self.replicated, self.replicated), donate_argnums=0)

  def init_state(self) -> TrainState:
    """Step-0 state, created directly in its replicated layout (from global batch 0 when the
    family initialises from data)."""
    s = self.setup
    if s.data_init is None:
      create = jax.jit(lambda key: init_train_state(s.init_params, self.tx, key,
                                                    s.init_model_state),
                       out_shardings=self.replicated)
      return create(self.init_key)
    batch = jax.tree.map(lambda b: b[0], self.global_batches(0, 1))
    create = jax.jit(lambda key, batch: init_train_state(s.init_params, self.tx, key,
                                                         s.init_model_state, s.data_init, batch),
                     out_shardings=self.replicated)
    return create(self.init_key, batch)

  def abstract_state(self) -> TrainState:
    return abstract_train_state(self.setup.init_params, self.tx, self.replicated,
                                self.setup.init_model_state)

  def global_batches(self, step: int, count: int) -> Any:
    """Global batches step..step+count-1, leaves [count, B, ...]: this process's slice made here
    and assembled into arrays sharded over 'data'."""
    batch_size = self.config.training.batch_size
    local = [self.setup.train_batch(self.data_seed, step + i, batch_size, jax.process_index(),
                                    jax.process_count()) for i in range(count)]

    def assemble(*parts):
      stacked = np.stack(parts)
      global_shape = (count, batch_size) + stacked.shape[2:]
      return jax.make_array_from_process_local_data(self.batch_sharding, stacked, global_shape)

    return jax.tree.map(assemble, *local)

  def checkpoint_meta(self) -> dict:
    return {"family": self.family.name, **self.setup.meta}

  def write_samples(self, step: int, state: TrainState, writer) -> list[str]:
    """The family's media of the EMA parameters at `step` (files and TensorBoard images)."""
    key = jax.random.fold_in(self.sample_key, step)
    written, images = self.setup.write_media(step, state.ema_params, state.model_state,
                                             self.workdir, key)
    if images:
      writer.write_images(step, dict(images))
    return list(written)

  def evaluate(self, step: int, state: TrainState, writer) -> dict[str, float]:
    """The family's validation scalars of the train state at `step`, as `eval/<name>`."""
    key = jax.random.fold_in(jax.random.fold_in(self.sample_key, step), 1)
    scores = self.setup.evaluate(step, state, key)
    scalars = {f"eval/{name}": float(value) for name, value in scores.items()}
    writer.write_scalars(step, scalars)
    return scalars


def _restore_or_init(trainer: Trainer, checkpointer: Checkpointer) -> TrainState:
  restored = checkpointer.restore_newest(trainer.abstract_state())
  init_from = trainer.config.training.get("init_from", "")
  if restored is None and init_from:
    params, model_state = read_init_weights(
        init_from, trainer.setup, bool(trainer.config.training.get("init_new_layers", False)))
    logging.info("started a new run in %s from the weights of %s", trainer.workdir, init_from)
    return warm_started(trainer.init_state(), params, model_state, trainer.replicated)
  if restored is None:
    logging.info("started a new run in %s", trainer.workdir)
    return trainer.init_state()
  if init_from:
    logging.warning("training.init_from=%s is not used: the workdir's checkpoints resume the run",
                    init_from)
  state, meta = restored
  if meta.get("data_seed", trainer.data_seed) != trainer.data_seed:
    logging.warning("the checkpoint was trained with data seed %s, this config has %s",
                    meta.get("data_seed"), trainer.data_seed)
  logging.info("resumed from step %d (%s)", int(state.step), checkpointer.directory)
  return state


def train_and_evaluate(config: Any, workdir: str, family: Family,
                       checked: Any = None) -> TrainState:
  """Trains `family` until `training.num_steps`, resuming from WORKDIR/checkpoints if there are any.

  Writes TensorBoard summaries to WORKDIR/tensorboard (without TensorFlow: the scalars to
  WORKDIR/metrics.jsonl, `core.writers`), the family's media (every
  `training.sample_every` steps and at the end), its validation metrics (every
  `training.eval_every` steps and at the end) and checkpoints every `training.checkpoint_every`
  steps and at the end. Returns the final state. `checked`: see Trainer. A SIGTERM (to any
  process) saves a checkpoint after the current dispatch and raises TrainingPreempted
  (core.preemption); called again, training continues from it bit for bit.
  """
  workdir = paths.resolve(workdir)
  check_workdir_writable(workdir)
  trainer = Trainer(config, workdir, family, checked)
  t = config.training
  logging.info("family: %s; %s; devices: %d (%s), processes: %d", trainer.family.name,
               trainer.setup.description, jax.device_count(), jax.devices()[0].platform,
               jax.process_count())
  if jax.process_index() == 0:
    paths.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  checkpointer = Checkpointer(workdir, keep=t.keep_checkpoints)
  state = _restore_or_init(trainer, checkpointer)
  writer = make_writer(workdir)
  if jax.process_index() == 0:
    parameter_overview.log_parameter_overview(state.params)
  step = int(jax.device_get(state.step))
  report = Progress(t.num_steps, writer, every_secs=60)
  profile = ProfileSteps(workdir) if t.profile and jax.process_index() == 0 else None
  hooks = [report] + ([profile] if profile else [])
  media = t.sample_every and trainer.setup.write_media is not None
  eval_every = int(t.get("eval_every", 0))
  evaluations = eval_every and trainer.setup.evaluate is not None
  window: list[dict] = []

  def batches_from(first: int) -> Any:  # one dispatch, never past num_steps
    return trainer.global_batches(first, min(t.steps_per_dispatch, t.num_steps - first))

  batches = batches_from(step) if step < t.num_steps else None
  with PreemptionNotice() as notice:
    while step < t.num_steps:
      count = jax.tree.leaves(batches)[0].shape[0]
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = trainer.train_steps(state, batches)
      previous, step = step, step + count
      if step < t.num_steps:  # the host makes the next batches while the device trains
        batches = batches_from(step)
      finite = np.asarray(jax.device_get(metrics["finite"]))
      if not finite.all():
        bad = previous + int(np.argmin(finite)) + 1
        if t.nonfinite_loss == "stop":
          checkpointer.close()
          raise NonFiniteLossError(
              f"the loss or its gradient is not finite at step {bad}; stopped without saving "
              f"(newest checkpoint: step {checkpointer.latest_step()}). Lower --config.optim.lr, "
              f"check the data, or set --config.training.nonfinite_loss=skip to drop such updates")
        logging.warning("skipped %d update(s) with a non-finite loss before step %d",
                        int(np.sum(finite == 0)), step)
      # Every process asks after every dispatch, so they stop together; at the end, just finish.
      stop = notice.stop_now() and step < t.num_steps
      window.append(metrics)
      for hook in hooks:
        hook(step)
      if crossed(previous, step, t.log_every) or step == t.num_steps or stop:
        writer.write_scalars(step, summarize_window(window))
        window = []
      if stop:  # no media or evaluation: a preempted machine has seconds left
        with report.timed("checkpoint"):
          checkpointer.save(state, trainer.checkpoint_meta())
        checkpointer.close()
        writer.flush()
        raise TrainingPreempted(step, notice.received, workdir)
      if media and (crossed(previous, step, t.sample_every) or step == t.num_steps):
        with report.timed("sample"):
          written = trainer.write_samples(step, state, writer)
        logging.info("samples at step %d: %s", step, ", ".join(written))
      if evaluations and (crossed(previous, step, eval_every) or step == t.num_steps):
        with report.timed("eval"):
          trainer.evaluate(step, state, writer)
      if crossed(previous, step, t.checkpoint_every) or step == t.num_steps:
        with report.timed("checkpoint"):
          checkpointer.save(state, trainer.checkpoint_meta())
  if profile:
    profile.finish()
  checkpointer.close()
  writer.flush()
  return state
