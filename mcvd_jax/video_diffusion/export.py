"""A training run's weights as a small model directory that samples and evaluates anywhere.

  python -m mcvd_jax.video_diffusion.export --workdir=RUN --out=DIR [--checkpoint=RUN/checkpoints/N]
      [--weights=ema|raw]

writes DIR/params (Orbax, the EMA parameters by default: no optimizer state, no raw copy, a
quarter of a training checkpoint) and DIR/model_config.json (the network, the run's `diffusion`
section and where the weights came from). `--mode=sample|eval --checkpoint=DIR` then uses the
network and diffusion settings of DIR with the sampling, data and eval settings of `--config`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from mcvd_jax.convert.export import save_converted
from mcvd_jax.core import paths
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.weights import load_weights
from mcvd_jax.models import UNetConfig, init_params

# UNetConfig fields a warm start may change: how the same network computes, not what it is.
FREE_MODEL_FIELDS = ("dropout", "dtype", "remat", "kernels")


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training run saved in WORKDIR/config.json; FileNotFoundError saying so."""
  path = os.path.join(workdir, "config.json")
  if not paths.exists(path):
    raise FileNotFoundError(f"{path} is missing: {workdir} is not a training workdir "
                            f"(training writes config.json there when it starts)")
  return ml_collections.ConfigDict(paths.read_json(path))


def export_model(workdir: str, out_dir: str, checkpoint: str | None = None,
                 weights: str = "ema") -> str:
  """Writes the model directory of `checkpoint` (default: WORKDIR's newest checkpoint) to out_dir;
  returns out_dir. CheckpointNotFoundError when there is no checkpoint to export."""
  config = read_run_config(workdir)
  cfg = UNetConfig.from_mapping(config.model)
  loaded = load_weights(workdir, checkpoint or workdir, lambda key: init_params(cfg, key),
                        int(config.seed), what="training checkpoints", weights=weights)
  provenance = {"run_config": config.to_dict(), "source": loaded.source, "step": loaded.step,
                "weights": weights}
  save_converted(out_dir, cfg, loaded.params, {}, diffusion_config=config.diffusion.to_dict(),
                 provenance=json.loads(json.dumps(provenance, default=list)))
  return out_dir


def pretrained_params(path: str, cfg: UNetConfig, diffusion_section: Any,
                      new_layers: bool = False, fewer_frames: bool = False) -> Any | None:
  """The parameters of the model directory `path` (model_config.json beside params: an exported
  run or a converted reference checkpoint) for `training.init_from`, None when `path` is not one.
  ConfigError naming every network field (FREE_MODEL_FIELDS aside) in which the directory's
  network differs from `cfg` (with `new_layers`, training.init_new_layers, a warning: the core
  then checks that the config's network only adds parameters); a warning for each `diffusion`
  field it was trained with that differs from `diffusion_section` (a fine-tune may change them
  on purpose). With `fewer_frames` (training.init_fewer_frames) the config's network may predict
  fewer frames per block than the directory's: see first_frames_of."""
  if not paths.exists(os.path.join(path, "model_config.json")):
    if fewer_frames:
      raise ConfigError(f"--config.training.init_fewer_frames=True needs a model directory in "
                        f"--config.training.init_from, not {path!r}: export a training run first "
                        f"(python -m mcvd_jax.video_diffusion.export --workdir=RUN --out=DIR)")
    return None
  from mcvd_jax.convert.export import converted_diffusion_fields, load_converted
  saved_cfg, params, _ = load_converted(path)
  if fewer_frames:
    if not cfg.num_frames < saved_cfg.num_frames:
      raise ConfigError(f"--config.training.init_fewer_frames=True but model.num_frames="
                        f"{cfg.num_frames} is not fewer than the {saved_cfg.num_frames} frames the "
                        f"weights in {path} predict; lower model.num_frames or drop the flag")
    params = first_frames_of(params, saved_cfg.num_frames, cfg.num_frames, cfg.channels)
    saved_cfg = dataclasses.replace(saved_cfg, num_frames=cfg.num_frames)
  differ = [f"model.{name}: the weights' {getattr(saved_cfg, name)!r}, the config's "
            f"{getattr(cfg, name)!r}" for name in (f.name for f in dataclasses.fields(cfg))
            if name not in FREE_MODEL_FIELDS and getattr(saved_cfg, name) != getattr(cfg, name)]
  if differ and new_layers:
    logging.warning("warm start: the network of %s differs from the config's in %s; parameters "
                    "the weights lack start from their initialisation", path, "; ".join(differ))
  elif differ:
    raise ConfigError(f"--config.training.init_from={path!r} holds another network ("
                      + "; ".join(differ) + "); set those --config.model fields to the weights' "
                      "values, or, where the config's network only adds layers to the weights', "
                      "--config.training.init_new_layers=True"
                      + (", or, to predict fewer frames per block, "
                         "--config.training.init_fewer_frames=True"
                         if cfg.num_frames < saved_cfg.num_frames else ""))
  for name, value in sorted(converted_diffusion_fields(path).items()):
    if name in diffusion_section and diffusion_section[name] != value:
      logging.warning("warm start: the weights in %s were trained with diffusion.%s=%r, this run "
                      "uses %r", path, name, value, diffusion_section[name])
  return params


def first_frames_of(params: Any, saved_frames: int, frames: int, channels: int) -> Any:
  """`params` of a network predicting `saved_frames` frames per block cut to one predicting the
  first `frames` of them (frames < saved_frames): the input convolution keeps the kernels of the
  first `frames` noisy frames and of every conditioning frame (the UNet reads [x_t frames, cond
  frames] on channels), the output convolution those of the first `frames` outputs. Every other
  parameter is shared as it is. What the dropped noisy frames fed the body is gone, so the cut
  network is a warm start to fine-tune, not a finished model."""
  kept, saved = frames * channels, saved_frames * channels
  conv_in, conv_out = dict(params["conv_in"]), dict(params["conv_out"])
  kernel = conv_in["kernel"]
  conv_in["kernel"] = np.concatenate([kernel[:, :, :kept], kernel[:, :, saved:]], axis=2)
  conv_out["kernel"] = conv_out["kernel"][..., :kept]
  conv_out["bias"] = conv_out["bias"][:kept]
  return {**params, "conv_in": conv_in, "conv_out": conv_out}


def main(argv: list[str] | None = None) -> int:
  import argparse
  parser = argparse.ArgumentParser(prog="python -m mcvd_jax.video_diffusion.export",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="the training run's workdir")
  parser.add_argument("--out", required=True, help="the model directory to write")
  parser.add_argument("--checkpoint", default=None,
                      help="one checkpoint (WORKDIR/checkpoints/STEP); default: the newest")
  parser.add_argument("--weights", default="ema", choices=("ema", "raw"))
  args = parser.parse_args(argv)
  try:
    out = export_model(args.workdir, args.out, args.checkpoint, args.weights)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
