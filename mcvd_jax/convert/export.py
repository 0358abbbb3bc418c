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


_PYTHON_TAG = "tag:yaml.org,2002:python/"


def _construct_plain(loader, node):
  """A node as plain data by its kind alone (mapping -> dict, sequence -> list, scalar -> its
  value under the YAML core rules), ignoring its tag. Generators, as PyYAML's own dict / list
  constructors are, so that anchors and aliases (`&id001` / `*id001`) resolve as usual."""
  import yaml
  if isinstance(node, yaml.MappingNode):
    data = {}
    yield data
    data.update(loader.construct_mapping(node))
  elif isinstance(node, yaml.SequenceNode):
    data = []
    yield data
    data.extend(loader.construct_sequence(node))
  else:
    # The value as an untagged plain scalar would read ("1" -> 1, "true" -> True, "" -> None).
    tag = loader.resolve(yaml.ScalarNode, node.value, (True, False))
    yield loader.yaml_constructors[tag](loader, yaml.ScalarNode(tag, node.value, node.start_mark,
                                                                node.end_mark))


def _construct_python_tag(loader, suffix, node):
  """Every `!!python/...` tag PyYAML's default Dumper writes, as plain data; nothing is imported,
  called or constructed:

    !!python/object:argparse.Namespace {..}   -> the dict of its attributes
    !!python/object/apply:torch.device [cpu]  -> the list of the call's arguments (['cpu'];
                                                 torch.device('cuda', 0) gives ['cuda', 0])
    !!python/object/new:X [..]                -> the list of arguments, likewise
    !!python/object/apply:X {args: .., state: .., kwds: ..}, and /new: with a mapping
                                              -> that dict, keys as written
    !!python/tuple [..]                       -> a list (as the reference's own YAML files give)
    !!python/name:os.system '' , !!python/module:os -> the dotted name, a string ('os.system')
    !!python/str / int / float / bool / none / list / dict / bytes / complex -> that value

  Any other python/ tag is read by its node's kind, like the first rows.
  """
  kind, _, name = suffix.partition(":")
  if kind in ("name", "module"):
    return name
  if kind in ("str", "unicode"):
    return loader.construct_scalar(node)
  if kind in ("int", "long"):
    return loader.construct_yaml_int(node)
  if kind == "float":
    return loader.construct_yaml_float(node)
  if kind == "bool":
    return loader.construct_yaml_bool(node)
  if kind == "none":
    return None
  if kind == "bytes":
    return loader.construct_yaml_binary(node)
  if kind == "complex":
    return complex(loader.construct_scalar(node))  # a literal, parsed: nothing runs
  # object, object/apply, object/new, tuple, list, dict, and anything unforeseen: plain data.
  return _construct_plain(loader, node)


def _reference_config_loader():
  """A yaml.SafeLoader subclass that also reads the python/ tags of a dumped config Namespace as
  plain data (see _construct_python_tag). It stays a SafeLoader: every other tag is what safe
  loading allows, and an unknown tag (`!foo`) is an error."""
  import yaml

  class ReferenceConfigLoader(yaml.SafeLoader):
    pass

  ReferenceConfigLoader.add_multi_constructor(_PYTHON_TAG, _construct_python_tag)
  return ReferenceConfigLoader


def read_reference_yaml(path: str) -> dict:
  """The reference's config.yml as nested dicts ({'data': ..., 'model': ..., ...}).

  Reads both forms reference runs leave: a plain mapping (yaml.dump of the config dict) and the
  dumped config argparse.Namespace of ncsnv2-style code, whose sections are
  `!!python/object:argparse.Namespace` mappings and whose `device:` is
  `!!python/object/apply:torch.device [cpu]`. Python tags are read as data, never executed:
  Namespaces become dicts, tuples lists, `device` the list of its arguments (['cpu'], or
  ['cuda', 0]) and `!!python/name:` tags their dotted names (see _construct_python_tag). A
  `!!python/object/apply:os.system [...]` is therefore just the list of its arguments.
  """
  try:
    import yaml
  except ImportError as e:
    raise ImportError("reading the reference's config.yml needs PyYAML: pip install pyyaml") from e
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path}: the reference config is missing; the reference writes config.yml into the run's "
        f"log folder beside its checkpoints: pass it with --reference_config")
  try:
    with open(path) as f:
      config = yaml.load(f, Loader=_reference_config_loader())
  except yaml.YAMLError as e:
    raise ConversionError(f"{path} is not readable as a reference config.yml: {e}") from e
  if not isinstance(config, dict) or "data" not in config or "model" not in config:
    raise ConversionError(f"{path} is not a reference config (it needs data and model sections)")
  return config


def schedule_fields_of(model_fields: dict) -> dict:
  """The reference's noise-schedule fields (SCHEDULE_FIELDS) of its `model` section."""
  model = model_fields["model"]
  return {k: model[k] for k in SCHEDULE_FIELDS if k in model}


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
  return cfg, convert_state_dict(state, cfg), schedule_fields_of(fields)


def diffusion_overrides(schedule_fields: dict) -> dict:
  """Our `diffusion` config fields implied by a reference run's schedule fields, so that sampling a
  converted checkpoint uses the schedule it was trained with."""
  renames = {"sigma_dist": "schedule", "sigma_begin": "beta_start", "sigma_end": "beta_end",
             "num_classes": "num_steps"}
  return {ours: schedule_fields[theirs] for theirs, ours in renames.items() if theirs in schedule_fields}


def save_converted(out_dir: str, cfg: UNetConfig, params: dict, schedule_fields: dict,
                   diffusion_config: dict | None = None, provenance: dict | None = None) -> str:
  """Writes DIR/params (Orbax) and DIR/model_config.json; returns the params path.

  schedule_fields: a reference run's schedule fields (its names; see diffusion_overrides);
  diffusion_config: our `diffusion` section for a model trained here (read back by
  converted_diffusion_fields); provenance: free-form facts (source run, step, command)."""
  import orbax.checkpoint as ocp
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "params")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, params, force=True)
  checkpointer.wait_until_finished()
  meta = {"model": dataclasses.asdict(cfg), "diffusion": schedule_fields}
  if diffusion_config is not None:
    meta["diffusion_config"] = diffusion_config
  if provenance is not None:
    meta["provenance"] = provenance
  with open(os.path.join(out_dir, "model_config.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return path


def converted_diffusion_fields(out_dir: str) -> dict:
  """Our `diffusion` fields a model directory implies: the reference schedule fields renamed, then
  the `diffusion_config` a model exported from a training run carries (which wins)."""
  with open(os.path.join(out_dir, "model_config.json")) as f:
    meta = json.load(f)
  return {**diffusion_overrides(meta.get("diffusion", {})), **meta.get("diffusion_config", {})}


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
