"""Checks MCVD's config sections (model, masking probabilities, sampling, data) before anything is
compiled. The shared `training` and `optim` sections are checked by core.config_checks.

Every error names the config field (as `--config.<section>.<field>`) and what would work.
"""

from __future__ import annotations

from typing import Any

from mcvd_jax.core.config_checks import ConfigError, require, validate_training
from mcvd_jax.diffusion.factory import diffusion_from_config, sampler_from_config
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.video_diffusion.training import TASKS

__all__ = ["ConfigError", "validate_config", "validate_family"]


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
    require(0.0 <= value <= 1.0, f"training.{name}={value} must be in [0, 1]")
  require(not (t.prob_mask_cond > 0 and config.model.num_frames_cond == 0),
          f"training.prob_mask_cond={t.prob_mask_cond} masks past frames but "
          f"model.num_frames_cond=0: set one of them")
  require(not (t.prob_mask_future > 0 and config.model.num_frames_future == 0),
          f"training.prob_mask_future={t.prob_mask_future} masks future frames but "
          f"model.num_frames_future=0: set model.num_frames_future > 0 or the probability to 0")


def validate_sampling(config: Any, cfg: UNetConfig) -> None:
  s = config.sampling
  require(s.task in TASKS, f"sampling.task={s.task!r} is unknown; use one of {TASKS}")
  require(s.num_frames >= 1, f"sampling.num_frames={s.num_frames} must be >= 1")
  require(s.batch_size >= 1, f"sampling.batch_size={s.batch_size} must be >= 1")
  if s.task in ("interpolation", "past_reconstruction"):
    require(cfg.num_frames_future > 0,
            f"sampling.task={s.task!r} needs future frames but model.num_frames_future=0")
  if s.task == "prediction":
    require(cfg.num_frames_cond > 0,
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


def validate_family(config: Any, device_count: int = 1, process_count: int = 1) -> None:
  """MCVD's sections (Family.validate): raises ConfigError naming the field."""
  del device_count, process_count  # the batch's split is the shared training section's
  cfg = validate_model(config)
  validate_masking(config)
  validate_sampling(config, cfg)
  validate_dataset(config, cfg)


def validate_config(config: Any, device_count: int = 1, process_count: int = 1) -> UNetConfig:
  """Every check a training run makes (shared and MCVD's); returns the typed model config."""
  validate_training(config, device_count, process_count)
  validate_family(config, device_count, process_count)
  return validate_model(config)
