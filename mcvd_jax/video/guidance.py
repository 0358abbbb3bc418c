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
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from mcvd_jax.models.config import UNetConfig


def check_guidance(weight: float, cfg: UNetConfig) -> None:
  """ValueError unless `weight` (sampling.guidance) is a finite number >= 0 that this network can
  use: weight 1 always, any other only with past conditioning frames."""
  if not (weight >= 0 and weight < float("inf")):
    raise ValueError(f"sampling.guidance={weight} must be a finite number >= 0 (1 = the plain "
                     f"conditional network, > 1 follows the past more closely)")
  if weight != 1 and cfg.num_frames_cond == 0:
    raise ValueError(f"sampling.guidance={weight} guides by the past frames, but this network has "
                     f"none (model.num_frames_cond=0): use sampling.guidance=1")


def guided_denoise(denoise: Callable, cfg: UNetConfig, weight: float) -> Callable:
  """`denoise(params, x, labels, cond, key=None, cond_mask=None)` with guidance `weight` by the
  past block (the first num_frames_cond * channels channels of `cond`, [B, H, W, (Nc+Nf)*C]).
  Returns `denoise` itself for weight 1. Where a sample's past is already masked (cond_mask 0:
  the first blocks of unconditional generation) both outputs agree and guidance changes nothing.
  """
  check_guidance(weight, cfg)
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
    return masked + weight * (given - masked)

  return denoise_guided
