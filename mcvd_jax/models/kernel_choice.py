"""Per-backend choice between the hand-written kernels (kernels.py) and plain / library versions.

The hand-written custom VJPs and layouts of kernels.py were tuned on XLA's CPU backend; on GPU
and TPU the compiler's own autodiff, cuDNN's fused attention and depthwise convolutions are the
better-trodden paths. Each kernel here has both versions, with the same maths:

  name        custom (kernels.py)                       library (this module)
  bias        y + bias, bias gradient as a dot          y + bias, autodiff
  dropout     hashed_bits masks                         jax.random.bernoulli masks
  group_norm  float32 stats, hand-written VJP           the same float32 maths, autodiff
  fir         pad + strided-slice taps, adjoint VJPs    depthwise conv (feature_group_count=C)
  attention   heads-major einsums, hand-written VJP     jax.nn.dot_product_attention (cuDNN on GPU)

The choice is `UNetConfig.kernels`, a static string (see `parse_kernels` for the grammar):
"auto" (custom on CPU, library elsewhere; decided at trace time from jax.default_backend()),
"custom", "library", and per-kernel overrides such as "auto,attention=library".
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.models import kernels as custom

KERNEL_NAMES = ("bias", "dropout", "group_norm", "fir", "attention")
CHOICES = ("auto", "custom", "library")


def parse_kernels(spec: str) -> dict[str, str]:
  """'BASE[,NAME=CHOICE...]' -> {kernel name: 'auto' | 'custom' | 'library'} for every kernel.

  BASE and CHOICE are one of auto, custom, library; NAME one of KERNEL_NAMES. BASE may be left
  out ("attention=library" means "auto,attention=library"). Raises ValueError naming
  model.kernels otherwise.
  """
  def fail(why: str):
    raise ValueError(f"model.kernels={spec!r}: {why}. Expected 'BASE[,NAME=CHOICE...]' with BASE "
                     f"and CHOICE one of {', '.join(CHOICES)} and NAME one of "
                     f"{', '.join(KERNEL_NAMES)}, e.g. 'auto,attention=library'")

  if not isinstance(spec, str):
    fail("not a string")
  items = [item.strip() for item in spec.split(",")]
  base = "auto"
  if items and "=" not in items[0]:
    base = items.pop(0)
    if base not in CHOICES:
      fail(f"unknown base {base!r}")
  chosen = dict.fromkeys(KERNEL_NAMES, base)
  seen = set()
  for item in items:
    name, sep, choice = (part.strip() for part in item.partition("="))
    if not sep:
      fail(f"{item!r} is not NAME=CHOICE (the base, if any, comes first)")
    if name not in KERNEL_NAMES:
      fail(f"unknown kernel {name!r}")
    if choice not in CHOICES:
      fail(f"unknown choice {choice!r} for {name}")
    if name in seen:
      fail(f"{name} is given twice")
    seen.add(name)
    chosen[name] = choice
  return chosen


def resolve_kernels(spec: str, backend: str | None = None) -> dict[str, str]:
  """{kernel name: 'custom' | 'library'}: `parse_kernels` with 'auto' made custom on CPU and
  library on any other backend (default: jax.default_backend(), i.e. where the trace runs)."""
  backend = backend or jax.default_backend()
  auto = "custom" if backend == "cpu" else "library"
  chosen = parse_kernels(spec)
  return {name: auto if choice == "auto" else choice for name, choice in chosen.items()}


# ---------------------------------------------------------------------------- library versions


def plain_bias_add(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias over the last axis; y: [..., C], bias: [C]. Autodiff's bias gradient (a reduction)."""
  return y + bias


