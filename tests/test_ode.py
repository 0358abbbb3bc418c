"""mcvd_jax.ode: the solve function, CNF log-densities (exact / Hutchinson), RNODE regularisers.

Every check compares with an independent answer: scipy's matrix exponential and Gaussian
log-density, closed forms of the Hutchinson estimator's mean and variance, quadrature of the
regularisers, finite differences (float64) for gradients, and counted field evaluations.
"""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from mcvd_jax.errors import ProjectError
from mcvd_jax.ode import (OdeConfigError, OdeMaxStepsError, OdeSettings, cnf_log_density,
                          draw_probe, exact_divergence, hutchinson_divergence, make_cnf_dynamics,
                          settings_from_config, solve)
from mcvd_jax.ode.solve import EVALS_PER_STEP

# A non-normal, non-symmetric matrix with a large diagonal (so the Gaussian and Rademacher
# variances of the Hutchinson estimator differ a lot) and mild growth over [0, 1].
A = np.array([[-0.8, 0.9, 0.0], [-0.7, 0.4, 0.3], [0.2, -0.5, 0.6]])
X = np.array([[0.7, -1.1, 0.4], [-0.3, 0.5, 1.2]])  # two samples, D = 3


def linear_field(t, y, args):
  """dy/dt = A y for every sample; A = args[0] (the params)."""
  return y @ args[0].T


def expm(a: np.ndarray, t: float) -> np.ndarray:
  return scipy.linalg.expm(np.asarray(a, np.float64) * t)


# --------------------------------------------------------------------------- settings

def test_settings_from_config_reads_configdict_and_mapping():
  s = settings_from_config(ml_collections.ConfigDict(dict(solver="Bosh3", rtol=1e-3, atol=1e-4,
                                                          dt0=0.166667)), "mrcnf.ode")
  assert (s.solver, s.rtol, s.atol, s.dt0, s.section) == ("bosh3", 1e-3, 1e-4, 0.166667,
                                                          "mrcnf.ode")
  assert s.adjoint == "recursive_checkpoint" and s.batch_mode == "joint" and s.max_steps == 4096
  f = settings_from_config({"solver": "euler", "adaptive": False, "num_steps": 8,
                            "adjoint": "backsolve", "batch_mode": "vmap"})
  assert (f.adaptive, f.num_steps, f.adjoint, f.batch_mode) == (False, 8, "backsolve", "vmap")


@pytest.mark.parametrize("values, message", [
    (dict(solver="rk45"), r"ode\.solver='rk45' is not one of 'tsit5', 'dopri5', 'bosh3'"),
    (dict(rtoll=1e-3), r"ode\.rtoll is not an ODE setting; the settings are solver, adaptive"),
    (dict(solver="euler"), r"ode\.solver='euler' has no error estimate.*ode\.adaptive=False"),
    (dict(adaptive=False), r"ode\.num_steps=None with ode\.dt0=None: fixed steps need exactly"),
    (dict(adaptive=False, num_steps=10, max_steps=5),
     r"ode\.max_steps=5 is below ode\.num_steps=10: raise max_steps"),
    (dict(num_steps=10), r"ode\.num_steps=10 applies to fixed steps only"),
    (dict(adjoint="adjoint"), r"ode\.adjoint='adjoint' is not one of 'recursive_checkpoint'"),
    (dict(batch_mode="loop"), r"ode\.batch_mode='loop' is not one of 'joint', 'vmap'"),
    (dict(rtol=0.0), r"ode\.rtol=0\.0 must be > 0"),
    (dict(dt0=-0.1), r"ode\.dt0=-0\.1 must be > 0"),
])
def test_bad_settings_name_the_field_and_what_works(values, message):
  with pytest.raises(OdeConfigError, match=message) as info:
    settings_from_config(values)
  assert isinstance(info.value, ValueError) and isinstance(info.value, ProjectError)


# --------------------------------------------------------------------------- solve

