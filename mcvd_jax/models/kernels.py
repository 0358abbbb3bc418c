"""Hand-written array kernels of the denoiser: pure jax functions, no flax.

These are the pieces of the NCSN++-style network whose gradients (custom VJPs) or memory layouts
were written out by hand because XLA's CPU backend handled the autodiff / library versions badly
(recomputed fusions, single-threaded reductions, transposes of [B, N, T, T] arrays): the bias add,
the dropout hash, GroupNorm statistics, the FIR [1, 3, 3, 1] resampling, nearest resizing, the
sinusoidal time embedding and multi-head attention. Each docstring says what the hand-tuned
version replaced and what it saved. Numerics follow the reference `unetmore` network, so
converted checkpoints give the same outputs; the flax.linen modules using them are in layers.py.
The tuning is CPU-specific: kernel_choice.py holds plain/library versions of the same maths and
picks per backend (UNetConfig.kernels; by default these on CPU, the library ones elsewhere).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


@jax.custom_vjp
def bias_add(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias over the last axis; y: [..., C], bias: [C].

  The bias gradient is written out as a product with a vector of ones. As a plain reduction,
  XLA's CPU backend fused the whole chain of elementwise ops producing the incoming gradient into
  the reduction and ran it again, single-threaded, beside the fusion feeding the weight gradient
  (about 1 s of a 7-8 s SMMNIST training step); a dot reads the gradient once, materialised.
  """
  return y + bias


def _bias_add_fwd(y, bias):
  return y + bias, None


def _bias_add_bwd(_, g):
  rows = g.reshape(-1, g.shape[-1])
  d_bias = jnp.dot(jnp.ones((rows.shape[0],), g.dtype), rows, preferred_element_type=jnp.float32)
  return g, d_bias


bias_add.defvjp(_bias_add_fwd, _bias_add_bwd)


def _lowbias32(x: jax.Array) -> jax.Array:
  """A 32-bit integer hash with good avalanche (C. Wellons' "lowbias32"); x: uint32, any shape."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hashed_bits(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 random bits of `shape`: a hash of each element's flat index and the two seed words.

  seed: uint32 [2]. Counter-based like threefry, but a few integer ops per element that XLA
  fuses into the consumer, where materialising threefry or RngBitGenerator draws cost ~0.5 s of
  a CPU training step (~5%) for the dropout masks.
  """
  if math.prod(shape) >= 2**32:
    raise ValueError(f"hashed_bits: {shape} has more than 2**32 elements")
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  return _lowbias32(_lowbias32(index ^ seed[0]) + seed[1])


