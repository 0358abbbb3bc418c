"""mcvd_jax.flows (MRCNF): the transforms, the likelihood pipeline, bits/dim, sampling, sizes.

Each check compares with an independent answer: autodiff Jacobians in float64 (volume, the Haar
and logit log-dets), the Gaussian log-density computed by hand with numpy/scipy for flows whose
field is zero or constant, the exact divergence for the mean of many Hutchinson probes, the
inverse solves for the forward ones, and the paper's parameter counts. Shapes are tiny (8×8×1,
2 levels, 1 block, hidden 8) and the jitted functions are shared by module fixtures.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from mcvd_jax.flows import (MrcnfConfig, MrcnfConfigError, bits_per_dim, block_param_count,
                            combine, decode, dequantise, draw_latents, init_params,
                            log_likelihood, logit_forward, logit_inverse, loss_fn, param_count,
                            pyramid, quantise, split, transform_log_det)
from mcvd_jax.ode import OdeSettings

C = 2.0 ** (2.0 / 3.0)
CFG = MrcnfConfig(image_size=8, channels=1, num_levels=2, blocks_per_level=1, hidden=8)
# Fixed Euler steps (the cheapest to compile): a constant field integrates exactly, and the
# trajectory cannot depend on the probe.
FIXED = OdeSettings(solver="euler", adaptive=False, num_steps=3)
TIGHT = OdeSettings(solver="tsit5", rtol=1e-6, atol=1e-6)
N_COPIES = 128  # copies of each image: every copy draws its own Hutchinson probe


@pytest.fixture(scope="module")
def images():
  """Two random 8×8×1 images, each repeated N_COPIES times: one batch shape for every jitted
  likelihood (a new shape would compile again)."""
  two = np.random.RandomState(0).randint(0, 256, (2, 8, 8, 1)).astype(np.uint8)
  return jnp.asarray(np.repeat(two, N_COPIES, axis=0))


@pytest.fixture(scope="module")
def init():
  return jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def random_params():
  """Every weight random and nonzero (the last kernel too), at about PyTorch's init scale, so
  each block's field is nonlinear but not stiff. Drawn with numpy into init_params' shapes:
  jax.random would compile a threefry kernel per parameter."""
  shapes = jax.eval_shape(functools.partial(init_params, CFG), jax.random.key(0))
  rng = np.random.RandomState(7)
  std = lambda x: 0.3 if x.ndim == 2 else 1.5 / math.sqrt(9 * x.shape[-2])  # bias | kernel
  return jax.tree.map(lambda x: jnp.asarray(std(x) * rng.standard_normal(x.shape), jnp.float32),
                      shapes)


@pytest.fixture(scope="module")
def fixed_ll():
  """log_likelihood at fixed steps, u = 0.5, with regularisers; jitted once per divergence."""
  return {d: jax.jit(functools.partial(log_likelihood, CFG, settings=FIXED, noisy=False,
                                       divergence=d, regularisers=True))
          for d in ("hutchinson", "exact")}


# --------------------------------------------------------------------------- transforms

def _quads(x):
  return x[:, ::2, ::2], x[:, ::2, 1::2], x[:, 1::2, ::2], x[:, 1::2, 1::2]


@pytest.mark.parametrize("transform, a", [("mrcnf", C), ("haar", 2.0)])
def test_split_is_the_papers_transform_with_its_volume_and_inverse(transform, a):
  with jax.enable_x64(True):
    x = np.random.RandomState(1).uniform(size=(3, 8, 8, 2))  # float64
    small = x[:1, :4, :4]  # its coarse part has 8 values

    @jax.jit  # one compile rather than one per eager operation
    def run(x, small):
      details, coarse = split(x, transform)
      flat = lambda v: jnp.concatenate([t.ravel() for t in split(v.reshape(small.shape),
                                                                   transform)])
      return details, coarse, combine(details, coarse, transform), jax.jacfwd(flat)(small.ravel())

    details, coarse, back, jac = (np.asarray(v) for v in run(x, small))
  assert details.dtype == np.float64 and jac.shape == (32, 32)
  # the formulas by hand, and the channel order concat(y1, y2, y3): channel k·C + c
  x1, x2, x3, x4 = _quads(x)
  by_hand = np.concatenate([(x1 + x2 - x3 - x4) / a, (x1 - x2 + x3 - x4) / a,
                            (x1 - x2 - x3 + x4) / a], axis=-1)
  np.testing.assert_allclose(details, by_hand, atol=1e-15)
  np.testing.assert_allclose(coarse, (x1 + x2 + x3 + x4) / 4, atol=1e-15)
  assert np.abs(back - x).max() < 1e-14
  # log|det| of x -> (y, x̄) from the full Jacobian
  sign, log_det = np.linalg.slogdet(jac)
  expected = transform_log_det(transform, 8)
  assert sign != 0 and abs(log_det - expected) < 1e-12
  assert expected == (0.0 if transform == "mrcnf" else pytest.approx(8 * math.log(0.5)))


def test_pyramid_dequantise_quantise():
  img = np.random.RandomState(1).randint(0, 256, (2, 8, 8, 3)).astype(np.uint8)

  @jax.jit
  def run(img):
    levels = pyramid(img, 3)
    x = dequantise(levels[2], jax.random.key(0))
    return (levels, x, quantise(x), dequantise(levels[2], None, noisy=False),
            dequantise(levels[2], jax.random.key(1)))

  levels, x, back, centres, other = jax.tree.map(np.asarray, run(img))
  assert [lv.shape for lv in levels] == [(2, 2, 2, 3), (2, 4, 4, 3), (2, 8, 8, 3)]
  np.testing.assert_allclose(levels[1], img.reshape(2, 4, 2, 4, 2, 3).mean((2, 4)), atol=1e-4)
  np.testing.assert_allclose(levels[0], img.reshape(2, 2, 4, 2, 4, 3).mean((2, 4)), atol=1e-4)
  assert np.all(x >= img / 256) and np.all(x < (img.astype(np.float64) + 1) / 256)
  assert np.array_equal(back, img) and back.dtype == np.uint8
  np.testing.assert_allclose(centres, (img + 0.5) / 256)
  assert not np.allclose(x, other)  # fresh noise per key


def test_logit_log_det_is_the_jacobians():
  with jax.enable_x64(True):
    x = np.random.RandomState(2).uniform(size=(2, 5))

    @jax.jit
    def run(x):
      out = []
      for alpha in (0.05, 1e-6):
        h, log_det = logit_forward(x, alpha)
        jac = jax.vmap(jax.jacfwd(lambda v: logit_forward(v[None], alpha)[0][0]))(x)
        out.append((log_det, jac, logit_inverse(h, alpha)))
      return out

    for log_det, jac, back in jax.tree.map(np.asarray, run(x)):
      np.testing.assert_allclose(log_det, np.linalg.slogdet(jac)[1], rtol=1e-12)
      np.testing.assert_allclose(back, x, atol=1e-12)


# --------------------------------------------------------------------------- likelihood

def _analytic_log_p(img, shift0, shift1, alpha=0.05, a=C, split_log_det=0.0):
  """log p of the MRCNF whose flows only add `shift` (per channel) to the flow input, u = 0.5:
  level 0 Gaussian of logit(x_0) + shift0 with the logit log-det; level 1 Gaussian of the
  details (divided by a) + shift1, plus the split's log-det (0 for the paper's transform)."""
  img = np.asarray(img, np.float64)
  x0 = (img.reshape(-1, 4, 2, 4, 2, 1).mean((2, 4)) + 0.5) / 256
  s = alpha + (1 - 2 * alpha) * x0
  h = np.log(s / (1 - s))
  level0 = (scipy.stats.norm.logpdf(h + shift0) + np.log(1 - 2 * alpha)
            - np.log(s * (1 - s))).sum((1, 2, 3))
  x1, x2, x3, x4 = _quads((img + 0.5) / 256)
  y = np.concatenate([(x1 + x2 - x3 - x4) / a, (x1 - x2 + x3 - x4) / a,
                      (x1 - x2 - x3 + x4) / a], axis=-1)
  level1 = scipy.stats.norm.logpdf(y + shift1).sum((1, 2, 3)) + split_log_det
  return np.stack([level0, level1])


@pytest.mark.parametrize("which", ["zero", "init"])
def test_zero_or_constant_field_gives_the_analytic_base_density(which, init, images, fixed_ll):
  """All parameters zero: f = 0, the flows are the identity. At init the last kernel is zero and
  its bias b not: f = b, so z = h + b over t in [0, 1], the divergence is 0 and KE = ½ mean b²."""
  params = jax.tree.map(jnp.zeros_like, init) if which == "zero" else init
  b0 = np.asarray(params["level_0"]["layer_3"]["conv"]["bias"][0], np.float64)
  b1 = np.asarray(params["level_1"]["layer_3"]["conv"]["bias"][0], np.float64)
  if which == "init":
    assert np.all(b1 != 0)  # distinct per detail channel: the check sees the channel order
  out = fixed_ll["hutchinson"](params, images, jax.random.key(3))
  expected = _analytic_log_p(images, b0, b1)
  np.testing.assert_allclose(out.level_log_p, expected, rtol=1e-5)
  np.testing.assert_allclose(out.log_p, expected.sum(0), rtol=1e-5)
  kinetic = 0.5 * (np.mean(b0**2) + np.mean(b1**2))
  np.testing.assert_allclose(out.regularisers["kinetic"], kinetic, rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(out.regularisers["jacobian_frobenius"], 0.0, atol=1e-10)
  assert out.latents[0].shape == (256, 4, 4, 1) and out.latents[1].shape == (256, 4, 4, 3)


def test_haar_variant_adds_its_log_det_to_log_p(images):
  cfg = MrcnfConfig(image_size=8, channels=1, num_levels=2, blocks_per_level=1, hidden=8,
                    transform="haar")
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                       jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0)))
  images = images[::N_COPIES]
  out = jax.jit(functools.partial(log_likelihood, cfg, settings=FIXED, noisy=False,
                                  divergence="exact"))(zeros, images, None)
  # 16 coarse values at level 1, each contributing log ½
  expected = _analytic_log_p(images, 0.0, 0.0, a=2.0, split_log_det=16 * math.log(0.5))
  np.testing.assert_allclose(out.level_log_p, expected, rtol=1e-5)


def test_init_is_pytorchs_conv_law_with_zero_output_kernels():
  cfg = MrcnfConfig(image_size=8, channels=1, num_levels=2, blocks_per_level=2, hidden=8)
  params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(1))
  for level in params.values():
    for name, layer in level.items():
      kernel, bias = np.asarray(layer["conv"]["kernel"]), np.asarray(layer["conv"]["bias"])
      bound = 1 / math.sqrt(9 * kernel.shape[-2])  # [K, 3, 3, C_in (with t), C_out]
      assert np.all(bias != 0) and np.abs(bias).max() <= bound
      assert not np.allclose(bias[0], bias[1])  # each block its own parameters
      if name == "layer_3":
        assert np.all(kernel == 0)
      else:
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
        assert not np.allclose(kernel[0], kernel[1])


def test_hutchinson_mean_matches_exact_divergence(random_params, images, fixed_ll):
  """Each of the N_COPIES copies of an image gets its own Gaussian probe; with fixed steps the
  trajectory is the same for every probe, so the mean estimate is unbiased for the exact one.
  The tolerance is 4 standard errors of that mean."""
  exact = fixed_ll["exact"](random_params, images, None)
  hutch = fixed_ll["hutchinson"](random_params, images, jax.random.key(4))
  for image in range(2):
    copies = slice(image * N_COPIES, (image + 1) * N_COPIES)
    for name in ("log_p", "jacobian_frobenius"):
      pick = (lambda o: o.log_p) if name == "log_p" else (lambda o: o.regularisers[name])
      got, want = np.asarray(pick(hutch)[copies], np.float64), np.asarray(pick(exact)[copies])
      np.testing.assert_allclose(want, want[0], rtol=1e-6)  # exact: the same for every copy
      se = got.std(ddof=1) / math.sqrt(N_COPIES)
      assert se > 1e-4, "the probes should make the estimates differ"
      assert abs(got.mean() - want[0]) < 4 * se, (name, got.mean(), want[0], se)
  # the flow is far from the identity, so the divergence matters
  identity = _analytic_log_p(images, 0.0, 0.0).sum(0)
  assert np.abs(np.asarray(exact.log_p) - identity).min() > 1.0
  np.testing.assert_allclose(hutch.regularisers["kinetic"], exact.regularisers["kinetic"],
                             rtol=1e-5)
  assert np.all(exact.regularisers["jacobian_frobenius"] > 0)


def test_loss_is_mean_bits_per_dim_over_the_full_image_plus_regularisers(random_params, images,
                                                                          fixed_ll):
  cfg = MrcnfConfig(image_size=8, channels=1, num_levels=2, blocks_per_level=1, hidden=8,
                    kinetic_coef=0.3, jacobian_coef=0.2)
  key = jax.random.key(5)
  loss, metrics = jax.jit(loss_fn(cfg, FIXED, noisy=False))(random_params, images, key)
  out = fixed_ll["hutchinson"](random_params, images, key)  # the same probes
  log_p = np.asarray(out.log_p, np.float64)
  bpd = ((-log_p / 64 + math.log(256)) / math.log(2)).mean()  # D = 8·8·1, the full image
  kinetic = float(out.regularisers["kinetic"].mean())
  jacobian = float(out.regularisers["jacobian_frobenius"].mean())
  assert kinetic > 0 and jacobian > 0
  np.testing.assert_allclose(metrics["bpd"], bpd, rtol=1e-5)
  np.testing.assert_allclose(loss, bpd + 0.3 * kinetic + 0.2 * jacobian, rtol=1e-5)
  np.testing.assert_allclose(metrics["bpd_level_1"], bpd, rtol=1e-5)
  level0 = ((-np.asarray(out.level_log_p[0]) / 16 + math.log(256)) / math.log(2)).mean()
  np.testing.assert_allclose(metrics["bpd_level_0"], level0, rtol=1e-5)
  assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())
  assert float(metrics["nfe"]) == 2 * 3  # two levels of one block, 3 Euler steps


@pytest.mark.parametrize("dims", [1, 64, 3072])
def test_bits_per_dim_of_a_uniform_density_is_eight(dims):
  """A density uniform on [0, 1]^D gives every 8-bit image the mass 256^-D: 8 bits per dim;
  uniform on [0, ½]^D (log p = D log 2) puts its mass on half the levels: 7 bits."""
  assert float(bits_per_dim(jnp.zeros(()), dims)) == pytest.approx(8.0, abs=1e-6)
  assert float(bits_per_dim(jnp.asarray(dims * math.log(2.0)), dims)) == pytest.approx(7.0)


# --------------------------------------------------------------------------- sampling

def test_decode_inverts_encode_and_samples_have_every_level(random_params, images):
  # the divergence does not change the latents; the exact one needs no key (u = 0.5)
  encode = jax.jit(functools.partial(log_likelihood, CFG, settings=TIGHT, noisy=False,
                                     divergence="exact"))
  dec = jax.jit(functools.partial(decode, CFG, settings=TIGHT))
  images = images[::N_COPIES]  # the two distinct images
  out = encode(random_params, images, None)
  back = dec(random_params, out.latents)
  levels = pyramid(images, 2)
  for s in range(2):
    want = (np.asarray(levels[s], np.float64) + 0.5) / 256
    assert np.abs(np.asarray(back.continuous[s]) - want).max() < 2e-5  # bins are 4e-3 wide
  assert np.array_equal(back.images[1], images)
  # the flows moved the data well away from the transform's output: the inversion is not trivial
  details, _ = split((np.asarray(images, np.float32) + 0.5) / 256)
  assert np.abs(np.asarray(out.latents[1]) / CFG.noise_std(1) - details).max() > 0.1

  drawn = dec(random_params, draw_latents(CFG, jax.random.key(8), 2, temperature=0.7))
  assert [im.shape for im in drawn.images] == [(2, 4, 4, 1), (2, 8, 8, 1)]
  assert all(im.dtype == jnp.uint8 for im in drawn.images)
  # each finer level keeps the coarser one as its 2×2 mean
  np.testing.assert_allclose(split(drawn.continuous[1])[1], drawn.continuous[0], atol=1e-5)
  assert np.all(np.asarray(drawn.num_evals) > 0)


# --------------------------------------------------------------------------- sizes and config

@pytest.mark.parametrize("levels, blocks, count", [(3, 20, 5_096_040), (2, 8, 1_335_744),
                                                   (3, 8, 2_038_416)])
def test_parameter_counts_are_the_papers(levels, blocks, count):
  cfg = MrcnfConfig(image_size=32, channels=3, num_levels=levels, blocks_per_level=blocks,
                    hidden=64)
  assert param_count(cfg) == count
  assert block_param_count(3, 0, 64) == 79_134 and block_param_count(9, 3, 64) == 87_834
  assert count == blocks * (79_134 + (levels - 1) * 87_834)


def test_noise_scales_are_the_papers():
  cfg = MrcnfConfig(image_size=32, channels=3, num_levels=3)
  # σ_s = √((1 or c) / 4^(log2 64 - log2 W_s)), W_s = 8, 16, 32
  np.testing.assert_allclose([cfg.noise_std(s) for s in range(3)],
                             [1 / 8, math.sqrt(C) / 4, math.sqrt(C) / 2], rtol=1e-12)
  assert MrcnfConfig(transform="haar", num_levels=3).noise_std(2) == pytest.approx(0.5)
  assert MrcnfConfig(noise_reference_size=None).noise_std(1) == 1.0


@pytest.mark.parametrize("overrides, message", [
    (dict(image_size=30, num_levels=3), r"model\.image_size=30 is not divisible by"),
    (dict(transform="wavelet"), r"model\.transform='wavelet' is not one of"),
    (dict(logit_alpha=0.5), r"model\.logit_alpha=0\.5 must be in \(0, 0\.5\)"),
    (dict(blocks_per_level=(2, 2, 2)), r"model\.blocks_per_level=\(2, 2, 2\) must be"),
    (dict(divergence="brute"), r"model\.divergence='brute' is not one of"),
    (dict(kinetic_coef=-1.0), r"model\.kinetic_coef=-1\.0 must be a finite number"),
    (dict(train_ode=OdeSettings(solver="rk4", section="model.train_ode")),
     r"model\.train_ode\.solver='rk4'"),
])
def test_config_errors_name_the_field(overrides, message):
  with pytest.raises(ValueError, match=message):
    MrcnfConfig(**overrides)
  assert issubclass(MrcnfConfigError, ValueError)


def test_log_likelihood_rejects_wrong_shapes_and_missing_keys(init):
  with pytest.raises(ValueError, match=r"images of shape \(1, 8, 8, 3\)"):
    log_likelihood(CFG, init, jnp.zeros((1, 8, 8, 3), jnp.uint8), jax.random.key(0))
  with pytest.raises(ValueError, match="needs a key"):
    log_likelihood(CFG, init, jnp.zeros((1, 8, 8, 1), jnp.uint8), None)
