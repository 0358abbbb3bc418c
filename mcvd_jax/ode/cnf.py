"""Continuous normalizing flows: the instantaneous change of variables and the RNODE regularisers.

A flow dz/dt = f(t, z) carries data x = z(t0) to z(t1). Along it d log p(z(t))/dt = -div f, so

    log p(x) = log N(z(t1); 0, I) + ∫_{t0}^{t1} div f(t, z(t)) dt        (FFJORD, Grathwohl 2019)

The divergence is exact (D Jacobian-vector products: small dimensions, evaluation) or Hutchinson's
estimate εᵀ(∂f/∂z)ε with one probe ε per sample drawn once per solve (FFJORD/RNODE), which is
unbiased for E[εεᵀ] = I. The RNODE regularisers (Finlay 2020) ride along as extra states, in the
references' per-dimension form (voletiv/mrcnf, cfinlay/ffjord-rnode):

    kinetic            ∫ ½ mean_d f(t, z)²  dt
    jacobian_frobenius ∫ mean_d (εᵀ ∂f/∂z)²  dt   (reusing the Hutchinson vector-Jacobian product;
                       with the exact divergence, the exact ||∂f/∂z||_F² / D)

The field must not mix samples (no batch statistics): the divergence of sample b is taken from
the Jacobian of the whole batch's field, which is then block diagonal.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mcvd_jax.ode.settings import OdeSettings
from mcvd_jax.ode.solve import FieldFn, solve

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("gaussian", "rademacher")
REGULARISERS = ("kinetic", "jacobian_frobenius")


class CnfState(NamedTuple):
  """The solved state. z: [B, ...]; log_det: [B], ∫ div f dt so far; regularisers: [B, R], the
  integral of each requested regulariser in the order asked for (R may be 0: one array rather
  than a tuple, because diffrax cannot carry an empty tuple in its state)."""

  z: jax.Array
  log_det: jax.Array
  regularisers: jax.Array


class CnfDynamics(NamedTuple):
  """What make_cnf_dynamics builds: the augmented vector field for `solve`, called as
  vector_field(t, CnfState, (params, (probe, cond))), and the choices it closes over."""

  vector_field: Callable[[jax.Array, CnfState, Any], CnfState]
  divergence: str
  probe: str
  regularisers: tuple[str, ...]


class CnfOutput(NamedTuple):
  """log_density: [B] log p(x) under a standard normal base at t1 (nats); z: [B, ...] the
  flowed x; log_det: [B] ∫ div f dt (add another base's log-density to it for another base);
  regularisers: name -> [B] integral; num_evals: as Solution.num_evals."""

  log_density: jax.Array
  z: jax.Array
  log_det: jax.Array
  regularisers: dict[str, jax.Array]
  num_evals: jax.Array


def _per_sample_sum(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1).sum(axis=1)


def _per_sample_mean(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1).mean(axis=1)


def draw_probe(key: jax.Array, shape: tuple[int, ...], kind: str = "gaussian",
               dtype: Any = jnp.float32) -> jax.Array:
  """Hutchinson probe ε of `shape` ([B, ...], one per sample) with E[εεᵀ] = I: standard normal
  ("gaussian") or ±1 with equal odds ("rademacher", lower variance)."""
  if kind == "gaussian":
    return jax.random.normal(key, shape, dtype)
  if kind == "rademacher":
    return jax.random.rademacher(key, shape, dtype)
  raise ValueError(f"probe={kind!r} is not one of {PROBES}")


def exact_divergence(f: Callable[[jax.Array], jax.Array], z: jax.Array):
  """f: z [B, ...] -> dz/dt [B, ...], samples independent. Returns (dz [B, ...], div [B] the
  trace of each sample's Jacobian, frobenius_sq [B] its squared Frobenius norm), from one
  Jacobian-vector product per dimension D of a sample (memory D·B·D: small D only)."""
  dims = math.prod(z.shape[1:])
  dz, jvp = jax.linearize(f, z)
  # Basis vector k for every sample at once: column k of every sample's Jacobian.
  basis = jnp.broadcast_to(jnp.eye(dims, dtype=z.dtype)[:, None, :], (dims, z.shape[0], dims))
  columns = jax.vmap(jvp)(basis.reshape(dims, *z.shape)).reshape(dims, z.shape[0], dims)
  div = jnp.einsum("kbk->b", columns)
  frobenius_sq = jnp.sum(columns**2, axis=(0, 2))
  return dz, div, frobenius_sq


def hutchinson_divergence(f: Callable[[jax.Array], jax.Array], z: jax.Array, probe: jax.Array):
  """f as in exact_divergence; probe ε: [B, ...]. Returns (dz [B, ...], div [B] the estimate
  εᵀJε, probe_jac_sq [B] = ||εᵀJ||², an unbiased estimate of ||J||_F²), from one
  vector-Jacobian product."""
  dz, vjp = jax.vjp(f, z)
  (probe_jac,) = vjp(probe)
  return dz, _per_sample_sum(probe_jac * probe), _per_sample_sum(probe_jac**2)


def make_cnf_dynamics(field_fn: FieldFn, *, divergence: str = "hutchinson",
                      probe: str = "gaussian", regularisers: tuple[str, ...] = ()) -> CnfDynamics:
  """field_fn(t, z [B, ...], (params, cond)) -> dz/dt [B, ...]. divergence: "exact" |
  "hutchinson"; probe: "gaussian" | "rademacher" (Hutchinson only); regularisers: any of
  "kinetic", "jacobian_frobenius"."""
  if divergence not in DIVERGENCES:
    raise ValueError(f"divergence={divergence!r} is not one of {DIVERGENCES}")
  if probe not in PROBES:
    raise ValueError(f"probe={probe!r} is not one of {PROBES}")
  regularisers = tuple(regularisers)
  unknown = [r for r in regularisers if r not in REGULARISERS]
  if unknown or len(set(regularisers)) != len(regularisers):
    raise ValueError(f"regularisers={regularisers!r} must be distinct names from {REGULARISERS}")

  def vector_field(t: jax.Array, state: CnfState, args: Any) -> CnfState:
    params, (eps, cond) = args
    f = lambda z: field_fn(t, z, (params, cond))
    if divergence == "exact":
      dz, div, jac_sq = exact_divergence(f, state.z)
    else:
      dz, div, jac_sq = hutchinson_divergence(f, state.z, eps)
    dims = math.prod(state.z.shape[1:])
    rates = {"kinetic": 0.5 * _per_sample_mean(dz**2), "jacobian_frobenius": jac_sq / dims}
    integrands = [rates[name].astype(state.log_det.dtype) for name in regularisers]
    stacked = (jnp.stack(integrands, axis=-1) if integrands
               else jnp.zeros(state.regularisers.shape, state.log_det.dtype))
    return CnfState(dz, div, stacked)

  return CnfDynamics(vector_field, divergence, probe, regularisers)


def cnf_error_mask(dynamics: CnfDynamics) -> CnfState:
  """z and log-density under error control, the regulariser states not (as FFJORD/RNODE/MRCNF,
  whose 1e20 tolerances leave them out)."""
  return CnfState(True, True, False)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  """z: [B, ...] -> [B] log N(z; 0, I), summed over each sample's dimensions."""
  return _per_sample_sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi))


