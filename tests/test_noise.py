"""Tests of mcvd_jax.diffusion.noise: isotropic and Gaussian-free-field noise models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mcvd_jax.diffusion import noise


SHAPE = (2, 8, 6, 3)  # One small shape shared by most tests, so compilations are reused.


def _random(shape, seed=0, dtype=jnp.float32):
  # numpy, not jax.random: every new shape would cost a compilation of the jax sampler.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32), dtype)


def _reference_filter(x, gain):
  """real(ifft2(gain · fft2(x))) over (H, W) in float64 numpy: the definition, per channel."""
  spectrum = np.fft.fft2(np.asarray(x, np.float64), axes=(-3, -2))
  return np.real(np.fft.ifft2(spectrum * gain[:, :, None], axes=(-3, -2)))


# ----------------------------------------------------------------------------- isotropic


def test_isotropic_methods_are_identity():
  model = noise.isotropic()
  x = _random(SHAPE)
  for method in (model.sqrt_cov, model.inv_sqrt_cov, model.cov):
    np.testing.assert_array_equal(method(x), x)
  assert model.name == "isotropic"


def test_isotropic_sample_is_standard_normal_draw():
  key = jax.random.key(3)
  for dtype in (jnp.float32, jnp.bfloat16):
    got = noise.isotropic().sample(key, SHAPE, dtype)
    want = jax.random.normal(key, SHAPE, dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


# ----------------------------------------------------------------------------- gff_amplitude


@pytest.mark.parametrize("height,width", [(8, 8), (16, 12), (5, 7), (1, 4)])
def test_gff_amplitude_finite_normalised_symmetric(height, width):
  a = noise.gff_amplitude(height, width)
  assert a.shape == (height, width) and a.dtype == np.float64
  assert np.all(np.isfinite(a)) and np.all(a > 0)
  np.testing.assert_allclose(np.mean(a ** 2), 1.0, rtol=1e-12)
  # Symmetry under k -> -k is what makes the filtered noise real.
  flipped = a[(-np.arange(height)) % height][:, (-np.arange(width)) % width]
  np.testing.assert_allclose(a, flipped, rtol=1e-12)


def test_gff_amplitude_is_inverse_frequency_with_finite_mean():
  a = noise.gff_amplitude(8, 8)
  assert a[0, 0] == pytest.approx(a[0, 1], rel=1e-12)
  assert a[0, 0] == pytest.approx(a[1, 0], rel=1e-12)
  assert a[0, 0] == pytest.approx(a.max(), rel=1e-12)
  # 1/|k|: halving with doubled frequency, 1/sqrt(2) on the diagonal, fftfreq order (-1 at index 7).
  assert a[0, 1] / a[0, 2] == pytest.approx(2.0, rel=1e-12)
  assert a[0, 1] / a[1, 1] == pytest.approx(np.sqrt(2.0), rel=1e-12)
  assert a[0, 7] == pytest.approx(a[0, 1], rel=1e-12)
  assert a[0, 1] / a[4, 4] == pytest.approx(np.sqrt(32.0), rel=1e-12)
  # Non-square: the same rule with integer frequencies of each axis.
  b = noise.gff_amplitude(16, 12)
  assert b[0, 0] == pytest.approx(b[0, 1], rel=1e-12) == pytest.approx(b[1, 0], rel=1e-12)
  assert b[0, 1] / b[3, 4] == pytest.approx(5.0, rel=1e-12)


# ----------------------------------------------------------------------------- gff operators


def test_gff_sqrt_cov_matches_fourier_definition():
  x = _random((2, 16, 12, 3))
  a = noise.gff_amplitude(16, 12)
  model = noise.gff()
  np.testing.assert_allclose(model.sqrt_cov(x), _reference_filter(x, a), atol=2e-5)
  np.testing.assert_allclose(model.cov(x), _reference_filter(x, a ** 2), atol=2e-5)
  np.testing.assert_allclose(model.inv_sqrt_cov(x), _reference_filter(x, 1 / a), atol=1e-4)
  assert model.name == "gff"


def test_gff_operators_invert_and_compose():
  x = _random((2, 16, 12, 3))
  model = noise.gff()
  np.testing.assert_allclose(model.inv_sqrt_cov(model.sqrt_cov(x)), x, atol=2e-5)
  np.testing.assert_allclose(model.sqrt_cov(model.inv_sqrt_cov(x)), x, atol=2e-5)
  np.testing.assert_allclose(model.cov(x), model.sqrt_cov(model.sqrt_cov(x)), atol=2e-5)
  # Not the identity: otherwise the three checks above would hold trivially.
  assert np.max(np.abs(model.sqrt_cov(x) - x)) > 0.1


def test_gff_channels_filtered_independently():
  x = _random((2, 16, 12, 3))
  model = noise.gff()
  whole = model.sqrt_cov(x)
  for c in range(3):
    np.testing.assert_allclose(whole[..., c:c + 1], model.sqrt_cov(x[..., c:c + 1]), atol=1e-6)


def test_gff_rejects_images_without_channel_axis():
  with pytest.raises(ValueError, match=r"\[\.\.\., H, W, C\]"):
    noise.gff().sqrt_cov(jnp.zeros((8, 8)))
  with pytest.raises(ValueError, match=r"\(8, 8\)"):
    noise.gff().sample(jax.random.key(0), (8, 8))


# ----------------------------------------------------------------------------- gff statistics


@pytest.fixture(scope="module")
def gff_draw():
  """8192 GFF samples of [8, 8, 2], as drawn: [8192, 8, 8, 2] float32."""
  return noise.gff().sample(jax.random.key(42), (8192, 8, 8, 2))


@pytest.fixture(scope="module")
def gff_samples(gff_draw):
  """The two channels of `gff_draw` pooled as 16384 single-channel images: [16384, 8, 8] float64."""
  return np.moveaxis(np.asarray(gff_draw, np.float64), -1, 0).reshape(-1, 8, 8)


def test_gff_samples_have_unit_pixel_variance(gff_samples):
  var = gff_samples.var(axis=0)
  np.testing.assert_allclose(var, 1.0, rtol=0.06)
  assert abs(var.mean() - 1.0) < 0.03
  assert abs(gff_samples.mean()) < 0.03


def test_gff_empirical_power_spectrum_matches_amplitude(gff_samples):
  height, width = gff_samples.shape[1:]
  power = np.mean(np.abs(np.fft.fft2(gff_samples, axes=(1, 2))) ** 2, axis=0) / (height * width)
  # Each bin is a mean of 16384 exponential variables: ~1% relative error, ~5% at the worst of 64.
  np.testing.assert_allclose(power, noise.gff_amplitude(height, width) ** 2, rtol=0.06)


def test_gff_neighbours_positively_correlated_unlike_isotropic(gff_samples):
  def neighbour_corr(x):
    right = np.mean(x * np.roll(x, 1, axis=2)) / np.mean(x * x)
    down = np.mean(x * np.roll(x, 1, axis=1)) / np.mean(x * x)
    return right, down

  # Stationary covariance: lag correlation = ifft2(A²)[lag] / ifft2(A²)[0].
  autocov = np.real(np.fft.ifft2(noise.gff_amplitude(8, 8) ** 2))
  expected = autocov[0, 1] / autocov[0, 0]
  assert expected > 0.2
  for corr in neighbour_corr(gff_samples):
    assert corr == pytest.approx(expected, abs=0.02)

  white = np.asarray(noise.isotropic().sample(jax.random.key(42), (8192, 8, 8, 2)))
  white = np.moveaxis(white, -1, 0).reshape(-1, 8, 8)
  for corr in neighbour_corr(white):
    assert abs(corr) < 0.02


def test_gff_sample_channels_uncorrelated_real_finite(gff_draw):
  assert gff_draw.shape == (8192, 8, 8, 2) and gff_draw.dtype == jnp.float32
  assert not jnp.iscomplexobj(gff_draw)
  assert bool(jnp.all(jnp.isfinite(gff_draw)))
  x = np.asarray(gff_draw, np.float64)
  # Same pixel, different channel: independent draws. Each estimate averages 8192 samples.
  same_pixel = np.mean(x[..., 0] * x[..., 1], axis=0) / np.sqrt(
      np.mean(x[..., 0] ** 2, axis=0) * np.mean(x[..., 1] ** 2, axis=0))
  assert np.max(np.abs(same_pixel)) < 0.05
  assert abs(np.corrcoef(x[..., 0].ravel(), x[..., 1].ravel())[0, 1]) < 0.02


# ----------------------------------------------------------------------------- dtypes, jit, sharding


@pytest.mark.parametrize("name", ["isotropic", "gff"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_preserved(name, dtype):
  model = noise.make_noise_model(name)
  x = _random(SHAPE, dtype=dtype)
  assert model.sample(jax.random.key(0), SHAPE, dtype).dtype == dtype
  for method in (model.sqrt_cov, model.inv_sqrt_cov, model.cov):
    y = method(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(y)))
    # bfloat16 input is filtered in float32, so it matches the float32 result to bfloat16 rounding.
    want = method(x.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=0.03, rtol=0.02)


def test_bfloat16_sample_is_rounded_float32_sample():
  model = noise.gff()
  key = jax.random.key(5)
  low = model.sample(key, SHAPE, jnp.bfloat16)
  high = model.sample(key, SHAPE, jnp.float32)
  np.testing.assert_array_equal(np.asarray(low), np.asarray(high.astype(jnp.bfloat16)))


@pytest.mark.parametrize("name", ["isotropic", "gff"])
def test_sample_under_jit_is_deterministic(name):
  model = noise.make_noise_model(name)
  draw = jax.jit(lambda key: model.sample(key, SHAPE))
  key = jax.random.key(11)
  first, second = draw(key), draw(key)
  np.testing.assert_array_equal(first, second)
  np.testing.assert_allclose(first, model.sample(key, SHAPE), atol=1e-6)
  assert not np.allclose(first, draw(jax.random.key(12)))


def test_models_are_hashable_static_jit_arguments():
  whiten = jax.jit(lambda model, x: model.inv_sqrt_cov(x), static_argnums=0)
  x = _random(SHAPE)
  assert noise.gff() == noise.gff() and hash(noise.gff()) == hash(noise.gff())
  assert noise.gff() != noise.isotropic()
  np.testing.assert_allclose(whiten(noise.gff(), x), noise.gff().inv_sqrt_cov(x), atol=1e-6)
  np.testing.assert_array_equal(whiten(noise.isotropic(), x), x)


def test_gff_on_batch_sharded_input():
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("data",), devices=devices)
  sharding = NamedSharding(mesh, P("data"))
  x = _random((2 * len(devices), 8, 8, 2))
  x_sharded = jax.device_put(x, sharding)
  y = jax.jit(noise.gff().sqrt_cov)(x_sharded)
  np.testing.assert_allclose(y, noise.gff().sqrt_cov(x), atol=1e-6)
  assert y.sharding.is_equivalent_to(sharding, y.ndim)


# ----------------------------------------------------------------------------- factory


def test_make_noise_model():
  assert isinstance(noise.make_noise_model("isotropic"), noise.IsotropicNoise)
  assert isinstance(noise.make_noise_model("gff"), noise.GFFNoise)
  with pytest.raises(ValueError) as info:
    noise.make_noise_model("nope")
  message = str(info.value)
  assert "nope" in message and "isotropic" in message and "gff" in message


def test_mean_amplitude_sets_the_constant_component_and_keeps_unit_variance():
  default = noise.gff_amplitude(8, 8)
  np.testing.assert_array_equal(noise.gff_amplitude(8, 8, 1.0), default)
  weak = noise.gff_amplitude(8, 8, 0.25)
  assert np.mean(weak**2) == pytest.approx(1.0)
  # Relative to the |k| = 1 wave (index [0, 1]) the mean has a quarter of the default's amplitude.
  assert weak[0, 0] / weak[0, 1] == pytest.approx(0.25 * default[0, 0] / default[0, 1])
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  model = noise.gff(0.25)
  np.testing.assert_allclose(model.inv_sqrt_cov(model.sqrt_cov(x)), x, atol=1e-4)
  # The image mean of the noise shrinks with the amplitude of the constant component.
  means = [float(jnp.std(jnp.mean(noise.gff(a).sample(jax.random.key(1), (512, 8, 8, 1)),
                                   axis=(1, 2, 3)))) for a in (1.0, 0.25)]
  assert means[1] == pytest.approx(means[0] * weak[0, 0] / default[0, 0], rel=0.15)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "big"])
def test_bad_mean_amplitude_names_the_field(bad):
  with pytest.raises(ValueError, match="diffusion.gff_mean_amplitude"):
    noise.make_noise_model("gff", bad)


def test_config_field_reaches_the_noise_model():
  from configs import default
  from mcvd_jax.diffusion.factory import diffusion_from_config
  section = default.get_config().diffusion
  section.noise, section.gff_mean_amplitude = "gff", 0.5
  assert diffusion_from_config(section).noise_model.mean_amplitude == 0.5
