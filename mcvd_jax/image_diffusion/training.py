"""The image family's training pieces for the shared loop: the diffusion loss on uint8 image
batches, the training batches, and a PNG grid of EMA samples every `training.sample_every` steps."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax

from mcvd_jax.core import paths
from mcvd_jax.core.family import TrainingSetup
from mcvd_jax.core.media import frames_to_unit_range, image_grid, write_png
from mcvd_jax.diffusion.factory import diffusion_loss_fn
from mcvd_jax.image_diffusion.config import Checked
from mcvd_jax.image_diffusion.sampling import draw_images, image_sampler
from mcvd_jax.models import init_params, make_denoise_fn


def make_image_loss(diffusion_loss: Callable) -> Callable:
  """loss_fn(params, images, key) -> (loss, metrics) for the core's update; images: uint8
  [B, H, W, C]; diffusion_loss: diffusion.losses.make_loss_fn's function (no conditioning)."""

  def loss_fn(params: Any, images: jax.Array, key: jax.Array):
    loss, _ = diffusion_loss(params, frames_to_unit_range(images), None, key)
    return loss, {}

  return loss_fn


def make_media_writer(config: Any, sample_fn: Callable) -> Callable:
  """write_media(step, params, workdir, key): `training.sample_batch_size` EMA samples as
  WORKDIR/samples/step_<step>.png and as a TensorBoard image."""
  count, batch = config.training.sample_batch_size, config.sampling.batch_size

  def write_media(step: int, params: Any, model_state: Any, workdir: str, key: jax.Array):
    del model_state  # the UNet has none
    grid = image_grid(draw_images(sample_fn, params, key, 0, count, batch))
    directory = os.path.join(workdir, "samples")
    paths.makedirs(directory)
    path = os.path.join(directory, f"step_{step:08d}.png")
    if jax.process_index() == 0:
      write_png(path, grid)
    return [path], {"samples": grid[None]}

  return write_media


def build(config: Any, checked: Checked) -> TrainingSetup:
  """The image family's TrainingSetup from a config and its checked sections."""
  from mcvd_jax.data.images import make_image_dataset
  cfg, diffusion = checked.model, checked.diffusion
  dataset = make_image_dataset(config.data, cfg.image_size, cfg.channels)
  diffusion_loss = diffusion_loss_fn(make_denoise_fn(cfg), diffusion, l1=config.diffusion.l1)
  meta = {"data_seed": int(config.seed), "dataset": config.data.dataset,
          "model": json.loads(json.dumps(config.model.to_dict(), default=list)),
          "diffusion": json.loads(json.dumps(config.diffusion.to_dict(), default=list))}
  d = config.diffusion
  return TrainingSetup(
      description=(f"dataset: {dataset.description}; {d.kind} with {d.noise} noise, "
                   f"{d.target} target"),
      init_params=lambda key: init_params(cfg, key),
      loss_fn=make_image_loss(diffusion_loss),
      train_batch=dataset.train_batch,
      meta=meta,
      write_media=make_media_writer(
          config, image_sampler(cfg, config.diffusion, config.sampling).fn))