def cnf_log_density(dynamics: CnfDynamics, x: jax.Array, params: Any, settings: OdeSettings, *,
                    key: jax.Array | None = None, cond: Any = None, t0: float = 0.0,
                    t1: float = 1.0) -> CnfOutput:
  """log p(x) of a CNF whose base N(0, I) sits at t1; x: [B, ...] data at t0.

  key: draws the Hutchinson probe, once for the whole solve (required for "hutchinson").
  cond: per-sample conditioning [B, ...] handed to the field as (params, cond).
  The solve leaves the regulariser states out of error control (cnf_error_mask).
  """
  if dynamics.divergence == "hutchinson":
    if key is None:
      raise ValueError("cnf_log_density with divergence='hutchinson' needs a key for the probe")
    eps = draw_probe(key, x.shape, dynamics.probe, x.dtype)
  else:
    eps = None
  zeros = jnp.zeros(x.shape[:1], x.dtype)
  state0 = CnfState(x, zeros, jnp.zeros(x.shape[:1] + (len(dynamics.regularisers),), x.dtype))
  sol = solve(dynamics.vector_field, state0, t0, t1, params, settings, batch_args=(eps, cond),
              error_mask=cnf_error_mask(dynamics))
  z, log_det, integrals = sol.ys
  return CnfOutput(log_density=standard_normal_log_prob(z) + log_det, z=z, log_det=log_det,
                   regularisers={name: integrals[:, i]
                                 for i, name in enumerate(dynamics.regularisers)},
                   num_evals=sol.num_evals)
