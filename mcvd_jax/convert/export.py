"""Reading a reference checkpoint with its config, and writing/reading our converted checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from mcvd_jax.convert.reference import (ConversionError, convert_state_dict, load_npz_case,
                                        load_torch_checkpoint, weights_from_case)
from mcvd_jax.models.config import UNetConfig, reference_model_config

SCHEDULE_FIELDS = ("sigma_dist", "sigma_begin", "sigma_end", "num_classes", "version")


def read_reference_yaml(path: str) -> dict:
  """The reference's config.yml as nested dicts ({'data': ..., 'model': ..., ...})."""
  try:
    import yaml
  except ImportError as e:
    raise ImportError("reading the reference's config.yml needs PyYAML: pip install pyyaml") from e
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path}: the reference config is missing; the reference writes config.yml into the run's "
        f"log folder beside its checkpoints: pass it with --reference_config")
  class ConfigLoader(yaml.SafeLoader):
    """Safe loading, but a dumped argparse.Namespace (older reference runs) reads as a mapping."""

  ConfigLoader.add_multi_constructor(
      "tag:yaml.org,2002:python/object",
      lambda loader, suffix, node: loader.construct_mapping(node, deep=True))
  with open(path) as f:
    config = yaml.load(f, Loader=ConfigLoader)
  if not isinstance(config, dict) or "data" not in config or "model" not in config:
    raise ConversionError(f"{path} is not a reference config (it needs data and model sections)")
  return config


def load_reference(path: str, config_path: str | None = None, use_ema: bool = True
                   ) -> tuple[UNetConfig, dict, dict]:
  """(network config, our params, schedule fields) from a .pt checkpoint or a fixture .npz."""
  if path.endswith(".npz"):
    arrays, meta = load_npz_case(path)
    fields = meta["model_fields"]
    state = weights_from_case(path, arrays, meta)
  elif path.endswith((".pt", ".pth")):
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no such checkpoint")
    fields = read_reference_yaml(config_path or os.path.join(os.path.dirname(path), "config.yml"))
    state = load_torch_checkpoint(path, use_ema=use_ema)
  else:
    raise ConversionError(f"{path}: expected a reference .pt checkpoint or a fixture .npz")
  cfg = reference_model_config(fields)
  model = fields["model"]
  schedule_fields = {k: model[k] for k in SCHEDULE_FIELDS if k in model}
  return cfg, convert_state_dict(state, cfg), schedule_fields


def diffusion_overrides(schedule_fields: dict) -> dict:
  """Our `diffusion` config fields implied by a reference run's schedule fields, so that sampling a
  converted checkpoint uses the schedule it was trained with."""
  renames = {"sigma_dist": "schedule", "sigma_begin": "beta_start", "sigma_end": "beta_end",
             "num_classes": "num_steps"}
  return {ours: schedule_fields[theirs] for theirs, ours in renames.items() if theirs in schedule_fields}


def save_converted(out_dir: str, cfg: UNetConfig, params: dict, schedule_fields: dict) -> str:
  """Writes DIR/params (Orbax) and DIR/model_config.json; returns the params path."""
  import orbax.checkpoint as ocp
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "params")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, params, force=True)
  checkpointer.wait_until_finished()
  with open(os.path.join(out_dir, "model_config.json"), "w") as f:
    json.dump({"model": dataclasses.asdict(cfg), "diffusion": schedule_fields}, f, indent=2)
  return path


def load_converted(out_dir: str) -> tuple[UNetConfig, dict, dict]:
  """Reads back what save_converted wrote: (config, params, schedule fields)."""
  import jax
  import orbax.checkpoint as ocp

  from mcvd_jax.models.unet import init_params
  out_dir = os.path.abspath(out_dir)
  config_path = os.path.join(out_dir, "model_config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} is missing: {out_dir} is not a converted checkpoint")
  with open(config_path) as f:
    meta = json.load(f)
  cfg = UNetConfig.from_mapping(meta["model"])
  target = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
  params = ocp.StandardCheckpointer().restore(os.path.join(out_dir, "params"), target)
  return cfg, jax.tree_util.tree_map(np.asarray, params), meta.get("diffusion", {})
