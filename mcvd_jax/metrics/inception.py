"""Inception-v3 as FID uses it (the network of `pytorch-fid`, from TF's 2015-12-05 graph), inference
only, in flax.linen: [B, H, W, 3] in [-1, 1] -> [B, 2048] pool features (and, with
`InceptionV3(logits=True)`, also the [B, 1008] classifier logits the Inception Score uses).

The layout follows pytorch-fid's `FIDInceptionA/C/E_1/E_2` variants of torchvision's blocks: their
3x3 average pools exclude the padding from the mean, and the last block max-pools instead (the TF
graph's quirks). Module names are pytorch-fid's attribute names, so a state dict converts by name
(`variables_from_state_dict`): 'Mixed_5b.branch5x5_1.conv.weight' -> params/Mixed_5b/branch5x5_1/
conv/kernel (OIHW -> HWIO), '...bn.weight/bias' -> scale/bias, '...bn.running_mean/var' ->
batch_stats mean/var. The 1008-way classifier ('fc.weight' [1008, 2048], 'fc.bias') is not needed
for FID and `variables_from_state_dict` ignores it; `classifier_variables_from_state_dict` reads it
(params/fc/kernel [2048, 1008], bias) for the Inception Score.

No weights ship with any package: see `fid.py` for the file format and the converter.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURES = 2048
CLASSES = 1008  # the TF graph's classifier: 1000 ImageNet classes and 8 unused outputs
MIN_SIZE = 75  # smallest input side whose last feature map is not empty


def _pads(padding) -> list[tuple[int, int]]:
  ph, pw = (padding, padding) if isinstance(padding, int) else padding
  return [(ph, ph), (pw, pw)]


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm (eps 1e-3, moving statistics) -> ReLU, as torchvision's
  BasicConv2d."""

  features: int
  kernel: Sequence[int] = (1, 1)
  strides: int = 1
  padding: int | Sequence[int] = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, tuple(self.kernel), strides=self.strides,
                padding=_pads(self.padding), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # pytorch-fid's blocks: avg_pool2d(3, stride 1, padding 1, count_include_pad=False).
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, name="branch1x1")(x)
    b5 = BasicConv(48, name="branch5x5_1")(x)
    b5 = BasicConv(64, (5, 5), padding=2, name="branch5x5_2")(b5)
    b3 = BasicConv(64, name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, (3, 3), padding=1, name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, (3, 3), padding=1, name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv(64, name="branch3x3dbl_1")(x)
    bd = BasicConv(96, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = BasicConv(192, name="branch1x1")(x)
    b7 = BasicConv(c, name="branch7x7_1")(x)
    b7 = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv(c, name="branch7x7dbl_1")(x)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """max_pool: pytorch-fid's FIDInceptionE_2 (Mixed_7c) max-pools its pool branch; E_1 averages."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, name="branch1x1")(x)
    b3 = BasicConv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
    bd = BasicConv(448, name="branch3x3dbl_1")(x)
    bd = BasicConv(384, (3, 3), padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = BasicConv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """[B, H, W, 3] in [-1, 1], H, W >= 75 (FID resizes to 299 first) -> [B, 2048] pool features;
  with logits=True -> (pool features [B, 2048], logits [B, 1008]), the logits from params/fc
  (torchvision's Inception3.fc; its dropout is the identity at inference)."""

  logits: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    features = jnp.mean(x, axis=(1, 2))  # adaptive average pool to 1x1
    if not self.logits:
      return features
    return features, nn.Dense(CLASSES, name="fc")(features)


@functools.lru_cache(maxsize=1)
def abstract_variables() -> dict:
  """Shapes of the network's {'params', 'batch_stats'} (no computation; cached, do not modify)."""
  return jax.eval_shape(InceptionV3().init, jax.random.key(0),
                        jnp.zeros((1, MIN_SIZE, MIN_SIZE, 3), jnp.float32))


def init_variables(seed: int = 0) -> dict:
  """Randomly initialised variables (for tests: FID needs the converted TF weights): He-normal
  kernels, unit BatchNorm statistics. Drawn with NumPy from the shapes: XLA takes ~45 s on two
  CPU cores to compile flax's init of 22M parameters, NumPy well under a second."""
  rng = np.random.default_rng(seed)

  def draw(path, spec):
    leaf = path[-1].key
    if leaf == "kernel":
      fan_in = int(np.prod(spec.shape[:-1]))
      return (rng.standard_normal(spec.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return np.full(spec.shape, 1.0 if leaf in ("scale", "var") else 0.0, np.float32)

  return jax.tree_util.tree_map_with_path(draw, abstract_variables())


# ------------------------------------------------------------------------------------------------
# pytorch-fid state-dict names <-> our variables

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
_BN_NAMES = {ours: theirs for theirs, ours in _BN.items()}


def _flat(tree, prefix: tuple = ()) -> dict[tuple, np.ndarray]:
  out = {}
  for key, value in tree.items():
    if hasattr(value, "items"):
      out.update(_flat(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = value
  return out


def _torch_name(path: tuple) -> str:
  """('params', 'Mixed_5b', 'branch1x1', 'conv', 'kernel') -> 'Mixed_5b.branch1x1.conv.weight'."""
  collection, *modules, leaf = path
  return ".".join(modules + ["weight" if leaf == "kernel" else _BN_NAMES[(collection, leaf)]])


def state_dict_names(variables: dict) -> dict[str, np.ndarray]:
  """Our variables -> pytorch-fid's names and layouts (conv kernels OIHW), NumPy float32."""
  out = {}
  for path, value in _flat(variables).items():
    value = np.asarray(value, np.float32)
    if path[-1] == "kernel":  # conv HWIO -> OIHW; dense (fc) [in, out] -> [out, in]
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    out[_torch_name(path)] = value
  return out


def variables_from_state_dict(state: dict[str, np.ndarray], source: str) -> dict:
  """pytorch-fid names -> {'params', 'batch_stats'} for InceptionV3.apply, checked against the
  network: every array present with the right shape ('fc.*' and 'num_batches_tracked' ignored).
  ValueError naming `source` and the first problems otherwise."""
  expected = _flat(abstract_variables())
  variables: dict = {}
  missing, wrong = [], []
  for path, spec in expected.items():
    name = _torch_name(path)
    if name not in state:
      missing.append(name)
      continue
    value = np.asarray(state[name], np.float32)
    if path[-1] == "kernel" and value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if value.shape != spec.shape:
      wrong.append(f"{name} {value.shape} (want {spec.shape})")
      continue
    node = variables
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  known = {_torch_name(path) for path in expected}
  unused = sorted(k for k in state if k not in known and not k.startswith("fc.")
                  and not k.endswith("num_batches_tracked"))
  if missing or wrong or unused:
    raise ValueError(f"{source} does not hold pytorch-fid's Inception-v3 weights: {len(missing)} "
                     f"missing {missing[:3]}, wrong shapes {wrong[:3]}, {len(unused)} unexpected "
                     f"{unused[:3]}")
  return variables


def classifier_variables_from_state_dict(state: dict[str, np.ndarray], source: str) -> dict:
  """pytorch-fid's 'fc.weight' [1008, 2048] and 'fc.bias' [1008] -> {'params': {'fc': {'kernel'
  [2048, 1008], 'bias'}}}, to merge into `variables_from_state_dict`'s variables for
  InceptionV3(logits=True). ValueError naming `source` when they are missing or misshapen."""
  shapes = {"fc.weight": (CLASSES, FEATURES), "fc.bias": (CLASSES,)}
  missing = [name for name in shapes if name not in state]
  if missing:
    raise ValueError(
        f"{source} has no {' / '.join(missing)}: the Inception Score needs Inception-v3's 1008-way "
        f"classifier, which pytorch-fid's weight file carries. Convert that .pth again with "
        f"`python -m mcvd_jax.metrics.fid --convert_from=... --out=...` (it keeps fc.*); FID "
        f"works without it")
  arrays = {name: np.asarray(state[name], np.float32) for name in shapes}
  wrong = [f"{name} {arrays[name].shape} (want {shape})" for name, shape in shapes.items()
           if arrays[name].shape != shape]
  if wrong:
    raise ValueError(f"{source} holds a classifier of the wrong shape: {', '.join(wrong)}")
  return {"params": {"fc": {"kernel": arrays["fc.weight"].T.copy(), "bias": arrays["fc.bias"]}}}