@pytest.mark.parametrize("settings, t0, t1, tol", [
    (OdeSettings(solver="tsit5", rtol=1e-6, atol=1e-6), 0.0, 1.0, 2e-5),
    (OdeSettings(solver="dopri5", rtol=1e-6, atol=1e-6, dt0=0.1), 1.0, 0.0, 2e-5),  # backwards
    (OdeSettings(solver="bosh3", rtol=1e-5, atol=1e-5), 0.0, 1.0, 2e-4),
    (OdeSettings(solver="heun", adaptive=False, num_steps=100), 0.0, 1.0, 2e-4),
    (OdeSettings(solver="euler", adaptive=False, dt0=1 / 400), 0.0, 1.0, 1e-2),
])
def test_linear_field_matches_matrix_exponential_and_counts_evaluations(settings, t0, t1, tol):
  calls = []

  def counted(t, y, args):  # counts the field's real evaluations at run time
    jax.debug.callback(lambda: calls.append(1))
    return linear_field(t, y, args)

  save_ts = np.array([t0 + 0.25 * (t1 - t0), t0 + 0.5 * (t1 - t0), t1], np.float32)
  sol = solve(counted, jnp.asarray(X, jnp.float32), t0, t1, jnp.asarray(A, jnp.float32), settings,
              save_ts=save_ts)
  assert sol.ys.shape == (3, 2, 3)
  jax.effects_barrier()  # every callback has run
  for ys, t in zip(np.asarray(sol.ys), save_ts):
    np.testing.assert_allclose(ys, X @ expm(A, t - t0).T, atol=tol, rtol=tol)
  assert int(sol.num_evals) == len(calls)
  if not settings.adaptive:  # 100 steps, or 1/dt0 = 400 steps
    assert int(sol.stats["num_steps"]) == (settings.num_steps or 400)
    assert len(calls) == EVALS_PER_STEP[settings.solver] * int(sol.stats["num_steps"])


def test_max_steps_overflow_names_the_setting_eagerly_and_under_jit():
  y0, a = jnp.asarray(X, jnp.float32), jnp.asarray(A, jnp.float32)
  fixed = settings_from_config({"solver": "euler", "adaptive": False, "dt0": 0.01,
                                "max_steps": 10}, "video.ode")
  with pytest.raises(OdeMaxStepsError, match=r"more than video\.ode\.max_steps=10 steps: raise "
                     r"video\.ode\.max_steps") as info:
    solve(linear_field, y0, 0.0, 1.0, a, fixed)
  assert isinstance(info.value, ProjectError)
  adaptive = OdeSettings(rtol=1e-8, atol=1e-8, max_steps=3)
  jitted = jax.jit(lambda y: solve(linear_field, y, 0.0, 1.0, a, adaptive).ys)
  with pytest.raises(RuntimeError, match=r"more than ode\.max_steps=3 steps: raise ode\.max_steps"):
    jax.block_until_ready(jitted(y0))
  # Enough steps: no error, and the same settings otherwise.
  ok = solve(linear_field, y0, 0.0, 1.0, a, fixed._replace(max_steps=100))
  assert int(ok.stats["num_steps"]) == 100


def decaying_field(t, y, args):
  """dy/dt = -rate_b y, with each sample's rate [B, 1] in batch_args."""
  _, rates = args
  return -rates * y


def test_joint_batch_shares_steps_and_vmap_gives_each_sample_its_own():
  rates = jnp.array([[0.2], [12.0]])  # one easy sample, one fast one
  y0 = jnp.ones((2, 2))
  ts = jnp.array([0.5, 1.0])
  base = OdeSettings(rtol=1e-5, atol=1e-5)
  joint = solve(decaying_field, y0, 0.0, 1.0, None, base, batch_args=rates, save_ts=ts)
  vmapped = solve(decaying_field, y0, 0.0, 1.0, None, base._replace(batch_mode="vmap"),
                  batch_args=rates, save_ts=ts)
  expected = np.exp(-np.asarray(rates)[None] * np.asarray(ts)[:, None, None]) * np.ones((2, 2, 2))
  for sol in (joint, vmapped):
    assert sol.ys.shape == (2, 2, 2)  # [T, B, D] in both modes
    np.testing.assert_allclose(sol.ys, expected, rtol=1e-4, atol=1e-5)
  assert joint.num_evals.shape == () and vmapped.num_evals.shape == (2,)
  easy, fast = (int(n) for n in vmapped.num_evals)
  assert easy < fast  # per-sample step sizes
  assert int(joint.num_evals) > easy  # the easy sample rides along with the fast one's steps


