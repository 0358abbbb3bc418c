"""Label sampling and per-sample loss weighting of the diffusion loss (diffusion/weighting.py), with
a stand-in network: the defaults are today's draws and mean, the options their documented rules."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mcvd_jax.diffusion import weighting
from mcvd_jax.diffusion.factory import Diffusion, diffusion_from_config
from mcvd_jax.diffusion.losses import make_loss_fn
from mcvd_jax.diffusion.schedules import Schedule, linear_schedule, smld_sigmas

# A hand-sized schedule, label 0 the noisiest: SNR = ᾱ / (1 − ᾱ) = 1/9, 1, 4, 9, 99.
ALPHAS = np.array([0.1, 0.5, 0.8, 0.9, 0.99], np.float32)
SNR = np.array([1 / 9, 1.0, 4.0, 9.0, 99.0])
SMALL = Schedule(jnp.asarray(ALPHAS), jnp.asarray(np.append(ALPHAS[1:], 1.0)),
                 jnp.asarray(1 - ALPHAS / np.append(ALPHAS[1:], 1.0)))


def constant_denoiser(params, x, labels, cond, key, cond_mask=None):
  """Predicts 0.5 everywhere whatever its input, so the per-sample error depends on the noise."""
  del params, labels, cond, key, cond_mask
  return jnp.full_like(x, 0.5)


def loss_of(schedule=SMALL, sigmas=None, **options):
  return make_loss_fn(constant_denoiser, schedule=schedule, sigmas=sigmas, **options)


def test_uniform_labels_are_todays_randint_draw():
  key = jax.random.key(7)
  x0 = jnp.zeros((64, 4, 4, 2))
  _, aux = loss_of(schedule=linear_schedule())(None, x0, None, key)
  label_key, _, _ = jax.random.split(key, 3)
  expected = jax.random.randint(label_key, (64,), 0, 1000)
  assert aux.labels.dtype == expected.dtype
  np.testing.assert_array_equal(aux.labels, expected)


def test_none_weighting_is_exactly_the_mean_of_the_unweighted_errors():
  x0 = jax.random.normal(jax.random.key(1), (16, 4, 4, 2))
  # Eagerly: under jit XLA may fuse the pixel sum into the mean, so compare the same ops.
  loss, aux = loss_of()(None, x0, None, jax.random.key(2))
  assert loss == jnp.mean(aux.loss_per_sample)  # bit for bit


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_high_noise_histogram_matches_the_documented_rule(power):
  """20,000 draws over 10 levels: each level's frequency within 0.012 of
  p ∝ (1 − ᾱ)^power (4.5 standard errors of the largest p ≈ 0.16)."""
  schedule = linear_schedule(num_steps=10, beta_start=0.3, beta_end=0.01)
  alphas = np.asarray(schedule.alphas, np.float64)
  p = (1 - alphas) ** power / np.sum((1 - alphas) ** power)
  np.testing.assert_allclose(weighting.high_noise_probabilities(weighting.snr(schedule), power), p,
                             rtol=1e-9)
  draw = weighting.make_label_sampler("high_noise", power, 10, schedule=schedule)
  labels = np.asarray(jax.jit(draw, static_argnums=1)(jax.random.key(0), 20_000))
  frequency = np.bincount(labels, minlength=10) / labels.size
  assert np.max(np.abs(frequency - p)) < 0.012, (frequency, p)
  assert np.all(np.diff(p) < 0)  # the noisy end (label 0) is the most likely
  uniform = np.asarray(weighting.make_label_sampler("uniform", power, 10)(jax.random.key(0),
                                                                         20_000))
  assert labels.mean() < uniform.mean() - 0.5  # noisier on average than uniform (mean 4.5)


def test_high_noise_labels_reach_the_loss_and_smld_uses_sigma():
  """Through make_loss_fn: SMLD's p ∝ (σ² / (1 + σ²))^k, i.e. SNR = 1 / σ²."""
  sigmas = smld_sigmas(1.0, 0.1, 4)
  _, aux = loss_of(schedule=None, sigmas=sigmas, label_sampling="high_noise")(
      None, jnp.zeros((20_000, 1, 1, 1)), None, jax.random.key(3))
  s2 = np.asarray(sigmas, np.float64) ** 2
  p = s2 / (1 + s2) / np.sum(s2 / (1 + s2))
  frequency = np.bincount(np.asarray(aux.labels), minlength=4) / 20_000
  assert np.max(np.abs(frequency - p)) < 0.012, (frequency, p)


