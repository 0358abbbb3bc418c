"""The training losses of the neural-ODE video models (Gaussian likelihoods with the reference
code's σ, and the KL of variant B's posterior), on the model functions of model.py."""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.ode import OdeSettings, check_settings
from mcvd_jax.ode_video.model import (Encoding, OdeVideoConfig, _check_frames, check_times, decode,
                                      encode, encode_frames, latent_trajectory)


def gaussian_nll(x: jax.Array, mean: jax.Array, sigma: float,
                 include_constants: bool = True) -> jax.Array:
  """[B, ...] -> [B]: -Σ log N(x; mean, σ²) over each sample's dimensions."""
  per_dim = jnp.square(x - mean) / (2.0 * sigma ** 2)
  if include_constants:
    per_dim = per_dim + 0.5 * math.log(2.0 * math.pi * sigma ** 2)
  return per_dim.reshape(x.shape[0], -1).sum(axis=1)


def kl_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, diag exp(logvar)) ‖ N(0, I)) in nats: [B, L] -> [B]."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


def make_loss_fn(cfg: OdeVideoConfig, times: Any, settings: OdeSettings, *,
                 include_constants: bool = True) -> Callable:
  """loss(params, batch, key) -> (loss, metrics) for frames `batch` [B, T, H, W, C] in [-1, 1]
  at `times` [T] (the training frames, e.g. time_grid(20)[:10]); key draws variant B's ε.

  metrics (float32 scalars): loss; nll_pixels (the batch mean of the pixel term); pixel_mse
  (mean squared error of the decoded frames, in [-1, 1] units); num_evals (field evaluations of
  the solve, the batch mean in "vmap" mode); A: nll_latent; B: kl and posterior_std (the mean
  of exp(½ logvar), which falls as q(z0) sharpens)."""
  times = np.asarray(times, np.float32)
  check_times(times)
  check_settings(settings)

  def loss_fn(params, batch, key):
    _check_frames(cfg, batch, "batch")
    if batch.shape[1] != times.shape[0]:
      raise ValueError(f"batch has {batch.shape[1]} frames but the loss was built for "
                       f"{times.shape[0]} times")
    batch = batch.astype(jnp.float32)
    if cfg.variant == "a":
      targets = encode_frames(cfg, params, batch)  # [B, T, L]
      enc = Encoding(targets[:, 0], targets[:, 0], None)
    else:
      enc = encode(cfg, params, batch, key)
    z, num_evals = latent_trajectory(cfg, params, enc.z0, times, settings)
    decoded = decode(cfg, params, z)
    nll_pixels = gaussian_nll(batch, decoded, cfg.sigma, include_constants)
    metrics = {"nll_pixels": jnp.mean(nll_pixels),
               "pixel_mse": jnp.mean(jnp.square(batch - decoded)),
               "num_evals": jnp.mean(num_evals.astype(jnp.float32))}
    if cfg.variant == "a":
      nll_latent = gaussian_nll(targets, z, cfg.sigma, include_constants)
      metrics["nll_latent"] = jnp.mean(nll_latent)
      loss = jnp.mean(nll_pixels + nll_latent)
    else:
      kl = kl_standard_normal(enc.mean, enc.logvar)
      metrics["kl"] = jnp.mean(kl)
      metrics["posterior_std"] = jnp.mean(jnp.exp(0.5 * enc.logvar))
      loss = jnp.mean(nll_pixels + cfg.kl_weight * kl)
    metrics["loss"] = loss
    return loss.astype(jnp.float32), {k: v.astype(jnp.float32) for k, v in metrics.items()}

  return loss_fn