def wobbly_field(t, state, args):
  """y decays gently; aux oscillates fast with amplitude args[0] (0: aux stays constant)."""
  y, aux = state
  return (-0.5 * y, args[0] * jnp.cos(300.0 * t) * jnp.ones_like(aux))


def test_error_mask_leaves_auxiliary_states_out_of_step_control():
  state = (jnp.ones((2, 3)), jnp.zeros((2,)))
  settings = OdeSettings(rtol=1e-4, atol=1e-4)
  steps = lambda amp, mask: int(solve(wobbly_field, state, 0.0, 1.0, jnp.float32(amp), settings,
                                      error_mask=mask).stats["num_steps"])
  y_alone = steps(0.0, None)  # a constant aux adds no error
  assert steps(50.0, (True, False)) == y_alone
  assert steps(50.0, None) > 3 * y_alone
  with pytest.raises(ValueError, match="error_mask"):
    steps(0.0, (True,))


# --------------------------------------------------------------------------- divergences

def test_hutchinson_matches_exact_divergence_and_its_variance_closed_form():
  a = jnp.asarray(A, jnp.float32)
  n = 200_000
  z = jnp.zeros((n, 3))
  f = lambda z: z @ a.T
  _, div_exact, frob_exact = exact_divergence(f, jnp.asarray(X, jnp.float32))
  np.testing.assert_allclose(div_exact, np.trace(A), rtol=1e-6)
  np.testing.assert_allclose(frob_exact, (A**2).sum(), rtol=1e-6)
  sym = 0.5 * (A + A.T)
  variance = {"gaussian": 2 * (sym**2).sum(),
              "rademacher": 2 * ((sym**2).sum() - (np.diag(A)**2).sum())}
  assert variance["gaussian"] > 3 * variance["rademacher"]  # the test can tell them apart
  for i, kind in enumerate(("gaussian", "rademacher")):
    probe = draw_probe(jax.random.key(i), z.shape, kind)
    _, est, probe_jac_sq = hutchinson_divergence(f, z, probe)
    est, probe_jac_sq = np.asarray(est, np.float64), np.asarray(probe_jac_sq, np.float64)
    # Mean within 5 standard errors of the trace; sample variance within 5% of its closed form
    # (its relative standard error here is about 1%).
    assert abs(est.mean() - np.trace(A)) < 5 * np.sqrt(variance[kind] / n)
    assert est.var() == pytest.approx(variance[kind], rel=0.05)
    assert probe_jac_sq.mean() == pytest.approx((A**2).sum(), rel=0.02)  # E||εᵀA||² = ||A||_F²


