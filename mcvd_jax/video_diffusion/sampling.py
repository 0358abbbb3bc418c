"""Sampling videos of each task from a model (a training checkpoint, a converted reference
checkpoint, or random weights) into GIFs, conditioned on real test clips of the config's dataset.

`tasks.task_inputs` splits a real clip into what a task is given and what it must produce;
`sample_and_save` is `main --mode=sample`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.core.compilation import jit
from mcvd_jax.core.media import frames_to_unit_range, to_uint8, video_grid, write_sample_files
from mcvd_jax.core.weights import load_weights
from mcvd_jax.diffusion.factory import (diffusion_from_config, initial_scale, network_evals,
                                        sampler_from_config)
from mcvd_jax.models import UNetConfig, init_params
from mcvd_jax.video.guidance import guidance_settings
from mcvd_jax.video.rollout import make_rollout
from mcvd_jax.video_diffusion.config import (Checked, require_masked_past_training,
                                             require_usable_guidance)
from mcvd_jax.video_diffusion.eval_sampling import sampling_network
from mcvd_jax.video_diffusion.tasks import clip_frames_for_task, task_inputs


def moving_squares(key: jax.Array, batch: int, frames: int, size: int, channels: int) -> jax.Array:
  """A bright square moving in a straight line on a dark canvas: [B, N, H, W, C] in [-1, 1] (the
  conditioning when the config's dataset cannot be read here)."""
  side = max(size // 4, 2)
  start_key, vel_key = jax.random.split(key)
  start = jax.random.randint(start_key, (batch, 2), 0, size - side)
  velocity = jax.random.randint(vel_key, (batch, 2), -2, 3)
  t = jnp.arange(frames)[None, :, None]
  pos = jnp.clip(start[:, None] + velocity[:, None] * t, 0, size - side)  # [B, N, 2]
  grid = jnp.arange(size)
  rows = (grid[None, None] >= pos[..., :1]) & (grid[None, None] < pos[..., :1] + side)
  cols = (grid[None, None] >= pos[..., 1:]) & (grid[None, None] < pos[..., 1:] + side)
  square = rows[..., :, None] & cols[..., None, :]
  return jnp.repeat(jnp.where(square, 1.0, -1.0)[..., None], channels, axis=-1)


def test_clips(config: Any, cfg: UNetConfig, num_frames: int, batch: int, key: jax.Array) -> jax.Array:
  """[batch, num_frames, H, W, C] in [-1, 1]: the dataset's deterministic test clips, or moving
  squares (with a warning) when the dataset is not available on this machine."""
  from mcvd_jax.data.registry import make_dataset
  try:  # e.g. a reader not written yet, or a converted checkpoint's frame size the data lacks
    dataset = make_dataset(config.data, cfg.image_size, cfg.channels)
  except ValueError as e:
    logging.warning("conditioning on moving squares instead of real clips: %s", e)
    return moving_squares(key, batch, num_frames, cfg.image_size, cfg.channels)
  return frames_to_unit_range(dataset.test_videos(num_frames, batch))


def trained_prob_mask_cond(model_dir: str) -> float | None:
  """training.prob_mask_cond of the run an exported model directory came from (its provenance),
  None where the directory does not say (a converted reference checkpoint)."""
  with open(os.path.join(model_dir, "model_config.json")) as f:
    meta = json.load(f)
  value = meta.get("provenance", {}).get("run_config", {}).get("training", {}).get("prob_mask_cond")
  return None if value is None else float(value)


def load_for_sampling(config: Any, checked: Checked, workdir: str, checkpoint: str | None):
  """(UNetConfig, params, diffusion section, description) from, in order: a model directory (a
  converted reference checkpoint or an exported run, video_diffusion/export.py: model_config.json
  beside params; its network and diffusion settings win over the config's), a training checkpoint (--checkpoint naming a
  workdir, its checkpoints/ directory or one checkpoints/<step>; else the workdir's newest; the
  EMA or raw parameters, as `sampling.weights` says), or random weights (core.weights)."""
  guidance = guidance_settings(config.sampling)[0]
  if checkpoint and paths.exists(os.path.join(checkpoint, "model_config.json")):
    from mcvd_jax.convert.export import converted_diffusion_fields, load_converted
    cfg, params, _ = load_converted(checkpoint)
    require_usable_guidance(config.sampling, cfg)  # the directory's network, not the config's
    require_masked_past_training(guidance, trained_prob_mask_cond(checkpoint),
                                 f"the model directory {checkpoint}")
    section = ml_collections.ConfigDict(config.diffusion.to_dict())
    section.update(converted_diffusion_fields(checkpoint))
    return cfg, params, section, f"model directory {checkpoint}"
  cfg = checked.model
  require_masked_past_training(guidance, float(config.training.prob_mask_cond),
                               "this run (its config's training.prob_mask_cond)")
  weights = load_weights(workdir, checkpoint, lambda key: init_params(cfg, key), config.seed,
                         what="converted checkpoint (model_config.json) nor training checkpoints",
                         weights=config.sampling.get("weights", "ema"))
  return cfg, weights.params, config.diffusion, weights.source


def sample_and_save(config: Any, checked: Checked, workdir: str,
                    checkpoint: str | None = None) -> str:
  """Samples `config.sampling.batch_size` videos of `sampling.task` and writes
  WORKDIR/samples_<task>.gif (real clips in the top row, samples below), the samples as uint8
  .npz (`videos`) and a .json description. Returns the GIF path."""
  task, batch, horizon = config.sampling.task, config.sampling.batch_size, config.sampling.num_frames
  paths.makedirs(workdir)
  cfg, params, diffusion_section, source = load_for_sampling(config, checked, workdir, checkpoint)
  guidance = guidance_settings(config.sampling)
  logging.info("sampling %s from %s", task, source)
  diffusion = (checked.diffusion if diffusion_section is config.diffusion
               else diffusion_from_config(diffusion_section))
  sampler = sampler_from_config(sampling_network(cfg, config.sampling), diffusion, config.sampling)
  rollout = jit(make_rollout(sampler.sample, cfg, diffusion.noise_model, initial_scale(diffusion)),
                static_argnames=("num_frames", "batch_size"))
  data_key, sample_key = jax.random.split(jax.random.key(config.seed + 1))
  clips = test_clips(config, cfg, clip_frames_for_task(task, cfg, horizon), batch, data_key)
  given = task_inputs(task, clips, cfg, horizon)
  start = time.time()
  video = rollout(params, sample_key, given.past, given.future, num_frames=given.num_frames,
                  batch_size=batch)
  video = to_uint8(jax.device_get(video))
  seconds = time.time() - start
  picture = video_grid(np.concatenate([to_uint8(jax.device_get(given.real)), video]),
                       columns=batch)
  path = write_sample_files(
      os.path.join(workdir, f"samples_{task}"), picture, {"videos": video},
      {"task": task, "shape": list(video.shape), "seconds_with_compile": seconds,
       "source": source, "sampler": config.sampling.kind, "steps": int(len(sampler.labels)),
       # per block (the rollout runs ceil(frames / T) blocks); an adaptive ODE solve's are
       # those its blocks used (the batch is solved jointly: one count per block)
       "network_evals_per_block": (network_evals(sampler, config.sampling)
                                   if sampler.tally is None else sampler.tally.take().tolist()),
       "blocks": -(-int(given.num_frames) // cfg.num_frames),
       "update_rule": config.sampling.get("update_rule", "robust"),
       # each network evaluation runs the network on twice the batch where this is not 1
       "guidance": guidance[0], "guidance_labels": list(guidance[1]),
       "noise": diffusion.noise_model.name, "target": diffusion.target,
       "prediction": diffusion.prediction})
  logging.info("wrote %s (%s videos of %d frames, %.1f s)", path, batch, video.shape[1], seconds)
  return path
