"""Checks MCVD's config sections (model, masking probabilities, diffusion, sampling, data, eval)
before anything is compiled, in every mode, and converts each once into the typed `Checked` that
training, sampling and evaluation use. The shared `training` and `optim` sections are checked by
core.config_checks.

Every error is a ConfigError naming the config field (as `--config.<section>.<field>`) and what
would work.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from mcvd_jax.core.config_base import SAMPLING_WEIGHTS
from mcvd_jax.core.config_checks import ConfigError, require, validate_training
from mcvd_jax.diffusion.factory import Diffusion, check_sampling, diffusion_from_config
from mcvd_jax.models import UNetConfig
from mcvd_jax.video.guidance import check_guidance, guidance_settings
from mcvd_jax.video_diffusion.tasks import TASKS, Masking, enabled_tasks, masking_from_config

__all__ = ["Checked", "ConfigError", "EvalSettings", "validate_config", "validate_family"]


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """The config's `eval` section, checked."""

  protocols: tuple[str, ...]
  num_test_videos: int
  samples_per_video: int
  metrics: tuple[str, ...]
  batch_size: int
  metric_batch_size: int
  save_samples: bool
  fid_weights: str
  classifier_path: str = ""  # identity's digit classifier; "": digit_identity.DEFAULT_CLASSIFIER


class Checked(NamedTuple):
  """MCVD's sections, checked and converted once: the network, the training clip and its masks,
  the tasks those masks teach, the forward process, the evaluation settings."""

  model: UNetConfig
  masking: Masking
  tasks: tuple[str, ...]
  diffusion: Diffusion
  eval: EvalSettings


def validate_model(config: Any) -> UNetConfig:
  """The typed model config (UNetConfig.validate names the bad field)."""
  try:
    return UNetConfig.from_mapping(config.model)
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from e


def validate_masking(config: Any) -> Masking:
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
  return masking_from_config(config)


def validate_signal(config: Any) -> None:
  """The learning signal's clips (signal.py), read every training.eval_every steps."""
  clips = config.training.get("signal_clips", 16)
  require(clips >= 2, f"training.signal_clips={clips} must be >= 2 (the learning signal "
                      f"shuffles the past frames across the clips)")


def validate_diffusion(config: Any) -> Diffusion:
  try:
    return diffusion_from_config(config.diffusion)
  except ValueError as e:
    raise ConfigError(f"diffusion: {e}") from e


def require_weights(sampling: Any) -> None:
  """`sampling.weights` names a set of a training checkpoint's parameters (configs from before
  the field have none: the EMA ones)."""
  weights = sampling.get("weights", "ema")
  require(weights in SAMPLING_WEIGHTS,
          f"sampling.weights={weights!r} is unknown; use one of {SAMPLING_WEIGHTS}")


def validate_sampling(config: Any, cfg: UNetConfig, diffusion: Diffusion) -> None:
  s = config.sampling
  require(s.task in TASKS, f"sampling.task={s.task!r} is unknown; use one of {TASKS}")
  require(s.num_frames >= 1, f"sampling.num_frames={s.num_frames} must be >= 1")
  require(s.batch_size >= 1, f"sampling.batch_size={s.batch_size} must be >= 1")
  require_weights(s)
  require_usable_guidance(s, cfg)
  if s.task in ("interpolation", "past_reconstruction"):
    require(cfg.num_frames_future > 0,
            f"sampling.task={s.task!r} needs future frames but model.num_frames_future=0")
  if s.task == "prediction":
    require(cfg.num_frames_cond > 0,
            "sampling.task='prediction' needs past frames but model.num_frames_cond=0")
  try:
    check_sampling(diffusion, s)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def require_usable_guidance(sampling: Any, cfg: UNetConfig) -> None:
  """ConfigError unless the sampling section's guidance weight and label interval suit `cfg`
  (video.guidance.check_guidance)."""
  try:
    weight, interval = guidance_settings(sampling)
    check_guidance(weight, cfg, interval)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def require_masked_past_training(guidance: float, prob_mask_cond: float | None, what: str) -> None:
  """ConfigError where guidance by the masked past (sampling.guidance != 1) meets a network that
  never saw a masked past: its output there is not a distribution of frames, and guiding away
  from it would only add noise."""
  if guidance != 1 and prob_mask_cond is not None and prob_mask_cond <= 0:
    raise ConfigError(
        f"sampling.guidance={guidance} guides by the masked past, but {what} was trained with "
        f"training.prob_mask_cond={prob_mask_cond}: the network never learned frames without their "
        f"past. Sample with --config.sampling.guidance=1, pass the prob_mask_cond the run was "
        f"trained with, or fine-tune with e.g. --config.training.prob_mask_cond=0.2 first")


