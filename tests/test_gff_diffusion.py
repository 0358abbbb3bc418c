"""Non-isotropic (GFF) diffusion as the paper parametrises it: the network predicts the white noise,
the samplers apply Σ^{1/2}; the correlated target kept as an option; Σ = I is the isotropic case."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcvd_jax.diffusion import noise as noise_lib
from mcvd_jax.diffusion.losses import make_loss_fn
from mcvd_jax.diffusion.samplers import make_sampler
from mcvd_jax.diffusion.schedules import linear_schedule, smld_sigmas

TARGETS = ("white", "correlated")
KINDS = ("ddpm", "ddim", "smld")


def scaled_denoiser(params, x, labels, cond, key, cond_mask=None):
  """A stand-in network whose output depends on its input and label."""
  return 0.3 * x + 1e-3 * labels[:, None, None, None].astype(x.dtype)


def numpy_gff_sqrt_cov(x):
  """Σ^{1/2} x by an independent route: numpy's complex FFT with the 1/|k| amplitude."""
  h, w = x.shape[-3], x.shape[-2]
  fy, fx = np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w
  k = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
  k[0, 0] = 1.0
  amp = 1.0 / k
  amp /= np.sqrt(np.mean(amp ** 2))
  spectrum = np.fft.fft2(np.asarray(x, np.float64), axes=(-3, -2))
  return np.real(np.fft.ifft2(spectrum * amp[:, :, None], axes=(-3, -2)))


def loss_and_sample(kind, target, noise_model):
  """(loss, perturbed input, 10-step sample) of the stand-in network on fixed data and keys, for
  sampler `kind` (its loss: DDPM's for ddpm/ddim, SMLD's for smld) under `target` and the noise."""
  schedule = linear_schedule() if kind != "smld" else None
  sigmas = smld_sigmas(1.0, 0.01, 50) if kind == "smld" else None
  x0 = jax.random.uniform(jax.random.key(0), (3, 8, 8, 2), minval=-1, maxval=1)
  loss, aux = make_loss_fn(scaled_denoiser, schedule=schedule, sigmas=sigmas,
                           noise_model=noise_model, target=target)(None, x0, None,
                                                                  jax.random.key(1))
  sampler = make_sampler(scaled_denoiser, kind=kind, schedule=schedule, sigmas=sigmas,
                         subsample=10, target=target, noise_model=noise_model)
  sample = jax.jit(sampler.sample)(None, jax.random.normal(jax.random.key(2), x0.shape), None,
                                   jax.random.key(3))
  return loss, aux.perturbed, sample


@pytest.mark.parametrize("kind", KINDS)
def test_isotropic_noise_gives_identical_numbers_for_both_targets(kind):
  white, correlated = (loss_and_sample(kind, t, noise_lib.isotropic()) for t in TARGETS)
  for a, b in zip(white, correlated):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", KINDS)
def test_identity_covariance_through_the_fourier_path_matches_isotropic(monkeypatch, kind, target):
  monkeypatch.setattr(noise_lib, "gff_amplitude", lambda h, w, mean_amplitude=1.0: np.ones((h, w)))
  iso = loss_and_sample(kind, target, noise_lib.isotropic())
  flat = loss_and_sample(kind, target, noise_lib.gff())  # Σ = I through the FFTs
  for name, a, b in zip(("loss", "perturbed", "sample"), flat, iso):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("target", TARGETS)
