"""Building blocks (flax.linen modules) of the NCSN++-style denoiser, channels-last ([B, H, W, C]).

Every numerical detail follows the reference `unetmore` network so that converted checkpoints give
the same outputs: GroupNorm group counts and eps values, the FIR [1, 3, 3, 1] resampling, the
sinusoidal time embedding, DDPM-style (fan-average uniform) initialisers, and the 1/sqrt(2) skip
rescaling. The array kernels these modules call are chosen per backend by kernel_choice.py (the
hand-written ones of kernels.py, or plain/library versions): every module takes the static
`kernels` spec of UNetConfig.kernels and resolves it when traced.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mcvd_jax.models.config import num_groups, num_heads
from mcvd_jax.models.kernel_choice import kernels_for
from mcvd_jax.models.kernels import nearest_resize

SKIP_SCALE = 1.0 / math.sqrt(2.0)


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
  """DDPM initialiser: variance scaling, fan average, uniform. A zero scale means 1e-10 (near zero)."""
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


class Conv(nn.Module):
  """2-D convolution, [B, H, W, Cin] -> [B, H', W', features], with the parameters of
  flax.linen.Conv ('kernel' [kh, kw, Cin, features], 'bias' [features]) and `bias_add`."""

  features: int
  kernel_size: tuple[int, int]
  padding: Any
  kernel_init: nn.initializers.Initializer
  dtype: Any = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (1, 1),
                                     self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return kernels_for(self.kernels).bias_add(y, bias.astype(self.dtype))


class Dense(nn.Module):
  """x @ kernel + bias over the last axis, with flax.linen.Dense's parameter names and shapes."""

  features: int
  kernel_init: nn.initializers.Initializer
  dtype: Any = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                            (((x.ndim - 1,), (0,)), ((), ())))
    return kernels_for(self.kernels).bias_add(y, bias.astype(self.dtype))


def conv3x3(features: int, dtype: Any, init_scale: float = 1.0, name: str | None = None,
            kernels: str = "auto") -> Conv:
  return Conv(features, (3, 3), ((1, 1), (1, 1)), default_init(init_scale), dtype, kernels,
              name=name)


def conv1x1(features: int, dtype: Any, name: str | None = None, kernels: str = "auto") -> Conv:
  return Conv(features, (1, 1), "VALID", default_init(), dtype, kernels, name=name)


def dense(features: int, dtype: Any, init_scale: float = 1.0, name: str | None = None,
          kernels: str = "auto") -> Dense:
  return Dense(features, default_init(init_scale), dtype, kernels, name=name)


class Dropout(nn.Module):
  """Inverted dropout: zeroes each element with probability `rate` (masks from the 'dropout' rng
  stream: hashed bits or jax.random.bernoulli, see kernel_choice) and scales the rest by
  1 / (1 - rate)."""

  rate: float
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = kernels_for(self.kernels).dropout_keep(self.make_rng("dropout"), self.rate, x.shape)
    return jnp.where(keep, x * (1.0 / (1.0 - self.rate)), jnp.zeros((), x.dtype))


class GroupNorm(nn.Module):
  """GroupNorm with the reference's group count and a learned per-channel scale and bias."""

  eps: float
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    normalized = kernels_for(self.kernels).group_norm(x, num_groups(c), self.eps)
    return (normalized * scale + bias).astype(x.dtype)


class Spade(nn.Module):
  """SPATIN normalisation: GN(x) * (1 + gamma(cond)) + beta(cond), the conditioning frames resized
  to the feature size and passed through conv -> SiLU -> two convs."""

  hidden: int
  dtype: Any
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    c = x.shape[-1]
    normalized = kernels_for(self.kernels).group_norm(x, num_groups(c), 1e-6)
    resized = nearest_resize(cond, x.shape[1], x.shape[2]).astype(self.dtype)
    actv = nn.silu(conv3x3(self.hidden, self.dtype, name="shared", kernels=self.kernels)(resized))
    gamma = conv3x3(c, self.dtype, name="gamma", kernels=self.kernels)(actv).astype(jnp.float32)
    beta = conv3x3(c, self.dtype, name="beta", kernels=self.kernels)(actv).astype(jnp.float32)
    return normalized * (1 + gamma) + beta


