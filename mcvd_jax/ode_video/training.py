"""The neural-ODE video family's training pieces for the shared loop: the variant's loss on uint8
clips of the training frames, batches from the fixed training set, validation errors of the
reconstructed and the extrapolated frames, and a GIF of EMA predictions every
`training.sample_every` steps."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.core.compilation import jit
from mcvd_jax.core.family import TrainingSetup
from mcvd_jax.core.media import frames_to_unit_range, to_uint8
from mcvd_jax.ode_video.config import Checked
from mcvd_jax.ode_video.data import moving_mnist, train_batch_fn
from mcvd_jax.ode_video.losses import make_loss_fn
from mcvd_jax.ode_video.model import init_params, predict
from mcvd_jax.ode_video.sampling import comparison_gif, write_comparison


def make_clip_loss(loss: Callable, train_frames: int) -> Callable:
  """loss_fn(params, clips, key) for the core's update; clips: uint8 [B, T >= train_frames, H, W,
  1], of which the first train_frames are reconstructed (the rest are never a target)."""

  def loss_fn(params: Any, clips: jax.Array, key: jax.Array):
    loss_value, metrics = loss(params, frames_to_unit_range(clips[:, :train_frames]), key)
    metrics = dict(metrics)
    del metrics["loss"]  # the loop logs the loss itself
    return loss_value, metrics

  return loss_fn


def make_predictor(checked: Checked) -> Callable:
  """predict(params, clips uint8 [B, T, H, W, 1]) -> uint8 [B, T, H, W, 1]: the model given the
  first train_frames frames, decoded at every frame's time (the posterior mean for variant B).
  Jitted once per input shape."""
  times = jnp.asarray(checked.times)

  @jit
  def run(params, clips):
    given = frames_to_unit_range(clips[:, :checked.train_frames])
    return to_uint8(predict(checked.model, params, given, times, checked.ode))

  return run


def frame_errors(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
  """uint8 [B, T, H, W, C] pairs -> float64 [B, T] mean squared error per frame in [0, 1] units."""
  diff = real.astype(np.float64) / 255.0 - fake.astype(np.float64) / 255.0
  return np.mean(diff**2, axis=(2, 3, 4))


def make_evaluate(checked: Checked, run: Callable, val: np.ndarray, batch_size: int) -> Callable:
  """evaluate(step, state, key) -> {val_mse_reconstruction, val_mse_extrapolation}: the EMA
  predictions (run: make_predictor's function) mean squared errors ([0, 1] units) on the
  validation videos, over the given frames and over the frames after them (absent when the clips
  have none)."""

  def evaluate(step, state, key):
    del step, key
    errors = np.concatenate([frame_errors(val[i:i + batch_size],
                                          np.asarray(run(state.ema_params,
                                                         val[i:i + batch_size])))
                             for i in range(0, len(val), batch_size)])
    out = {"val_mse_reconstruction": float(errors[:, :checked.train_frames].mean())}
    if errors.shape[1] > checked.train_frames:
      out["val_mse_extrapolation"] = float(errors[:, checked.train_frames:].mean())
    return out

  return evaluate


def make_media_writer(checked: Checked, run: Callable, val: np.ndarray, count: int) -> Callable:
  """write_media(step, params, model_state, workdir, key): WORKDIR/samples/step_<step>.gif of
  `count` validation videos, ground truth above the EMA prediction (run: make_predictor's
  function), extrapolated frames marked."""
  clips = val[:count]

  def write_media(step, params, model_state, workdir, key):
    del model_state, key
    fake = np.asarray(run(params, clips))
    path = os.path.join(workdir, "samples", f"step_{step:08d}.gif")
    picture = comparison_gif(clips, fake, checked.train_frames)
    if jax.process_index() == 0:
      write_comparison(path, picture)
    return [path], {"predictions": picture[checked.train_frames][None]}

  return write_media


def build(config: Any, checked: Checked) -> TrainingSetup:
  """The family's TrainingSetup from a config and its checked sections."""
  sets = moving_mnist(config)
  val = sets.val_videos
  loss = make_loss_fn(checked.model, checked.times[:checked.train_frames], checked.ode)
  meta = {"data_seed": int(config.seed), "dataset": config.data.dataset,
          "model": json.loads(json.dumps(config.model.to_dict(), default=list)),
          "times": [float(t) for t in checked.times], "train_frames": checked.train_frames}
  t = config.training
  run = make_predictor(checked)  # one compiled prediction for the media and the validation
  return TrainingSetup(
      description=(f"dataset: {sets.description}; variant {checked.model.variant}, "
                   f"reconstructing {checked.train_frames} of {len(checked.times)} frames"),
      init_params=lambda key: init_params(checked.model, key),
      loss_fn=make_clip_loss(loss, checked.train_frames),
      train_batch=train_batch_fn(sets, checked.train_frames),
      meta=meta,
      write_media=make_media_writer(checked, run, val, t.sample_batch_size),
      evaluate=make_evaluate(checked, run, val[:config.eval.num_videos], t.batch_size))
