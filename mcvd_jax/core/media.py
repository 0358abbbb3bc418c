"""What every family writes for people to look at: [-1, 1] floats <-> uint8, grids of images or
videos, PNG and GIF files, and the files of `--mode=sample` (a picture, the uint8 arrays as .npz and
a .json saying what drew them).
"""

from __future__ import annotations

import io
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from mcvd_jax.core import paths


def frames_to_unit_range(video):
  """uint8 [..] in [0, 255] -> float32 in [-1, 1] (the reference's rescaled data_transform); the
  inverse of `to_uint8` on uint8 frames."""
  return jnp.asarray(video).astype(jnp.float32) / 255.0 * 2.0 - 1.0


def to_uint8(frames):
  """[..., H, W, C] in [-1, 1] -> uint8 [0, 255] (values outside are clipped). A jax array (or a
  tracer, inside jit) stays on its device; anything else becomes a NumPy array."""
  xp = jnp if isinstance(frames, jax.Array) else np
  frames = xp.asarray(frames, xp.float32)
  return xp.round((xp.clip(frames, -1.0, 1.0) + 1.0) * 127.5).astype(xp.uint8)


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
  """frames: uint8 [T, H, W, C] with C in {1, 3}; loops forever. `path`: local or a URI."""
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
    raise ValueError(f"write_gif needs uint8 [T, H, W, 1 or 3], got {frames.dtype} {frames.shape}")
  images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
  buffer = io.BytesIO()
  images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                 duration=int(1000 / fps), loop=0)
  paths.write_bytes(path, buffer.getvalue())


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 [rows*(H+2)-2, columns*(W+2)-2, C] grid (white gaps)."""
  return video_grid(np.asarray(images)[:, None], columns=columns)[0]


def write_png(path: str, image: np.ndarray) -> None:
  """image: uint8 [H, W, 1 or 3]. `path`: local or a URI."""
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"write_png needs uint8 [H, W, 1 or 3], got {image.dtype} {image.shape}")
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
  paths.write_bytes(path, buffer.getvalue())


def write_sample_files(stem: str, picture: np.ndarray, arrays: Mapping[str, np.ndarray],
                       description: Mapping[str, Any]) -> str:
  """`--mode=sample`'s files, written by process 0 only: `stem`.png (picture uint8 [H, W, C]) or
  `stem`.gif (picture uint8 [T, H, W, C]), `stem`.npz holding `arrays` and `stem`.json holding
  `description`. Returns the picture's path."""
  path = stem + (".gif" if picture.ndim == 4 else ".png")
  if jax.process_index() == 0:
    paths.makedirs(os.path.dirname(paths.resolve(stem)))
    (write_gif if picture.ndim == 4 else write_png)(path, picture)
    paths.save_npz(stem + ".npz", {k: np.asarray(v) for k, v in arrays.items()}, compressed=True)
    paths.write_json(stem + ".json", dict(description), indent=2)
  return path
