"""The discrete N-step VP schedule as a continuous-time one, and the network read at continuous t.

The ODE samplers (pf_ode.py, dpm_solver.py) and the likelihood (likelihood.py) integrate in
continuous time t ∈ [1/N, 1]; the network was trained on N integer labels. The mapping is
DPM-Solver's `NoiseScheduleVP('discrete')` (Lu et al. 2022), exact at every label:

    label L (0 = noisiest, N-1 = cleanest)  <->  t_L = (N - L) / N     (t = 1 at label 0)
    log α(t)  = ½ log ᾱ, piecewise linear in t between the labels' t_L (so α(t_L)² = ᾱ_L)
    σ(t)      = √(1 - α(t)²),  λ(t) = log α(t) - log σ(t)  (half the log-SNR, decreasing in t)
    β(t)      = -2 d log α / dt, piecewise constant: N · (-log(1 - β_L)) ≈ N β_L on each segment

so x_t = α(t) x0 + σ(t) Σ^{1/2} ε matches the discrete chain's x at every label. The network's
label at a continuous t is the NEAREST label, round(N (1 - t)) clipped to [0, N-1]; DPM-Solver's
discrete wrapper instead feeds the continuous value 1000 (t - 1/N), which an integer embedding
(the reference's, which a converted checkpoint needs) cannot take. Between labels the network thus
sees a level at most half a label away from the state's; the clean and noise estimates are still
read at the state's own ᾱ(t), so the ODE stays the one of the continuous schedule. Solvers whose
times fall on labels (t = 1, t = 1/N, fixed steps of a divisor of N) see exact labels there.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.diffusion.noise import NoiseModel, correlated_estimate
from mcvd_jax.diffusion.parametrisation import check_prediction, clean_and_noise
from mcvd_jax.diffusion.schedules import Schedule

# model(params, x [B, ...], t scalar, cond, cond_mask) -> (x̂0, ẑ): the clean estimate and the
# estimate of the correlated noise Σ^{1/2} ε in x at continuous time t.
Model = Callable[..., tuple[jax.Array, jax.Array]]


class VPSchedule(NamedTuple):
  """The discrete schedule on continuous time (module docstring).

  t_knots: [N] float64 increasing, t of labels N-1 .. 0 (1/N .. 1).
  log_alpha_knots: [N] float64, ½ log ᾱ at those knots (decreasing).
  """

  t_knots: np.ndarray
  log_alpha_knots: np.ndarray

  @property
  def num_labels(self) -> int:
    return int(self.t_knots.shape[0])

  @property
  def t_start(self) -> float:
    """The noisiest time, 1 (label 0): where sampling starts and the likelihood's prior sits."""
    return float(self.t_knots[-1])

  @property
  def t_end(self) -> float:
    """The cleanest time, 1/N (label N-1): where sampling ends and the data sits."""
    return float(self.t_knots[0])

  def log_alpha(self, t):
    """log α(t); t a Python/numpy value (numpy float64 result, for static grids) or a jax array."""
    return _xp(t).interp(t, self.t_knots, self.log_alpha_knots)

  def alpha_bar(self, t):
    return _xp(t).exp(2 * self.log_alpha(t))

  def sigma(self, t):
    xp = _xp(t)
    return xp.sqrt(-xp.expm1(2 * self.log_alpha(t)))

  def lam(self, t):
    """λ(t) = log(α / σ)."""
    xp, log_alpha = _xp(t), self.log_alpha(t)
    return log_alpha - 0.5 * xp.log(-xp.expm1(2 * log_alpha))

  def beta(self, t):
    """β(t) = -2 d log α / dt on the segment containing t (piecewise constant)."""
    xp = _xp(t)
    slopes = -2 * np.diff(self.log_alpha_knots) / np.diff(self.t_knots)  # [N-1]
    i = xp.clip(xp.searchsorted(self.t_knots, t, side="right") - 1, 0, len(slopes) - 1)
    return slopes[i] if xp is np else jnp.asarray(slopes, jnp.float32)[i]

  def t_of_lambda(self, lam):
    """The inverse of λ(t) (numpy, float64): log α = -½ log(1 + e^{-2λ}), then t by inverse
    interpolation of the knots (exact on the piecewise-linear schedule)."""
    log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * np.asarray(lam, np.float64))
    return np.interp(log_alpha, self.log_alpha_knots[::-1], self.t_knots[::-1])

  def label(self, t) -> jax.Array:
    """The network's integer label at t: the nearest label round(N (1 - t)), clipped (int32)."""
    n = self.num_labels
    return jnp.clip(jnp.round(n * (1.0 - jnp.asarray(t))), 0, n - 1).astype(jnp.int32)


def _xp(t):
  """numpy for static (Python or numpy) times, jax.numpy for traced ones."""
  return np if isinstance(t, (int, float, np.ndarray, np.floating)) else jnp


def vp_schedule(schedule: Schedule) -> VPSchedule:
  """The continuous form of a discrete schedule (label 0 noisiest). ᾱ is floored at 1e-30 so a
  cosine schedule's ᾱ_0 ≈ 0 keeps a finite λ."""
  alphas = np.asarray(schedule.alphas, np.float64)
  n = alphas.shape[0]
  if n < 2 or not np.all(np.diff(alphas) > 0) or not (alphas[-1] < 1):
    raise ValueError("diffusion.schedule: the ODE samplers need ᾱ strictly increasing with the "
                     "label and below 1 (a DDPM schedule, diffusion.kind='ddpm')")
  t_knots = (n - np.arange(n)[::-1]) / n          # labels N-1 .. 0 -> 1/N .. 1
  log_alpha = 0.5 * np.log(np.maximum(alphas[::-1], 1e-30))
  return VPSchedule(t_knots, log_alpha)


def network_model(denoise_fn: Callable[..., jax.Array], vp: VPSchedule, noise_model: NoiseModel,
                  target: str = "white", prediction: str = "eps") -> Model:
  """model(params, x, t, cond, cond_mask) -> (x̂0, ẑ) around the sampler's network
  `denoise_fn(params, x, labels [B] int32, cond, None, cond_mask=...)`: the network sees the
  nearest label (VPSchedule.label), its output is read as an ε (white or correlated target), v or
  x0 prediction at the state's continuous ᾱ(t) (parametrisation.clean_and_noise), so every
  solver works for eps, v and x0 models and under any Σ."""
  check_prediction(prediction, "ddpm", target)

  def model(params: Any, x: jax.Array, t, cond, cond_mask=None):
    labels = jnp.full((x.shape[0],), vp.label(t), jnp.int32)
    output = denoise_fn(params, x, labels, cond, None, cond_mask=cond_mask)
    if prediction == "eps":
      output = correlated_estimate(noise_model, target, output)
    x0, z = clean_and_noise(prediction, output, x, vp.alpha_bar(t))
    return x0.astype(x.dtype), z.astype(x.dtype)

  return model
