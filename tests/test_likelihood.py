"""Exact likelihoods through the probability-flow ODE (diffusion/likelihood.py) on Gaussian data:
the computed log-density equals the analytic one (isotropic and GFF Σ), the prior N(0, Σ) carries
Σ's log-determinant, Hutchinson's estimate is unbiased with a variance over probes, bits per
dimension are on the 8-bit scale, and the image family's `--mode=eval` reports them (bpd)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcvd_jax.diffusion.likelihood import (UNIFORM_BPD, bits_per_dim, dequantise,
                                           log_det_sqrt_cov, pf_ode_log_likelihood,
                                           prior_log_prob)
from mcvd_jax.diffusion.noise import gff, isotropic
from mcvd_jax.ode import OdeSettings
from test_pf_ode import D, SHAPE, VP, Gaussian

SETTINGS = OdeSettings(rtol=1e-5, atol=1e-5)


def _data(g, count, seed=1):
  """count draws of the exact marginal at the data end t = 1/N, and its ᾱ."""
  a2 = float(VP.alpha_bar(VP.t_end))
  chol = np.linalg.cholesky(g.cov(a2))
  z = np.random.default_rng(seed).standard_normal((count, D))
  return (z @ chol.T + np.sqrt(a2) * g.m).reshape(count, *SHAPE), a2


def _exact_prior(g):
  """log p_1 of the Gaussian's own marginal at t = 1 (N(0, Σ) up to α_1 ≈ 0.006)."""
  a2 = float(VP.alpha_bar(VP.t_start))
  inv = jnp.asarray(np.linalg.inv(g.cov(a2)), jnp.float32)
  logdet, mean = np.linalg.slogdet(g.cov(a2))[1], np.sqrt(a2) * g.m

  def prior(z):
    y = z.reshape(z.shape[0], D) - mean
    return -0.5 * (jnp.einsum("bi,ij,bj->b", y, inv, y) + logdet + D * math.log(2 * math.pi))
  return prior


@pytest.mark.parametrize("noise_model", [isotropic(), gff()], ids=["isotropic", "gff"])
def test_pf_ode_log_likelihood_equals_the_analytic_one(noise_model):
  g = Gaussian(noise_model)  # dense data covariance: not commuting with the GFF Σ
  x, a2 = _data(g, 4)
  x = jnp.asarray(x, jnp.float32)
  exact = g.log_prob(x, a2)
  out = pf_ode_log_likelihood(g.model(), VP, noise_model, x, None, SETTINGS,
                              divergence="exact", prior=_exact_prior(g))
  np.testing.assert_allclose(out.log_p, exact, atol=1e-2)
  # The default prior N(0, Σ) differs from p_1 by α_1² ≈ 4e-5 only.
  default_prior = pf_ode_log_likelihood(g.model(), VP, noise_model, x, None, SETTINGS,
                                        divergence="exact")
  np.testing.assert_allclose(default_prior.log_p, exact, atol=3e-2)
  # The flow ends at the prior: z is distributed as N(α_1 m, Cov_1) ≈ N(0, Σ).
  assert out.z.shape == x.shape and 50 < int(out.num_evals) < 4096


def test_prior_log_prob_carries_the_log_determinant_of_sigma():
  noise_model = gff()
  g = Gaussian(noise_model)
  np.testing.assert_allclose(log_det_sqrt_cov(noise_model, SHAPE),
                             0.5 * np.linalg.slogdet(g.Sigma)[1], rtol=1e-5)
  assert log_det_sqrt_cov(isotropic(), SHAPE) == 0.0
  z = np.random.default_rng(0).standard_normal((3, D))
  quad = np.einsum("bi,bi->b", z, np.linalg.solve(g.Sigma, z.T).T)
  expected = -0.5 * (quad + np.linalg.slogdet(g.Sigma)[1] + D * np.log(2 * np.pi))
  got = prior_log_prob(noise_model, jnp.asarray(z.reshape(3, *SHAPE), jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_hutchinson_estimate_is_unbiased_with_a_variance_over_probes():
  noise_model = gff()
  g = Gaussian(noise_model)
  x, a2 = _data(g, 1)
  probes = 64
  xs = jnp.asarray(np.repeat(x, probes, axis=0), jnp.float32)
  out = pf_ode_log_likelihood(g.model(), VP, noise_model, xs, None, SETTINGS,
                              key=jax.random.key(3), prior=_exact_prior(g))
  estimates = np.asarray(out.log_p, np.float64)
  spread = estimates.std(ddof=1)
  assert spread > 0.1  # a dense Jacobian: the probes disagree
  assert abs(estimates.mean() - g.log_prob(x, a2)[0]) < 4 * spread / math.sqrt(probes)


def test_bits_per_dim_and_dequantisation_are_on_the_8_bit_scale():
  # The uniform density on [-1, 1]^D, log p = -D log 2, scores exactly 8 bits per dimension.
  np.testing.assert_allclose(bits_per_dim(jnp.asarray(-D * math.log(2.0)), D), UNIFORM_BPD,
                             rtol=1e-6)
  images = jnp.asarray([[0, 255], [17, 128]], jnp.uint8).reshape(1, 2, 2, 1)
  x = dequantise(jax.random.key(0), jnp.repeat(images, 1000, axis=0))
  cell = np.floor((np.asarray(x) + 1) * 128)
  np.testing.assert_array_equal(cell, np.broadcast_to(np.asarray(images), cell.shape))
  np.testing.assert_allclose(np.mean(np.asarray(x) - (np.asarray(images) / 128 - 1)), 0.5 / 128,
                             rtol=0.05)


@pytest.mark.slow  # an eval of the tiny MNIST model: one Hutchinson solve per batch
def test_image_eval_reports_bits_per_dim(tmp_path):
  from configs import mnist
  from mcvd_jax.core.modes import run_mode
  from mcvd_jax.image_diffusion.family import FAMILY
  config = mnist.get_config("tiny")
  with config.unlocked():
    config.eval.metrics = "bpd"
    config.eval.bpd_images, config.eval.bpd_probes = 2, 2
    config.eval.bpd_ode = {"rtol": 1e-2, "atol": 1e-2, "max_steps": 200}
    config.eval.batch_size = 2
  path = run_mode(FAMILY, config, str(tmp_path), "eval", None)
  report = json.loads(open(path).read())
  (entry,) = report["protocols"].values()
  results = entry["results"]
  assert results["num_images"] == 2 and results["probes"] == 2
  assert np.isfinite(results["bpd"]) and results["bpd"] > 0
  assert results["probe_variance"] > 0 and results["network_evals"] > 0
  assert results["baseline_uniform_bpd"] == UNIFORM_BPD
  assert "Bits per dimension" in (tmp_path / "eval_report.md").read_text()
