"""What a model of the thesis provides to plug into the shared core: a `Family`.

The core (the training loop, checkpoints, `main`'s modes, the evaluation runner, the bench CLI)
knows a model only through these two records; `mcvd_jax.registry` maps `config.family` to one.

  Family          static: one per model, registered by name. Its functions take the config.
  TrainingSetup   what `Family.build(config)` returns for training: the pure functions the loop
                  jits (parameter initialiser, loss) and the host-side pieces around them (the
                  training batches, periodic media, checkpoint metadata).

Conventions the loop relies on:
  - `loss_fn(params, batch, key) -> (loss, metrics)`: a scalar float32 loss and a dict of
    float32 scalars for this update. A metric named `<name>_sum/<group>` is summed over the
    logging window and divided by the summed `count/<group>`, logged as `<name>/<group>` (a mean
    over the samples of a group, e.g. MCVD's per-task losses); every other metric is averaged
    over the window's finite updates. The loop adds loss, grad_norm, lr and skipped_updates.
  - `train_batch(seed, step, batch_size, process_index, process_count)`: this process's slice
    (batch_size / process_count examples) of global batch `step`, a numpy array or a pytree of
    them with the batch on the leading axis; a pure function of its arguments, so a resumed run
    sees the same data.
  - `init_params(key)`: pure (used under `jax.eval_shape` for abstract shapes, and jitted straight
    into the replicated layout).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import numpy as np

# (step, ema_params, workdir, key) -> (paths written, TensorBoard images name -> [N, H, W, C])
MediaFn = Callable[[int, Any, str, jax.Array], tuple[list[str], Mapping[str, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
  """The pieces of one family's training run, built from a validated config."""

  description: str  # one line for the log: the data and what is learned
  init_params: Callable[[jax.Array], Any]
  loss_fn: Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]
  train_batch: Callable[[int, int, int, int, int], Any]
  meta: Mapping[str, Any]  # JSON-able, saved with every checkpoint (data seed, model config, ...)
  write_media: MediaFn | None = None  # every training.sample_every steps, on the EMA parameters


@dataclasses.dataclass(frozen=True)
class Family:
  """A model of the thesis, as the core sees it.

  validate(config, device_count, process_count): raises a ConfigError naming the field
    (`--config.<section>.<field>`) for anything in the family's sections that cannot work; runs
    before anything is compiled. The core checks the shared `training` and `optim` sections.
  build(config) -> TrainingSetup, after validate.
  sample(config, workdir, checkpoint) -> the path of what `--mode=sample` wrote.
  evaluation(config, workdir, checkpoint) -> core.eval_runner.Evaluation: the protocols that
    `--mode=eval` runs (the runner saves and resumes their batches and writes the reports).
  bench_module: a module defining the family's `python -m mcvd_jax.bench` flags and
    `run(flags) -> dict` (imported by the bench CLI before flags are parsed), or "".
  """

  name: str
  description: str
  validate: Callable[[Any, int, int], None]
  build: Callable[[Any], TrainingSetup]
  sample: Callable[[Any, str, str | None], str]
  evaluation: Callable[[Any, str, str | None], Any]
  bench_module: str = ""