class AdaNorm(nn.Module):
  """Norm of a residual block: GroupNorm (eps 1e-5, no affine) or SPADE, modulated by the time
  embedding as x * (1 + scale) + shift, then SiLU."""

  spatin: bool
  spade_dim: int
  dtype: Any
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, cond: jax.Array | None) -> jax.Array:
    c = x.shape[-1]
    if self.spatin:
      h = Spade(self.spade_dim, self.dtype, self.kernels, name="spade")(x, cond)
    else:
      h = kernels_for(self.kernels).group_norm(x, num_groups(c), 1e-5)
    emb = dense(2 * c, self.dtype, name="temb_proj", kernels=self.kernels)(nn.silu(temb))
    emb = emb.astype(jnp.float32)
    scale, shift = emb[:, None, None, :c], emb[:, None, None, c:]
    return nn.silu(h * (1 + scale) + shift).astype(self.dtype)


class OutNorm(nn.Module):
  """The final norm before the output conv: affine GroupNorm (concat) or SPADE (SPATIN), then SiLU."""

  spatin: bool
  spade_dim: int
  dtype: Any
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array | None) -> jax.Array:
    if self.spatin:
      h = Spade(self.spade_dim, self.dtype, self.kernels, name="spade")(x, cond)
    else:
      h = GroupNorm(1e-5, self.kernels, name="norm")(x)
    return nn.silu(h).astype(self.dtype)


class ResBlock(nn.Module):
  """BigGAN-style residual block with time-conditioned (and optionally SPADE) norms.

  x: [B, H, W, Cin] -> [B, H', W', out_ch] with H' = 2H (up), H/2 (down) or H.
  """

  out_ch: int | None = None
  up: bool = False
  down: bool = False
  dropout: float = 0.0
  spatin: bool = False
  spade_dim: int = 128
  dtype: Any = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, temb, cond, train: bool):
    in_ch = x.shape[-1]
    out_ch = self.out_ch or in_ch
    ks = kernels_for(self.kernels)
    h = AdaNorm(self.spatin, self.spade_dim, self.dtype, self.kernels, name="norm_0")(x, temb, cond)
    if self.up:
      h, x = ks.fir_upsample(h), ks.fir_upsample(x)
    elif self.down:
      h, x = ks.fir_downsample(h), ks.fir_downsample(x)
    h = conv3x3(out_ch, self.dtype, name="conv_0", kernels=self.kernels)(h)
    h = AdaNorm(self.spatin, self.spade_dim, self.dtype, self.kernels, name="norm_1")(h, temb, cond)
    h = Dropout(self.dropout, self.kernels)(h, deterministic=not train)
    h = conv3x3(out_ch, self.dtype, init_scale=0.0, name="conv_1", kernels=self.kernels)(h)
    if in_ch != out_ch or self.up or self.down:
      x = conv1x1(out_ch, self.dtype, name="shortcut", kernels=self.kernels)(x)
    return ((x + h) * SKIP_SCALE).astype(self.dtype)


class AttnBlock(nn.Module):
  """Multi-head self-attention over all H*W positions; head h owns channels [h*Ch, (h+1)*Ch)."""

  n_head_channels: int
  dtype: Any = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, height, width, c = x.shape
    heads = num_heads(c, self.n_head_channels)
    h = GroupNorm(1e-6, self.kernels, name="norm")(x)
    q, k, v = (dense(c, self.dtype, init_scale=0.1, name=n, kernels=self.kernels)(h)
               .reshape(b, height * width, heads, -1) for n in ("q", "k", "v"))
    out = kernels_for(self.kernels).attention(q, k, v, (c // heads) ** -0.5)
    out = dense(c, self.dtype, init_scale=0.0, name="proj_out",
                kernels=self.kernels)(out.reshape(b, height, width, c))
    return ((x + out) * SKIP_SCALE).astype(self.dtype)
