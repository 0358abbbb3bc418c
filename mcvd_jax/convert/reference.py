"""Conversion of the reference's (PyTorch `UNetMore_DDPM`) weights to our parameter tree.

The reference registers its modules in one list, `unet.all_modules.<i>`; `models.module_list`
gives the same order with our names, so module i of the reference is entry i of that list.
Layouts: torch conv weights are (out, in, kh, kw) and ours (kh, kw, in, out); torch linear weights
(out, in) and ours (in, out); the attention projections (`NIN_*.W`) are already (in, out).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from mcvd_jax.errors import ProjectError
from mcvd_jax.models.config import UNetConfig
from mcvd_jax.models.unet import init_params, module_list

BUFFERS = ("betas", "alphas", "alphas_prev", "unet.sigmas")


class ConversionError(ValueError, ProjectError):
  """The reference weights do not fit the configured network."""


def _conv(sd, key):
  return {"kernel": np.transpose(sd[key + ".weight"], (2, 3, 1, 0)), "bias": sd[key + ".bias"]}


def _linear(sd, key):
  return {"kernel": np.transpose(sd[key + ".weight"]), "bias": sd[key + ".bias"]}


def _nin(sd, key):
  return {"kernel": sd[key + ".W"], "bias": sd[key + ".b"]}


def _group_norm(sd, key):
  return {"scale": sd[key + ".weight"], "bias": sd[key + ".bias"]}


def _spade(sd, key):
  return {"shared": _conv(sd, key + ".mlp_shared.0"), "gamma": _conv(sd, key + ".mlp_gamma"),
          "beta": _conv(sd, key + ".mlp_beta")}


def _ada_norm(sd, key, spatin):
  out = {"temb_proj": _linear(sd, key + ".Dense_0")}
  if spatin:
    out["spade"] = _spade(sd, key + ".Norm_0")
  return out


def _resblock(sd, key, spatin, has_shortcut):
  out = {"norm_0": _ada_norm(sd, key + ".actnorm0", spatin), "conv_0": _conv(sd, key + ".Conv_0"),
         "norm_1": _ada_norm(sd, key + ".actnorm1", spatin), "conv_1": _conv(sd, key + ".Conv_1")}
  if has_shortcut:
    out["shortcut"] = _conv(sd, key + ".Conv_2")
  return out


def _attn(sd, key):
  return {"norm": _group_norm(sd, key + ".GroupNorm_0"), "q": _nin(sd, key + ".NIN_0"),
          "k": _nin(sd, key + ".NIN_1"), "v": _nin(sd, key + ".NIN_2"),
          "proj_out": _nin(sd, key + ".NIN_3")}


class _TrackingDict(Mapping):
  """A read-only view of the state dict that records which keys were read."""

  def __init__(self, sd):
    self._sd, self.used = sd, set()

  def __getitem__(self, key):
    if key not in self._sd:
      raise ConversionError(f"the reference weights have no entry {key!r}: they do not come from a "
                            f"network with this configuration (check the reference config file)")
    self.used.add(key)
    return np.asarray(self._sd[key], dtype=np.float32)

  def __iter__(self):
    return iter(self._sd)

  def __len__(self):
    return len(self._sd)


def strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Drops the 'module.' prefix that torch DataParallel adds to every key."""
  return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def convert_state_dict(state_dict: Mapping[str, Any], cfg: UNetConfig) -> dict:
  """Reference state dict (original key -> array; buffers optional) -> our params pytree.

  Raises ConversionError naming the key when an entry is missing, left over, or of the wrong shape.
  """
  sd = _TrackingDict(strip_prefix(state_dict))
  params = {}
  for i, m in enumerate(module_list(cfg)):
    key = f"unet.all_modules.{i}"
    if m.kind == "dense":
      params[m.name] = _linear(sd, key)
    elif m.kind == "embed":
      params[m.name] = {"embedding": sd[key + ".weight"]}
    elif m.kind == "conv":
      params[m.name] = _conv(sd, key)
    elif m.kind == "resblock":
      params[m.name] = _resblock(sd, key, cfg.spatin, m.in_ch != m.out_ch or m.up or m.down)
    elif m.kind == "attn":
      params[m.name] = _attn(sd, key)
    elif m.kind == "outnorm":
      params[m.name] = {"spade": _spade(sd, key + ".Norm_0")} if cfg.spatin else {
          "norm": _group_norm(sd, key + ".Norm_0")}
    else:  # pragma: no cover - module_list only produces the kinds above
      raise AssertionError(m.kind)
  leftover = sorted(set(sd) - sd.used - set(BUFFERS))
  if leftover:
    raise ConversionError(f"{len(leftover)} reference entries were not used, e.g. {leftover[:5]}: "
                          f"the weights come from a larger or different network than the config")
  _check_shapes(params, cfg)
  return params