def timestep_embedding(labels: jax.Array, dim: int, max_positions: int = 10000) -> jax.Array:
  """Sinusoidal embedding of integer time labels.

  labels: [B] (the raw network-facing label, reference convention); returns [B, dim] float32 laid
  out as [sin | cos] over dim // 2 geometric frequencies from 1 to 1 / max_positions.
  """
  half = dim // 2
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(max_positions) / (half - 1)))
  args = labels.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def _group_mean(sums: jax.Array, groups: int, count: int) -> jax.Array:
  """[B, C] per-channel sums -> [B, C]: each channel gets the mean over its group (count elements)."""
  b, c = sums.shape
  means = jnp.sum(sums.reshape(b, groups, c // groups), axis=-1, keepdims=True) / count
  return jnp.broadcast_to(means, (b, groups, c // groups)).reshape(b, c)


def _group_stats(x: jax.Array, groups: int, eps: float) -> tuple[jax.Array, jax.Array]:
  """x: [B, H, W, C] float32 -> (mean, 1 / std), each [B, C] (every channel holds its group's).

  Sums run over H, W per channel first and only then over the channels of a group: reductions
  that keep the channel axis innermost vectorise on CPU, whereas reducing a [B, H, W, G, C/G]
  view became slow reduce-window trees.
  """
  b, h, w, c = x.shape
  count = h * w * (c // groups)
  mean = _group_mean(jnp.sum(x, axis=(1, 2)), groups, count)
  # Two-pass variance, as torch computes it: E[x^2] - E[x]^2 loses digits for offset inputs.
  centred = x - mean[:, None, None, :]
  var = _group_mean(jnp.sum(centred * centred, axis=(1, 2)), groups, count)
  return mean, jax.lax.rsqrt(var + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def group_norm(x: jax.Array, groups: int, eps: float) -> jax.Array:
  """Parameter-free GroupNorm over (H, W, C / groups); statistics in float32. x: [B, H, W, C],
  returns float32.

  The gradient is written out (custom VJP) as two per-channel reductions and one elementwise
  pass; the autodiff version left XLA chains of broadcasts that it fused, recomputed, into many
  consumers in the backward pass.
  """
  return _group_norm_fwd(x, groups, eps)[0]


def _group_norm_fwd(x, groups, eps):
  x32 = x.astype(jnp.float32)
  mean, rstd = _group_stats(x32, groups, eps)
  return (x32 - mean[:, None, None, :]) * rstd[:, None, None, :], (x, mean, rstd)


def _group_norm_bwd(groups, eps, residuals, g):
  # d/dx of (x - mean) * rstd: rstd * (g - mean_group(g) - xhat * mean_group(g * xhat)).
  del eps
  x, mean, rstd = residuals
  b, h, w, c = x.shape
  count = h * w * (c // groups)
  rstd_b = rstd[:, None, None, :]
  xhat = (x.astype(jnp.float32) - mean[:, None, None, :]) * rstd_b
  g = g.astype(jnp.float32)
  g_mean = _group_mean(jnp.sum(g, axis=(1, 2)), groups, count)
  gx_mean = _group_mean(jnp.sum(g * xhat, axis=(1, 2)), groups, count)
  dx = rstd_b * (g - g_mean[:, None, None, :] - xhat * gx_mean[:, None, None, :])
  return (dx.astype(x.dtype),)


group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


def _fir_down_1d(x: jax.Array, axis: int) -> jax.Array:
  # y[i] = (x[2i-1] + 3 x[2i] + 3 x[2i+1] + x[2i+2]) / 8 with zeros outside: the [1,3,3,1] FIR
  # filter with one pixel of padding on each side, keeping every second output from index 0.
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  xp = jnp.pad(x, pad)
  taps = [jax.lax.slice_in_dim(xp, start, start + n - 1, stride=2, axis=axis) for start in range(4)]
  return (taps[0] + 3 * taps[1] + 3 * taps[2] + taps[3]) * 0.125


def _fir_up_1d(x: jax.Array, axis: int) -> jax.Array:
  # Zero-insertion upsampling filtered with 2 * [1,3,3,1] / 8, written as its two polyphase halves:
  # y[2i] = (x[i-1] + 3 x[i]) / 4 and y[2i+1] = (3 x[i] + x[i+1]) / 4, zeros outside.
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  xp = jnp.pad(x, pad)
  prev = jax.lax.slice_in_dim(xp, 0, n, axis=axis)
  nxt = jax.lax.slice_in_dim(xp, 2, n + 2, axis=axis)
  even = (prev + 3 * x) * 0.25
  odd = (3 * x + nxt) * 0.25
  out = jnp.stack([even, odd], axis=axis + 1)
  shape = list(x.shape)
  shape[axis] = 2 * n
  return out.reshape(shape)


def _fir_down_2d(x: jax.Array) -> jax.Array:
  return _fir_down_1d(_fir_down_1d(x, 1), 2)


def _fir_up_2d(x: jax.Array) -> jax.Array:
  return _fir_up_1d(_fir_up_1d(x, 1), 2)


@jax.custom_vjp
def fir_downsample(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H/2, W/2, C] with the separable FIR kernel outer([1,3,3,1]) / 64; H and W
  even.

  The two resampling filters are adjoint: per axis, the transpose of downsampling is upsampling
  / 2, and the transpose of upsampling is downsampling * 2. The gradients are written that way
  (custom VJPs). Autodiff's transposes of the pads and strided slices became interior-padding
  chains that XLA's CPU backend fused, recomputed, into several consumers; the forward filters
  fuse into one pass (SMMNIST training step about 6% faster on 2 CPU cores).
  """
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"fir_downsample needs an even height and width, got {x.shape[1:3]}; "
                     "choose an image size divisible by 2 ** (number of resolutions - 1)")
  return _fir_down_2d(x)


def _fir_downsample_fwd(x):
  return fir_downsample(x), None


def _fir_downsample_bwd(_, g):
  return (_fir_up_2d(g) * 0.25,)


fir_downsample.defvjp(_fir_downsample_fwd, _fir_downsample_bwd)


@jax.custom_vjp
def fir_upsample(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C] with the FIR kernel 4 * outer([1,3,3,1]) / 64; its gradient
  is 4 * fir_downsample (see there)."""
  return _fir_up_2d(x)


def _fir_upsample_fwd(x):
  return _fir_up_2d(x), None


def _fir_upsample_bwd(_, g):
  return (_fir_down_2d(g) * 4.0,)


fir_upsample.defvjp(_fir_upsample_fwd, _fir_upsample_bwd)


def nearest_resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """Nearest-neighbour resize as torch's F.interpolate(mode='nearest'): src = floor(dst * in / out).

  x: [B, H, W, C] -> [B, height, width, C].
  """
  in_h, in_w = x.shape[1], x.shape[2]
  if (in_h, in_w) == (height, width):
    return x
  if in_h % height == 0 and in_w % width == 0:
    return x[:, :: in_h // height, :: in_w // width]
  rows = np.minimum(np.floor(np.arange(height) * (in_h / height)).astype(np.int32), in_h - 1)
  cols = np.minimum(np.floor(np.arange(width) * (in_w / width)).astype(np.int32), in_w - 1)
  return jnp.take(jnp.take(x, rows, axis=1), cols, axis=2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def multi_head_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
  """softmax(scale q k^T) v per head. q, k, v: [B, T, N, D] -> [B, T, N, D].

  Computed heads-major ([B, N, T, D]) with a hand-written VJP that keeps the attention
  probabilities from the forward pass: XLA's CPU backward of jax.nn.dot_product_attention spent
  most of its time transposing [B, N, T, T] arrays (0.91 s vs 0.53 s at T = 1024, B = 8, N = 2).
  Mixed precision: the logits, the softmax and its backward are float32 whatever the input dtype
  (a bfloat16 softmax over T = 1024 positions loses most of the small probabilities); the
  probabilities are cast back to the input dtype for the matmul with v, as
  jax.nn.dot_product_attention does.
  """
  return _attention_fwd(q, k, v, scale)[0]


def _heads_major(a: jax.Array) -> jax.Array:
  """[B, T, N, D] <-> [B, N, T, D]."""
  return jnp.transpose(a, (0, 2, 1, 3))


def _attention_fwd(q, k, v, scale):
  q, k, v = _heads_major(q * scale), _heads_major(k), _heads_major(v)
  logits = jnp.einsum("bntd,bnsd->bnts", q, k, preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bnts,bnsd->bntd", probs, v, preferred_element_type=jnp.float32).astype(v.dtype)
  return _heads_major(out), (q, k, v, probs, out)


def _attention_bwd(scale, residuals, d_out):
  q, k, v, probs, out = residuals  # q is already scaled
  d_out = _heads_major(d_out)
  f32 = jnp.float32
  d_v = jnp.einsum("bnts,bntd->bnsd", probs, d_out, preferred_element_type=f32).astype(v.dtype)
  d_probs = jnp.einsum("bntd,bnsd->bnts", d_out, v, preferred_element_type=f32)
  # Softmax backward: p * (dp - sum_s p dp), and sum_s p dp = sum_d out * d_out.
  row = jnp.sum(d_out.astype(f32) * out.astype(f32), axis=-1, keepdims=True)
  d_logits = (probs.astype(f32) * (d_probs - row)).astype(q.dtype)
  d_q = jnp.einsum("bnts,bnsd->bntd", d_logits, k, preferred_element_type=f32) * scale
  d_k = jnp.einsum("bnts,bntd->bnsd", d_logits, q, preferred_element_type=f32)
  return (_heads_major(d_q.astype(q.dtype)), _heads_major(d_k.astype(k.dtype)),
          _heads_major(d_v))


multi_head_attention.defvjp(_attention_fwd, _attention_bwd)