def validate_dataset(config: Any) -> None:
  from mcvd_jax.data.registry import check_dataset_name
  try:
    check_dataset_name(config.data.dataset)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _names(text: str) -> tuple[str, ...]:
  return tuple(part.strip() for part in str(text).split(",") if part.strip())


# The digit identity of SMMNIST predictions (metrics/digit_identity.py): an eval.metrics name
# beside metrics.evaluation's, computed by this family's evaluation (it needs the test digits'
# tracks, which only the dataset has).
IDENTITY = "identity"


def shared_metrics(names) -> tuple[str, ...]:
  """The metric names metrics.evaluation computes: all but this family's IDENTITY."""
  return tuple(m for m in names if m != IDENTITY)


def validate_eval(config: Any) -> EvalSettings:
  """The `eval` section: counts, metric and protocol names (unknown ones fail here, before any
  model is loaded)."""
  from mcvd_jax.metrics import evaluation, protocols
  e = config.eval
  for field in ("num_test_videos", "samples_per_video"):
    require(e[field] >= 0, f"eval.{field}={e[field]} must be >= 0 (0: the protocol's)")
  for field in ("batch_size", "metric_batch_size"):
    require(e[field] >= 1, f"eval.{field}={e[field]} must be >= 1")
  metrics = _names(e.metrics)
  try:
    evaluation.check_metrics(shared_metrics(metrics))
  except ValueError as err:
    raise ConfigError(f"eval.metrics={e.metrics!r}: {err}, or {IDENTITY} (SMMNIST "
                      f"predictions)") from None
  require(IDENTITY not in metrics or config.data.dataset == "smmnist",
          f"eval.metrics={e.metrics!r}: {IDENTITY} scores SMMNIST digits along their true "
          f"tracks; data.dataset is {config.data.dataset!r}")
  for name in _names(e.protocols):
    try:
      protocols.get(name)
    except ValueError as err:
      raise ConfigError(f"eval.protocols={e.protocols!r}: {err}") from None
  return EvalSettings(_names(e.protocols), int(e.num_test_videos), int(e.samples_per_video),
                      metrics, int(e.batch_size), int(e.metric_batch_size), bool(e.save_samples),
                      str(e.fid_weights), str(e.get("classifier_path", "")))


def validate_family(config: Any, device_count: int = 1, process_count: int = 1) -> Checked:
  """MCVD's sections (Family.validate): raises ConfigError naming the field; returns them
  converted."""
  del device_count, process_count  # the batch's split is the shared training section's
  cfg = validate_model(config)
  masking = validate_masking(config)
  validate_signal(config)
  diffusion = validate_diffusion(config)
  validate_sampling(config, cfg, diffusion)
  validate_dataset(config)
  return Checked(cfg, masking, enabled_tasks(masking), diffusion, validate_eval(config))


def validate_config(config: Any, device_count: int = 1, process_count: int = 1) -> UNetConfig:
  """Every check a training run makes (shared and MCVD's); returns the typed model config."""
  validate_training(config, device_count, process_count)
  return validate_family(config, device_count, process_count).model
