"""Checks of the neural-ODE video family's config sections before anything is compiled: the data
(deterministic Moving MNIST and its time grid), the network, the latent ODE solve, sampling and
evaluation. Every error names the field (as `--config.<section>.<field>`) and what works.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from mcvd_jax.core.config_base import SAMPLING_WEIGHTS
from mcvd_jax.core.config_checks import ConfigError, require
from mcvd_jax.ode import OdeConfigError, OdeSettings, settings_from_config
from mcvd_jax.ode_video.data import VAL_DIGITS
from mcvd_jax.ode_video.model import OdeVideoConfig, OdeVideoConfigError, time_grid

DATASETS = ("moving_mnist",)
SPLITS = ("val", "train")


class Checked(NamedTuple):
  """The family's sections, checked and converted once. times: float32 [data.num_frames], the
  time of every frame (t_k = k / (num_frames - 1)); the first `train_frames` are the ones the
  model is given and trained to reconstruct, the rest are extrapolated."""

  model: OdeVideoConfig
  ode: OdeSettings
  times: np.ndarray
  train_frames: int


def model_config(config: Any) -> OdeVideoConfig:
  m = config.model
  try:
    return OdeVideoConfig(variant=m.variant, image_size=m.image_size, channels=m.channels,
                          latent_dim=m.latent_dim, enc_channels=tuple(m.enc_channels),
                          fc_hidden=m.fc_hidden, ode_hidden=m.ode_hidden,
                          rnn_hidden=m.rnn_hidden, sigma=m.sigma, kl_weight=m.kl_weight,
                          compute_dtype=m.compute_dtype)
  except OdeVideoConfigError as err:
    raise ConfigError(str(err)) from None


def validate_data(config: Any, cfg: OdeVideoConfig) -> None:
  d = config.data
  require(d.dataset in DATASETS, f"data.dataset={d.dataset!r} is unknown; the neural-ODE video "
                                 f"family reads {', '.join(DATASETS)}")
  require(d.num_digits in (1, 2), f"data.num_digits={d.num_digits} must be 1 or 2")
  require(d.val_digits in VAL_DIGITS,
          f"data.val_digits={d.val_digits!r} is not one of {VAL_DIGITS}")
  require(d.num_videos >= 1, f"data.num_videos={d.num_videos} must be >= 1")
  require(d.num_val_videos >= 1, f"data.num_val_videos={d.num_val_videos} must be >= 1")
  require(d.num_frames >= 2, f"data.num_frames={d.num_frames} must be >= 2 (a trajectory)")
  require(1 <= d.train_frames <= d.num_frames,
          f"data.train_frames={d.train_frames} must be in [1, data.num_frames={d.num_frames}]")
  require(1 <= d.digit_size < cfg.image_size,
          f"data.digit_size={d.digit_size} must be in [1, model.image_size={cfg.image_size}): "
          f"the digits move in the space left free")
  require(cfg.channels == 1, f"model.channels={cfg.channels}: Moving MNIST frames are grey (1)")


def validate_family(config: Any, device_count: int = 1, process_count: int = 1) -> Checked:
  """The family's sections (Family.validate): raises ConfigError naming the field; returns them
  converted."""
  del device_count, process_count  # the batch's split is the shared training section's
  cfg = model_config(config)
  validate_data(config, cfg)
  try:
    ode = settings_from_config(config.ode, "ode")
  except OdeConfigError as err:
    raise ConfigError(str(err)) from None
  require(config.training.batch_size <= config.data.num_videos,
          f"training.batch_size={config.training.batch_size} is larger than the training set "
          f"(data.num_videos={config.data.num_videos})")
  s = config.sampling
  require(s.num_videos >= 1, f"sampling.num_videos={s.num_videos} must be >= 1")
  require(s.split in SPLITS, f"sampling.split={s.split!r} is not one of {SPLITS}")
  require(s.weights in SAMPLING_WEIGHTS,
          f"sampling.weights={s.weights!r} is unknown; use one of {SAMPLING_WEIGHTS}")
  limit = config.data.num_val_videos if s.split == "val" else config.data.num_videos
  require(s.num_videos <= limit, f"sampling.num_videos={s.num_videos} is more than the "
                                 f"{s.split} set holds ({limit})")
  require(1 <= config.eval.num_videos <= config.data.num_val_videos,
          f"eval.num_videos={config.eval.num_videos} must be in [1, data.num_val_videos="
          f"{config.data.num_val_videos}]")
  return Checked(cfg, ode, frame_times(config.data), int(config.data.train_frames))


def frame_times(data: Any) -> np.ndarray:
  """float32 [data.num_frames]: data.times when given (any increasing grid, e.g. irregular
  sampling), else the reference's t_k = k / (num_frames - 1) over [0, 1]."""
  if not data.times:
    return time_grid(data.num_frames)
  times = np.asarray(data.times, np.float32)
  require(times.ndim == 1 and len(times) == data.num_frames,
          f"data.times has {times.size} entries; give one time per frame (data.num_frames="
          f"{data.num_frames}) or () for the regular grid")
  require(bool(np.all(np.isfinite(times))) and bool(np.all(np.diff(times) > 0)),
          f"data.times={tuple(data.times)} must be finite and strictly increasing")
  return times
