"""`train_and_evaluate(config, workdir)`: the CLU training loop. No maths here: the update is
`train_step.make_train_step`, the data `data.make_dataset`, checkpoints `checkpointing.Checkpointer`.

One mesh over every device (axis 'data'): the state is replicated, each global batch sharded on
its batch axis; every process feeds its own slice. A restart with the same command resumes from
the newest readable checkpoint and replays exactly the batches and keys an uninterrupted run uses.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from mcvd_jax import experiment
from mcvd_jax.checkpointing import Checkpointer
from mcvd_jax.compilation import jit
from mcvd_jax.data.registry import make_dataset
from mcvd_jax.diffusion.factory import diffusion_from_config, initial_scale, sampler_from_config
from mcvd_jax.diffusion.losses import make_loss_fn
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.sample import clip_frames_for_task, task_inputs
from mcvd_jax.train_step import (TrainState, abstract_train_state, enabled_tasks,
                                 init_train_state, learning_rate_schedule, make_optimizer,
                                 make_train_step)
from mcvd_jax.video.io import frames_to_unit_range, to_uint8, video_grid, write_gif
from mcvd_jax.video.rollout import make_rollout


class WorkdirError(RuntimeError):
  """The workdir cannot be created or written."""


class NonFiniteLossError(RuntimeError):
  """The loss or the gradient became NaN/inf (training.nonfinite_loss='stop')."""


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process, axis 'data'. Auto axes: the network's
  reshapes of a batch-sharded input need them on jax >= 0.7."""
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def check_workdir_writable(workdir: str) -> None:
  """Creates `workdir` and proves it writable, before anything is compiled."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
      pass
  except OSError as e:
    raise WorkdirError(f"workdir {workdir!r} is not writable ({e.strerror or e}); choose another "
                       f"--workdir or fix its permissions") from e


def make_writer(workdir: str):
  """CLU's default writer: the log and TensorBoard (WORKDIR/tensorboard) on process 0, the log
  only on the others."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(just_logging=True)
  return metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"))


def summarize_window(metrics: list[dict]) -> dict[str, float]:
  """Means over the dispatches since the last log: loss, grad_norm, the last lr, skipped updates,
  and the loss of each task over the samples of that task (absent when none was drawn)."""
  fetched = jax.device_get(metrics)
  merged = {k: np.concatenate([np.atleast_1d(m[k]) for m in fetched]) for k in fetched[0]}
  finite = merged["finite"] > 0
  out = {"lr": float(merged["lr"][-1]), "skipped_updates": float(np.sum(~finite))}
  if finite.any():
    out["loss"] = float(np.mean(merged["loss"][finite]))
    out["grad_norm"] = float(np.mean(merged["grad_norm"][finite]))
  for key in merged:
    if key.startswith("loss_sum/"):
      task = key.split("/", 1)[1]
      count = float(np.sum(merged[f"count/{task}"][finite]))
      if count:
        out[f"loss/{task}"] = float(np.sum(merged[key][finite]) / count)
  return out


