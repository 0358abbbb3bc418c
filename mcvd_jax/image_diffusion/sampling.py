"""Sampling images: every image from its own key (so a batch's images do not depend on the batch
they are drawn in), batches sharded over the devices, PNG grids and .npz files for people.

`--mode=sample` writes WORKDIR/samples_<kind>_<steps>.png (a grid of `sampling.num_images`
images), the same images as uint8 .npz and a .json saying what drew them.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.core.compilation import jit
from mcvd_jax.core.keys import SAMPLE_STREAM, item_keys, stream_key
from mcvd_jax.core.media import image_grid, to_uint8, write_sample_files
from mcvd_jax.core.sharding import make_mesh
from mcvd_jax.core.weights import load_weights
from mcvd_jax.diffusion.factory import (BuiltSampler, cached_sampler, initial_scale,
                                        network_evals, sampler_from_config)
from mcvd_jax.image_diffusion.config import Checked
from mcvd_jax.metrics.sharded import map_batches
from mcvd_jax.models import UNetConfig, init_params, make_denoise_fn


def make_image_sampler(cfg: UNetConfig, diffusion: Any, sampler: Any) -> Callable:
  """sample(params, key_data) -> uint8 [B, H, W, C]; key_data: uint32 [B, ...] raw keys, one per
  image. Each image starts from its own prior draw (scaled Σ^{1/2} z) and runs its own chain."""
  shape = (1, cfg.image_size, cfg.image_size, cfg.channels)
  scale = initial_scale(diffusion)

  def one(params, key_data):
    key = jax.random.wrap_key_data(key_data)
    init_key, chain_key = jax.random.split(key)
    x_init = scale * diffusion.noise_model.sample(init_key, shape)
    return to_uint8(sampler.sample(params, x_init, None, chain_key)[0])

  def sample(params, key_data):
    return jax.vmap(lambda k: one(params, k))(key_data)

  return sample


def image_sampler(cfg: UNetConfig, diffusion_section: Any, sampling_section: Any) -> BuiltSampler:
  """`make_image_sampler` for the config's diffusion and sampling sections, as BuiltSampler(fn,
  tally): cached per setting (diffusion.factory.cached_sampler)."""
  return cached_sampler(make_image_sampler, make_denoise_fn, cfg, diffusion_section,
                        sampling_section)


def network_evals_per_image(cfg: UNetConfig, diffusion: Any, sampling_section: Any) -> int | None:
  """Network evaluations per image of the section's sampler (None: an adaptive ODE solve)."""
  return network_evals(sampler_from_config(make_denoise_fn(cfg), diffusion, sampling_section),
                       sampling_section)


def draw_images(sample_fn: Callable, params: Any, key: jax.Array, first: int, count: int,
                batch_size: int, mesh=None) -> np.ndarray:
  """Images first .. first + count - 1 of the stream `key`: uint8 [count, H, W, C]."""
  return map_batches(sample_fn, params, [item_keys(key, first, count)], batch_size=batch_size,
                     mesh=mesh or make_mesh(), jit_fn=jit)


def load_params(config: Any, checked: Checked, workdir: str,
                checkpoint: str | None) -> tuple[UNetConfig, Any, str]:
  """(UNetConfig, the parameters `sampling.weights` names (EMA or raw), where they came from):
  core.weights.load_weights."""
  cfg = checked.model
  weights = load_weights(workdir, checkpoint, lambda key: init_params(cfg, key), config.seed,
                         weights=config.sampling.get("weights", "ema"))
  return cfg, weights.params, weights.source


def sample_and_save(config: Any, checked: Checked, workdir: str,
                    checkpoint: str | None = None) -> str:
  """`--mode=sample`: `sampling.num_images` images with the config's sampler; returns the PNG."""
  s = config.sampling
  paths.makedirs(workdir)
  cfg, params, source = load_params(config, checked, workdir, checkpoint)
  steps = s.subsample or config.diffusion.num_steps
  logging.info("sampling %d images (%s, %d steps, %s noise) from %s", s.num_images, s.kind, steps,
               config.diffusion.noise, source)
  key = stream_key(config.seed, SAMPLE_STREAM)
  sampler = image_sampler(cfg, config.diffusion, s)
  if sampler.tally is not None:
    sampler.tally.take()  # drop counts of any earlier call
  images = draw_images(sampler.fn, params, key, 0, s.num_images, s.batch_size)
  evals = network_evals_per_image(cfg, checked.diffusion, s)
  if sampler.tally is not None:  # an adaptive ODE solve: what each image's solve used
    evals = sampler.tally.take().tolist()
  path = write_sample_files(
      os.path.join(workdir, f"samples_{s.kind}_{steps}"), image_grid(images), {"images": images},
      {"source": source, "sampler": s.kind, "steps": int(steps), "noise": config.diffusion.noise,
       "target": config.diffusion.target, "num_images": int(s.num_images),
       "network_evals": evals,
       "seed": int(config.seed)})
  logging.info("wrote %s and .npz", path)
  return path