def test_exact_divergence_is_per_sample_and_hutchinson_is_unbiased_on_a_nonlinear_field():
  w = jax.random.normal(jax.random.key(1), (4, 4))
  b = jax.random.normal(jax.random.key(2), (4,))
  f = lambda z: jnp.tanh(z @ w.T + b) * z[:, ::-1]
  points = jax.random.normal(jax.random.key(3), (3, 4))
  _, div, frob = exact_divergence(f, points)
  per_sample = [jax.jacfwd(lambda p: f(p[None])[0])(p) for p in points]
  np.testing.assert_allclose(div, [jnp.trace(j) for j in per_sample], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(frob, [jnp.sum(j**2) for j in per_sample], rtol=1e-5)
  n = 100_000
  z = jnp.broadcast_to(points[0], (n, 4))
  _, est, _ = hutchinson_divergence(f, z, draw_probe(jax.random.key(4), z.shape, "gaussian"))
  est = np.asarray(est, np.float64)
  assert abs(est.mean() - float(div[0])) < 5 * est.std() / np.sqrt(n)


# --------------------------------------------------------------------------- CNF

def kinetic_closed_form(a: np.ndarray, x: np.ndarray, t1: float) -> np.ndarray:
  """∫_0^t1 ½ mean_d |A e^{At} x|² dt per sample, by 20-point Gauss-Legendre quadrature of the
  exact solution (exact to float64 round-off for this smooth integrand)."""
  nodes, weights = np.polynomial.legendre.leggauss(20)
  ts, ws = 0.5 * t1 * (nodes + 1), 0.5 * t1 * weights
  rates = [0.5 * np.mean((x @ expm(a, t).T @ a.T)**2, axis=1) for t in ts]
  return np.sum(np.asarray(rates) * ws[:, None], axis=0)


def test_cnf_exact_log_density_equals_the_gaussian_and_regularisers_their_closed_forms():
  t1 = 0.8
  dynamics = make_cnf_dynamics(linear_field, divergence="exact",
                               regularisers=("jacobian_frobenius", "kinetic"))
  settings = OdeSettings(rtol=1e-6, atol=1e-6, batch_mode="vmap")
  out = cnf_log_density(dynamics, jnp.asarray(X, jnp.float32), jnp.asarray(A, jnp.float32),
                        settings, t1=t1)
  # z = e^{A t1} x ~ N(0, I)  <=>  x ~ N(0, e^{-A t1} e^{-A t1}ᵀ)
  inv = expm(A, -t1)
  gaussian = scipy.stats.multivariate_normal(mean=np.zeros(3), cov=inv @ inv.T).logpdf(X)
  np.testing.assert_allclose(out.log_density, gaussian, rtol=1e-5)
  np.testing.assert_allclose(out.z, X @ expm(A, t1).T, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.log_det, t1 * np.trace(A), rtol=1e-5)
  np.testing.assert_allclose(out.regularisers["jacobian_frobenius"], t1 * (A**2).sum() / 3,
                             rtol=1e-5)
  np.testing.assert_allclose(out.regularisers["kinetic"], kinetic_closed_form(A, X, t1),
                             rtol=1e-4)
  assert out.num_evals.shape == (2,)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_cnf_hutchinson_uses_one_probe_per_solve(probe):
  t1 = 0.8
  key = jax.random.key(7)
  dynamics = make_cnf_dynamics(linear_field, divergence="hutchinson", probe=probe,
                               regularisers=("kinetic", "jacobian_frobenius"))
  out = cnf_log_density(dynamics, jnp.asarray(X, jnp.float32), jnp.asarray(A, jnp.float32),
                        OdeSettings(rtol=1e-6, atol=1e-6), key=key, t1=t1)
  # On a linear field the probe, drawn once, gives ∫ εᵀAε dt = t1 εᵀAε exactly.
  eps = np.asarray(draw_probe(key, X.shape, probe), np.float64)
  np.testing.assert_allclose(out.log_det, t1 * np.einsum("bi,ij,bj->b", eps, A, eps),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.regularisers["jacobian_frobenius"],
                             t1 * np.sum((eps @ A)**2, axis=1) / 3, rtol=1e-5)
  np.testing.assert_allclose(out.regularisers["kinetic"], kinetic_closed_form(A, X, t1),
                             rtol=1e-4)
  z = X @ expm(A, t1).T
  np.testing.assert_allclose(out.log_density,
                             scipy.stats.norm.logpdf(z).sum(1) + np.asarray(out.log_det),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="needs a key"):
    cnf_log_density(dynamics, jnp.asarray(X), jnp.asarray(A), OdeSettings())


# --------------------------------------------------------------------------- gradients

def mlp_field(t, y, args):
  params, _ = args
  return jnp.tanh(y @ params["w"].T + params["b"] * (1 + t))


@pytest.mark.parametrize("adjoint", ["recursive_checkpoint", "backsolve"])
def test_gradients_through_the_solve_match_finite_differences(adjoint):
  with jax.enable_x64(True):
    settings = OdeSettings(rtol=1e-10, atol=1e-10, adjoint=adjoint)
    key = jax.random.split(jax.random.key(0), 4)
    params = {"w": jax.random.normal(key[0], (3, 3)), "b": jax.random.normal(key[1], (3,))}
    y0 = jnp.asarray(X)
    weights = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.7, -1.0]])

    @jax.jit
    def loss(params, y0):
      return jnp.sum(weights * solve(mlp_field, y0, 0.0, 1.0, params, settings).ys ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, y0)
    # Directional derivatives along a random direction, central differences.
    direction = (jax.tree.map(lambda p: jax.random.normal(key[2], p.shape), params),
                 jax.random.normal(key[3], y0.shape))
    h = 1e-5
    shifted = lambda s: loss(*jax.tree.map(lambda p, d: p + s * h * d, (params, y0), direction))
    fd = (shifted(1.0) - shifted(-1.0)) / (2 * h)
    ad = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    assert float(ad) == pytest.approx(float(fd), rel=1e-6)
    assert abs(float(fd)) > 1e-2  # a direction the loss really changes along


