"""The denoiser's layers against independent NumPy versions, its config checks and its modes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import cached_init
from mcvd_jax.models import UNetConfig, make_denoise_fn, module_list
from mcvd_jax.models.kernels import (fir_downsample, fir_upsample, group_norm, nearest_resize,
                                     timestep_embedding)

TINY = dict(image_size=16, channels=1, num_frames=2, num_frames_cond=2, ngf=8, ch_mult=(1, 2),
            num_res_blocks=1, attn_resolutions=(8,), n_head_channels=8, dropout=0.1, spade_dim=8)

def perturbed(params, scale=0.05):
  """Moves every parameter off its init (the zero-initialised output layers hide everything)."""
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype),
                                params)


FIR = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0


def correlate2d(x, k, pad):
  """Direct 2-D correlation of x [H, W] with kernel k after zero padding ((top, bottom), (l, r))."""
  xp = np.pad(x, pad)
  kh, kw = k.shape
  out = np.zeros((xp.shape[0] - kh + 1, xp.shape[1] - kw + 1))
  for i in range(out.shape[0]):
    for j in range(out.shape[1]):
      out[i, j] = np.sum(xp[i:i + kh, j:j + kw] * k)
  return out


def direct_fir_down(x):
  return correlate2d(x, FIR, ((1, 1), (1, 1)))[::2, ::2]


def direct_fir_up(x):
  up = np.zeros((2 * x.shape[0], 2 * x.shape[1]))
  up[::2, ::2] = x  # zeros inserted after each sample
  return correlate2d(up, 4 * FIR, ((2, 1), (2, 1)))


def test_fir_downsample_matches_direct_filter():
  x = np.random.default_rng(0).normal(size=(1, 8, 6, 1))
  ours = np.asarray(fir_downsample(jnp.asarray(x, jnp.float32)))[0, ..., 0]
  direct = direct_fir_down(x[0, ..., 0])
  np.testing.assert_allclose(ours, direct, atol=1e-5)


def test_fir_upsample_matches_direct_filter():
  x = np.random.default_rng(1).normal(size=(1, 4, 5, 1))
  direct = direct_fir_up(x[0, ..., 0])
  ours = np.asarray(fir_upsample(jnp.asarray(x, jnp.float32)))[0, ..., 0]
  np.testing.assert_allclose(ours, direct, atol=1e-5)


@pytest.mark.parametrize("ours, direct, shape", [(fir_downsample, direct_fir_down, (6, 4)),
                                                 (fir_upsample, direct_fir_up, (3, 5))])
def test_fir_gradients_are_the_transposed_filters(ours, direct, shape):
  # The filters are linear, y = A x: build A column by column from the direct filters, then the
  # custom VJPs must give A^T g.
  columns = []
  for i in range(np.prod(shape)):
    basis = np.zeros(np.prod(shape))
    basis[i] = 1.0
    columns.append(direct(basis.reshape(shape)).ravel())
  matrix = np.stack(columns, axis=1)
  x = jnp.asarray(np.random.default_rng(3).normal(size=(1, *shape, 1)), jnp.float32)
  y, vjp = jax.vjp(ours, x)
  g = np.random.default_rng(4).normal(size=y.shape).astype(np.float32)
  (ours_grad,) = vjp(jnp.asarray(g))
  np.testing.assert_allclose(np.asarray(ours_grad).ravel(), matrix.T @ g.ravel(), atol=1e-5)


def test_fir_downsample_rejects_odd_sizes():
  with pytest.raises(ValueError, match="even height and width"):
    fir_downsample(jnp.zeros((1, 6, 5, 1)))


def test_group_norm_matches_numpy():
  x = np.random.default_rng(2).normal(3.0, 2.0, size=(2, 4, 4, 12)).astype(np.float32)
  ours = np.asarray(group_norm(jnp.asarray(x), 3, 1e-5))
  g = x.reshape(2, 4, 4, 3, 4).astype(np.float64)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  np.testing.assert_allclose(ours, ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape), atol=1e-5)


def test_nearest_resize_follows_torch_rule():
  x = jnp.arange(2 * 12 * 12 * 1, dtype=jnp.float32).reshape(2, 12, 12, 1)
  np.testing.assert_array_equal(nearest_resize(x, 3, 3), x[:, ::4, ::4])
  rows = np.floor(np.arange(5) * 12 / 5).astype(int)
  np.testing.assert_array_equal(nearest_resize(x, 5, 5), np.asarray(x)[:, rows][:, :, rows])


def test_timestep_embedding_layout():
  emb = np.asarray(timestep_embedding(jnp.array([0, 7]), 8))
  freqs = np.exp(-np.arange(4) * np.log(10000) / 3)
  np.testing.assert_allclose(emb[1], np.concatenate([np.sin(7 * freqs), np.cos(7 * freqs)]), rtol=1e-6)
  np.testing.assert_array_equal(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("spatin", [False, True])
def test_forward_shapes_and_modes(spatin):
  cfg = UNetConfig(**TINY, spatin=spatin)
  params = cached_init(cfg)
  names = [m.name for m in module_list(cfg)]
  assert set(params) == set(names)
  denoise = jax.jit(make_denoise_fn(cfg))
  x = jax.random.normal(jax.random.key(1), (3, 16, 16, 2))
  cond = jax.random.normal(jax.random.key(2), (3, 16, 16, 2))
  labels = jnp.array([0, 500, 999])
  out = denoise(params, x, labels, cond)
  assert out.shape == x.shape and out.dtype == jnp.float32
  # The output conv starts near zero (the reference's init: variance scale 1e-10, std ~1e-6).
  assert float(jnp.max(jnp.abs(out))) < 1e-3
  # Dropout acts only in training mode.
  params = perturbed(params)
  eval_a, eval_b = denoise(params, x, labels, cond), denoise(params, x, labels, cond)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = denoise(params, x, labels, cond, jax.random.key(4))
  train_b = denoise(params, x, labels, cond, jax.random.key(5))
  assert not np.allclose(train_a, train_b)
  # Conditioning and time labels both matter.
  assert not np.allclose(denoise(params, x, labels, cond * 0), eval_a)
  assert not np.allclose(denoise(params, x, labels[::-1], cond), eval_a)


def test_bfloat16_compute_is_close_to_float32():
  cfg = UNetConfig(**TINY)
  params = perturbed(cached_init(cfg))
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 2))
  cond = jax.random.normal(jax.random.key(2), (2, 16, 16, 2))
  labels = jnp.array([10, 900])
  f32 = jax.jit(make_denoise_fn(cfg))(params, x, labels, cond)
  bf16 = jax.jit(make_denoise_fn(UNetConfig(**TINY, dtype="bfloat16")))(params, x, labels, cond)
  assert bf16.dtype == jnp.float32
  rel = float(jnp.max(jnp.abs(bf16 - f32)) / jnp.max(jnp.abs(f32)))
  assert rel < 0.1


def test_forward_traced_once_per_shape():
  cfg = UNetConfig(**TINY)
  params = cached_init(cfg)
  denoise = make_denoise_fn(cfg)
  forward = jax.jit(chex.assert_max_traces(denoise, n=1))
  for seed in range(3):
    x = jax.random.normal(jax.random.key(seed), (2, 16, 16, 2))
    forward(params, x, jnp.array([seed, 2 * seed]), x)
  with pytest.raises(AssertionError):
    forward(params, jnp.zeros((4, 16, 16, 2)), jnp.zeros(4, jnp.int32), jnp.zeros((4, 16, 16, 2)))
  chex.clear_trace_counter()


def test_input_errors_name_the_problem():
  cfg = UNetConfig(**TINY)
  params = cached_init(cfg)
  denoise = jax.jit(make_denoise_fn(cfg))
  x = jnp.zeros((2, 16, 16, 2))
  with pytest.raises(ValueError, match="pass cond"):
    denoise(params, x, jnp.zeros(2, jnp.int32), None)
  with pytest.raises(ValueError, match="frames stacked on channels"):
    denoise(params, jnp.zeros((2, 16, 16, 3)), jnp.zeros(2, jnp.int32), x)


@pytest.mark.parametrize("change,field", [
    (dict(image_size=17), "image_size"),
    (dict(attn_resolutions=(4,)), "attn_resolutions"),
    (dict(dtype="float77"), "dtype"),
    (dict(dropout=1.5), "dropout"),
    (dict(num_frames=0), "num_frames"),
    (dict(spatin=True, num_frames_cond=0), "spatin"),
    (dict(n_head_channels=6), "n_head_channels"),
])
def test_config_validation(change, field):
  with pytest.raises(ValueError, match=field):
    UNetConfig(**dict(TINY, **change))
