"""Sampling images: every image from its own key (so a batch's images do not depend on the batch
they are drawn in), batches sharded over the devices, PNG grids and .npz files for people.

`--mode=sample` writes WORKDIR/samples_<kind>_<steps>.png (a grid of `sampling.num_images`
images), the same images as uint8 .npz and a .json saying what drew them.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from mcvd_jax.core.checkpointing import load_ema_params
from mcvd_jax.core.compilation import jit
from mcvd_jax.diffusion.factory import diffusion_from_config, initial_scale, sampler_from_config
from mcvd_jax.image_diffusion.config import image_model_config
from mcvd_jax.metrics.sharded import data_mesh, map_batches
from mcvd_jax.models import UNetConfig, init_params, make_denoise_fn
from mcvd_jax.video.io import video_grid

_SAMPLE_STREAM = 0x696D  # folded into the seed: sample keys never meet training keys


def to_uint8(images: jax.Array) -> jax.Array:
  """[-1, 1] -> uint8 [0, 255] on the device (values outside are clipped)."""
  return jnp.round((jnp.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)


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


@functools.lru_cache(maxsize=16)
def _cached_sampler(cfg: UNetConfig, diffusion_json: str, sampling_json: str) -> Callable:
  """One function per setting for the life of the process (map_batches caches its compilation)."""
  diffusion = diffusion_from_config(ml_collections.ConfigDict(json.loads(diffusion_json)))
  sampler = sampler_from_config(make_denoise_fn(cfg), diffusion,
                                ml_collections.ConfigDict(json.loads(sampling_json)))
  return make_image_sampler(cfg, diffusion, sampler)


def image_sampler(cfg: UNetConfig, diffusion_section: Any, sampling_section: Any) -> Callable:
  """`make_image_sampler` for the config's diffusion and sampling sections (cached per setting)."""
  as_json = lambda s: json.dumps(s.to_dict(), sort_keys=True, default=list)  # noqa: E731
  return _cached_sampler(cfg, as_json(diffusion_section), as_json(sampling_section))


def item_keys(key: jax.Array, first: int, count: int) -> np.ndarray:
  """Raw key data [count, ...] of fold_in(key, i) for images i = first .. first + count - 1."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(first, first + count))
  return np.asarray(jax.random.key_data(keys))


def draw_images(sample_fn: Callable, params: Any, key: jax.Array, first: int, count: int,
                batch_size: int, mesh=None) -> np.ndarray:
  """Images first .. first + count - 1 of the stream `key`: uint8 [count, H, W, C]."""
  return map_batches(sample_fn, params, [item_keys(key, first, count)], batch_size=batch_size,
                     mesh=mesh or data_mesh(), jit_fn=jit)


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 [rows*(H+2)-2, columns*(W+2)-2, C] grid (white gaps)."""
  return video_grid(images[:, None], columns=columns)[0]


def write_png(path: str, image: np.ndarray) -> None:
  """image: uint8 [H, W, 1 or 3]."""
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def load_params(config: Any, workdir: str, checkpoint: str | None) -> tuple[UNetConfig, Any, str]:
  """(UNetConfig, EMA parameters, where they came from): the newest training checkpoint of
  `checkpoint` (a workdir, its checkpoints/ or one checkpoints/<step>) or of `workdir`; random
  weights, with a warning, when the workdir has none."""
  from mcvd_jax.core.checkpointing import CheckpointNotFoundError
  cfg = image_model_config(config)
  source = checkpoint or workdir
  loaded = load_ema_params(source, lambda key: init_params(cfg, key))
  if loaded is not None:
    params, step = loaded
    return cfg, params, f"EMA parameters of step {step} in {source}"
  if checkpoint:
    raise CheckpointNotFoundError(f"--checkpoint={checkpoint!r} holds no training checkpoints")
  logging.warning("no checkpoint in %s: sampling from a RANDOMLY INITIALISED network (noise-like "
                  "output); train first, or pass --checkpoint", workdir)
  return cfg, init_params(cfg, jax.random.key(config.seed)), "random weights"


def sample_and_save(config: Any, workdir: str, checkpoint: str | None = None) -> str:
  """`--mode=sample`: `sampling.num_images` images with the config's sampler; returns the PNG."""
  s = config.sampling
  os.makedirs(workdir, exist_ok=True)
  cfg, params, source = load_params(config, workdir, checkpoint)
  steps = s.subsample or config.diffusion.num_steps
  logging.info("sampling %d images (%s, %d steps, %s noise) from %s", s.num_images, s.kind, steps,
               config.diffusion.noise, source)
  key = jax.random.fold_in(jax.random.key(config.seed), _SAMPLE_STREAM)
  images = draw_images(image_sampler(cfg, config.diffusion, s), params, key, 0, s.num_images,
                       s.batch_size)
  stem = os.path.join(workdir, f"samples_{s.kind}_{steps}")
  if jax.process_index() == 0:
    write_png(stem + ".png", image_grid(images))
    np.savez_compressed(stem + ".npz", images=images)
    with open(stem + ".json", "w") as f:
      json.dump({"source": source, "sampler": s.kind, "steps": int(steps),
                 "noise": config.diffusion.noise, "target": config.diffusion.target,
                 "num_images": int(s.num_images), "seed": int(config.seed)}, f, indent=2)
  logging.info("wrote %s.png and .npz", stem)
  return stem + ".png"
