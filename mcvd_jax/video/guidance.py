"""Guidance by the masked past (classifier-free guidance, Ho & Salimans 2022) for MCVD networks.

A network trained with `training.prob_mask_cond > 0` has learned two things at once: the clip's
next frames given its past, and frames with the past block masked (all zeros, `cond_mask` 0:
video.masking). Sampling with the output

    out = out_masked + weight * (out_given - out_masked)

weight 1 is the plain conditional network; weight > 1 pushes each step further from what the
network would draw without the past, towards what the past says (for a moving digit: its shape),
at the price of diversity. Every prediction type (ε, x0, v) is linear in the output at a fixed
noisy input, so the same combination serves all of them. The two outputs come from one network
call on a doubled batch. The future block (interpolation) is kept in both calls: the guidance is
by the past.

`sampling.guidance_labels`, an interval [lo, hi) of the network's noise labels (in MCVD's DDPM 0
is the noisiest, num_steps - 1 the cleanest), guides only the steps whose label lies in it and
uses the plain network elsewhere (guidance in a limited interval, Kynkäänniemi et al. 2024): the
noisy steps decide where a digit goes and what it is, the clean ones its strokes, which strong
guidance there erodes. Both outputs are still computed at every step.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax.numpy as jnp

from mcvd_jax.models.config import UNetConfig


def guidance_settings(sampling: Any) -> tuple[float, tuple[int, ...]]:
  """(weight, label interval) of a config's sampling section (sampling.guidance, 1 where absent;
  sampling.guidance_labels, () where absent)."""
  return (float(sampling.get("guidance", 1.0)),
          tuple(int(v) for v in sampling.get("guidance_labels", ())))


def check_guidance(weight: float, cfg: UNetConfig, labels: Sequence[float] = ()) -> None:
  """ValueError unless `weight` (sampling.guidance) is a finite number >= 0 that this network can
  use (weight 1 always, any other only with past conditioning frames) and `labels`
  (sampling.guidance_labels) is empty or an interval (lo, hi) with 0 <= lo < hi."""
  if len(labels) not in (0, 2) or (len(labels) == 2 and not 0 <= labels[0] < labels[1]):
    raise ValueError(f"sampling.guidance_labels={tuple(labels)} must be () (every step) or "
                     f"(lo, hi) with 0 <= lo < hi: the noise labels [lo, hi) to guide, e.g. "
                     f"(0, 500) for the noisier half of 1000 DDPM labels")
  if not (weight >= 0 and weight < float("inf")):
    raise ValueError(f"sampling.guidance={weight} must be a finite number >= 0 (1 = the plain "
                     f"conditional network, > 1 follows the past more closely)")
  if weight != 1 and cfg.num_frames_cond == 0:
    raise ValueError(f"sampling.guidance={weight} guides by the past frames, but this network has "
                     f"none (model.num_frames_cond=0): use sampling.guidance=1")


def guided_denoise(denoise: Callable, cfg: UNetConfig, weight: float,
                   label_interval: Sequence[int] = ()) -> Callable:
  """`denoise(params, x, labels, cond, key=None, cond_mask=None)` with guidance `weight` by the
  past block (the first num_frames_cond * channels channels of `cond`, [B, H, W, (Nc+Nf)*C]).
  Returns `denoise` itself for weight 1. Where a sample's past is already masked (cond_mask 0:
  the first blocks of unconditional generation) both outputs agree and guidance changes nothing.
  With `label_interval` (lo, hi), samples whose noise label is outside [lo, hi) get the plain
  output.
  """
  check_guidance(weight, cfg, label_interval)
  interval = tuple(int(v) for v in label_interval)
  if weight == 1:
    return denoise
  past_channels = cfg.num_frames_cond * cfg.channels

  def denoise_guided(params, x, labels, cond, key=None, cond_mask=None):
    b = x.shape[0]
    given_mask = jnp.ones((b,), jnp.int32) if cond_mask is None else cond_mask.astype(jnp.int32)
    masked_cond = cond.at[..., :past_channels].set(0)
    both = denoise(params, jnp.concatenate([x, x]), jnp.concatenate([labels, labels]),
                   jnp.concatenate([cond, masked_cond]), key,
                   cond_mask=jnp.concatenate([given_mask, jnp.zeros_like(given_mask)]))
    given, masked = both[:b], both[b:]
    guided = masked + weight * (given - masked)
    if not interval:
      return guided
    inside = (labels >= interval[0]) & (labels < interval[1])
    return jnp.where(inside.reshape((b,) + (1,) * (guided.ndim - 1)), guided, given)

  return denoise_guided
