"""model.kernels: the hand-written kernels (kernels.py) against their plain/library versions
(kernel_choice.py), one by one and in the whole UNet."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcvd_jax.models import UNetConfig, kernels, make_denoise_fn
from mcvd_jax.models import kernel_choice as kc
from mcvd_jax.models.layers import Dropout
from tiny_params import random_params

TOL = dict(rtol=1e-5, atol=1e-5)


def _normal(seed: int, shape) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def assert_same_values_and_gradients(custom_fn, library_fn, *args):
  """Outputs and the VJP of a fixed random cotangent (w.r.t. every argument) agree to ~1e-5."""
  out_c, vjp_c = jax.vjp(custom_fn, *args)
  out_l, vjp_l = jax.vjp(library_fn, *args)
  np.testing.assert_allclose(out_l, out_c, **TOL)
  cotangent = _normal(99, out_c.shape)
  for got, want in zip(vjp_l(cotangent), vjp_c(cotangent)):
    np.testing.assert_allclose(got, want, **TOL)


def test_bias_add():
  assert_same_values_and_gradients(kernels.bias_add, kc.plain_bias_add, _normal(0, (2, 4, 4, 6)),
                                   _normal(1, (6,)))


def test_group_norm():
  # An offset mean and uneven scale per channel exercise the two-pass variance.
  x = _normal(0, (2, 4, 4, 16)) * jnp.linspace(0.5, 3.0, 16) + 5.0
  assert_same_values_and_gradients(lambda x: kernels.group_norm(x, 4, 1e-5),
                                   lambda x: kc.plain_group_norm(x, 4, 1e-5), x)


@pytest.mark.parametrize("custom_fn,library_fn", [
    (kernels.fir_downsample, kc.conv_fir_downsample),
    (kernels.fir_upsample, kc.conv_fir_upsample)], ids=["down", "up"])
def test_fir_resampling(custom_fn, library_fn):
  x = _normal(0, (2, 8, 6, 3))
  assert_same_values_and_gradients(custom_fn, library_fn, x)
  # Not trivially equal: the filter is the [1, 3, 3, 1] one (a constant image stays constant
  # away from the zero-padded border).
  flat = library_fn(jnp.ones((1, 8, 8, 1)))
  np.testing.assert_allclose(flat[0, 1:-1, 1:-1, 0], 1.0, rtol=1e-6)


def test_attention():
  q, k, v = (_normal(i, (2, 16, 2, 8)) for i in range(3))
  assert_same_values_and_gradients(lambda q, k, v: kernels.multi_head_attention(q, k, v, 0.35),
                                   lambda q, k, v: kc.library_attention(q, k, v, 0.35), q, k, v)


@pytest.mark.parametrize("spec", ["custom", "library"])
def test_dropout_masks_keep_the_right_fraction_and_scale(spec):
  """Both mask sources are valid inverted dropout: about 1 - rate of the elements kept (64k
  elements: binomial std 0.2%), kept ones scaled by 1 / (1 - rate), the mask a function of the
  key; evaluation mode is the identity."""
  x = jnp.ones((4, 32, 32, 16))
  layer = Dropout(0.3, spec)
  apply = jax.jit(lambda key: layer.apply({}, x, deterministic=False, rngs={"dropout": key}))
  y, y_same, y_other = apply(jax.random.key(0)), apply(jax.random.key(0)), apply(jax.random.key(1))
  kept = np.asarray(y) != 0
  assert abs(kept.mean() - 0.7) < 0.01
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.7, rtol=1e-6)
  np.testing.assert_array_equal(y, y_same)
  assert (np.asarray(y_other) != 0).mean() != kept.mean() or not np.array_equal(y, y_other)
  np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)


def test_dropout_sources_differ():
  """Hashed bits and jax.random.bernoulli are different masks from the same key (both valid)."""
  key = jax.random.key(0)
  hashed = kc.hashed_keep(key, 0.5, (64, 64))
  bernoulli = kc.bernoulli_keep(key, 0.5, (64, 64))
  assert hashed.dtype == bernoulli.dtype == jnp.bool_
  assert not np.array_equal(hashed, bernoulli)


# Two resolutions (both FIR filters), attention at 4x4 and in the middle, SPATIN off.
TINY = dict(image_size=8, channels=1, num_frames=2, num_frames_cond=1, ngf=8, ch_mult=(1, 2),
            num_res_blocks=1, attn_resolutions=(4,), n_head_channels=4, dropout=0.1)


@functools.lru_cache(maxsize=None)
def unet_value_and_grads(spec: str):
  """(output, d sum(output * w) / d params) of the evaluation-mode UNet with model.kernels=spec."""
  cfg = UNetConfig(**TINY, kernels=spec)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 2)), jnp.float32)
  cond = jnp.asarray(rng.standard_normal((2, 8, 8, 1)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((2, 8, 8, 2)), jnp.float32)
  labels = jnp.array([3, 700])
  params = random_params(cfg)
  denoise = make_denoise_fn(cfg)

  def weighted(params):
    out = denoise(params, x, labels, cond)
    return jnp.sum(out * w), out

  # Compiled without LLVM optimisations, which compiles faster; both versions alike.
  fn = jax.jit(jax.value_and_grad(weighted, has_aux=True),
               compiler_options={"xla_backend_optimization_level": 0})
  (_, out), grads = fn(params)
  return out, grads


def test_whole_unet_custom_and_library_kernels_agree():
  out_c, grads_c = unet_value_and_grads("custom")
  out_l, grads_l = unet_value_and_grads("library")
  assert float(jnp.std(out_c)) > 0.1  # the network's output is not trivially zero
  np.testing.assert_allclose(out_l, out_c, rtol=1e-5, atol=1e-5)
  assert jax.tree.structure(grads_l) == jax.tree.structure(grads_c)
  # Float32 rounding, summed in different orders by the two versions through ~25 layers: the
  # gradient as a whole agrees to ~3e-6 (relative L2, measured), single entries to 1e-5 of the
  # largest gradient (some are zero in exact arithmetic, e.g. those of the k biases, which shift
  # every logit of a row alike, and hold only float32 noise in both versions).
  leaves_c, leaves_l = jax.tree.leaves(grads_c), jax.tree.leaves(grads_l)
  diff = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(leaves_l, leaves_c))
  assert (diff / sum(float(jnp.sum(b**2)) for b in leaves_c)) ** 0.5 < 1e-5
  scale = max(float(jnp.max(jnp.abs(g))) for g in leaves_c)
  for path, got in jax.tree_util.tree_leaves_with_path(grads_l):
    want = functools.reduce(lambda t, k: t[k.key], path, grads_c)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


def test_spec_grammar_and_resolution():
  assert kc.parse_kernels("auto") == dict.fromkeys(kc.KERNEL_NAMES, "auto")
  assert kc.parse_kernels("custom, attention = library") == {
      **dict.fromkeys(kc.KERNEL_NAMES, "custom"), "attention": "library"}
  assert kc.parse_kernels("fir=library")["fir"] == "library"  # the base defaults to auto
  assert kc.resolve_kernels("auto", backend="cpu") == dict.fromkeys(kc.KERNEL_NAMES, "custom")
  assert kc.resolve_kernels("auto", backend="gpu") == dict.fromkeys(kc.KERNEL_NAMES, "library")
  assert kc.resolve_kernels("auto,attention=custom", backend="tpu")["attention"] == "custom"
  on_gpu = kc.kernels_for("auto", backend="gpu")
  assert on_gpu.attention is kc.library_attention and on_gpu.group_norm is kc.plain_group_norm
  on_cpu = kc.kernels_for("auto", backend="cpu")
  assert on_cpu.attention is kernels.multi_head_attention and on_cpu.bias_add is kernels.bias_add
  assert kc.kernels_for("library,bias=custom", backend="cpu").bias_add is kernels.bias_add


@pytest.mark.parametrize("spec,why", [
    ("fast", "unknown base 'fast'"),
    ("auto,flash=library", "unknown kernel 'flash'"),
    ("auto,attention=cudnn", "unknown choice 'cudnn'"),
    ("auto,attention", "not NAME=CHOICE"),
    ("attention=library,auto", "not NAME=CHOICE"),
    ("custom,fir=library,fir=custom", "fir is given twice"),
    ("", "unknown base ''"),
])
def test_bad_kernel_specs_raise_naming_the_field(spec, why):
  with pytest.raises(ValueError, match=r"model\.kernels=.*" + why + r".*bias, dropout"):
    kc.parse_kernels(spec)
  with pytest.raises(ValueError, match=r"model\.kernels="):
    UNetConfig(**TINY, kernels=spec)
