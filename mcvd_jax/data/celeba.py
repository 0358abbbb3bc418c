"""CelebA (aligned faces, RGB) from the original `img_align_celeba` JPEGs, preprocessed as score_sde.

Every image (178 wide x 218 high) is centre-cropped to 140x140 -- top-left corner at
((218 - 140) // 2, (178 - 140) // 2) = (row 39, column 19), score_sde's `central_crop` and
torchvision's `CenterCrop(140)` alike -- and resized to image_size x image_size (64) with PIL's
bilinear filter, which widens its support when it shrinks an image, i.e. it antialiases like
score_sde's `tf.image.resize(..., antialias=True)` (values may differ from TensorFlow's by a grey
level through rounding).

Splits come from `<data.path>/list_eval_partition.txt` (lines "000001.jpg 0": 0 train, 1 valid,
2 test) when it is there, else from the standard index ranges: 000001-162770 train, 162771-182637
valid, 182638-202599 test. The family trains on "train" and holds out "test"; "valid" is unused.

Decoding 200k JPEGs takes minutes, so each split is decoded once into a memory-mapped uint8 cache
[N, image_size, image_size, 3] by `video_cache` (one "video" of one frame per JPEG), under
`data.cache_dir` (default `<data.path>/mcvd_jax_cache`), rebuilt when a file is added, removed or
changed (path, size, modification time). A JPEG that cannot be decoded is a CorruptFileError
naming it (or, with data.skip_corrupt=True, left out and counted in the log).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import numpy as np
from absl import logging
from PIL import Image

from mcvd_jax.data import video_cache
from mcvd_jax.data.sources import CorruptFileError, DatasetUnavailableError, Video, check_split

NAME = "celeba"
CACHE_NAME = "celeba_crop140"  # names the preprocessing, so another crop never reuses a cache
CHANNELS = 3
MAX_IMAGE_SIZE = 64
TRAIN_FLIP = True
RANDOM_CROP = False
IMAGE_FOLDER = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
CROP = 140
PARTITION_CODES = {"train": 0, "valid": 1, "test": 2}
STANDARD_RANGES = {"train": (1, 162_770), "valid": (162_771, 182_637), "test": (182_638, 202_599)}
_NUMBERED = re.compile(r"(\d+)\.jpg")

LAYOUT = f"""CelebA: data.path must hold the aligned images of the CelebA release,
  <data.path>/{IMAGE_FOLDER}/000001.jpg ... 202599.jpg   (178x218 JPEGs, 1.4 GB)
  <data.path>/{PARTITION_FILE}                  (optional: the official train/valid/test split;
                                                        without it the standard index ranges)
