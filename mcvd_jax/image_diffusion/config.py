"""Checks of the image-diffusion family's config sections before anything is compiled: the network
(the project's UNet with one frame and no conditioning), the data, the diffusion and sampler, and
the evaluation. Every error names the field (as `--config.<section>.<field>`) and what works.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mcvd_jax.core.config_base import SAMPLING_WEIGHTS
from mcvd_jax.core.config_checks import ConfigError, require
from mcvd_jax.diffusion.factory import Diffusion, check_sampling, diffusion_from_config
from mcvd_jax.models import UNetConfig

# Scores --mode=eval can compute: Inception ones need the user's weights file (eval.fid_weights);
# the classifier ones work offline on MNIST (a digit classifier trained once and cached).
INCEPTION_METRICS = ("fid", "precision", "recall", "is")
CLASSIFIER_METRICS = ("classifier_fid", "recognisable")
# bpd: bits per dimension of test images through the probability-flow ODE (likelihood_eval.py),
# asked for by name only (each image costs an adaptive ODE solve with a divergence).
LIKELIHOOD_METRICS = ("bpd",)
METRICS = INCEPTION_METRICS + CLASSIFIER_METRICS + LIKELIHOOD_METRICS


class Checked(NamedTuple):
  """The image family's sections, checked and converted once: the network, the forward process,
  the metrics --mode=eval computes."""

  model: UNetConfig
  diffusion: Diffusion
  metrics: tuple[str, ...]


def image_model_config(config: Any) -> UNetConfig:
  """The UNet of an image model: the `model` section with one frame and no conditioning frames."""
  m = config.model
  for name in ("num_frames_cond", "num_frames_future"):
    require(m[name] == 0, f"model.{name}={m[name]}: an image model has no conditioning frames; "
                          f"set it to 0")
  require(m.num_frames == 1, f"model.num_frames={m.num_frames}: an image model denoises one "
                             f"frame; set it to 1")
  require(not m.spatin, "model.spatin=True needs conditioning frames; an image model has none")
  try:
    return UNetConfig.from_mapping(m)
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from e


def eval_metrics(config: Any) -> tuple[str, ...]:
  """The metrics --mode=eval computes: eval.metrics (comma-separated), or by default the
  classifier scores for MNIST (plus the Inception ones when eval.fid_weights is given) and the
  Inception ones for the RGB datasets."""
  given = [m.strip() for m in str(config.eval.metrics).split(",") if m.strip()]
  if given:
    unknown = sorted(set(given) - set(METRICS))
    require(not unknown, f"eval.metrics={config.eval.metrics!r}: unknown {unknown}; use some of "
                         f"{', '.join(METRICS)}")
    return tuple(dict.fromkeys(given))
  if config.data.dataset == "mnist":
    return CLASSIFIER_METRICS + (INCEPTION_METRICS if config.eval.fid_weights else ())
  return INCEPTION_METRICS


def validate_eval(config: Any) -> tuple[str, ...]:
  e = config.eval
  require(len(e.step_counts) >= 1 and all(int(s) >= 1 for s in e.step_counts),
          f"eval.step_counts={tuple(e.step_counts)} must be one or more positive step counts")
  require(e.num_samples >= 2, f"eval.num_samples={e.num_samples} must be >= 2")
  require(e.batch_size >= 1, f"eval.batch_size={e.batch_size} must be >= 1")
  require(e.reference_images >= 0, f"eval.reference_images={e.reference_images} must be >= 0 "
                                   f"(0: every training image)")
  require(e.pr_k >= 1, f"eval.pr_k={e.pr_k} must be >= 1")
  metrics = eval_metrics(config)
  if "bpd" in metrics:
    require(config.diffusion.kind == "ddpm", "eval.metrics: bpd integrates the probability-flow "
            f"ODE of a DDPM model; diffusion.kind={config.diffusion.kind!r} has none")
    from mcvd_jax.image_diffusion.likelihood_eval import bpd_settings
    try:
      bpd_settings(config)
    except ValueError as err:
      raise ConfigError(str(err)) from err
  require(not (set(metrics) & set(CLASSIFIER_METRICS)) or config.data.dataset == "mnist"
          or config.model.channels == 1,
          f"eval.metrics: {', '.join(CLASSIFIER_METRICS)} score MNIST digits; "
          f"data.dataset={config.data.dataset!r} needs the Inception metrics")
  return metrics


def validate_family(config: Any, device_count: int = 1, process_count: int = 1) -> Checked:
  """The image family's sections (Family.validate): raises ConfigError naming the field; returns
  them converted."""
  del device_count, process_count  # the batch's split is the shared training section's
  cfg = image_model_config(config)
  from mcvd_jax.data.images import check_image_dataset
  try:
    check_image_dataset(config.data, cfg.image_size, cfg.channels)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  s = config.sampling
  require(s.num_images >= 1, f"sampling.num_images={s.num_images} must be >= 1")
  require(s.batch_size >= 1, f"sampling.batch_size={s.batch_size} must be >= 1")
  weights = s.get("weights", "ema")  # configs from before the field: the EMA parameters
  require(weights in SAMPLING_WEIGHTS,
          f"sampling.weights={weights!r} is unknown; use one of {SAMPLING_WEIGHTS}")
  try:
    diffusion = diffusion_from_config(config.diffusion)
    check_sampling(diffusion, s)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  return Checked(cfg, diffusion, validate_eval(config))
