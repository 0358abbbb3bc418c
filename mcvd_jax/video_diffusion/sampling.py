"""Sampling videos of each task from a model (a training checkpoint, a converted reference
checkpoint, or random weights) into GIFs, conditioned on real test clips of the config's dataset.

`task_inputs` splits a real clip into what a task is given and what it must produce; the training
media use it for their periodic samples, `sample_and_save` for `main --mode=sample`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mcvd_jax.core.checkpointing import CheckpointNotFoundError, load_ema_params
from mcvd_jax.core.compilation import jit
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.diffusion.factory import diffusion_from_config, initial_scale, sampler_from_config
from mcvd_jax.models import UNetConfig, init_params, make_denoise_fn
from mcvd_jax.video.io import frames_to_unit_range, to_uint8, video_grid, write_gif
from mcvd_jax.video.rollout import make_rollout
from mcvd_jax.video_diffusion.training import TASKS


class TaskInputs(NamedTuple):
  """What a rollout is given for a task (past / future or None, in [-1, 1]) and the real frames
  spanning the same time as the rollout's output, [B, N, H, W, C]."""

  past: jax.Array | None
  future: jax.Array | None
  num_frames: int
  real: jax.Array


def clip_frames_for_task(task: str, cfg: UNetConfig, horizon: int) -> int:
  """Frames of real clip `task_inputs` needs to produce `horizon` frames (T for interpolation)."""
  if task == "interpolation":
    return cfg.num_frames_cond + cfg.num_frames + cfg.num_frames_future
  if task == "prediction":
    return cfg.num_frames_cond + horizon
  if task == "past_reconstruction":
    return horizon + cfg.num_frames_future
  return horizon


def task_inputs(task: str, clip: jax.Array, cfg: UNetConfig, horizon: int) -> TaskInputs:
  """Splits real clips [B, >= clip_frames_for_task(...), H, W, C] for a task.

  prediction: the first Nc frames are given; generation: nothing; interpolation: Nc past and Nf
  future frames around the T frames to fill; past_reconstruction: the Nf frames after the
  `horizon` frames to produce.
  """
  if task not in TASKS:
    raise ConfigError(f"sampling.task={task!r} is unknown; use one of {TASKS}")
  need = clip_frames_for_task(task, cfg, horizon)
  if clip.shape[1] < need:
    raise ValueError(f"task {task!r} with {horizon} frames needs clips of {need} frames, got "
                     f"{clip.shape[1]}")
  clip = clip[:, :need]
  nc, t = cfg.num_frames_cond, cfg.num_frames
  if task == "prediction":
    return TaskInputs(clip[:, :nc], None, horizon, clip)
  if task == "interpolation":
    return TaskInputs(clip[:, :nc], clip[:, nc + t:], t, clip)
  if task == "past_reconstruction":
    return TaskInputs(None, clip[:, horizon:], horizon, clip)
  return TaskInputs(None, None, horizon, clip)


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


def load_for_sampling(config: Any, workdir: str, checkpoint: str | None):
  """(UNetConfig, params, diffusion section, description) from, in order: a converted reference
  checkpoint (a directory with model_config.json), a training checkpoint (--checkpoint naming a
  workdir, its checkpoints/ directory or one checkpoints/<step>; else the workdir's newest; EMA
  parameters), or random weights."""
  if checkpoint and os.path.exists(os.path.join(checkpoint, "model_config.json")):
    from mcvd_jax.convert.export import diffusion_overrides, load_converted
    cfg, params, schedule_fields = load_converted(checkpoint)
    section = ml_collections.ConfigDict(config.diffusion.to_dict())
    section.update(diffusion_overrides(schedule_fields))
    return cfg, params, section, f"converted checkpoint {checkpoint}"
  cfg = UNetConfig.from_mapping(config.model)
  source = checkpoint or workdir
  loaded = load_ema_params(source, lambda key: init_params(cfg, key))
  if loaded is not None:
    params, step = loaded
    return cfg, params, config.diffusion, f"EMA parameters of step {step} in {source}"
  if checkpoint:
    raise CheckpointNotFoundError(f"--checkpoint={checkpoint!r} holds neither a converted "
                                  f"checkpoint (model_config.json) nor training checkpoints")
  logging.warning("no checkpoint in %s: sampling from a RANDOMLY INITIALISED network (noise-like "
                  "output); train first, or pass --checkpoint", workdir)
  return cfg, init_params(cfg, jax.random.key(config.seed)), config.diffusion, "random weights"


def sample_and_save(config: Any, workdir: str, checkpoint: str | None = None) -> str:
  """Samples `config.sampling.batch_size` videos of `sampling.task` and writes
  WORKDIR/samples_<task>.gif (real clips in the top row, samples below), the samples as uint8
  .npy and a .json description. Returns the GIF path."""
  task, batch, horizon = config.sampling.task, config.sampling.batch_size, config.sampling.num_frames
  if task not in TASKS:  # before any compilation
    raise ConfigError(f"sampling.task={task!r} is unknown; use one of {TASKS}")
  os.makedirs(workdir, exist_ok=True)
  cfg, params, diffusion_section, source = load_for_sampling(config, workdir, checkpoint)
  logging.info("sampling %s from %s", task, source)
  diffusion = diffusion_from_config(diffusion_section)
  sampler = sampler_from_config(make_denoise_fn(cfg), diffusion, config.sampling)
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
  gif_path = os.path.join(workdir, f"samples_{task}.gif")
  write_gif(gif_path, video_grid(np.concatenate([to_uint8(given.real), video]), columns=batch))
  np.save(os.path.join(workdir, f"samples_{task}.npy"), video)
  with open(os.path.join(workdir, f"samples_{task}.json"), "w") as f:
    json.dump({"task": task, "shape": list(video.shape), "seconds_with_compile": seconds,
               "source": source, "sampler": config.sampling.kind,
               "steps": int(len(sampler.labels))}, f, indent=2)
  logging.info("wrote %s (%s videos of %d frames, %.1f s)", gif_path, batch, video.shape[1], seconds)
  return gif_path
