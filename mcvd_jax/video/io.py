"""Writing videos for people to look at: [-1, 1] floats to uint8, frame grids, animated GIFs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from PIL import Image


def frames_to_unit_range(video):
  """uint8 [..] in [0, 255] -> float32 in [-1, 1] (the reference's rescaled data_transform); the
  inverse of `to_uint8` on uint8 frames."""
  return jnp.asarray(video).astype(jnp.float32) / 255.0 * 2.0 - 1.0


def to_uint8(video) -> np.ndarray:
  """[..., H, W, C] in [-1, 1] -> uint8 [0, 255] (values outside are clipped)."""
  video = np.asarray(video, np.float32)
  return np.round((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def video_grid(videos: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
  """uint8 [B, T, H, W, C] -> [T, rows*(H+pad)-pad, columns*(W+pad)-pad, C]: one tile per video."""
  b, t, h, w, c = videos.shape
  columns = columns or int(np.ceil(np.sqrt(b)))
  rows = int(np.ceil(b / columns))
  grid = np.full((t, rows * (h + pad) - pad, columns * (w + pad) - pad, c), 255, np.uint8)
  for i in range(b):
    r, col = divmod(i, columns)
    grid[:, r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = videos[i]
  return grid


def write_gif(path: str, frames: np.ndarray, fps: float = 4.0) -> None:
  """frames: uint8 [T, H, W, C] with C in {1, 3}; loops forever."""
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
    raise ValueError(f"write_gif needs uint8 [T, H, W, 1 or 3], got {frames.dtype} {frames.shape}")
  images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
  images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
