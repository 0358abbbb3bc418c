"""The ODE function of an MRCNF block: FFJORD's "concat" convolutional network (flax.linen).

    f(t, z; cond) = L4(t, σ(L3(t, σ(L2(t, σ(L1(t, [z, cond])))))))      σ = softplus

Every layer Lk is a 3×3 SAME convolution of its input with the time t appended as one constant
channel (ConcatConv2d of FFJORD, not ConcatSquash): t enters at every layer. The conditioning
image (the coarser level, [0, 1]) is concatenated to the state at the first layer only. The last
layer's kernel starts at zero and its bias does not, so a fresh block is the constant field
f = bias: its divergence is 0 and it shifts z by the bias over t in [0, 1].

Channel order at a layer's input is [t, z, cond] (the reference concatenates t in front of
[z, cond]), so converted PyTorch weights keep their meaning. Initialisers match PyTorch's
Conv2d defaults (kernel and bias uniform in ±1/√fan_in), which the reference relies on.

Parameters per block (hidden h, k×k = 9, C_z state and C_c conditioning channels):
  9·h·(C_z+C_c+1) + h  +  2·(9·h·(h+1) + h)  +  9·C_z·(h+1) + C_z
e.g. RGB with h = 64: 79,134 at the coarsest level (C_z = 3), 87,834 at the conditioned levels
(C_z = 9, C_c = 3).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NUM_LAYERS = 4  # the paper's 3 hidden layers and the output layer
KERNEL = (3, 3)


def _torch_uniform(fan_in: int):
  """U(-1/√fan_in, 1/√fan_in), PyTorch's default for Conv2d weights and biases."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class ConcatConv(nn.Module):
  """A 3×3 SAME convolution of [t, x]: x [B, H, W, C_in], t a scalar -> [B, H, W, features].
  zero_kernel: start the kernel at zero (the output layer); the bias keeps its random start."""

  features: int
  zero_kernel: bool = False

  @nn.compact
  def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
    time = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1] + (1,))
    tx = jnp.concatenate([time, x], axis=-1)
    fan_in = KERNEL[0] * KERNEL[1] * tx.shape[-1]
    kernel_init = nn.initializers.zeros if self.zero_kernel else _torch_uniform(fan_in)
    conv = nn.Conv(self.features, KERNEL, padding="SAME", kernel_init=kernel_init,
                   bias_init=_torch_uniform(fan_in), name="conv")
    return conv(tx)


class OdeNet(nn.Module):
  """f(t, z, cond) -> dz/dt of one CNF block.

  z: [B, H, W, out_channels] the state (the image at the coarsest level, the 3C detail channels
  at the others); cond: [B, H, W, C_c] in [0, 1] or None; t: a scalar in [0, 1].
  The field treats samples independently (no batch statistics), as the CNF divergence needs.
  """

  out_channels: int
  hidden: int = 64

  @nn.compact
  def __call__(self, t: jax.Array, z: jax.Array, cond: Any = None) -> jax.Array:
    h = z if cond is None else jnp.concatenate([z, cond.astype(z.dtype)], axis=-1)
    for i in range(NUM_LAYERS - 1):
      h = nn.softplus(ConcatConv(self.hidden, name=f"layer_{i}")(t, h))
    return ConcatConv(self.out_channels, zero_kernel=True, name=f"layer_{NUM_LAYERS - 1}")(t, h)


def init_blocks(net: OdeNet, key: jax.Array, num_blocks: int, z: jax.Array,
                cond: Any = None) -> Any:
  """Parameters of num_blocks OdeNets stacked on a leading axis: the law of the module's own
  initialisers (U(±1/√fan_in) per layer, the output kernel zero) from ONE uniform draw for all
  blocks. (net.init draws per parameter; each draw is a threefry kernel that XLA compiles
  separately, seconds on a CPU for a few dozen.) z, cond: example inputs [1, H, W, C]."""
  shapes = jax.eval_shape(net.init, jax.random.key(0), 0.0, z, cond)["params"]
  leaves, treedef = jax.tree.flatten_with_path(shapes)
  sizes = [math.prod(leaf.shape) for _, leaf in leaves]
  draw = jax.random.uniform(key, (num_blocks, sum(sizes)), jnp.float32, -1.0, 1.0)
  pieces = jnp.split(draw, list(itertools.accumulate(sizes))[:-1], axis=1)
  out = []
  for (path, leaf), piece in zip(leaves, pieces):
    layer = path[0].key
    kh, kw, c_in, _ = shapes[layer]["conv"]["kernel"].shape  # the fan-in of kernel and bias
    bound = 1.0 / math.sqrt(kh * kw * c_in)
    if layer == f"layer_{NUM_LAYERS - 1}" and path[-1].key == "kernel":
      bound = 0.0
    out.append((bound * piece).reshape((num_blocks,) + leaf.shape).astype(leaf.dtype))
  return jax.tree.unflatten(treedef, out)


def block_param_count(state_channels: int, cond_channels: int, hidden: int) -> int:
  """Parameters of one OdeNet, by the formula in the module docstring."""
  k = KERNEL[0] * KERNEL[1]
  first = k * hidden * (state_channels + cond_channels + 1) + hidden
  middle = (NUM_LAYERS - 2) * (k * hidden * (hidden + 1) + hidden)
  last = k * state_channels * (hidden + 1) + state_channels
  return first + middle + last