def test_gff_loss_is_the_papers_formula(target):
  s = linear_schedule()
  x0 = jnp.full((2, 8, 8, 1), 0.3)
  eps = jax.random.normal(jax.random.key(0), x0.shape)
  labels = jnp.array([10, 700])
  loss, aux = make_loss_fn(scaled_denoiser, schedule=s, noise_model=noise_lib.gff(),
                           target=target)(None, x0, None, jax.random.key(1), labels=labels, noise=eps)
  a = np.asarray(s.alphas)[np.asarray(labels)][:, None, None, None]
  z = numpy_gff_sqrt_cov(eps)
  x_t = np.sqrt(a) * np.asarray(x0) + np.sqrt(1 - a) * z
  np.testing.assert_allclose(aux.perturbed, x_t, atol=1e-5)
  prediction = 0.3 * x_t + 1e-3 * np.asarray(labels)[:, None, None, None]
  wanted = np.asarray(eps) if target == "white" else z  # white: ‖ε − ε_θ‖², no Σ⁻¹ weighting
  per_sample = 0.5 * np.sum((wanted - prediction) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(aux.loss_per_sample, per_sample, rtol=1e-4)
  np.testing.assert_allclose(loss, per_sample.mean(), rtol=1e-4)


def gff_oracle(x_data, target, schedule=None, sigmas=None):
  """The exact network output for data that is the single point x_data, in `target`'s terms."""
  gff = noise_lib.gff()

  def denoise(params, x, labels, cond, key, cond_mask=None):
    if schedule is not None:
      a = schedule.alphas[labels][:, None, None, None]
      z = (x - jnp.sqrt(a) * x_data) / jnp.sqrt(1 - a)
    else:
      z = (x - x_data) / sigmas[labels][:, None, None, None]
    return gff.inv_sqrt_cov(z) if target == "white" else z

  return denoise


def check_oracle_sampler(target, shape, atol, schedule=None, sigmas=None, **options):
  """A 10-step GFF sampler driven by `gff_oracle` for one random data point of `shape`, started
  from a GFF draw, lands on that point within `atol`."""
  x_data = jax.random.uniform(jax.random.key(1), shape, minval=-1, maxval=1)
  sampler = make_sampler(gff_oracle(x_data, target, schedule=schedule, sigmas=sigmas),
                         schedule=schedule, sigmas=sigmas, subsample=10,
                         noise_model=noise_lib.gff(), target=target, **options)
  x_init = noise_lib.gff().sample(jax.random.key(2), shape)
  out = jax.jit(sampler.sample)(None, x_init, None, jax.random.key(3))
  np.testing.assert_allclose(out, x_data, atol=atol)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind,eta", [("ddim", 0.0), ("ddim", 0.7), ("ddpm", 0.0)])
def test_gff_samplers_with_an_oracle_return_the_data(target, kind, eta):
  check_oracle_sampler(target, (2, 16, 16, 2), 3e-5, schedule=linear_schedule(), kind=kind,
                       eta=eta, denoise=False)


@pytest.mark.parametrize("target", TARGETS)
def test_gff_smld_with_an_oracle_and_denoising_returns_the_data(target):
  check_oracle_sampler(target, (2, 8, 8, 1), 1e-4, sigmas=smld_sigmas(1.0, 0.01, 100),
                       kind="smld", n_steps_each=3, step_lr=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_preconditioned_langevin_samples_a_gaussian_target(target):
  """One SMLD level run for many steps on p = N(μ, τ² I) with its exact score. The update
  x ← x − (s/σ) ẑ + sqrt(2s) Σ^{1/2} z with ẑ = −σ Σ ∇log p is linear, so per Fourier mode k
  (Σ's eigenvalue λ_k) its stationary variance is exactly τ² / (1 − α λ_k / (4 τ²)), α = 2s: close
  to τ² I although every noise draw is correlated. A drift without Σ would leave the samples
  correlated like the GFF (neighbour correlation ~0.5 here); noise without Σ^{1/2} would inflate
  the high frequencies by 1/λ_k."""
  gff, tau, sigma, step = noise_lib.gff(), 1.0, 0.5, 0.02
  size, chains, steps = 8, 2000, 3000
  mu = jnp.linspace(-1.0, 1.0, size * size).reshape(1, size, size, 1)

  def exact_network(params, x, labels, cond, key, cond_mask=None):
    preconditioned = gff.cov(x - mu) / tau ** 2  # −Σ ∇log p
    estimate = sigma * preconditioned             # ẑ = −σ Σ ∇log p
    return gff.inv_sqrt_cov(estimate) if target == "white" else estimate

  sampler = make_sampler(exact_network, kind="smld", sigmas=jnp.array([sigma]), noise_model=gff,
                         step_lr=step, n_steps_each=steps, denoise=False, target=target)
  x_init = 3.0 * jax.random.normal(jax.random.key(0), (chains, size, size, 1))
  x = np.asarray(jax.jit(sampler.sample)(None, x_init, None, jax.random.key(1)), np.float64)

  lam = noise_lib.gff_amplitude(size, size) ** 2
  alpha = 2 * step
  want_variance = np.mean(tau ** 2 / (1 - alpha * lam / (4 * tau ** 2)))  # Parseval: per pixel
  centred = x - np.asarray(mu)
  mean_error = np.abs(centred.mean(axis=0))
  assert mean_error.max() < 5 * tau / np.sqrt(chains), mean_error.max()
  variance = centred.var(axis=0).mean()
  assert abs(variance - want_variance) < 0.03, (variance, want_variance)
  neighbour = np.mean(centred[:, :, :-1] * centred[:, :, 1:]) / variance
  assert abs(neighbour) < 0.03, neighbour


def test_unknown_target_is_refused():
  with pytest.raises(ValueError, match="diffusion.target"):
    make_loss_fn(scaled_denoiser, schedule=linear_schedule(), target="pink")
  with pytest.raises(ValueError, match="diffusion.target"):
    make_sampler(scaled_denoiser, kind="ddpm", schedule=linear_schedule(), target="pink")