def crossed(previous: int, current: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (previous, current]."""
  return every > 0 and current // every > previous // every


class Trainer:
  """The pieces built from a config; `train_and_evaluate` runs them."""

  def __init__(self, config: Any, workdir: str):
    self.config, self.workdir = config, workdir
    self.cfg: UNetConfig = experiment.validate_config(config, jax.device_count(),
                                                      jax.process_count())
    self.masking = experiment.masking_from_config(config)
    self.tasks = enabled_tasks(self.masking)
    self.dataset = make_dataset(config.data, self.cfg.image_size, self.cfg.channels)
    self.mesh = make_mesh()
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(None, "data"))
    self.diffusion = diffusion_from_config(config.diffusion)
    denoise = make_denoise_fn(self.cfg)
    self.loss_fn = make_loss_fn(denoise, schedule=self.diffusion.schedule,
                                sigmas=self.diffusion.sigmas,
                                noise_model=self.diffusion.noise_model, l1=config.diffusion.l1)
    self.tx = make_optimizer(config.optim)
    root = jax.random.key(config.seed)
    self.init_key, self.train_key, self.sample_key = jax.random.split(root, 3)
    self.data_seed = int(config.seed)
    train_steps = make_train_step(self.loss_fn, self.tx, self.masking,
                                  ema_rate=config.training.ema_rate, train_key=self.train_key,
                                  nonfinite_loss=config.training.nonfinite_loss,
                                  learning_rate=learning_rate_schedule(config.optim.lr,
                                                                       config.optim.warmup))
    self.train_steps = jit(train_steps, in_shardings=(self.replicated, self.batch_sharding),
                           out_shardings=(self.replicated, self.replicated), donate_argnums=0)
    sampler = sampler_from_config(denoise, self.diffusion, config.sampling)
    self.rollout = jit(make_rollout(sampler.sample, self.cfg, self.diffusion.noise_model,
                                    initial_scale(self.diffusion)),
                       static_argnames=("num_frames", "batch_size"))

  def init_state(self) -> TrainState:
    """Step-0 state, created directly in its replicated layout."""
    create = jax.jit(lambda key: init_train_state(self.cfg, self.tx, key),
                     out_shardings=self.replicated)
    return create(self.init_key)

  def abstract_state(self) -> TrainState:
    return abstract_train_state(self.cfg, self.tx, self.replicated)

  def global_batches(self, step: int, count: int) -> jax.Array:
    """uint8 [count, B, Nc+T+Nf, H, W, C]: global batches step..step+count-1, this process's
    slice generated here and assembled into one array sharded over 'data'."""
    t = self.config.training
    local = np.stack([self.dataset.train_batch(self.data_seed, step + i, t.batch_size,
                                               self.masking.clip_frames, jax.process_index(),
                                               jax.process_count()) for i in range(count)])
    global_shape = (count, t.batch_size) + local.shape[2:]
    return jax.make_array_from_process_local_data(self.batch_sharding, local, global_shape)

  def checkpoint_meta(self) -> dict:
    return {"data_seed": self.data_seed, "dataset": self.config.data.dataset,
            "model": json.loads(json.dumps(self.config.model.to_dict(), default=list))}

  def write_samples(self, step: int, params: Any, writer) -> list[str]:
    """EMA samples of each enabled task on real test clips: WORKDIR/samples/step_<step>_<task>.gif
    (real clips in the top row, samples below) and the same grids in TensorBoard."""
    t, s = self.config.training, self.config.sampling
    directory = os.path.join(self.workdir, "samples")
    os.makedirs(directory, exist_ok=True)
    need = max(clip_frames_for_task(task, self.cfg, s.num_frames) for task in self.tasks)
    clips = frames_to_unit_range(self.dataset.test_videos(need, t.sample_batch_size))
    paths, images = [], {}
    for i, task in enumerate(self.tasks):
      given = task_inputs(task, clips, self.cfg, s.num_frames)
      key = jax.random.fold_in(jax.random.fold_in(self.sample_key, step), i)
      video = self.rollout(params, key, given.past, given.future, num_frames=given.num_frames,
                           batch_size=t.sample_batch_size)
      real, fake = to_uint8(given.real), to_uint8(jax.device_get(video))
      grid = video_grid(np.concatenate([real, fake]), columns=real.shape[0])
      path = os.path.join(directory, f"step_{step:08d}_{task}.gif")
      if jax.process_index() == 0:
        write_gif(path, grid)
      paths.append(path)
      images[f"samples/{task}"] = np.concatenate(list(grid), axis=1)[None]  # frames side by side
    writer.write_images(step, images)
    return paths


def train_and_evaluate(config: Any, workdir: str) -> TrainState:
  """Trains until `training.num_steps`, resuming from WORKDIR/checkpoints if there are any.

  Writes TensorBoard summaries to WORKDIR/tensorboard, sample GIFs to WORKDIR/samples and
  checkpoints every `training.checkpoint_every` steps and at the end. Returns the final state.
  """
  check_workdir_writable(workdir)
  trainer = Trainer(config, workdir)
  t = config.training
  logging.info("dataset: %s; tasks learned: %s; devices: %d (%s), processes: %d",
               trainer.dataset.description, ", ".join(trainer.tasks), jax.device_count(),
               jax.devices()[0].platform, jax.process_count())
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  checkpointer = Checkpointer(workdir, keep=t.keep_checkpoints)
  restored = checkpointer.restore_newest(trainer.abstract_state())
  if restored is not None:
    state, meta = restored
    if meta.get("data_seed", trainer.data_seed) != trainer.data_seed:
      logging.warning("the checkpoint was trained with data seed %s, this config has %s",
                      meta.get("data_seed"), trainer.data_seed)
    logging.info("resumed from step %d (%s)", int(state.step), checkpointer.directory)
  else:
    state = trainer.init_state()
    logging.info("started a new run in %s", workdir)

  writer = make_writer(workdir)
  if jax.process_index() == 0:
    parameter_overview.log_parameter_overview(state.params)
  step = int(jax.device_get(state.step))
  report = periodic_actions.ReportProgress(num_train_steps=t.num_steps, writer=writer,
                                           every_secs=60)
  hooks = [report]
  if t.profile and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(num_profile_steps=5, logdir=workdir))
  window: list[dict] = []

  def batches_from(first: int) -> jax.Array:  # one dispatch, never past num_steps
    return trainer.global_batches(first, min(t.steps_per_dispatch, t.num_steps - first))

  batches = batches_from(step) if step < t.num_steps else None
  while step < t.num_steps:
    count = batches.shape[0]
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
    window.append(metrics)
    for hook in hooks:
      hook(step)
    if crossed(previous, step, t.log_every) or step == t.num_steps:
      writer.write_scalars(step, summarize_window(window))
      window = []
    if crossed(previous, step, t.sample_every) or (step == t.num_steps and t.sample_every):
      with report.timed("sample"):
        paths = trainer.write_samples(step, state.ema_params, writer)
      logging.info("samples at step %d: %s", step, ", ".join(paths))
    if crossed(previous, step, t.checkpoint_every) or step == t.num_steps:
      with report.timed("checkpoint"):
        checkpointer.save(state, trainer.checkpoint_meta())
  checkpointer.close()
  writer.flush()
  return state