def bernoulli_keep(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
  """bool mask of `shape`, True with probability 1 - rate: jax.random.bernoulli from `key`."""
  return jax.random.bernoulli(key, 1.0 - rate, shape)


def hashed_keep(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
  """bool mask of `shape`, True with probability 1 - rate: kernels.hashed_bits seeded by two words
  drawn from `key` (the custom dropout)."""
  seed = jax.random.bits(key, (2,), jnp.uint32)
  threshold = min(round(rate * 2.0**32), 2**32 - 1)
  return custom.hashed_bits(seed, shape) >= jnp.uint32(threshold)


def plain_group_norm(x: jax.Array, groups: int, eps: float) -> jax.Array:
  """Parameter-free GroupNorm over (H, W, C / groups), statistics in float32, by autodiff.
  x: [B, H, W, C] -> float32 [B, H, W, C]. The same two-pass maths as kernels.group_norm."""
  b, h, w, c = x.shape
  xg = x.astype(jnp.float32).reshape(b, h, w, groups, c // groups)
  mean = jnp.mean(xg, axis=(1, 2, 4), keepdims=True)
  centred = xg - mean
  var = jnp.mean(centred * centred, axis=(1, 2, 4), keepdims=True)
  return (centred * jax.lax.rsqrt(var + eps)).reshape(b, h, w, c)


_FIR_TAPS = np.array([1.0, 3.0, 3.0, 1.0])


def _depthwise_fir(x: jax.Array, gain: float, stride: int, dilation: int, pad: int) -> jax.Array:
  """x: [B, H, W, C] convolved per channel with gain * outer(taps, taps) / 64 (symmetric, so
  correlation and convolution agree)."""
  c = x.shape[-1]
  kernel = np.outer(_FIR_TAPS, _FIR_TAPS) * (gain / 64.0)
  kernel = jnp.asarray(np.broadcast_to(kernel[:, :, None, None], (4, 4, 1, c)), x.dtype)
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), ((pad, pad), (pad, pad)), lhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def conv_fir_downsample(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H/2, W/2, C]: kernels.fir_downsample as a stride-2 depthwise conv
  (one pixel of zero padding each side)."""
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"fir_downsample needs an even height and width, got {x.shape[1:3]}; "
                     "choose an image size divisible by 2 ** (number of resolutions - 1)")
  return _depthwise_fir(x, 1.0, stride=2, dilation=1, pad=1)


def conv_fir_upsample(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C]: kernels.fir_upsample as a depthwise conv of the
  zero-inserted input (lhs dilation 2, two pixels of padding each side, gain 4)."""
  return _depthwise_fir(x, 4.0, stride=1, dilation=2, pad=2)


def library_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
  """softmax(scale q k^T) v per head, q, k, v: [B, T, N, D] -> [B, T, N, D], by
  jax.nn.dot_product_attention (implementation=None: cuDNN's fused kernel where it applies,
  else XLA; logits and softmax in float32 either way)."""
  return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=None)


# ---------------------------------------------------------------------------------- dispatch


class Kernels(NamedTuple):
  """The kernel functions one trace of the network uses (signatures as in kernels.py; dropout_keep
  is (key, rate, shape) -> bool mask of kept elements)."""

  bias_add: Callable[[jax.Array, jax.Array], jax.Array]
  dropout_keep: Callable[[jax.Array, float, tuple[int, ...]], jax.Array]
  group_norm: Callable[[jax.Array, int, float], jax.Array]
  fir_downsample: Callable[[jax.Array], jax.Array]
  fir_upsample: Callable[[jax.Array], jax.Array]
  attention: Callable[[jax.Array, jax.Array, jax.Array, float], jax.Array]


@functools.lru_cache(maxsize=None)
def _kernels_for(choice: tuple[tuple[str, str], ...]) -> Kernels:
  pick = dict(choice)
  lib = {name: pick[name] == "library" for name in KERNEL_NAMES}
  return Kernels(
      bias_add=plain_bias_add if lib["bias"] else custom.bias_add,
      dropout_keep=bernoulli_keep if lib["dropout"] else hashed_keep,
      group_norm=plain_group_norm if lib["group_norm"] else custom.group_norm,
      fir_downsample=conv_fir_downsample if lib["fir"] else custom.fir_downsample,
      fir_upsample=conv_fir_upsample if lib["fir"] else custom.fir_upsample,
      attention=library_attention if lib["attention"] else custom.multi_head_attention)


def kernels_for(spec: str, backend: str | None = None) -> Kernels:
  """The Kernels of a model.kernels spec on `backend` (default: the one tracing now)."""
  return _kernels_for(tuple(sorted(resolve_kernels(spec, backend).items())))
