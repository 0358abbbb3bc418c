"""Probability-flow ODE sampler (`sampling.kind="ode"`) of a VP diffusion model, isotropic or not.

With the forward SDE dx = -½β(t) x dt + √β(t) Σ^{1/2} dw (Σ = I: the isotropic case) the marginals
p_t are those of x_t = α(t) x0 + σ(t) Σ^{1/2} ε, and the deterministic flow

    dx/dt = -½ β(t) [x + Σ ∇log p_t(x)] = -½ β(t) [x - ẑ(x, t) / σ(t)]

(Song et al. 2021, general-G form with G = √β Σ^{1/2}) carries p_1 to p_t at every t. ẑ is the
estimate of the correlated noise Σ^{1/2} ε, ẑ = -σ Σ ∇log p_t: Σ^{1/2} ε_θ for a white-target
ε network, its output itself for the correlated target, derived from x̂0 for v and x0 networks
(continuous.network_model). The linear term stays scalar, so Σ enters only through ẑ and the
prior x_1 = Σ^{1/2} z (what the rollout and the image sampler draw).

Time is the discrete schedule's exact continuous form (continuous.py: piecewise-linear log ᾱ,
the network at the nearest label); the solve runs from t = 1 (label 0) to t = 1/N (label N-1)
through ode.solve, adaptive or with fixed steps as `sampling.ode` says (an OdeSettings section).
With `denoise` the result is the clean estimate x̂0 at t = 1/N (one more network evaluation), as
the DDPM/DDIM samplers' final step.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.diffusion.continuous import Model, VPSchedule
from mcvd_jax.diffusion.samplers import Sampler
from mcvd_jax.ode import OdeSettings, Solution, check_settings, solve
from mcvd_jax.ode.solve import EVALS_PER_STEP, INITIAL_EVALS


def pf_ode_field(model: Model, vp: VPSchedule) -> Callable:
  """field(t, x [B, ...], (params, (cond, cond_mask))) -> dx/dt [B, ...], the probability-flow
  drift -½β(t)(x - ẑ/σ(t)), in the form ode.solve and ode.make_cnf_dynamics call."""

  def field(t, x, args):
    params, (cond, cond_mask) = args
    _, z = model(params, x, t, cond, cond_mask)
    return (-0.5 * vp.beta(t) * (x - z / vp.sigma(t))).astype(x.dtype)

  return field


def solve_pf_ode(model: Model, vp: VPSchedule, x: jax.Array, params: Any, settings: OdeSettings,
                 cond: Any = None, cond_mask: jax.Array | None = None, *,
                 t0: float | None = None, t1: float | None = None) -> Solution:
  """Integrates the PF-ODE from t0 (default 1, the prior) to t1 (default 1/N, the data) starting
  at x [B, ...]; returns ode.Solution (ys [B, ...], num_evals the network evaluations)."""
  t0 = vp.t_start if t0 is None else t0
  t1 = vp.t_end if t1 is None else t1
  return solve(pf_ode_field(model, vp), x, t0, t1, params, settings,
               batch_args=(cond, cond_mask))


def fixed_step_evals(settings: OdeSettings, t0: float, t1: float) -> int | None:
  """Field evaluations of a fixed-step solve over [t0, t1]; None when the steps are adaptive."""
  if settings.adaptive:
    return None
  steps = settings.num_steps or int(np.ceil(abs(t1 - t0) / settings.dt0 - 1e-9))
  return EVALS_PER_STEP[settings.solver] * steps + INITIAL_EVALS[settings.solver]


class EvalTally:
  """Host-side record of the network evaluations of adaptive solves, fed from compiled code.

  An adaptive solve's count depends on its input, so a report can only state what the solves
  used. The sampler hands each call's count (denoising step included; one for a joint solve of
  the batch, one per sample in vmap mode) to `add` through jax.debug.callback, which runs once
  per vmapped element and per device shard; `take` waits for pending callbacks and returns (and
  clears) the counts recorded so far.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._counts: list[int] = []

  def add(self, evals: Any) -> None:
    with self._lock:
      self._counts.extend(int(n) for n in np.asarray(evals).reshape(-1))

  def take(self) -> np.ndarray:
    """int64 [N]: the counts of the N solves since the last take, in no particular order."""
    jax.effects_barrier()
    with self._lock:
      counts, self._counts = self._counts, []
    return np.asarray(counts, np.int64)


def make_ode_sampler(model: Model, vp: VPSchedule, settings: OdeSettings, *, denoise: bool = True,
                     clip: bool = True) -> Sampler:
  """The `Sampler` of the PF-ODE: sample(params, x_init, cond, key=None, noises=None,
  cond_mask=None) -> x [B, H, W, T*C] from x_init = Σ^{1/2} z (key and noises unused: the flow
  is deterministic). denoise: return x̂0 at t = 1/N (clipped to [-1, 1] when clip). num_evals is
  the network evaluations per call for fixed steps, None for adaptive ones (they depend on the
  input: each call records its count in the sampler's `tally`, an EvalTally). labels: the labels
  at the two ends of the solve."""
  check_settings(settings)
  evals = fixed_step_evals(settings, vp.t_start, vp.t_end)
  num_evals = None if evals is None else evals + int(denoise)
  tally = EvalTally() if num_evals is None else None  # adaptive: counted as it runs

  def finish(params, x, cond, cond_mask):
    x0, _ = model(params, x, vp.t_end, cond, cond_mask)
    return jnp.clip(x0, -1, 1) if clip else x0

  def sample(params, x_init, cond, key=None, noises=None, cond_mask=None):
    del key, noises
    sol = solve_pf_ode(model, vp, x_init, params, settings, cond, cond_mask)
    if tally is not None:
      jax.debug.callback(tally.add, sol.num_evals + int(denoise))
    return finish(params, sol.ys, cond, cond_mask) if denoise else sol.ys

  def step(params, x, i, cond, key=None, noises=None, cond_mask=None):
    raise ValueError("sampling.kind='ode' integrates in one adaptive solve and has no per-step "
                     "update: call sample, or use sampling.kind='ddim' for a stepwise sampler")

  labels = np.asarray([0, vp.num_labels - 1])
  return Sampler(sample, step, labels, vp.num_labels - 1 if denoise else None, num_evals,
                 tally)
