"""Networks of the neural-ODE video models (flax.linen, channels-last [N, H, W, C]).

Both variants (Kanaa, Voleti et al. 2019) are built from one pre-activation residual block

    u = ReLU(GN(x))                      GN: GroupNorm with min(32, C) groups
    y = conv3x3(ReLU(GN(resample(u)))) + shortcut(u)

where `resample` and `shortcut` halve the resolution (a stride-2 3×3 and a stride-2 1×1
convolution, both without bias) or double it (two 2×2 stride-2 transposed convolutions with
bias); the closing 3×3 convolution keeps the resolution and has no bias. Four such blocks take a
64×64 frame to 4×4 (image_size / 16) and back.

    ConvTower         frame [N, H, W, C] -> 4 down blocks -> flatten to [N, c4·(H/16)²]
    FrameEncoder (A)  ConvTower -> Dense(fc_hidden) -> tanh -> Dense(latent)
    RnnEncoder   (B)  ConvTower per frame; Elman RNN h = tanh(W [feat; h] + b) over the frames
                      in REVERSE time order; Dense(2·latent) of the last h -> (mean, logvar)
    OdeMLP            latent -> ELU(Dense h) -> ELU(Dense h) -> Dense latent   (autonomous)
    Decoder           Dense(fc_hidden) -> ReLU -> Dense(c4·(H/16)²) -> 4 up blocks -> tanh

Layouts follow the PyTorch reference so converted weights keep their meaning: feature maps are
flattened (and the decoder's first map unflattened) in channel-major (C, h, w) order; GroupNorm's
epsilon is PyTorch's 1e-5; convolutions pad 3×3 kernels by one pixel on every side (PyTorch's
`padding=1`, not SAME's asymmetric padding at stride 2); transposed convolutions use
`transpose_kernel=True`, so kernel[a, b, o, i] = torch_weight[i, o, a, b]. Initialisers are
PyTorch's defaults (uniform in ±1/√fan_in for weights and biases), which the reference trains
from. `dtype` is the compute dtype of the convolutional networks; parameters stay float32 and the
ODE MLP always computes in its parameters' dtype (a bfloat16 field would wreck the adaptive solve).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

GN_EPSILON = 1e-5  # PyTorch's GroupNorm default (flax's is 1e-6)


def torch_uniform(fan_in: int) -> nn.initializers.Initializer:
  """U(-1/√fan_in, 1/√fan_in): PyTorch's default for Linear/Conv weights and biases."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_default_params(shapes: Any, key: jax.Array) -> Any:
  """Values for a params tree of shapes (jax.eval_shape of a module's init) with the modules'
  own initialisers: every layer with a kernel gets U(±1/√fan_in) on its kernel and bias, with
  fan_in = prod(kernel.shape[:-1]) (Dense [in, out]: in; Conv [kh, kw, in, out]: kh·kw·in;
  the transposed Conv [kh, kw, out, in]: kh·kw·out, PyTorch's fan_in of its weight); every
  GroupNorm gets scale 1, bias 0. All values come from ONE uniform draw: XLA compiles each
  threefry call site on its own (~0.5 s each on a CPU), so per-leaf draws make an init compile
  for tens of seconds."""
  sizes = []

  def fill(tree, draw):
    if "kernel" in tree:
      bound = 1.0 / math.sqrt(math.prod(tree["kernel"].shape[:-1]))
      return {name: bound * draw(leaf.shape) for name, leaf in tree.items()}
    if "scale" in tree:
      return {"scale": jnp.ones(tree["scale"].shape, jnp.float32),
              "bias": jnp.zeros(tree["bias"].shape, jnp.float32)}
    if not all(isinstance(sub, dict) for sub in tree.values()):
      raise ValueError(f"torch_default_params: no initialiser for {sorted(tree)}")
    return {name: fill(sub, draw) for name, sub in tree.items()}

  def count(shape):
    sizes.append(math.prod(shape))
    return jnp.zeros(shape, jnp.float32)

  fill(shapes, count)  # sizes of every drawn leaf, in the order fill visits them
  u = jax.random.uniform(key, (sum(sizes),), jnp.float32, -1.0, 1.0)
  offset = 0

  def draw(shape):
    nonlocal offset
    n = math.prod(shape)
    offset += n
    return u[offset - n:offset].reshape(shape)

  return fill(shapes, draw)


