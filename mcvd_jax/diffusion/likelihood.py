"""Exact log-likelihoods and bits per dimension of a VP diffusion model through its probability-flow
ODE (pf_ode.py), isotropic or non-isotropic.

The PF-ODE dx/dt = f(x, t) is a continuous normalizing flow from the data at t = 1/N to the prior
at t = 1, so (instantaneous change of variables, ode/cnf.py)

    log p(x) = log p_1(x_1) + ∫_{1/N}^{1} div f(x_t, t) dt,   f = -½β(t) (x - ẑ(x, t) / σ(t)).

How Σ enters: (i) in the drift, through the correlated noise estimate ẑ = Σ^{1/2} ε_θ (so
div f = -½β (D - div ẑ / σ), and the divergence is taken of the whole map x -> ẑ, Σ^{1/2}
included); (ii) in the prior p_1 = N(0, Σ), whose log-density is
log N(Σ^{-1/2} x_1; 0, I) - log|det Σ^{1/2}|, with log|det Σ^{1/2}| = C · Σ_k log A_k for the GFF
filter A of every channel (noise.gff_amplitude) and 0 for Σ = I. The divergence is Hutchinson's
estimate (one probe per sample and solve) or exact (small dimensions, tests).

Bits per dimension of 8-bit images: uniform dequantisation y = k + u, u ~ U[0, 1)^D, scaled to
x = y / 128 - 1 ∈ [-1, 1] (the library's range; the ODE's data end t = 1/N takes x), so that
log p_y(y) = log p_x(x) - D log 128 and bpd = -log p_y / (D ln 2), an upper bound (in expectation
over u) on the discrete negative log-likelihood in bits. A uniform density scores exactly 8.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.diffusion.continuous import Model, VPSchedule
from mcvd_jax.diffusion.noise import GFFNoise, IsotropicNoise, NoiseModel, gff_amplitude
from mcvd_jax.diffusion.pf_ode import pf_ode_field
from mcvd_jax.ode import OdeSettings, cnf_log_density, make_cnf_dynamics, standard_normal_log_prob

UNIFORM_BPD = 8.0  # bits per dimension of the uniform density over 256 levels: the baseline


class Likelihood(NamedTuple):
  """log_p: [B] log p(x) in nats (the density of x in [-1, 1]); z: [B, ...] x flowed to t = 1;
  num_evals: network evaluations of the solve (each with its divergence's vector-Jacobian
  product)."""

  log_p: jax.Array
  z: jax.Array
  num_evals: jax.Array


def log_det_sqrt_cov(noise_model: NoiseModel, shape: tuple[int, ...]) -> float:
  """log|det Σ^{1/2}| over one sample of `shape` = (H, W, C): C Σ_k log A_k for GFF, 0 for Σ = I."""
  if isinstance(noise_model, IsotropicNoise):
    return 0.0
  if isinstance(noise_model, GFFNoise):
    height, width, channels = shape[-3:]
    amplitude = gff_amplitude(height, width, noise_model.mean_amplitude)
    return float(channels * np.sum(np.log(amplitude)))
  raise ValueError(f"no log-determinant for noise model {noise_model.name!r}; the likelihood "
                   f"knows 'isotropic' and 'gff' (diffusion.noise)")


def prior_log_prob(noise_model: NoiseModel, z: jax.Array) -> jax.Array:
  """z: [B, H, W, C] -> [B] log N(z; 0, Σ)."""
  return (standard_normal_log_prob(noise_model.inv_sqrt_cov(z))
          - log_det_sqrt_cov(noise_model, z.shape[1:]))


def pf_ode_log_likelihood(model: Model, vp: VPSchedule, noise_model: NoiseModel, x: jax.Array,
                          params: Any, settings: OdeSettings, *, key: jax.Array | None = None,
                          divergence: str = "hutchinson", probe: str = "rademacher",
                          cond: Any = None,
                          prior: Callable[[jax.Array], jax.Array] | None = None) -> Likelihood:
  """log p(x) of x [B, H, W, C] at t = 1/N under the PF-ODE of `model` (module docstring).

  key: draws the Hutchinson probes (one per sample, fixed over the solve). prior: z -> [B] the
  log-density at t = 1; default N(0, Σ) (the tests pass the exact marginal of a known density).
  """
  dynamics = make_cnf_dynamics(pf_ode_field(model, vp), divergence=divergence, probe=probe)
  out = cnf_log_density(dynamics, x, params, settings, key=key, cond=(cond, None),
                        t0=vp.t_end, t1=vp.t_start)
  prior = prior or (lambda z: prior_log_prob(noise_model, z))
  return Likelihood(prior(out.z) + out.log_det, out.z, out.num_evals)


def dequantise(key: jax.Array, images: jax.Array) -> jax.Array:
  """uint8 [B, H, W, C] -> float32 (k + u) / 128 - 1 with u ~ U[0, 1): a point of the pixel's
  cell in [-1, 1]."""
  u = jax.random.uniform(key, images.shape, jnp.float32)
  return (images.astype(jnp.float32) + u) / 128.0 - 1.0


def bits_per_dim(log_p: jax.Array, dims: int) -> jax.Array:
  """bpd of 8-bit data from log p(x) (nats) of its dequantised point x in [-1, 1]^dims."""
  return (-log_p / dims + math.log(128.0)) / math.log(2.0)


def image_bits_per_dim(model: Model, vp: VPSchedule, noise_model: NoiseModel, images: jax.Array,
                       params: Any, settings: OdeSettings, key: jax.Array,
                       probes: int = 4) -> tuple[jax.Array, jax.Array]:
  """uint8 images [B, H, W, C] -> (bpd [B, probes], num_evals): one dequantisation per image and
  `probes` Hutchinson probes each (the rows of one solve), so the spread over axis 1 is the
  estimator's own variance."""
  if probes < 1:
    raise ValueError(f"eval.bpd_probes={probes} must be >= 1")
  deq_key, probe_key = jax.random.split(key)
  x = dequantise(deq_key, images)
  xs = jnp.repeat(x, probes, axis=0)  # [B * probes, ...], image-major
  out = pf_ode_log_likelihood(model, vp, noise_model, xs, params, settings, key=probe_key)
  dims = math.prod(images.shape[1:])
  return bits_per_dim(out.log_p, dims).reshape(images.shape[0], probes), out.num_evals
