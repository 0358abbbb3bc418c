"""The config sections every family shares, as a base that each family's config file extends:
`training` (batch, steps, EMA, how often to log / sample / evaluate / checkpoint, the non-finite
policy) and `optim` (core.optim: the optimizer and its schedule). Imports neither jax nor anything
heavy: config files import it while the command line is parsed, before jax starts.
"""

from __future__ import annotations

from typing import Any

import ml_collections

NONFINITE_POLICIES = ("stop", "skip")
SAMPLING_WEIGHTS = ("ema", "raw")  # sampling.weights: which parameters of a checkpoint to use

TRAINING_DEFAULTS = {
    "batch_size": 64,          # global batch over all devices and hosts
    "num_steps": 100_000,
    "steps_per_dispatch": 1,   # >1: several steps in one jitted scan (fewer host round trips)
    "ema_rate": 0.999,
    "ema_warmup": False,       # True: update n's EMA rate is min(ema_rate, (1 + n) / (10 + n))
    "log_every": 100,          # steps between logs of the loss and the family's metrics
    "sample_every": 10_000,    # steps between the family's media of the EMA weights (0: never)
    "sample_batch_size": 4,    # items in those media
    "eval_every": 0,           # steps between the family's validation metrics (0: never)
    "checkpoint_every": 5000,
    "keep_checkpoints": 3,
    "nonfinite_loss": "stop",  # stop | skip (drop that update and go on)
    "profile": False,
    # warm start (core.warm_start): a training workdir, checkpoints/<step> or model directory
    # whose weights a new run starts from (fresh optimizer, step 0); "" starts from random ones
    "init_from": "",
    # True: the config's network may add layers to init_from's (a grown network, e.g. attention
    # at one more resolution); those start from their initialisation, the rest are the weights'
    "init_new_layers": False,
}


def training_section(**overrides) -> ml_collections.ConfigDict:
  """The shared `training` section with TRAINING_DEFAULTS; a family's base config adds its own
  fields to it. Unknown override names raise ValueError."""
  unknown = sorted(set(overrides) - set(TRAINING_DEFAULTS))
  if unknown:
    raise ValueError(f"training_section: unknown fields {unknown}; the shared ones are "
                     f"{', '.join(TRAINING_DEFAULTS)}")
  return ml_collections.ConfigDict({**TRAINING_DEFAULTS, **overrides})


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")

OPTIM_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 2e-4,
    "warmup": 1000,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "schedule": "constant",
    "decay_steps": 0,
    "min_lr_ratio": 0.0,
    "momentum": 0.9,
    "nesterov": False,
    "skip_grad_norm": 0.0,
}


def optim_section(**overrides: Any) -> ml_collections.ConfigDict:
  """An `optim` section: OPTIM_DEFAULTS with `overrides` applied. Unknown names raise ValueError
  (a misspelt field would otherwise be silently ignored)."""
  unknown = sorted(set(overrides) - set(OPTIM_DEFAULTS))
  if unknown:
    raise ValueError(f"unknown optim field(s) {unknown}; the fields are {sorted(OPTIM_DEFAULTS)}")
  return ml_collections.ConfigDict({**OPTIM_DEFAULTS, **overrides})
