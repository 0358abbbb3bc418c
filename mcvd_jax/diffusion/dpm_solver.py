"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) at a given number of network
evaluations (`sampling.kind="dpm_solver"`, `sampling.nfe`), as `jax.lax.scan` loops.

They solve the probability-flow ODE of pf_ode.py in λ = log(α/σ), where its linear part is exact:

    x_t = (α_t/α_s) x_s - α_t ∫ e^{-λ} ẑ dλ        (noise prediction ẑ)
    x_t = (σ_t/σ_s) x_s + σ_t ∫ e^{λ} x̂0 dλ        (data prediction x̂0)

and approximate the integral by a Taylor expansion of ẑ or x̂0 in λ, with h = λ_t - λ_s:
  multistep   DPM-Solver++(2M), data prediction: x_t = (σ_t/σ_s) x_s - α_t (e^{-h} - 1) D with
              D = x̂0_s + (x̂0_s - x̂0_prev) / (2r), r = h_prev / h (D = x̂0_s at the first step,
              or at every step with dpm_order=1, which is DDIM). One evaluation per step; global
              order 2. `thresholding` clips x̂0 to [-1, 1] (a static threshold).
  singlestep  DPM-Solver-2 / -3, noise prediction, intermediate points at r = ½ (order 2) or
              ⅓, ⅔ (order 3); global order 2 / 3. NFE K is spent as the paper's "fast" variant:
              order 2: ⌈K/2⌉ steps, the last of order 1 when K is odd; order 3: ⌊K/3⌋ + 1 steps
              mixing orders 3, 2, 1 so that they use exactly K evaluations.