@pytest.mark.parametrize("name, options, expected", [
    ("min_snr", {"min_snr_gamma": 5.0}, np.minimum(SNR, 5.0) / SNR),
    ("min_snr", {"min_snr_gamma": 1.0}, np.minimum(SNR, 1.0) / SNR),
    ("p2", {"p2_gamma": 1.0}, 1 / (1 + SNR)),
    ("p2", {"p2_gamma": 0.5}, 1 / np.sqrt(1 + SNR)),
])
def test_weighted_loss_matches_a_hand_computation(name, options, expected):
  labels = jnp.array([0, 1, 2, 3, 4, 4, 2, 0])
  x0 = jax.random.normal(jax.random.key(4), (8, 3, 3, 1))
  plain, plain_aux = loss_of()(None, x0, None, jax.random.key(5), labels=labels)
  loss, aux = loss_of(loss_weighting=name, **options)(None, x0, None, jax.random.key(5),
                                                      labels=labels)
  np.testing.assert_array_equal(aux.loss_per_sample, plain_aux.loss_per_sample)  # unweighted
  per_sample = np.asarray(aux.loss_per_sample, np.float64)
  np.testing.assert_allclose(loss, np.mean(expected[np.asarray(labels)] * per_sample), rtol=1e-5)
  assert loss < plain  # both only shrink the cleaner levels' share


def test_smld_weights_use_snr_one_over_sigma_squared():
  sigmas = jnp.array([2.0, 1.0, 0.5, 0.1])
  snr = 1 / np.asarray(sigmas, np.float64) ** 2
  np.testing.assert_allclose(weighting.snr(sigmas=sigmas), snr)
  labels = jnp.arange(4)
  x0 = jnp.zeros((4, 2, 2, 1))
  loss, aux = loss_of(schedule=None, sigmas=sigmas, loss_weighting="min_snr")(
      None, x0, None, jax.random.key(6), labels=labels)
  expected = np.mean(np.minimum(snr, 5.0) / snr * np.asarray(aux.loss_per_sample, np.float64))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("options, field", [
    ({"label_sampling": "noisy"}, "diffusion.label_sampling='noisy'"),
    ({"loss_weighting": "snr"}, "diffusion.loss_weighting='snr'"),
    ({"label_sampling_power": 0.0}, "diffusion.label_sampling_power=0.0"),
    ({"label_sampling_power": float("inf")}, "diffusion.label_sampling_power=inf"),
    ({"min_snr_gamma": -1.0}, "diffusion.min_snr_gamma=-1.0"),
    ({"p2_gamma": "one"}, "diffusion.p2_gamma='one'"),
])
def test_invalid_options_name_the_field(options, field):
  with pytest.raises(ValueError) as err:
    loss_of(**options)
  assert field in str(err.value)
  section = default_section().to_dict()
  section.update(options)
  with pytest.raises(ValueError) as err:
    diffusion_from_config(ml_collections.ConfigDict(section))
  assert field in str(err.value)


def test_unknown_names_list_the_valid_ones():
  with pytest.raises(ValueError, match="uniform.*high_noise"):
    loss_of(label_sampling="noisy")
  with pytest.raises(ValueError, match="none.*min_snr.*p2"):
    loss_of(loss_weighting="snr")


def default_section() -> ml_collections.ConfigDict:
  from configs import default
  return default.get_config().diffusion


def test_config_defaults_are_todays_loss():
  diffusion = diffusion_from_config(default_section())
  defaults = Diffusion("ddpm", None)
  for name in ("label_sampling", "label_sampling_power", "loss_weighting", "min_snr_gamma",
               "p2_gamma"):
    assert getattr(diffusion, name) == getattr(defaults, name), name
  assert (diffusion.label_sampling, diffusion.loss_weighting) == ("uniform", "none")


def test_section_without_the_new_fields_works_and_new_fields_are_read():
  section = default_section().to_dict()
  for name in ("label_sampling", "label_sampling_power", "loss_weighting", "min_snr_gamma",
               "p2_gamma"):
    section.pop(name)
  old = diffusion_from_config(ml_collections.ConfigDict(section))
  assert (old.label_sampling, old.label_sampling_power) == ("uniform", 1.0)
  assert (old.loss_weighting, old.min_snr_gamma, old.p2_gamma) == ("none", 5.0, 1.0)
  section.update(kind="smld", label_sampling="high_noise", label_sampling_power=2.0,
                 loss_weighting="p2", p2_gamma=0.5)
  new = diffusion_from_config(ml_collections.ConfigDict(section))
  assert (new.kind, new.label_sampling, new.label_sampling_power) == ("smld", "high_noise", 2.0)
  assert (new.loss_weighting, new.p2_gamma) == ("p2", 0.5)
