"""Sampling videos from a model (randomly initialised, or a converted reference checkpoint) into
GIFs: the main job until the training loop lands."""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mcvd_jax.compilation import jit
from mcvd_jax.diffusion.factory import diffusion_from_config, initial_scale, sampler_from_config
from mcvd_jax.models import UNetConfig, init_params, make_denoise_fn
from mcvd_jax.video.io import to_uint8, video_grid, write_gif
from mcvd_jax.video.rollout import make_rollout

TASKS = ("prediction", "generation", "interpolation", "past_reconstruction")


def conditioning_for_task(task: str, cfg: UNetConfig, key: jax.Array, batch: int):
  """(past, future) for a task, filled with a simple moving square when a block is needed (a
  stand-in until datasets land): [B, N, H, W, C] in [-1, 1], or None."""
  if task not in TASKS:
    raise ValueError(f"sampling.task={task!r} is unknown; use one of {TASKS}")
  n = cfg.num_frames_cond + cfg.num_frames + cfg.num_frames_future
  clip = moving_squares(key, batch, n, cfg.image_size, cfg.channels)
  past = clip[:, :cfg.num_frames_cond] if task in ("prediction", "interpolation") else None
  future = clip[:, n - cfg.num_frames_future:] if task in ("interpolation", "past_reconstruction") else None
  return past, future


def moving_squares(key: jax.Array, batch: int, frames: int, size: int, channels: int) -> jax.Array:
  """A bright square moving in a straight line on a dark canvas: [B, N, H, W, C] in [-1, 1]."""
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


def sample_and_save(config, workdir: str, checkpoint: str | None = None) -> str:
  """Samples `config.sampling.batch_size` videos of the configured task and writes
  WORKDIR/samples_<task>.gif (plus the raw uint8 array as .npy). Returns the GIF path."""
  task, batch = config.sampling.task, config.sampling.batch_size
  if task not in TASKS:  # before any compilation
    raise ValueError(f"sampling.task={task!r} is unknown; use one of {TASKS}")
  os.makedirs(workdir, exist_ok=True)
  diffusion_section = config.diffusion
  if checkpoint:
    from mcvd_jax.convert.export import diffusion_overrides, load_converted
    cfg, params, schedule_fields = load_converted(checkpoint)
    diffusion_section = ml_collections.ConfigDict(config.diffusion.to_dict())
    diffusion_section.update(diffusion_overrides(schedule_fields))
    logging.info("loaded converted checkpoint %s (diffusion: %s)", checkpoint, diffusion_section)
  else:
    cfg = UNetConfig.from_mapping(config.model)
    params = init_params(cfg, jax.random.key(config.seed))
    logging.warning("no checkpoint given: sampling from a RANDOMLY INITIALISED network (noise-like "
                    "output); pass --checkpoint=DIR with a converted checkpoint for real samples")
  diffusion = diffusion_from_config(diffusion_section)
  sampler = sampler_from_config(make_denoise_fn(cfg), diffusion, config.sampling)
  rollout = jit(make_rollout(sampler.sample, cfg, diffusion.noise_model, initial_scale(diffusion)),
                static_argnames=("num_frames", "batch_size"))
  data_key, sample_key = jax.random.split(jax.random.key(config.seed + 1))
  past, future = conditioning_for_task(task, cfg, data_key, batch)
  num_frames = cfg.num_frames if task == "interpolation" else config.sampling.num_frames
  start = time.time()
  video = rollout(params, sample_key, past, future, num_frames=num_frames, batch_size=batch)
  video = to_uint8(jax.device_get(video))
  seconds = time.time() - start
  gif_path = os.path.join(workdir, f"samples_{task}.gif")
  write_gif(gif_path, video_grid(video))
  np.save(os.path.join(workdir, f"samples_{task}.npy"), video)
  with open(os.path.join(workdir, f"samples_{task}.json"), "w") as f:
    json.dump({"task": task, "shape": list(video.shape), "seconds_with_compile": seconds,
               "checkpoint": checkpoint, "sampler": config.sampling.kind,
               "steps": int(len(sampler.labels))}, f, indent=2)
  logging.info("wrote %s (%s videos of %d frames, %.1f s)", gif_path, batch, video.shape[1], seconds)
  return gif_path
