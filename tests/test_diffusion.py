"""Schedules, losses and samplers on hand-checkable cases (no network needed)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcvd_jax.diffusion import noise as noise_lib
from mcvd_jax.diffusion.losses import make_loss_fn, per_sample_error
from mcvd_jax.diffusion.samplers import make_sampler
from mcvd_jax.diffusion.schedules import (cosine_schedule, linear_schedule, make_schedule,
                                          smld_sigmas, subsampled_steps, torch_linspace_f32)


def test_linear_schedule_identities():
  s = linear_schedule()
  betas, alphas, prev = map(np.asarray, (s.betas, s.alphas, s.alphas_prev))
  assert betas[0] == np.float32(0.02) and betas[-1] == np.float32(1e-4)
  assert np.all(np.diff(betas) < 0)  # label 0 has the largest beta: it is the noisiest level
  np.testing.assert_allclose(alphas, np.cumprod((1 - betas[::-1]).astype(np.float64))[::-1], rtol=1e-6)
  assert alphas[-1] == np.float32(1 - 1e-4) and 3e-5 < alphas[0] < 5e-5
  assert np.all(np.diff(alphas) > 0)
  np.testing.assert_array_equal(prev[:-1], alphas[1:])
  assert prev[-1] == 1.0
  # alphas[i] = alphas[i+1] * (1 - betas[i])
  np.testing.assert_allclose(alphas[:-1], alphas[1:] * (1 - betas[:-1]), rtol=1e-5)


def test_torch_linspace_reproduces_endpoints_and_spacing():
  v = torch_linspace_f32(0.02, 1e-4, 1000)
  assert v.dtype == np.float32 and v[0] == np.float32(0.02) and v[-1] == np.float32(1e-4)
  np.testing.assert_allclose(np.diff(v.astype(np.float64)), -(0.02 - 1e-4) / 999, rtol=1e-4)


def test_cosine_schedule_and_errors():
  s = cosine_schedule(100)
  a = np.asarray(s.alphas)
  assert a.shape == (100,) and np.all(np.diff(a) > 0) and a[-1] < 1 and a[0] < 1e-3
  np.testing.assert_allclose(np.asarray(s.betas), 1 - a / np.asarray(s.alphas_prev), rtol=1e-6)
  with pytest.raises(ValueError, match="quadratic"):
    make_schedule("quadratic")
  with pytest.raises(ValueError, match="sigma_begin"):
    smld_sigmas(0.01, 1.0)


def test_subsampled_steps_match_reference_range():
  np.testing.assert_array_equal(subsampled_steps(1000, 10), np.arange(0, 1000, 100))
  assert len(subsampled_steps(1000, 300)) == 334  # range(0, 1000, 3), as the reference
  np.testing.assert_array_equal(subsampled_steps(1000, None), np.arange(1000))
  np.testing.assert_array_equal(subsampled_steps(1000, 5000), np.arange(1000))


def zero_denoiser(params, x, labels, cond, key, cond_mask=None):
  return jnp.zeros_like(x)


def test_loss_hand_checked():
  # A network that predicts zero noise: the loss is 0.5 * sum(z^2) per sample, mean over batch.
  z = jnp.arange(2 * 2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 2, 3) / 10
  x0 = jnp.ones_like(z)
  loss_fn = make_loss_fn(zero_denoiser, schedule=linear_schedule())
  loss, aux = loss_fn(None, x0, None, jax.random.key(0), labels=jnp.array([0, 999]), noise=z)
  per = 0.5 * np.sum(np.asarray(z).reshape(2, -1) ** 2, axis=1)
  np.testing.assert_allclose(aux.loss_per_sample, per, rtol=1e-6)
  np.testing.assert_allclose(loss, per.mean(), rtol=1e-6)
  a = linear_schedule().alphas
  np.testing.assert_allclose(aux.perturbed[1], jnp.sqrt(a[999]) * x0[1] + jnp.sqrt(1 - a[999]) * z[1],
                             rtol=1e-6)
  l1, _ = make_loss_fn(zero_denoiser, schedule=linear_schedule(), l1=True)(
      None, x0, None, jax.random.key(0), labels=jnp.array([0, 999]), noise=z)
  np.testing.assert_allclose(l1, np.abs(np.asarray(z)).reshape(2, -1).sum(1).mean(), rtol=1e-6)
  np.testing.assert_allclose(per_sample_error(z, z), [0.0, 0.0])


def test_loss_draws_labels_and_noise_from_key():
  loss_fn = jax.jit(make_loss_fn(zero_denoiser, schedule=linear_schedule()))
  x0 = jnp.zeros((64, 4, 4, 1))
  _, aux1 = loss_fn(None, x0, None, jax.random.key(1))
  _, aux2 = loss_fn(None, x0, None, jax.random.key(1))
  _, aux3 = loss_fn(None, x0, None, jax.random.key(2))
  np.testing.assert_array_equal(aux1.labels, aux2.labels)
  assert not np.array_equal(aux1.labels, aux3.labels)
  assert aux1.labels.min() >= 0 and aux1.labels.max() < 1000 and len(np.unique(aux1.labels)) > 20


def oracle_denoiser(x0, schedule=None, sigmas=None):
  """The exact noise estimate for data that is the single point x0."""
  def denoise(params, x, labels, cond, key, cond_mask=None):
    if schedule is not None:
      a = schedule.alphas[labels][:, None, None, None]
      return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
    return (x - x0) / sigmas[labels][:, None, None, None]
  return denoise


@pytest.mark.parametrize("kind,eta", [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 0.0)])
def test_sampler_with_oracle_returns_data(kind, eta):
  schedule = linear_schedule()
  x0 = jax.random.uniform(jax.random.key(3), (2, 8, 8, 3), minval=-1, maxval=1)
  sampler = make_sampler(oracle_denoiser(x0, schedule), kind=kind, schedule=schedule,
                         subsample=20, eta=eta, denoise=False)
  xT = jax.random.normal(jax.random.key(4), x0.shape)
  out = jax.jit(sampler.sample)(None, xT, None, jax.random.key(5))
  np.testing.assert_allclose(out, x0, atol=2e-5)


def test_smld_with_oracle_and_denoise_returns_data():
  sigmas = smld_sigmas(1.0, 0.01, 100)
  x0 = jax.random.uniform(jax.random.key(3), (2, 8, 8, 1), minval=-1, maxval=1)
  sampler = make_sampler(oracle_denoiser(x0, sigmas=sigmas), kind="smld", sigmas=sigmas,
                         subsample=10, n_steps_each=3, step_lr=1e-5)
  out = jax.jit(sampler.sample)(None, jax.random.normal(jax.random.key(1), x0.shape), None,
                                jax.random.key(2))
  np.testing.assert_allclose(out, x0, atol=1e-5)
  assert sampler.denoise_label == 90


def test_denoise_label_flag():
  s = linear_schedule()
  ours = make_sampler(zero_denoiser, kind="ddim", schedule=s, subsample=10)
  ref = make_sampler(zero_denoiser, kind="ddim", schedule=s, subsample=10,
                     reference_denoise_label=True)
  assert ours.denoise_label == 900 and ref.denoise_label == 9
  np.testing.assert_array_equal(ours.labels, np.arange(0, 1000, 100))


def test_sampler_validates_arguments():
  with pytest.raises(ValueError, match="euler"):
    make_sampler(zero_denoiser, kind="euler", schedule=linear_schedule())
  with pytest.raises(ValueError, match="schedule"):
    make_sampler(zero_denoiser, kind="ddpm")
  sampler = make_sampler(zero_denoiser, kind="ddpm", schedule=linear_schedule(), subsample=5)
  with pytest.raises(ValueError, match="key"):
    sampler.sample(None, jnp.zeros((1, 4, 4, 1)), None)


def test_ddpm_noise_uses_fold_in_keys_and_is_reproducible():
  s = linear_schedule()
  sampler = make_sampler(zero_denoiser, kind="ddpm", schedule=s, subsample=5, denoise=False,
                         clip_before=False, return_trajectory=True)
  x = jnp.zeros((1, 4, 4, 1))
  key = jax.random.key(7)
  _, traj = jax.jit(sampler.sample)(None, x, None, key)
  _, again = jax.jit(sampler.sample)(None, x, None, key)
  np.testing.assert_array_equal(traj, again)
  # Replaying the fold_in noises explicitly gives the same trajectory.
  noises = jnp.stack([jax.random.normal(jax.random.fold_in(key, i), x.shape) for i in range(5)])
  _, replay = jax.jit(sampler.sample)(None, x, None, None, noises)
  np.testing.assert_allclose(replay, traj, rtol=1e-5, atol=1e-6)


@pytest.fixture
def identity_gff(monkeypatch):
  """GFF noise with a flat spectrum, i.e. Sigma = I computed through the Fourier filter path."""
  monkeypatch.setattr(noise_lib, "gff_amplitude", lambda h, w, mean_amplitude=1.0: np.ones((h, w)))
  return noise_lib.gff()


def test_gff_with_identity_covariance_reproduces_isotropic(identity_gff):
  s = linear_schedule()
  x0 = jax.random.uniform(jax.random.key(0), (3, 8, 8, 2), minval=-1, maxval=1)
  for model in (identity_gff,):
    loss_iso, aux_iso = make_loss_fn(zero_denoiser, schedule=s)(None, x0, None, jax.random.key(1))
    loss_gff, aux_gff = make_loss_fn(zero_denoiser, schedule=s, noise_model=model)(
        None, x0, None, jax.random.key(1))
    np.testing.assert_allclose(loss_gff, loss_iso, rtol=1e-5)
    np.testing.assert_allclose(aux_gff.perturbed, aux_iso.perturbed, atol=1e-5)
  denoise = oracle_denoiser(x0 * 0.5, s)
  xT = jax.random.normal(jax.random.key(2), x0.shape)
  iso = make_sampler(denoise, kind="ddpm", schedule=s, subsample=10, clip_before=False)
  gff = make_sampler(denoise, kind="ddpm", schedule=s, subsample=10, clip_before=False,
                     noise_model=identity_gff)
  np.testing.assert_allclose(gff.sample(None, xT, None, jax.random.key(3)),
                             iso.sample(None, xT, None, jax.random.key(3)), atol=1e-5)


def test_gff_loss_and_sampler_use_correlated_noise():
  s = linear_schedule()
  x0 = jnp.zeros((2, 16, 16, 1))
  loss_fn = make_loss_fn(zero_denoiser, schedule=s, noise_model=noise_lib.gff())
  _, aux = loss_fn(None, x0, None, jax.random.key(0), labels=jnp.array([0, 0]))
  p = np.asarray(aux.perturbed)[..., 0]
  neighbour_corr = np.corrcoef(p[:, :, :-1].ravel(), p[:, :, 1:].ravel())[0, 1]
  assert neighbour_corr > 0.2  # isotropic noise would give ~0
  # With an oracle, the GFF DDPM sampler still lands on the data.
  x_data = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1), minval=-1, maxval=1)
  sampler = make_sampler(oracle_denoiser(x_data, s), kind="ddpm", schedule=s, subsample=10,
                         noise_model=noise_lib.gff(), denoise=False, target="correlated")
  out = sampler.sample(None, noise_lib.gff().sample(jax.random.key(2), x_data.shape), None,
                       jax.random.key(3))
  np.testing.assert_allclose(out, x_data, atol=2e-5)


def test_sampler_traced_once_per_shape():
  s = linear_schedule()

  @chex.assert_max_traces(n=2)
  def denoise(params, x, labels, cond, key, cond_mask=None):
    return x * 0.1

  sampler = make_sampler(denoise, kind="ddim", schedule=s, subsample=10)
  sample = jax.jit(sampler.sample)
  for seed in range(3):  # same shape: the scan body and the final step trace once, in total
    sample(None, jax.random.normal(jax.random.key(seed), (2, 4, 4, 1)), None)
  chex.clear_trace_counter()


def test_smld_loss_perturbs_with_sigma():
  sigmas = smld_sigmas(1.0, 0.01, 10)
  x0 = jnp.ones((2, 4, 4, 1))
  z = jnp.full_like(x0, 0.5)
  loss, aux = make_loss_fn(zero_denoiser, sigmas=sigmas)(None, x0, None, jax.random.key(0),
                                                        labels=jnp.array([0, 9]), noise=z)
  np.testing.assert_allclose(aux.perturbed[0], 1 + 1.0 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(aux.perturbed[1], 1 + 0.01 * 0.5, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.5 * 0.25 * 16, rtol=1e-6)
  with pytest.raises(ValueError, match="exactly one"):
    make_loss_fn(zero_denoiser)
