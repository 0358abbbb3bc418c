"""What doing nothing scores: videos made from the given frames alone, scored like a model's.

  copy_last  prediction: every produced frame repeats the last given past frame;
  blend      interpolation: the k produced frames fade linearly from the last past frame to the
             first future frame (frame j of k: (1 - w) past + w future, w = (j + 1) / (k + 1)).

A model's report shows these beside its own numbers (same clips, same metrics), so a reader sees
at once whether anything was learned. Generation has no given frames: no baseline.
"""

from __future__ import annotations

import numpy as np

BASELINES = ("copy_last", "blend")
BASELINE_FOR_TASK = {"prediction": "copy_last", "interpolation": "blend"}
LABELS = {"copy_last": "baseline: copy the last past frame",
          "blend": "baseline: blend the last past and first future frames"}


def copy_last(real: np.ndarray, cond_frames: int) -> np.ndarray:
  """real uint8 [N, T, H, W, C] -> [N, 1, T, H, W, C]: the first `cond_frames` frames kept, every
  later one the last of them."""
  if not 1 <= cond_frames < real.shape[1]:
    raise ValueError(f"copy_last needs 1 <= cond_frames < {real.shape[1]} frames, got "
                     f"{cond_frames}")
  fake = real.copy()
  fake[:, cond_frames:] = real[:, cond_frames - 1:cond_frames]
  return fake[:, None]


def blend(real: np.ndarray, cond_frames: int, future_frames: int) -> np.ndarray:
  """real uint8 [N, p + k + f, H, W, C] -> [N, 1, p + k + f, H, W, C]: the p past and f future
  frames kept, the k between them a linear fade from the last past to the first future frame."""
  k = real.shape[1] - cond_frames - future_frames
  if cond_frames < 1 or future_frames < 1 or k < 1:
    raise ValueError(f"blend needs past and future frames around at least one frame; got "
                     f"{cond_frames} past, {future_frames} future of {real.shape[1]}")
  past = real[:, cond_frames - 1].astype(np.float64)
  future = real[:, cond_frames + k].astype(np.float64)
  weights = (np.arange(1, k + 1) / (k + 1)).reshape(1, k, 1, 1, 1)
  middle = (1.0 - weights) * past[:, None] + weights * future[:, None]
  fake = real.copy()
  fake[:, cond_frames:cond_frames + k] = np.clip(np.round(middle), 0, 255).astype(real.dtype)
  return fake[:, None]


def make_baseline(name: str, real: np.ndarray, cond_frames: int,
                  future_frames: int = 0) -> np.ndarray:
  """The baseline `name` (one of BASELINES) of uint8 clips [N, T, H, W, C] -> [N, 1, T, ...]."""
  if name == "copy_last":
    return copy_last(real, cond_frames)
  if name == "blend":
    return blend(real, cond_frames, future_frames)
  raise ValueError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")