def test_cnf_gradient_with_backsolve_and_regularisers_matches_finite_differences():
  with jax.enable_x64(True):
    dynamics = make_cnf_dynamics(mlp_field, divergence="hutchinson",
                                 regularisers=("kinetic", "jacobian_frobenius"))
    settings = OdeSettings(rtol=1e-10, atol=1e-10, adjoint="backsolve")
    key = jax.random.split(jax.random.key(1), 4)
    params = {"w": jax.random.normal(key[0], (3, 3)), "b": jax.random.normal(key[1], (3,))}
    x = jnp.asarray(X)

    @jax.jit
    def loss(params):
      out = cnf_log_density(dynamics, x, params, settings, key=key[2])
      regs = out.regularisers["kinetic"] + out.regularisers["jacobian_frobenius"]
      return jnp.mean(-out.log_density + 0.5 * regs)

    grads = jax.jit(jax.grad(loss))(params)
    direction = jax.tree.map(lambda p: jax.random.normal(key[3], p.shape), params)
    h = 1e-5
    shifted = lambda s: loss(jax.tree.map(lambda p, d: p + s * h * d, params, direction))
    fd = (shifted(1.0) - shifted(-1.0)) / (2 * h)
    ad = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    assert float(ad) == pytest.approx(float(fd), rel=1e-6)
    assert abs(float(fd)) > 1e-2


# --------------------------------------------------------------------------- imports

def test_the_ode_package_imports_no_tensorflow():
  code = ("import sys, mcvd_jax.ode; "
          "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch')); "
          "assert not bad, bad")
  root = pathlib.Path(__file__).resolve().parents[1]
  subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_cnf_without_regularisers_solves_and_matches_the_one_with():
  """A CNF state with no regulariser (R = 0) solves (diffrax cannot carry an empty tuple, so the
  integrals are one [B, R] array) and gives the same log-density as one that carries them."""
  from mcvd_jax.ode import OdeSettings, cnf_log_density, make_cnf_dynamics
  a = jnp.array([[-0.5, 0.2], [0.1, -0.3]])
  field = lambda t, y, args: y @ args[0].T  # noqa: E731
  x = jnp.array([[1.0, -0.5], [0.3, 0.2]])
  bare = cnf_log_density(make_cnf_dynamics(field, divergence="exact"), x, a, OdeSettings())
  both = cnf_log_density(make_cnf_dynamics(field, divergence="exact",
                                           regularisers=("kinetic", "jacobian_frobenius")),
                         x, a, OdeSettings())
  assert bare.regularisers == {}
  assert set(both.regularisers) == {"kinetic", "jacobian_frobenius"}
  np.testing.assert_allclose(bare.log_density, both.log_density, rtol=1e-5)
