"""Checks an experiment config before anything is compiled, and reads the pieces the loop needs.

Every error names the config field (as `--config.<section>.<field>`) and what would work.
"""

from __future__ import annotations

from typing import Any

from mcvd_jax.diffusion.factory import diffusion_from_config, sampler_from_config
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.train_step import NONFINITE_POLICIES, Masking

TASKS = ("prediction", "generation", "interpolation", "past_reconstruction")


class ConfigError(ValueError):
  """A config value that cannot work."""


def masking_from_config(config: Any) -> Masking:
  return Masking(config.model.num_frames_cond, config.model.num_frames,
                 config.model.num_frames_future, config.training.prob_mask_cond,
                 config.training.prob_mask_future, bool(config.training.prob_mask_sync))


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def validate_model(config: Any) -> UNetConfig:
  """The typed model config (UNetConfig.validate names the bad field)."""
  try:
    return UNetConfig.from_mapping(config.model)
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from e


def validate_masking(config: Any) -> None:
  t = config.training
  for name in ("prob_mask_cond", "prob_mask_future"):
    value = t[name]
    _require(0.0 <= value <= 1.0, f"training.{name}={value} must be in [0, 1]")
  _require(not (t.prob_mask_cond > 0 and config.model.num_frames_cond == 0),
           f"training.prob_mask_cond={t.prob_mask_cond} masks past frames but "
           f"model.num_frames_cond=0: set one of them")
  _require(not (t.prob_mask_future > 0 and config.model.num_frames_future == 0),
           f"training.prob_mask_future={t.prob_mask_future} masks future frames but "
           f"model.num_frames_future=0: set model.num_frames_future > 0 or the probability to 0")


def validate_training(config: Any, device_count: int, process_count: int = 1) -> None:
  t, o = config.training, config.optim
  _require(t.batch_size >= 1, f"training.batch_size={t.batch_size} must be >= 1")
  _require(t.batch_size % device_count == 0,
           f"training.batch_size={t.batch_size} is not divisible by the {device_count} devices "
           f"the batch is sharded over; use a multiple of {device_count}")
  _require(t.batch_size % process_count == 0,
           f"training.batch_size={t.batch_size} is not divisible by the {process_count} processes")
  for name in ("num_steps", "steps_per_dispatch", "log_every", "checkpoint_every",
               "keep_checkpoints", "sample_batch_size"):
    _require(t[name] >= 1, f"training.{name}={t[name]} must be >= 1")
  _require(t.sample_every >= 0, f"training.sample_every={t.sample_every} must be >= 0 (0: never)")
  _require(0.0 <= t.ema_rate < 1.0, f"training.ema_rate={t.ema_rate} must be in [0, 1)")
  _require(t.nonfinite_loss in NONFINITE_POLICIES,
           f"training.nonfinite_loss={t.nonfinite_loss!r} is unknown; use one of "
           f"{NONFINITE_POLICIES}")
  _require(o.optimizer in ("adam", "adamw"),
           f"optim.optimizer={o.optimizer!r} is unknown; use adam or adamw")
  _require(o.lr > 0, f"optim.lr={o.lr} must be > 0")
  _require(o.warmup >= 0, f"optim.warmup={o.warmup} must be >= 0")
  _require(o.grad_clip >= 0, f"optim.grad_clip={o.grad_clip} must be >= 0 (0: no clipping)")
  _require(0.0 <= o.beta1 < 1.0 and 0.0 <= o.beta2 < 1.0,
           f"optim.beta1={o.beta1} and optim.beta2={o.beta2} must be in [0, 1)")
  _require(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be >= 0")


def validate_sampling(config: Any, cfg: UNetConfig) -> None:
  s = config.sampling
  _require(s.task in TASKS, f"sampling.task={s.task!r} is unknown; use one of {TASKS}")
  _require(s.num_frames >= 1, f"sampling.num_frames={s.num_frames} must be >= 1")
  _require(s.batch_size >= 1, f"sampling.batch_size={s.batch_size} must be >= 1")
  if s.task in ("interpolation", "past_reconstruction"):
    _require(cfg.num_frames_future > 0,
             f"sampling.task={s.task!r} needs future frames but model.num_frames_future=0")
  if s.task == "prediction":
    _require(cfg.num_frames_cond > 0,
             "sampling.task='prediction' needs past frames but model.num_frames_cond=0")
  try:
    sampler_from_config(make_denoise_fn(cfg), diffusion_from_config(config.diffusion), s)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def validate_dataset(config: Any, cfg: UNetConfig) -> None:
  from mcvd_jax.data.registry import check_dataset_name
  try:
    check_dataset_name(config.data.dataset)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def validate_config(config: Any, device_count: int = 1, process_count: int = 1) -> UNetConfig:
  """Raises ConfigError naming the field for a config that cannot train; returns the model config."""
  cfg = validate_model(config)
  validate_masking(config)
  validate_training(config, device_count, process_count)
  validate_sampling(config, cfg)
  validate_dataset(config, cfg)
  return cfg