def num_groups(channels: int) -> int:
  """GroupNorm groups of the reference: min(32, C); C must be <= 32 or a multiple of 32."""
  return min(32, channels)


def dense(features: int, fan_in: int, dtype: Any = None, name: str | None = None) -> nn.Dense:
  init = torch_uniform(fan_in)
  return nn.Dense(features, kernel_init=init, bias_init=init, dtype=dtype, name=name)


def flatten_channel_major(x: jax.Array) -> jax.Array:
  """[N, h, w, C] -> [N, C·h·w] in PyTorch's (C, h, w) order."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def unflatten_channel_major(x: jax.Array, channels: int, size: int) -> jax.Array:
  """[N, C·h·w] in (C, h, w) order -> [N, h, w, C]."""
  return jnp.transpose(x.reshape(x.shape[0], channels, size, size), (0, 2, 3, 1))


def down_conv(features: int, cin: int, kernel: int, dtype: Any = None,
              name: str | None = None) -> nn.Conv:
  """Stride-2 convolution without bias; a 3×3 kernel pads one pixel on every side (PyTorch's
  padding=1), a 1×1 kernel none: [N, H, W, cin] -> [N, H/2, W/2, features]."""
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), (2, 2), ((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=torch_uniform(kernel * kernel * cin), dtype=dtype, name=name)


def up_conv(features: int, dtype: Any = None, name: str | None = None) -> nn.ConvTranspose:
  """2×2 stride-2 transposed convolution with bias, [N, H, W, cin] -> [N, 2H, 2W, features]:
  y[2i+a, 2j+b, o] = Σ_c x[i, j, c]·kernel[a, b, o, c] + bias[o] (PyTorch's ConvTranspose2d with
  weight[c, o, a, b] = kernel[a, b, o, c])."""
  init = torch_uniform(4 * features)  # PyTorch's fan_in of a [Cin, Cout, 2, 2] weight: Cout·4
  return nn.ConvTranspose(features, (2, 2), (2, 2), "VALID", kernel_init=init, bias_init=init,
                          transpose_kernel=True, dtype=dtype, name=name)


class ResBlock(nn.Module):
  """Pre-activation residual block that halves ("down") or doubles ("up") the resolution:
  [N, H, W, Cin] -> [N, H/2, W/2, features] or [N, 2H, 2W, features]."""

  features: int
  mode: str = "down"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    u = nn.relu(nn.GroupNorm(num_groups(cin), epsilon=GN_EPSILON, dtype=self.dtype,
                             name="norm1")(x))
    if self.mode == "down":
      resample = down_conv(self.features, cin, 3, self.dtype, "conv1")
      shortcut = down_conv(self.features, cin, 1, self.dtype, "shortcut")
    elif self.mode == "up":
      resample = up_conv(self.features, self.dtype, "conv1")
      shortcut = up_conv(self.features, self.dtype, "shortcut")
    else:
      raise ValueError(f"ResBlock mode {self.mode!r} is not 'down' or 'up'")
    h = nn.relu(nn.GroupNorm(num_groups(self.features), epsilon=GN_EPSILON, dtype=self.dtype,
                             name="norm2")(resample(u)))
    h = nn.Conv(self.features, (3, 3), (1, 1), ((1, 1), (1, 1)), use_bias=False,
                kernel_init=torch_uniform(9 * self.features), dtype=self.dtype, name="conv2")(h)
    return h + shortcut(u)


class ConvTower(nn.Module):
  """Down blocks with `channels` outputs, flattened: [N, H, W, C] -> [N, c_last·(H/2^k)²]."""

  channels: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    for i, features in enumerate(self.channels):
      x = ResBlock(features, "down", self.dtype, name=f"block{i}")(x)
    return flatten_channel_major(x)


class FrameEncoder(nn.Module):
  """Variant A: one frame [N, H, W, C] in [-1, 1] -> latent [N, latent_dim] (float32)."""

  channels: Sequence[int]
  hidden: int
  latent_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    feat = ConvTower(self.channels, self.dtype, name="features")(x)
    h = jnp.tanh(dense(self.hidden, feat.shape[-1], self.dtype, "i2h")(feat))
    return dense(self.latent_dim, self.hidden, self.dtype, "h2o")(h).astype(jnp.float32)


class ElmanRNN(nn.Module):
  """h_k = tanh([x_k; h_{k-1}] @ kernel + bias), h_0 = 0, over x [T, N, F] in the order given;
  returns the last h [N, hidden]. One kernel [F + hidden, hidden] acts on the concatenation (the
  reference's single Linear); the input half is applied to all steps at once before the scan."""

  hidden: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1] + self.hidden
    kernel = self.param("kernel", torch_uniform(fan_in), (fan_in, self.hidden))
    bias = self.param("bias", torch_uniform(fan_in), (self.hidden,))
    x = x.astype(kernel.dtype)
    w_x, w_h = kernel[:x.shape[-1]], kernel[x.shape[-1]:]
    drive = x @ w_x + bias  # [T, N, hidden]

    def step(h, d):
      return jnp.tanh(d + h @ w_h), None

    h0 = jnp.zeros(x.shape[1:-1] + (self.hidden,), kernel.dtype)
    h, _ = jax.lax.scan(step, h0, drive)
    return h


