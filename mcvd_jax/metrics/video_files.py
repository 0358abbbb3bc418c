"""Reading sets of videos for evaluation: .npy / .npz arrays or a folder of GIF / MP4 files.

Every reader returns uint8 [N, T, H, W, C] (images: [N, H, W, C]) with C in {1, 3}, or raises an
error that names the file and what is wrong with it.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageSequence

VIDEO_SUFFIXES = (".gif", ".mp4", ".avi", ".webm")


def _as_uint8_videos(array: np.ndarray, source: str) -> np.ndarray:
  if array.ndim == 4:  # [N, T, H, W] grey videos
    array = array[..., None]
  if array.ndim != 5 or array.shape[-1] not in (1, 3):
    raise ValueError(f"{source}: expected videos [N, T, H, W, C] with C = 1 or 3, got shape "
                     f"{array.shape}")
  if array.shape[0] == 0:
    raise ValueError(f"{source}: holds no videos (shape {array.shape})")
  return _to_uint8(array, source, "videos")


def _to_uint8(array: np.ndarray, source: str, what: str) -> np.ndarray:
  """uint8 as is; other integers if within 0..255; floats if finite and within [0, 1]."""
  if array.dtype == np.uint8:
    return array
  if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
    lo, hi = int(array.min()), int(array.max())
    if lo < 0 or hi > 255:
      raise ValueError(f"{source}: integer {what} must be in [0, 255], found values in [{lo}, "
                       f"{hi}]")
    return array.astype(np.uint8)
  if np.issubdtype(array.dtype, np.floating):
    if not np.all(np.isfinite(array)):
      raise ValueError(f"{source}: contains NaN or infinite values")
    lo, hi = float(array.min()), float(array.max())
    if lo < 0.0 or hi > 1.0:
      raise ValueError(f"{source}: float {what} must be in [0, 1], found values in [{lo:.3g}, "
                       f"{hi:.3g}]; save uint8 [0, 255] frames or rescale")
    return np.round(array * 255.0).astype(np.uint8)
  raise ValueError(f"{source}: unsupported dtype {array.dtype}; use uint8 [0, 255] or float [0, 1]")


def _read_array_file(path: str) -> np.ndarray:
  try:
    if path.endswith(".npz"):
      with np.load(path) as data:
        key = "videos" if "videos" in data.files else (data.files[0] if data.files else None)
        array = data[key] if key else None
    else:
      array = np.load(path, allow_pickle=False)
  except Exception as e:  # truncated or foreign files raise many kinds of errors
    raise ValueError(f"{path}: cannot read it as a NumPy file ({e})") from e
  if array is None:
    raise ValueError(f"{path}: the .npz file holds no arrays")
  return array


def _read_video_file(path: str) -> np.ndarray:
  """One video file -> uint8 [T, H, W, 3 or 1]."""
  try:
    if path.lower().endswith(".gif"):
      with Image.open(path) as image:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    else:
      import imageio.v3 as iio  # MP4 and friends need imageio with its ffmpeg plugin
      frames = list(iio.imread(path, index=None))
  except ImportError as e:
    raise ImportError(f"{path}: reading {os.path.splitext(path)[1]} files needs imageio and "
                      f"imageio-ffmpeg (pip install imageio imageio-ffmpeg)") from e
  except Exception as e:
    raise ValueError(f"{path}: cannot decode this video ({e})") from e
  video = np.stack(frames).astype(np.uint8)
  if video.ndim == 3:
    video = video[..., None]
  if video.shape[-1] == 3 and np.array_equal(video[..., 0], video[..., 1]) and np.array_equal(
      video[..., 0], video[..., 2]):
    video = video[..., :1]  # grey videos saved as RGB
  return video


def _read_folder(path: str, suffixes: tuple[str, ...], read_one, what: str,
                 same_shape_hint: str) -> np.ndarray:
  """Every file of `path` ending in one of `suffixes` (sorted by name), read with `read_one` and
  stacked; clear errors for an empty folder or files of different shapes."""
  files = sorted(f for f in os.listdir(path) if f.lower().endswith(suffixes))
  if not files:
    raise ValueError(f"{path}: no {what} files ({', '.join(suffixes)}) in this folder")
  items = [read_one(os.path.join(path, f)) for f in files]
  shapes = {item.shape for item in items}
  if len(shapes) > 1:
    raise ValueError(f"{path}: the {what}s differ in shape ({sorted(shapes)[:3]}...); "
                     f"{same_shape_hint}")
  return np.stack(items)


def load_videos(path: str) -> np.ndarray:
  """A .npy/.npz file of videos ([N, T, H, W(, C)], uint8 or float in [0, 1]) or a folder of
  video files -> uint8 [N, T, H, W, C]."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file or folder")
  if os.path.isdir(path):
    return _as_uint8_videos(_read_folder(path, VIDEO_SUFFIXES, _read_video_file, "video",
                                         "they must all have the same number of frames and "
                                         "size"), path)
  if path.endswith((".npy", ".npz")):
    return _as_uint8_videos(_read_array_file(path), path)
  if path.lower().endswith(VIDEO_SUFFIXES):
    return _as_uint8_videos(_read_video_file(path)[None], path)
  raise ValueError(f"{path}: unknown format; use .npy, .npz or a folder of GIF/MP4 files")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _read_image(path: str) -> np.ndarray:
  try:
    with Image.open(path) as image:
      array = np.asarray(image.convert("L" if image.mode in ("L", "1", "I;16") else "RGB"))
  except Exception as e:
    raise ValueError(f"{path}: cannot decode this image ({e})") from e
  return array[..., None] if array.ndim == 2 else array


def load_images(path: str) -> np.ndarray:
  """A .npy/.npz file of images ([N, H, W(, C)], uint8 or float in [0, 1]) or a folder of image
  files -> uint8 [N, H, W, C] (for FID)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file or folder")
  if os.path.isdir(path):
    array = _read_folder(path, IMAGE_SUFFIXES, _read_image, "image",
                         "resize them to one size first")
  elif path.endswith((".npy", ".npz")):
    array = _read_array_file(path)
  else:
    raise ValueError(f"{path}: unknown format; use .npy, .npz or a folder of PNG/JPEG files")
  if array.ndim == 3:
    array = array[..., None]
  if array.ndim != 4 or array.shape[-1] not in (1, 3):
    raise ValueError(f"{path}: expected images [N, H, W, C] with C = 1 or 3, got shape "
                     f"{array.shape}")
  if array.shape[0] == 0:
    raise ValueError(f"{path}: holds no images")
  return _to_uint8(array, path, "images")
