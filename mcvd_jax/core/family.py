"""What a model of the thesis provides to plug into the shared core: a `Family`.

The core (the training loop, checkpoints, `main`'s modes, the evaluation runner, the bench CLI)
knows a model only through these two records, and is handed the Family it runs (`main` looks it
up in `mcvd_jax.registry` from `config.family`; the core never does).

  Family          static: one per model, registered by name. Its functions take the config.
  TrainingSetup   what `Family.build(config, checked)` returns for training: the pure functions
                  the loop jits (parameter initialiser, loss) and the host-side pieces around
                  them (the training batches, periodic media and evaluation, checkpoint meta).

Conventions the loop relies on:
  - `loss_fn(params, batch, key) -> (loss, metrics)`: a scalar float32 loss and a dict of
    float32 scalars for this update. A metric named `<name>_sum/<group>` is summed over the
    logging window and divided by the summed `count/<group>`, logged as `<name>/<group>` (a mean
    over the samples of a group, e.g. MCVD's per-task losses); every other metric is averaged
    over the window's finite updates. The loop adds loss, grad_norm, lr, skipped_updates (not
    finite) and skipped_large_grad (over optim.skip_grad_norm).
  - A family with mutable model state (batch statistics, running averages) gives
    `init_model_state(key) -> state`; its loss is then
    `loss_fn(params, model_state, batch, key) -> (loss, (metrics, new_model_state))`. The state is
    saved with the checkpoints; samples, media and evaluation get the newest one beside the EMA
    parameters. Without it the state is {} and nothing of it is saved.
  - `train_batch(seed, step, batch_size, process_index, process_count)`: this process's slice
    (batch_size / process_count examples) of global batch `step`, a numpy array or a pytree of
    them with the batch on the leading axis; a pure function of its arguments, so a resumed run
    sees the same data.
  - `init_params(key)`: pure (used under `jax.eval_shape` for abstract shapes, and jitted straight
    into the replicated layout). `data_init(params, model_state, batch, key) -> (params,
    model_state)`, when given, refines a fresh initialisation from global training batch 0
    (data-dependent init such as ActNorm); it may change values, not shapes.
  - `evaluate(step, state, key) -> {name: float}`: scalar validation metrics (held-out loss,
    bits/dim, MPJPE, a learning signal of the raw and the EMA weights ...) of the TrainState
    (core.train_step: params, ema_params, model_state ...) every `training.eval_every` steps and
    at the end, logged and written to TensorBoard as `eval/<name>`.
  - The optimizer comes from the config's `optim` section (core.optim) unless the family gives
    its own `optimizer` (an optax transformation) and the `learning_rate` schedule to log.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import numpy as np
import optax

# (step, ema_params, model_state, workdir, key) -> (paths written, TensorBoard images name ->
# [N, H, W, C])
MediaFn = Callable[[int, Any, Any, str, jax.Array], tuple[list[str], Mapping[str, np.ndarray]]]
# (step, train state, key) -> validation scalars
EvaluateFn = Callable[[int, Any, jax.Array], Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
  """The pieces of one family's training run, built from a validated config."""

  description: str  # one line for the log: the data and what is learned
  init_params: Callable[[jax.Array], Any]
  loss_fn: Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]
  train_batch: Callable[[int, int, int, int, int], Any]
  meta: Mapping[str, Any]  # JSON-able, saved with every checkpoint (data seed, model config, ...)
  write_media: MediaFn | None = None  # every training.sample_every steps, on the EMA parameters
  evaluate: EvaluateFn | None = None  # every training.eval_every steps, on the train state
  init_model_state: Callable[[jax.Array], Any] | None = None  # mutable state; changes loss_fn
  data_init: Callable[[Any, Any, Any, jax.Array], tuple[Any, Any]] | None = None
  optimizer: optax.GradientTransformation | None = None  # default: from the config's optim
  learning_rate: optax.Schedule | None = None  # the family optimizer's schedule, for the log
  # (path, new_layers) -> parameters of a model directory in the family's own format (exported
  # or converted weights) for `training.init_from`, None for a path that is not one
  # (core.warm_start); new_layers: training.init_new_layers (the config's network may add layers)
  load_pretrained: Callable[[str, bool], Any] | None = None

  @property
  def stateful(self) -> bool:
    return self.init_model_state is not None


@dataclasses.dataclass(frozen=True)
class Family:
  """A model of the thesis, as the core sees it.

  validate(config, device_count, process_count) -> checked: raises a ConfigError naming the
    field (`--config.<section>.<field>`) for anything in the family's sections that cannot work,
    in every mode, before anything is built or compiled; returns the family's typed view of its
    sections (its "checked" config: model dataclass, schedules, eval settings ...), which the
    core passes to the other three so that nothing is checked or converted twice. The core checks
    the shared `training` and `optim` sections.
  build(config, checked) -> TrainingSetup.
  sample(config, checked, workdir, checkpoint) -> the path of what `--mode=sample` wrote.
  evaluation(config, checked, workdir, checkpoint) -> core.eval_runner.Evaluation: the protocols
    that `--mode=eval` runs (the runner saves and resumes their batches and writes the reports).
  bench_module: a module defining the family's `python -m mcvd_jax.bench` flags and
    `run(flags) -> dict` (imported by the bench CLI before flags are parsed), or "".
  """

  name: str
  description: str
  validate: Callable[[Any, int, int], Any]
  build: Callable[[Any, Any], TrainingSetup]
  sample: Callable[[Any, Any, str, str | None], str]
  evaluation: Callable[[Any, Any, str, str | None], Any]
  bench_module: str = ""