class RnnEncoder(nn.Module):
  """Variant B: frames [N, T, H, W, C] in [-1, 1] (times t_0 < ... < t_{T-1}) -> (mean, logvar)
  of q(z(t_0)), each [N, latent_dim] float32. The RNN reads frame T-1 first and frame 0 last, so
  its final state, which the posterior is read from, sits at t_0 (the Latent-ODE convention)."""

  channels: Sequence[int]
  rnn_hidden: int
  latent_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    n, t = frames.shape[:2]
    feat = ConvTower(self.channels, self.dtype, name="features")(
        frames.reshape(n * t, *frames.shape[2:]))
    feat = feat.reshape(n, t, -1).astype(jnp.float32)
    h = ElmanRNN(self.rnn_hidden, name="rnn")(jnp.flip(jnp.swapaxes(feat, 0, 1), axis=0))
    out = dense(2 * self.latent_dim, self.rnn_hidden, name="h2o")(h)
    return out[:, :self.latent_dim], out[:, self.latent_dim:]


class OdeMLP(nn.Module):
  """The latent vector field f(z): [N, latent_dim] -> [N, latent_dim]; it ignores t."""

  hidden: int
  latent_dim: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = nn.elu(dense(self.hidden, z.shape[-1], name="fc1")(z))
    h = nn.elu(dense(self.hidden, self.hidden, name="fc2")(h))
    return dense(self.latent_dim, self.hidden, name="fc3")(h)


class Decoder(nn.Module):
  """Latents [N, latent_dim] -> frames [N, H, W, out_channels] in [-1, 1] (float32).

  channels: the encoder's down-block channels (c1, ..., c4); the decoder starts from c4 maps of
  size image_size / 2^4 and its up blocks output c3, c2, c1, out_channels (the reverse)."""

  channels: Sequence[int]
  hidden: int
  image_size: int
  out_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    rev = tuple(reversed(self.channels))
    size = self.image_size // 2 ** len(rev)
    h = nn.relu(dense(self.hidden, z.shape[-1], self.dtype, "fc1")(z))
    h = dense(rev[0] * size * size, self.hidden, self.dtype, "fc2")(h)
    x = unflatten_channel_major(h, rev[0], size)
    for i, features in enumerate(rev[1:] + (self.out_channels,)):
      x = ResBlock(features, "up", self.dtype, name=f"block{i}")(x)
    return jnp.tanh(x.astype(jnp.float32))
