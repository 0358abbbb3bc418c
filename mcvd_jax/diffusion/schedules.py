"""Noise schedules, indexed by the network-facing time label.

We keep the reference's label convention throughout: label 0 is the NOISIEST level and label N-1
the cleanest, and the network embeds that raw integer. `alphas[label]` is the cumulative product
alpha-bar at that level. The values reproduce the reference's float32 buffers bit for bit, so a
converted checkpoint sees exactly the inputs it was trained with.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Schedule(NamedTuple):
  """Per-label diffusion coefficients, each [N] float32, label 0 = noisiest.

  alphas:      alpha-bar (cumulative signal fraction) at each label, increasing with the label.
  alphas_prev: alpha-bar of the next cleaner label (1.0 after the last).
  betas:       1 - alphas / alphas_prev.
  """

  alphas: jnp.ndarray
  alphas_prev: jnp.ndarray
  betas: jnp.ndarray

  @property
  def num_steps(self) -> int:
    return int(self.alphas.shape[0])


def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
  """float32 linspace computed as torch does on CPU (from both ends, fused multiply-add), so the
  reference's schedule buffers are reproduced exactly rather than to within one ulp."""
  start32, end32 = np.float32(start), np.float32(end)
  step = float((end32 - start32) / np.float32(steps - 1))
  i = np.arange(steps, dtype=np.float64)
  # One rounding of an exact float64 product-and-add is what a fused multiply-add gives.
  values = np.where(i < steps // 2, float(start32) + step * i,
                    float(end32) - step * (steps - 1 - i))
  return values.astype(np.float32)


def _from_alphas(alphas: np.ndarray) -> Schedule:
  alphas = alphas.astype(np.float32)
  alphas_prev = np.concatenate([alphas[1:], np.ones(1, np.float32)])
  return Schedule(jnp.asarray(alphas), jnp.asarray(alphas_prev),
                  jnp.asarray((1 - alphas / alphas_prev).astype(np.float32)))


def linear_schedule(beta_start: float = 0.02, beta_end: float = 1e-4, num_steps: int = 1000) -> Schedule:
  """The reference's linear schedule: betas = linspace(0.02, 1e-4, N) so betas[0] is the largest,
  alphas[i] = prod_{j >= i} (1 - betas[j]) (the product is accumulated in float64, as torch does)."""
  betas = torch_linspace_f32(beta_start, beta_end, num_steps)
  alphas = np.cumprod((1 - betas[::-1]).astype(np.float64))[::-1].astype(np.float32)
  alphas_prev = np.concatenate([alphas[1:], np.ones(1, np.float32)])
  return Schedule(jnp.asarray(alphas), jnp.asarray(alphas_prev), jnp.asarray(betas))


def cosine_schedule(num_steps: int = 1000, s: float = 0.008) -> Schedule:
  """The cosine schedule (Nichol & Dhariwal) in the reference's label order."""
  t = torch_linspace_f32(num_steps, 0, num_steps + 1) / np.float32(num_steps)
  f = np.cos((t + s) / (1 + s) * np.pi / 2).astype(np.float32) ** 2
  return _from_alphas(f[:-1] / f[-1])


def smld_sigmas(sigma_begin: float = 1.0, sigma_end: float = 0.01, num_steps: int = 1000) -> jnp.ndarray:
  """Geometric noise scales for SMLD (denoising score matching): [N] float32, label 0 the largest."""
  if not sigma_begin > sigma_end > 0:
    raise ValueError(f"SMLD needs sigma_begin > sigma_end > 0, got {sigma_begin}, {sigma_end}")
  return jnp.asarray(np.geomspace(sigma_begin, sigma_end, num_steps).astype(np.float32))


def make_schedule(name: str, num_steps: int = 1000, beta_start: float = 0.02,
                  beta_end: float = 1e-4) -> Schedule:
  """'linear' or 'cosine'; any other name is an error that lists the choices."""
  if num_steps < 2:
    raise ValueError(f"diffusion.num_steps must be >= 2, got {num_steps}")
  if name == "linear":
    return linear_schedule(beta_start, beta_end, num_steps)
  if name == "cosine":
    return cosine_schedule(num_steps)
  raise ValueError(f"diffusion.schedule={name!r} is unknown; use 'linear' or 'cosine'")


def subsampled_steps(num_steps: int, subsample: int | None) -> np.ndarray:
  """Labels a sampler visits, noisiest first: range(0, N, N // S) as the reference (which gives
  more than S steps when S does not divide N); all N labels when subsample is None or >= N."""
  if subsample is None or subsample >= num_steps:
    return np.arange(num_steps)
  if subsample < 1:
    raise ValueError(f"sampling.subsample must be >= 1, got {subsample}")
  return np.arange(0, num_steps, num_steps // subsample)
