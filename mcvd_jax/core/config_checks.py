"""Checks of the config sections every family shares (`training`, `optim`; their base is
core.config_base), before anything is compiled. Every error names the field (as
`--config.<section>.<field>`) and what works.
"""

from __future__ import annotations

from typing import Any

from mcvd_jax.core.config_base import NONFINITE_POLICIES
from mcvd_jax.errors import ProjectError


class ConfigError(ValueError, ProjectError):
  """A config value that cannot work."""


def require(condition: bool, message: str) -> None:
  """ConfigError(message) unless `condition`."""
  if not condition:
    raise ConfigError(message)


def validate_training(config: Any, device_count: int, process_count: int = 1) -> None:
  """The `training` and `optim` sections: batch vs devices and processes, step counts, EMA, the
  non-finite policy, the optimizer and its schedule (core.optim.validate_optim)."""
  from mcvd_jax.core.optim import validate_optim  # it imports ConfigError from here
  t, o = config.training, config.optim
  require(t.batch_size >= 1, f"training.batch_size={t.batch_size} must be >= 1")
  require(t.batch_size % device_count == 0,
          f"training.batch_size={t.batch_size} is not divisible by the {device_count} devices "
          f"the batch is sharded over; use a multiple of {device_count}")
  require(t.batch_size % process_count == 0,
          f"training.batch_size={t.batch_size} is not divisible by the {process_count} processes")
  for name in ("num_steps", "steps_per_dispatch", "log_every", "checkpoint_every",
               "keep_checkpoints", "sample_batch_size"):
    require(t[name] >= 1, f"training.{name}={t[name]} must be >= 1")
  require(t.sample_every >= 0, f"training.sample_every={t.sample_every} must be >= 0 (0: never)")
  eval_every = t.get("eval_every", 0)
  require(eval_every >= 0, f"training.eval_every={eval_every} must be >= 0 (0: never)")
  require(0.0 <= t.ema_rate < 1.0, f"training.ema_rate={t.ema_rate} must be in [0, 1)")
  require(t.nonfinite_loss in NONFINITE_POLICIES,
          f"training.nonfinite_loss={t.nonfinite_loss!r} is unknown; use one of "
          f"{NONFINITE_POLICIES}")
  validate_optim(o, t.num_steps)