Get img_align_celeba.zip (and list_eval_partition.txt, under Eval/) from the CelebA site,
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html ("Align&Cropped Images", its Google Drive or
Baidu links), then: unzip img_align_celeba.zip -d <data.path>"""


def _unavailable(problem: str) -> DatasetUnavailableError:
  return DatasetUnavailableError(f"CelebA: {problem}.\n{LAYOUT}")


def resolve_root(path: str) -> str:
  """The folder that holds img_align_celeba/: data.path, or its parent when data.path is the
  img_align_celeba folder itself."""
  if not path:
    raise _unavailable("data.path is not set: pass --config.data.path=/path/to/celeba")
  if os.path.isdir(os.path.join(path, IMAGE_FOLDER)):
    return path
  trimmed = os.path.normpath(path)
  if os.path.basename(trimmed) == IMAGE_FOLDER and os.path.isdir(trimmed):
    return os.path.dirname(trimmed)
  raise _unavailable(f"data.path={path!r} has no {IMAGE_FOLDER}/ folder")


def read_partition(root: str) -> dict[str, int] | None:
  """{file name: 0 train, 1 valid, 2 test} from list_eval_partition.txt, or None when absent."""
  path = os.path.join(root, PARTITION_FILE)
  if not os.path.isfile(path):
    return None
  partition = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 2 or not fields[0].endswith(".jpg") or fields[1] not in ("0", "1", "2"):
        raise _unavailable(f"{path} line {number} is {line.strip()!r}; expected '<name>.jpg <0, 1 "
                           f"or 2>'")
      partition[fields[0]] = int(fields[1])
  return partition


def list_items(root: str, split: str) -> list[str]:
  """The split's JPEGs as 'img_align_celeba/<name>.jpg', sorted by name. DatasetUnavailableError
  when the folder or a file the partition lists is missing."""
  check_split(split)
  folder = os.path.join(root, IMAGE_FOLDER)
  if not os.path.isdir(folder):
    raise _unavailable(f"{folder} is not a folder")
  present = {n for n in os.listdir(folder) if n.endswith(".jpg")}
  if not present:
    raise _unavailable(f"{folder} holds no .jpg files")
  partition = read_partition(root)
  if partition is not None:
    names = sorted(n for n, code in partition.items() if code == PARTITION_CODES[split])
    missing = [n for n in names if n not in present]
    if missing:
      raise _unavailable(f"{len(missing):,} of the {len(names):,} {split} images that "
                         f"{os.path.join(root, PARTITION_FILE)} lists are not in {folder} (first: "
                         f"{', '.join(missing[:3])})")
    unlisted = len(present - partition.keys())
    if unlisted:
      logging.warning("CelebA: %d JPEG(s) in %s are not in %s and are not used", unlisted, folder,
                      PARTITION_FILE)
    return [f"{IMAGE_FOLDER}/{n}" for n in names]
  odd = sorted(n for n in present if not _NUMBERED.fullmatch(n))
  if odd:
    raise _unavailable(f"without {PARTITION_FILE}, images are split by their number, but "
                       f"{len(odd)} file name(s) in {folder} are not numbers (first: {odd[0]}); "
                       f"add {PARTITION_FILE} to {root}")
  low, high = STANDARD_RANGES[split]
  names = sorted(n for n in present if low <= int(n[:-4]) <= high)
  if len(names) != high - low + 1:
    logging.warning("CelebA: no %s, so the standard ranges split the images; %s has %d of the "
                    "%d %s images %06d-%06d", PARTITION_FILE, folder, len(names), high - low + 1,
                    split, low, high)
  return [f"{IMAGE_FOLDER}/{n}" for n in names]


def preprocess(image: Image.Image, image_size: int) -> np.ndarray:
  """uint8 [image_size, image_size, 3]: the 140x140 centre crop, resized by PIL bilinear."""
  width, height = image.size
  top, left = (height - CROP) // 2, (width - CROP) // 2
  crop = image.convert("RGB").crop((left, top, left + CROP, top + CROP))
  if image_size != CROP:
    crop = crop.resize((image_size, image_size), Image.BILINEAR)
  return np.asarray(crop, np.uint8)


def decode(path: str, image_size: int) -> np.ndarray:
  """One JPEG, preprocessed; CorruptFileError naming it when it cannot be decoded or is smaller
  than the crop."""
  try:
    with Image.open(path) as image:
      image.load()
      if min(image.size) < CROP:
        raise CorruptFileError(path, f"{image.size[0]}x{image.size[1]} is smaller than the "
                                     f"{CROP}x{CROP} centre crop (aligned CelebA images are "
                                     f"178x218)")
      return preprocess(image, image_size)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    if isinstance(e, CorruptFileError):
      raise
    raise CorruptFileError(path, f"cannot decode this JPEG ({type(e).__name__}: {e})") from e


def read_item(root: str, item: str, image_size: int) -> list[Video]:
  """The reader contract of `sources.py`: one JPEG as a one-frame video."""
  return [Video(item, decode(os.path.join(root, item), image_size)[None])]


def open_split(data: Any, split: str, image_size: int) -> video_cache.SplitCache:
  """The split decoded into (or memory-mapped from) its cache; frames: uint8 [N, s, s, 3]."""
  root = resolve_root(getattr(data, "path", ""))
  cache_dir = video_cache.resolve_cache_dir(getattr(data, "cache_dir", ""), root)
  return video_cache.open_split(sys.modules[__name__], root, split, image_size, cache_dir,
                                bool(getattr(data, "skip_corrupt", False)))
