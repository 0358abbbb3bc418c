"""One solve function around `diffrax.diffeqsolve`, configured by `OdeSettings`.

The vector field is `field_fn(t, y, (params, batch_args))`: parameters and per-sample data reach
it through diffrax's `args`, never a closure, so either adjoint can differentiate them. The state
`y` is any pytree whose leaves carry a leading batch axis; the field always sees that axis (of
size B in "joint" mode, 1 in "vmap" mode), so a network written for batches works in both.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from mcvd_jax.errors import ProjectError
from mcvd_jax.ode.settings import OdeSettings, check_settings

SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "bosh3": diffrax.Bosh3,
           "heun": diffrax.Heun, "euler": diffrax.Euler}
# Field evaluations per step and at the start. The FSAL methods (first stage = last stage of the
# previous step) evaluate the field once at t0 and then stages - 1 times per step, accepted or
# rejected. (diffrax 0.7.2 makes no extra evaluations to pick the first step when dt0 is None:
# it starts with a step of 0.01.) tests/test_ode.py counts the real evaluations against these.
EVALS_PER_STEP = {"tsit5": 6, "dopri5": 6, "bosh3": 3, "heun": 2, "euler": 1}
INITIAL_EVALS = {"tsit5": 1, "dopri5": 1, "bosh3": 1, "heun": 0, "euler": 0}

FieldFn = Callable[[jax.Array, Any, Any], Any]


class OdeMaxStepsError(RuntimeError, ProjectError):
  """A solve needed more than `max_steps` steps."""


class OdeSolveError(RuntimeError, ProjectError):
  """A solve failed for another reason (non-finite values, a step size that underflowed)."""


class Solution(NamedTuple):
  """ys: the state at t1 (the structure and shapes of y0), or with save_ts of T times, each leaf
  with a leading time axis: [T, B, ...]. num_evals: field evaluations, a scalar in "joint" mode,
  [B] in "vmap" mode (each sample's own; the vmapped loop runs as long as its slowest sample).
  stats: diffrax's counts (num_steps, num_accepted_steps, num_rejected_steps), shaped alike."""

  ys: Any
  num_evals: jax.Array
  stats: dict[str, jax.Array]


def max_steps_message(settings: OdeSettings) -> str:
  return (f"the ODE solve needed more than {settings.section}.max_steps={settings.max_steps} "
          f"steps: raise {settings.section}.max_steps, loosen {settings.section}.rtol/atol, or "
          "check the vector field for blow-up")


def state_norm(error_mask: Any = None) -> Callable[[Any], jax.Array]:
  """The error norm of the step-size controller: the largest RMS over the state's leaves (the
  norm torchdiffeq uses for tuple states), counting only leaves whose flag in `error_mask` (a
  pytree of bools with y0's structure) is True; None counts every leaf. Leaving a leaf out
  replaces the references' 1e20 tolerances on the regulariser states."""
  flags = None if error_mask is None else tuple(bool(f) for f in jax.tree.leaves(error_mask))
  return _norm_for(flags)


def _rms(x: jax.Array) -> jax.Array:
  """Root mean square with a zero (not NaN) gradient at 0: the adaptive solve is differentiated
  through its step-size control, where the error can be exactly 0."""
  sq = jnp.mean(jnp.square(x))
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


# Cached so that equal masks give the same function: diffrax's jit keys on it, and a fresh
# closure per call would recompile every eager solve.
@functools.lru_cache(maxsize=None)
def _norm_for(flags: tuple[bool, ...] | None) -> Callable[[Any], jax.Array]:
  def norm(y: Any) -> jax.Array:
    leaves = jax.tree.leaves(y)
    keep = flags if flags is not None else (True,) * len(leaves)
    rms = [_rms(leaf) for leaf, k in zip(leaves, keep) if k and leaf.size]
    return functools.reduce(jnp.maximum, rms)
  return norm


@functools.lru_cache(maxsize=None)
def _adjoint_norm(forward_norm: Callable[[Any], jax.Array]) -> Callable[[Any], jax.Array]:
  """Backward-pass norm of the continuous adjoint: the state and its adjoint, not the
  parameters' adjoint (the seminorm of Kidger, Chen & Lyons 2021; torchdiffeq's
  adjoint_options=dict(norm="seminorm")): as accurate, far fewer steps for large networks."""
  def norm(augmented: tuple[Any, Any, Any, Any]) -> jax.Array:
    y, a_y, _, _ = augmented
    return jnp.maximum(forward_norm(y), forward_norm(a_y))
  return norm


def _step_control(settings: OdeSettings, t0, t1, norm):
  """(stepsize_controller, dt0 with the sign of t1 - t0)."""
  direction = jnp.sign(jnp.asarray(t1) - jnp.asarray(t0))
  if settings.adaptive:
    controller = diffrax.PIDController(rtol=settings.rtol, atol=settings.atol, norm=norm)
    dt0 = None if settings.dt0 is None else direction * settings.dt0
    return controller, dt0
  if settings.num_steps is not None:
    return diffrax.ConstantStepSize(), (jnp.asarray(t1) - jnp.asarray(t0)) / settings.num_steps
  return diffrax.ConstantStepSize(), direction * settings.dt0


def _adjoint(settings: OdeSettings, norm):
  if settings.adjoint == "recursive_checkpoint":
    return diffrax.RecursiveCheckpointAdjoint()
  backward = (diffrax.PIDController(rtol=settings.rtol, atol=settings.atol,
                                    norm=_adjoint_norm(norm))
              if settings.adaptive else diffrax.ConstantStepSize())
  # The backward solve cannot report through our check below, so it raises diffrax's own
  # error ("maximum number of solver steps was reached") if it needs more than max_steps.
  return diffrax.BacksolveAdjoint(stepsize_controller=backward, max_steps=settings.max_steps,
                                  throw=True)


def _solve_batch(field_fn, y0, t0, t1, args, settings, save_ts, norm):
  """One diffeqsolve of the state y0; returns (ys, hit_max_steps, failed, stats)."""
  controller, dt0 = _step_control(settings, t0, t1, norm)
  saveat = diffrax.SaveAt(ts=save_ts) if save_ts is not None else diffrax.SaveAt(t1=True)
  sol = diffrax.diffeqsolve(
      diffrax.ODETerm(field_fn), SOLVERS[settings.solver](), t0, t1, dt0, y0, args=args,
      saveat=saveat, stepsize_controller=controller, adjoint=_adjoint(settings, norm),
      max_steps=settings.max_steps, throw=False)
  ys = sol.ys if save_ts is not None else jax.tree.map(lambda a: a[0], sol.ys)
  stats = {k: sol.stats[k] for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")}
  return (ys, sol.result == diffrax.RESULTS.max_steps_reached,
          sol.result != diffrax.RESULTS.successful, stats)


def _check_result(ys, hit_max, failed, settings: OdeSettings):
  """Raise on a failed solve: a Python error when called eagerly; when traced (under jit),
  equinox's error_if, which makes the compiled computation raise a RuntimeError
  (jax.errors.JaxRuntimeError) carrying the same message."""
  other = (f"the ODE solve failed before {settings.section}.max_steps (non-finite values or a "
           f"step size that underflowed): check the vector field for non-finite values, or "
           "solve in float64")
  try:
    hit, bad = bool(hit_max), bool(failed)
  except jax.errors.ConcretizationTypeError:
    ys = eqx.error_if(ys, hit_max, max_steps_message(settings))
    return eqx.error_if(ys, failed & ~hit_max, other)
  if hit:
    raise OdeMaxStepsError(max_steps_message(settings))
  if bad:
    raise OdeSolveError(other)
  return ys


def solve(field_fn: FieldFn, y0: Any, t0: float, t1: float, params: Any,
          settings: OdeSettings, *, save_ts: jax.Array | None = None, batch_args: Any = None,
          error_mask: Any = None) -> Solution:
  """Solves dy/dt = field_fn(t, y, (params, batch_args)) from t0 to t1 (t1 < t0 runs backwards).

  y0: a pytree of arrays [B, ...] (one batch axis on every leaf). params: broadcast to every
  sample (the network's weights). batch_args: a pytree of per-sample arrays [B, ...] (probes,
  conditioning), sliced with y0 in "vmap" mode. save_ts: [T] times to return, within [t0, t1]
  (dense interpolation, not forced steps); None returns t1 only. error_mask: a pytree of bools
  with y0's structure; False leaves are left out of adaptive error control.

  A solve needing more than settings.max_steps steps raises OdeMaxStepsError (eagerly) or a
  RuntimeError from the compiled computation (under jit), both naming `<section>.max_steps`.
  """
  check_settings(settings)
  if error_mask is not None and jax.tree.structure(error_mask) != jax.tree.structure(y0):
    raise ValueError(f"error_mask {jax.tree.structure(error_mask)} must have the structure of "
                     f"y0 {jax.tree.structure(y0)}, with a bool per leaf")
  if error_mask is not None and not any(jax.tree.leaves(error_mask)):
    raise ValueError("error_mask leaves every state out of error control; keep at least one")
  norm = state_norm(error_mask)
  if save_ts is not None:
    save_ts = jnp.asarray(save_ts)
  if settings.batch_mode == "joint":
    ys, hit_max, failed, stats = _solve_batch(field_fn, y0, t0, t1, (params, batch_args),
                                              settings, save_ts, norm)
  else:
    def one(y, extra):  # a sample keeps a batch axis of 1 so the field sees [1, ...]
      expand = lambda tree: jax.tree.map(lambda a: a[None], tree)
      return _solve_batch(field_fn, expand(y), t0, t1, (params, expand(extra)), settings,
                          save_ts, norm)
    ys, hit_max, failed, stats = jax.vmap(one)(y0, batch_args)
    # [B, (T,) 1, ...] -> [(T,) B, ...], as in joint mode
    time_axis = save_ts is not None
    ys = jax.tree.map(lambda a: jnp.moveaxis(a[:, :, 0], 0, 1) if time_axis else a[:, 0], ys)
    hit_max, failed = jnp.any(hit_max), jnp.any(failed)
  ys = _check_result(ys, hit_max, failed, settings)
  num_evals = (EVALS_PER_STEP[settings.solver] * stats["num_steps"]
               + INITIAL_EVALS[settings.solver])
  return Solution(ys=ys, num_evals=num_evals, stats=stats)
