"""The hand-written pieces of models/layers.py agree with the flax / autodiff versions they replace."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcvd_jax.models import kernels, layers


def test_conv_and_dense_match_flax_modules():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 5))
  for ours, theirs in [
      (layers.conv3x3(7, jnp.float32), nn.Conv(7, (3, 3), padding=((1, 1), (1, 1)))),
      (layers.conv1x1(4, jnp.float32), nn.Conv(4, (1, 1), padding="VALID")),
      (layers.dense(3, jnp.float32), nn.Dense(3)),
  ]:
    params = ours.init(jax.random.key(1), x)["params"]
    params = {"kernel": params["kernel"], "bias": jnp.arange(params["bias"].size, dtype=jnp.float32)}
    np.testing.assert_allclose(ours.apply({"params": params}, x),
                               theirs.apply({"params": params}, x), rtol=1e-6, atol=1e-6)


def test_bias_add_gradient_matches_autodiff():
  y = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
  b = jax.random.normal(jax.random.key(1), (5,))
  w = jax.random.normal(jax.random.key(2), y.shape)
  loss = lambda add: lambda y, b: jnp.sum(jnp.sin(add(y, b)) * w)
  ours = jax.grad(loss(kernels.bias_add), argnums=(0, 1))(y, b)
  plain = jax.grad(loss(lambda y, b: y + b), argnums=(0, 1))(y, b)
  for a, e in zip(ours, plain):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


def _dropout(rate, x, key, deterministic=False):
  return layers.Dropout(rate).apply({}, x, deterministic, rngs={"dropout": key})


def test_dropout_keeps_the_right_fraction_scaled():
  x = jnp.ones((8, 32, 32, 64))  # 524,288 elements: the kept fraction has std ~4e-4
  out = np.asarray(_dropout(0.1, x, jax.random.key(0)))
  kept = out != 0
  assert abs(kept.mean() - 0.9) < 3e-3
  np.testing.assert_allclose(out[kept], 1 / 0.9, rtol=1e-6)
  # No structure along any axis: neighbouring masks are uncorrelated and every channel, row and
  # image keeps about the same share.
  k = kept.astype(np.float64)
  for axis in range(4):
    a, b = np.moveaxis(k, axis, 0)[:-1].ravel(), np.moveaxis(k, axis, 0)[1:].ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01, axis
  assert np.all(np.abs(k.mean(axis=(0, 1, 2)) - 0.9) < 0.03)
  assert np.all(np.abs(k.mean(axis=(1, 2, 3)) - 0.9) < 0.01)


def test_dropout_masks_depend_on_the_key_only():
  x = jnp.ones((4, 8, 8, 16))
  a = _dropout(0.3, x, jax.random.key(1))
  np.testing.assert_array_equal(a, _dropout(0.3, x, jax.random.key(1)))
  b = _dropout(0.3, x, jax.random.key(2))
  assert 0.3 < float(jnp.mean((a == 0) != (b == 0))) < 0.5  # independent masks differ in ~42%
  np.testing.assert_array_equal(_dropout(0.3, x, jax.random.key(1), deterministic=True), x)
  np.testing.assert_array_equal(_dropout(0.0, x, jax.random.key(1)), x)


@pytest.mark.parametrize("rate", [0.05, 0.5])
def test_dropout_gradient_is_the_mask(rate):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 8))
  key = jax.random.key(3)
  grad = jax.grad(lambda x: jnp.sum(_dropout(rate, x, key)))(x)
  mask = _dropout(rate, jnp.ones_like(x), key)
  np.testing.assert_allclose(grad, mask, rtol=1e-6)
