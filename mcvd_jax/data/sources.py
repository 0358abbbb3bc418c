"""The contract between an on-disk dataset reader and the clip pipeline that trains on it.

A reader module (`mcvd_jax/data/bair.py`, `kth.py`, `cityscapes.py`, `ucf101.py`) knows one
dataset's original files and nothing about batches. It provides:

  NAME: str                         the `data.dataset` value, e.g. "kth"
  CHANNELS: int                     channels of the stored frames (1 grey, 3 RGB)
  LAYOUT: str                       the expected layout under `data.path` and how to obtain it,
                                    quoted in DatasetUnavailableError messages
  TRAIN_FLIP: bool                  random horizontal flips of training windows (as the paper)
  RANDOM_CROP: bool                 stored frames larger than image_size**2: random crop in
                                    training, centre crop in test (UCF-101); else they are stored
                                    at exactly image_size x image_size
  list_items(root, split) -> list[str]
                                    the split's items (files, or sequence ids), sorted and
                                    deterministic; DatasetUnavailableError (naming the expected
                                    path and LAYOUT) when the files are absent
  read_item(root, item, image_size) -> list[Video]
                                    decode + preprocess one item to the stored size (one item may
                                    hold several videos: a BAIR TFRecord file holds many);
                                    CorruptFileError naming the file when it cannot be decoded
  test_windows(lengths, num_frames, num_videos) -> list[tuple[int, int]]
                                    (video index, first frame) of the deterministic test clips,
                                    following the reference's construction for this dataset

Optional, where a reader needs them:

  item_files(root, item) -> list[str]
                                    the files an item is decoded from, for the cache's fingerprint
                                    (path, size, mtime). Required when an item is not a file or
                                    directory under root (e.g. a Cityscapes snippet id); otherwise
                                    the item's own path is used
  IMAGE_SIZE: int                   frames exist at this size only (BAIR: 64); the registry checks
                                    model.image_size against it
  CACHE_NAME: str                   prefix of the cache files when one dataset has several sources
                                    (default NAME)
  SOURCE_DESCRIPTION: str           what the data is, for the log (default NAME)
  resolve_root(path) -> str         the dataset directory from data.path (default: data.path,
                                    which must exist)
  reader_from_config(data) -> reader
                                    module-level: pick a reader object from the config (BAIR's
                                    original files or its tfds version; default: the module)

The pipeline (decoding once into a memory-mapped cache, random training windows, flips, crops,
the process's slice of a batch) lives in `clips.py` and `video_cache.py`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mcvd_jax.errors import ProjectError

SPLITS = ("train", "test")


class Video(NamedTuple):
  """name: unique within its split (a file path or sequence id); frames: uint8 [T, H, W, C]."""
  name: str
  frames: np.ndarray


class DataConfigError(ValueError, ProjectError):
  """A data setting, or a model setting the data must fit, that cannot work (names the field)."""


class DatasetUnavailableError(ValueError, ProjectError):
  """A dataset's files are not where `data.path` says (the message names the path and layout)."""


class CorruptFileError(ValueError, ProjectError):
  """A dataset file that exists but cannot be decoded (the message names the file)."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}. Re-download or remove this file, or set "
                     "data.skip_corrupt=True to skip it (skipped files are counted in the log).")
    self.path = path
    self.reason = reason


def check_count(name: str, value: int) -> None:
  """ValueError naming `name` unless value is a positive integer."""
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
    raise DataConfigError(f"{name} must be a positive integer, got {value!r}")


def check_seed(name: str, value: int) -> None:
  """ValueError naming `name` unless value is a non-negative integer (what numpy seeds accept)."""
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
    raise DataConfigError(f"{name} must be a non-negative integer, got {value!r}")


def process_slice(seed: int, step: int, batch_size: int, num_frames: int, process_index: int,
                  process_count: int) -> slice:
  """Checks a `train_batch` request and returns this process's rows of the global batch."""
  check_seed("seed", seed)
  check_seed("step", step)
  check_count("batch_size", batch_size)
  check_count("num_frames", num_frames)
  check_count("process_count", process_count)
  if batch_size % process_count:
    raise ValueError(f"training.batch_size ({batch_size}) must be divisible by the process "
                     f"count ({process_count})")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
  per_process = batch_size // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not one of {SPLITS}")
