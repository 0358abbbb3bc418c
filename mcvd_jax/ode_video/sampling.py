"""`--mode=sample` of the neural-ODE video family: GIFs (and a PNG strip) of reconstruction and
extrapolation, the ground truth above the prediction, every extrapolated frame (after the
`data.train_frames` the model is given) framed in red.

Writes WORKDIR/samples_<split>.gif, .png (the frames side by side, as the paper's figures),
.npz (`real`, `predicted`, uint8 [N, T, H, W, 1]) and .json (what drew them, the per-frame
errors of the reconstructed and the extrapolated part).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.core.media import video_grid, write_gif, write_png, write_sample_files
from mcvd_jax.core.weights import load_weights
from mcvd_jax.ode_video.config import Checked
from mcvd_jax.ode_video.model import init_params

MARK = np.asarray([220, 30, 30], np.uint8)  # the extrapolated frames' border
BORDER = 1


def mark_extrapolated(videos: np.ndarray, train_frames: int) -> np.ndarray:
  """uint8 [B, T, H, W, 1 or 3] -> RGB [B, T, H, W, 3] with a red border on frames
  train_frames .. T-1 (the ones the model was not given)."""
  rgb = np.repeat(videos, 3, axis=-1) if videos.shape[-1] == 1 else videos.copy()
  later = rgb[:, train_frames:]
  later[:, :, :BORDER], later[:, :, -BORDER:] = MARK, MARK
  later[:, :, :, :BORDER], later[:, :, :, -BORDER:] = MARK, MARK
  return rgb


def comparison_gif(real: np.ndarray, fake: np.ndarray, train_frames: int) -> np.ndarray:
  """real, fake: uint8 [B, T, H, W, 1] -> RGB frames [T, H', W', 3]: the real videos in the top
  row, the predictions below, extrapolated frames marked."""
  marked = np.concatenate([np.repeat(real, 3, axis=-1), mark_extrapolated(fake, train_frames)])
  return video_grid(marked, columns=real.shape[0])


def comparison_strip(real: np.ndarray, fake: np.ndarray, train_frames: int,
                     max_videos: int = 4) -> np.ndarray:
  """RGB [rows, cols, 3]: for each of the first max_videos videos, its real frames side by side
  and the predicted ones under them (extrapolated frames marked), as the paper's figures."""
  n = min(max_videos, real.shape[0])
  pairs = []
  for i in range(n):
    pairs += [np.repeat(real[i:i + 1], 3, axis=-1), mark_extrapolated(fake[i:i + 1], train_frames)]
  rows = np.concatenate(pairs)  # [2n, T, H, W, 3]
  # Frames side by side: the time axis becomes the grid's columns.
  return video_grid(rows.reshape(-1, 1, *rows.shape[2:]), columns=rows.shape[1])[0]


def write_comparison(path: str, picture: np.ndarray) -> None:
  paths.makedirs(os.path.dirname(paths.resolve(path)))
  write_gif(path, picture)


def sample_and_save(config: Any, checked: Checked, workdir: str,
                    checkpoint: str | None = None) -> str:
  """Predicts `sampling.num_videos` videos of `sampling.split` from their first train_frames
  frames with the checkpoint's `sampling.weights`; returns the GIF's path."""
  from mcvd_jax.ode_video.data import moving_mnist
  from mcvd_jax.ode_video.training import frame_errors, make_predictor
  s = config.sampling
  paths.makedirs(workdir)
  weights = load_weights(workdir, checkpoint, lambda key: init_params(checked.model, key),
                         config.seed, weights=s.weights)
  sets = moving_mnist(config)
  clips = (sets.val_videos if s.split == "val" else sets.train_videos)[:s.num_videos]
  fake = np.asarray(make_predictor(checked)(weights.params, clips))
  errors = frame_errors(clips, fake)
  k = checked.train_frames
  stem = os.path.join(workdir, f"samples_{s.split}")
  path = write_sample_files(
      stem, comparison_gif(clips, fake, k), {"real": clips, "predicted": fake},
      {"source": weights.source, "split": s.split, "variant": checked.model.variant,
       "times": [float(t) for t in checked.times], "given_frames": k,
       "mse_reconstruction": float(errors[:, :k].mean()),
       "mse_extrapolation": float(errors[:, k:].mean()) if errors.shape[1] > k else None,
       "mse_per_frame": [float(e) for e in errors.mean(axis=0)]})
  if jax.process_index() == 0:
    write_png(stem + ".png", comparison_strip(clips, fake, k))
  logging.info("wrote %s and %s.png (%d videos of %d frames; %d given, the rest extrapolated)",
               path, stem, len(clips), clips.shape[1], k)
  return path