def _check_shapes(params: dict, cfg: UNetConfig) -> None:
  expected = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
  got = jax.tree_util.tree_map(lambda a: a.shape, params)
  want = jax.tree_util.tree_map(lambda a: a.shape, expected)
  flat_got = dict(jax.tree_util.tree_flatten_with_path(got, is_leaf=lambda x: isinstance(x, tuple))[0])
  flat_want = dict(jax.tree_util.tree_flatten_with_path(want, is_leaf=lambda x: isinstance(x, tuple))[0])
  if flat_got.keys() != flat_want.keys():
    missing = sorted(jax.tree_util.keystr(k) for k in flat_want.keys() - flat_got.keys())
    extra = sorted(jax.tree_util.keystr(k) for k in flat_got.keys() - flat_want.keys())
    raise ConversionError(f"converted tree does not match the network: missing {missing[:5]}, "
                          f"unexpected {extra[:5]}")
  for path, shape in flat_want.items():
    if tuple(flat_got[path]) != tuple(shape):
      raise ConversionError(f"{jax.tree_util.keystr(path)}: the reference weight has shape "
                            f"{tuple(flat_got[path])} but the configured network needs {tuple(shape)}")


def load_npz_case(path: str) -> tuple[dict, dict]:
  """Reads a file in the fixture format: (arrays, json description). The description is the
  sibling `.json`; files that reuse another file's weights name it in json['weights']['file']."""
  json_path = os.path.splitext(path)[0] + ".json"
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such reference file")
  if not os.path.exists(json_path):
    raise FileNotFoundError(f"{json_path}: the description of {path} is missing (the fixture "
                            f"format keeps the config in a .json beside the .npz)")
  with open(json_path) as f:
    meta = json.load(f)
  try:
    with np.load(path) as data:
      arrays = {k: data[k] for k in data.files}
  except Exception as e:  # zipfile / pickle errors: the file is damaged
    raise ConversionError(f"{path}: cannot read it as an .npz file ({e}); re-download it") from e
  return arrays, meta


def weights_from_case(path: str, arrays: dict, meta: dict) -> dict[str, np.ndarray]:
  """The `param/<torch key>` arrays of a fixture file, following json['weights']['file']."""
  params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
  if params:
    return params
  ref = (meta.get("weights") or {}).get("file")
  if not ref:
    raise ConversionError(f"{path} has no param/* arrays and names no weights file")
  weights_path = os.path.join(os.path.dirname(path), ref)
  if not os.path.exists(weights_path):
    raise FileNotFoundError(f"{path} uses the weights of {ref}, which is not at {weights_path}")
  with np.load(weights_path) as data:
    return {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}


def load_torch_checkpoint(path: str, use_ema: bool = True) -> dict[str, np.ndarray]:
  """The model (or EMA) weights of a reference `.pt` checkpoint.

  The reference saves [model state_dict, optimizer state, epoch, step, EMA shadow]; the EMA shadow
  holds parameters only (no buffers), which is all the conversion needs.
  """
  try:
    import torch  # Only this path needs torch.
  except ImportError as e:
    raise ImportError("reading a .pt checkpoint needs PyTorch: pip install torch (CPU build is "
                      "enough), or convert an .npz export instead") from e
  try:
    states = torch.load(path, map_location="cpu", weights_only=False)
  except Exception as e:
    raise ConversionError(f"{path}: torch.load failed ({e}); the checkpoint is damaged or not a "
                          f"reference checkpoint") from e
  if isinstance(states, (list, tuple)):
    if use_ema:
      if len(states) < 5 or not isinstance(states[4], Mapping):
        raise ConversionError(f"{path} has no EMA weights (5th element); pass --weights=model")
      state = states[4]
    else:
      state = states[0]
  elif isinstance(states, Mapping):
    state = states
  else:
    raise ConversionError(f"{path}: expected a list [model, optimizer, epoch, step, ema] or a "
                          f"state dict, got {type(states).__name__}")
  return {k: v.detach().cpu().numpy() for k, v in strip_prefix(state).items()
          if hasattr(v, "detach")}
