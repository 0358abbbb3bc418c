"""MCVD's training pieces for the shared loop: the masked conditional loss on uint8 clips, the
tasks each sample teaches, the training batches and the periodic sample GIFs.

`make_masked_loss` turns the diffusion loss on stacked frames into the core's
`loss_fn(params, video, key) -> (loss, metrics)`: it splits each clip into past | current |
future, masks whole blocks at random (video.masking) and reports the loss of every task
(`loss_sum/<task>`, `count/<task>`; the loop logs their windowed means as `loss/<task>`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.core import paths
from mcvd_jax.core.compilation import jit
from mcvd_jax.core.family import TrainingSetup
from mcvd_jax.core.media import frames_to_unit_range, to_uint8, video_grid, write_gif
from mcvd_jax.data.registry import make_dataset
from mcvd_jax.diffusion.factory import diffusion_loss_fn, initial_scale, sampler_from_config
from mcvd_jax.models import UNetConfig, init_params, make_denoise_fn
from mcvd_jax.video.guidance import guidance_settings
from mcvd_jax.video.masking import make_training_batch
from mcvd_jax.video.rollout import make_rollout
from mcvd_jax.video_diffusion.config import Checked, require_masked_past_training
from mcvd_jax.video_diffusion.eval_sampling import sampling_network
from mcvd_jax.video_diffusion.export import pretrained_params
from mcvd_jax.video_diffusion.signal import loss_by_level, make_learning_signal
from mcvd_jax.video_diffusion.tasks import Masking, clip_frames_for_task, task_inputs, task_masks

def make_masked_loss(diffusion_loss: Callable, masking: Masking,
                     num_levels: int | None = None) -> Callable:
  """loss_fn(params, video, key) -> (loss, metrics) for the core's update.

  diffusion_loss: diffusion.losses.make_loss_fn's function (params, x0, cond, key, cond_mask=...)
  -> (loss, LossAux). video: uint8 [B, Nc+T+Nf, H, W, C]. The key is split into the masking key
  and the loss key (noise levels, noise, dropout). metrics: `loss_sum/<task>` and `count/<task>`
  over the batch's samples of each task; with `num_levels`, the same per bucket of noise labels
  (signal.loss_by_level).
  """

  def loss_fn(params: Any, video: jax.Array, key: jax.Array):
    mask_key, loss_key = jax.random.split(key)
    batch = make_training_batch(mask_key, frames_to_unit_range(video),
                                num_frames_cond=masking.num_frames_cond,
                                num_frames=masking.num_frames,
                                num_frames_future=masking.num_frames_future,
                                prob_mask_cond=masking.prob_mask_cond,
                                prob_mask_future=masking.prob_mask_future,
                                prob_mask_sync=masking.prob_mask_sync)
    loss, aux = diffusion_loss(params, batch.x0, batch.cond, loss_key, cond_mask=batch.cond_mask)
    metrics = {}
    for name, selected in task_masks(batch.past_present, batch.future_present, masking).items():
      metrics[f"loss_sum/{name}"] = jnp.sum(jnp.where(selected, aux.loss_per_sample, 0.0))
      metrics[f"count/{name}"] = jnp.sum(selected.astype(jnp.float32))
    if num_levels:
      metrics.update(loss_by_level(aux.labels, aux.loss_per_sample, num_levels))
    return loss, metrics

  return loss_fn


def make_media_writer(config: Any, cfg: UNetConfig, dataset: Any, tasks: tuple[str, ...],
                      rollout: Callable) -> Callable:
  """write_media(step, params, workdir, key): EMA samples of each enabled task on real test clips,
  WORKDIR/samples/step_<step>_<task>.gif (real clips in the top row, samples below), and the same
  grids as TensorBoard images (frames side by side)."""
  t, s = config.training, config.sampling

  def write_media(step: int, params: Any, model_state: Any, workdir: str, key: jax.Array):
    del model_state  # MCVD's network has none
    directory = os.path.join(workdir, "samples")
    paths.makedirs(directory)
    need = max(clip_frames_for_task(task, cfg, s.num_frames) for task in tasks)
    clips = frames_to_unit_range(dataset.test_videos(need, t.sample_batch_size))
    written, images = [], {}
    for i, task in enumerate(tasks):
      given = task_inputs(task, clips, cfg, s.num_frames)
      video = rollout(params, jax.random.fold_in(key, i), given.past, given.future,
                      num_frames=given.num_frames, batch_size=t.sample_batch_size)
      real, fake = to_uint8(jax.device_get(given.real)), to_uint8(jax.device_get(video))
      grid = video_grid(np.concatenate([real, fake]), columns=real.shape[0])
      path = os.path.join(directory, f"step_{step:08d}_{task}.gif")
      if jax.process_index() == 0:
        write_gif(path, grid)
      written.append(path)
      images[f"samples/{task}"] = np.concatenate(list(grid), axis=1)[None]
    return written, images

  return write_media


def build(config: Any, checked: Checked) -> TrainingSetup:
  """MCVD's TrainingSetup from a config and its checked sections."""
  cfg, masking, tasks, diffusion = checked.model, checked.masking, checked.tasks, checked.diffusion
  dataset = make_dataset(config.data, cfg.image_size, cfg.channels)
  denoise = make_denoise_fn(cfg)
  diffusion_loss = diffusion_loss_fn(denoise, diffusion, l1=config.diffusion.l1)
  require_masked_past_training(guidance_settings(config.sampling)[0],
                               float(config.training.prob_mask_cond), "this run")
  sampler = sampler_from_config(sampling_network(cfg, config.sampling), diffusion, config.sampling)
  rollout = jit(make_rollout(sampler.sample, cfg, diffusion.noise_model, initial_scale(diffusion)),
                static_argnames=("num_frames", "batch_size"))

  def train_batch(seed, step, batch_size, process_index, process_count):
    return dataset.train_batch(seed, step, batch_size, masking.clip_frames, process_index,
                               process_count)

  meta = {"data_seed": int(config.seed), "dataset": config.data.dataset,
          "model": json.loads(json.dumps(config.model.to_dict(), default=list))}
  num_levels = (diffusion.schedule.num_steps if diffusion.schedule is not None
                else int(diffusion.sigmas.shape[0]))
  return TrainingSetup(
      description=f"dataset: {dataset.description}; tasks learned: {', '.join(tasks)}",
      init_params=lambda key: init_params(cfg, key),
      loss_fn=make_masked_loss(diffusion_loss, masking, num_levels), train_batch=train_batch,
      meta=meta, write_media=make_media_writer(config, cfg, dataset, tasks, rollout),
      evaluate=make_signal_evaluation(config, denoise, diffusion, masking, dataset),
      load_pretrained=lambda path, new_layers: pretrained_params(
          path, cfg, config.diffusion, new_layers,
          bool(config.training.get("init_fewer_frames", False))))


def make_signal_evaluation(config: Any, denoise: Callable, diffusion: Any, masking: Masking,
                           dataset: Any) -> Callable | None:
  """The core's periodic evaluation for MCVD: the learning signal (signal.py) of the EMA and the
  raw weights on `training.signal_clips` fixed test clips; None when `training.eval_every` is 0."""
  t = config.training
  if not t.get("eval_every", 0):
    return None
  clips = dataset.test_videos(masking.clip_frames, int(t.get("signal_clips", 16)))
  signal = make_learning_signal(denoise, diffusion, masking, clips, seed=int(config.seed))

  def evaluate(step: int, state: Any, key: jax.Array) -> dict[str, float]:
    del step, key  # fixed clips and noise: a pure function of the weights
    values = jax.device_get(signal({"ema": state.ema_params, "raw": state.params}))
    return {name: float(value) for name, value in values.items()}

  return evaluate