The steps are uniform in λ from t = 1 to t = 1/N (DPM-Solver's "logSNR" spacing) on the discrete
schedule's continuous form (continuous.py; the network at the nearest label). Under a
non-isotropic Σ nothing changes but ẑ = Σ^{1/2} ε_θ: the linear term stays scalar (its NI-DDIM is
exactly DPM-Solver-1 with this ẑ). With `denoise` the result is x̂0 at t = 1/N, one more
evaluation. `lower_order_final` of the reference code is not used: every step keeps its order.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.diffusion.continuous import Model, VPSchedule
from mcvd_jax.diffusion.samplers import Sampler, check_sampler_settings

# Intermediate points of a single step, as fractions r of h.
_STAGES = {1: (), 2: (0.5,), 3: (1 / 3, 2 / 3)}


def lambda_grid(vp: VPSchedule, steps: int) -> np.ndarray:
  """[steps + 1] float64 times from t = 1 to t = 1/N, uniform in λ."""
  lam = np.linspace(vp.lam(vp.t_start), vp.lam(vp.t_end), steps + 1)
  t = vp.t_of_lambda(lam)
  t[0], t[-1] = vp.t_start, vp.t_end  # exact ends, whatever the rounding of the inverse
  return t


def singlestep_orders(nfe: int, order: int) -> list[int]:
  """The order of each step of singlestep DPM-Solver-`order` spending exactly nfe evaluations
  (the paper's "fast" variant for order 3, ⌈K/2⌉ steps for order 2)."""
  if order == 1:
    return [1] * nfe
  if order == 2:
    return [2] * (nfe // 2) + [1] * (nfe % 2)
  k = nfe // 3 + 1
  if nfe % 3 == 0:
    return [3] * (k - 2) + [2, 1]
  return [3] * (k - 1) + ([1] if nfe % 3 == 1 else [2])


def _label_np(vp: VPSchedule, t: np.ndarray) -> np.ndarray:
  n = vp.num_labels
  return np.clip(np.round(n * (1.0 - np.asarray(t))), 0, n - 1).astype(np.int64)


def _f32(a) -> jax.Array:
  return jnp.asarray(np.asarray(a, np.float64), jnp.float32)


def make_multistep(model: Model, vp: VPSchedule, nfe: int, order: int = 2,
                   thresholding: bool = False):
  """solve(params, x [B, ...], cond, cond_mask) -> x at t = 1/N after `nfe` DPM-Solver++(2M)
  steps (order 1: DDIM in data-prediction form), and the [nfe] evaluation times."""
  t = lambda_grid(vp, nfe)
  lam, alpha, sigma = vp.lam(t), np.exp(vp.log_alpha(t)), vp.sigma(t)
  h = np.diff(lam)                                    # [nfe]
  r = np.concatenate([[1.0], h[:-1] / h[1:]])        # r[0] unused (first step is order 1)
  # Per step i (t_i -> t_{i+1}): x <- ratio x - coef D.
  ratio, coef = sigma[1:] / sigma[:-1], alpha[1:] * np.expm1(-h)
  second = np.arange(nfe) > 0 if order == 2 else np.zeros(nfe, bool)
  consts = tuple(map(_f32, (t[:-1], ratio, coef, 0.5 / r))) + (jnp.asarray(second),)

  def solve(params, x, cond, cond_mask):
    def body(carry, c):
      x, x0_prev = carry
      t_i, ratio_i, coef_i, half_over_r, second_i = c
      x0, _ = model(params, x, t_i, cond, cond_mask)
      if thresholding:
        x0 = jnp.clip(x0, -1, 1)
      d = jnp.where(second_i, x0 + half_over_r * (x0 - x0_prev), x0)
      return ((ratio_i * x - coef_i * d).astype(x.dtype), x0), None

    (x, _), _ = jax.lax.scan(body, (x, jnp.zeros_like(x)), consts)
    return x

  return solve, t[:-1]


def _singlestep_consts(vp: VPSchedule, t_s: np.ndarray, t_t: np.ndarray, order: int):
  """Per-step coefficients [steps, ...] of DPM-Solver-`order` from t_s to t_t, and the
  evaluation times [steps, order] (t_s, then the intermediate points)."""
  lam_s, lam_t = vp.lam(t_s), vp.lam(t_t)
  h = lam_t - lam_s
  rs = _STAGES[order]
  t_mid = [vp.t_of_lambda(lam_s + r * h) for r in rs]
  a = lambda tt: np.exp(vp.log_alpha(tt))  # noqa: E731
  consts = {"t_s": t_s, "ratio": a(t_t) / a(t_s), "phi1": vp.sigma(t_t) * np.expm1(h)}
  if order >= 2:
    r1 = rs[0]
    consts |= {"t_1": t_mid[0], "ratio_1": a(t_mid[0]) / a(t_s),
               "phi_11": vp.sigma(t_mid[0]) * np.expm1(r1 * h)}
  if order == 2:
    consts |= {"corr": vp.sigma(t_t) * np.expm1(h) / (2 * r1)}
  if order == 3:
    r2 = rs[1]
    consts |= {"t_2": t_mid[1], "ratio_2": a(t_mid[1]) / a(t_s),
               "phi_12": vp.sigma(t_mid[1]) * np.expm1(r2 * h),
               "phi_22": (r2 / r1) * vp.sigma(t_mid[1]) * (np.expm1(r2 * h) / (r2 * h) - 1),
               "corr": vp.sigma(t_t) * (np.expm1(h) / h - 1) / r2}
  times = np.stack([t_s] + t_mid, axis=1)
  return {k: _f32(v) for k, v in consts.items()}, times


def _singlestep_segment(model: Model, order: int, consts):
  """solve(params, x, cond, cond_mask) running one scan over steps of the same order."""

  def step(params, x, c, cond, cond_mask):
    ev = lambda y, tt: model(params, y, tt, cond, cond_mask)[1]  # noqa: E731
    z_s = ev(x, c["t_s"])
    if order == 1:  # DPM-Solver-1 = DDIM
      return c["ratio"] * x - c["phi1"] * z_s
    x1 = c["ratio_1"] * x - c["phi_11"] * z_s
    z_1 = ev(x1, c["t_1"])
    if order == 2:
      return c["ratio"] * x - c["phi1"] * z_s - c["corr"] * (z_1 - z_s)
    x2 = c["ratio_2"] * x - c["phi_12"] * z_s - c["phi_22"] * (z_1 - z_s)
    z_2 = ev(x2, c["t_2"])
    return c["ratio"] * x - c["phi1"] * z_s - c["corr"] * (z_2 - z_s)

  def solve(params, x, cond, cond_mask):
    body = lambda x, c: (step(params, x, c, cond, cond_mask).astype(x.dtype), None)  # noqa: E731
    return jax.lax.scan(body, x, consts)[0]

  return solve


def make_singlestep(model: Model, vp: VPSchedule, nfe: int, order: int):
  """solve(params, x, cond, cond_mask) -> x at t = 1/N by singlestep DPM-Solver-`order` with
  exactly nfe evaluations (one scan per run of equal orders), and the evaluation times."""
  orders = singlestep_orders(nfe, order)
  t = lambda_grid(vp, len(orders))
  segments, times, first = [], [], 0
  for o, run in itertools.groupby(orders):
    n = len(list(run))
    consts, seg_times = _singlestep_consts(vp, t[first:first + n], t[first + 1:first + n + 1], o)
    segments.append(_singlestep_segment(model, o, consts))
    times.append(seg_times.reshape(-1))
    first += n

  def solve(params, x, cond, cond_mask):
    for segment in segments:  # at most three: a Python loop over orders, not over steps
      x = segment(params, x, cond, cond_mask)
    return x

  return solve, np.concatenate(times)


def make_dpm_sampler(model: Model, vp: VPSchedule, *, nfe: int, method: str = "multistep",
                     order: int = 2, thresholding: bool = False, denoise: bool = True,
                     clip: bool = True) -> Sampler:
  """The `Sampler` of DPM-Solver: sample(params, x_init, cond, key=None, noises=None,
  cond_mask=None) -> x [B, ...] from x_init = Σ^{1/2} z (deterministic: key and noises unused).
  nfe: network evaluations of the solver (plus one with denoise, which returns x̂0 at t = 1/N,
  clipped when clip); method "multistep" (DPM-Solver++(2M), order 1 or 2, thresholding) or
  "singlestep" (DPM-Solver-1/2/3). num_evals counts every evaluation of a call; labels are the
  network's labels at the solver's evaluations, in order."""
  check_sampler_settings("dpm_solver", nfe=nfe, dpm_method=method, dpm_order=order,
                         thresholding=thresholding)
  if method == "multistep":
    solve, eval_times = make_multistep(model, vp, nfe, order, thresholding)
  else:
    solve, eval_times = make_singlestep(model, vp, nfe, order)

  def sample(params, x_init, cond, key=None, noises=None, cond_mask=None):
    del key, noises
    x = solve(params, x_init, cond, cond_mask)
    if not denoise:
      return x
    x0, _ = model(params, x, vp.t_end, cond, cond_mask)
    return jnp.clip(x0, -1, 1) if clip else x0

  def step(params, x, i, cond, key=None, noises=None, cond_mask=None):
    raise ValueError("sampling.kind='dpm_solver' has no per-step update (its multistep form "
                     "carries the previous estimate): call sample")

  return Sampler(sample, step, _label_np(vp, eval_times),
                 vp.num_labels - 1 if denoise else None, nfe + int(denoise))
