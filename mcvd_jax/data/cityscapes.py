"""Cityscapes video sequences, read from the original `leftImg8bit_sequence` PNG files.

As the reference (`datasets/cityscapes_convert.py`, `datasets/cityscapes.py` and
`datasets/__init__.py`): each 30-frame snippet is one video; every frame is centre-cropped to a
square (the middle 1024x1024 of a 2048x1024 frame) and resized with PIL's Lanczos filter to
image_size (128 in the paper). The training split is `train` and the test split is the sequence
set's own `test` folder (the reference converts train, val and test, trains on train and
evaluates on test; val is unused). Training windows are flipped at random (`random_flip: true` in
`configs/cityscapes_big.yml`); the test set is 256 clips spread evenly over the test snippets.

A snippet is 30 consecutive frame numbers of one (city, sequence) pair. Some sequence numbers
hold several snippets far apart (in the val city Frankfurt, for one), so snippets are found by
their frame numbers; in sorted order they are the reference's sorted file list cut every 30
files.
"""

from __future__ import annotations

import collections
import os
import re

import numpy as np
from PIL import Image

from mcvd_jax.data import spread_clips, video_decode
from mcvd_jax.data.sources import CorruptFileError, DatasetUnavailableError, Video, check_split

NAME = "cityscapes"
CHANNELS = 3
TRAIN_FLIP = True
RANDOM_CROP = False

SEQUENCE_FOLDER = "leftImg8bit_sequence"
SPLIT_FOLDERS = {"train": "train", "test": "test"}
SNIPPET_LENGTH = 30

LAYOUT = (
    "data.path must hold the Cityscapes video frames as they unpack:\n"
    f"  <data.path>/{SEQUENCE_FOLDER}/<train|test>/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
    f"  (30-frame snippets; train has 2,975 of them and test 1,525).\n"
    "Obtain leftImg8bit_sequence_trainvaltest.zip (324 GB) from https://www.cityscapes-dataset.com "
    "(a free account is needed) and unzip it into data.path.")

_FILE_NAME = re.compile(r"(.+)_(\d{6})_(\d{6})_leftImg8bit\.png")


def _unavailable(problem: str) -> DatasetUnavailableError:
  return DatasetUnavailableError(f"Cityscapes: {problem}.\n{LAYOUT}")


def _frame_name(city: str, sequence: str, frame: int) -> str:
  return f"{city}_{sequence}_{frame:06d}_leftImg8bit.png"


def _snippet_starts(frames: list[int]) -> list[int]:
  """First frame numbers of the snippets in a sorted list of one sequence's frame numbers: each
  snippet claims the SNIPPET_LENGTH numbers from its first, and the next starts after them."""
  starts = []
  for frame in frames:
    if not starts or frame >= starts[-1] + SNIPPET_LENGTH:
      starts.append(frame)
  return starts


def list_items(root: str, split: str) -> list[str]:
  """The split's snippets as '<split folder>/<city>/<city>_<seq>_<first frame>', sorted.

  Raises DatasetUnavailableError naming the expected folder and layout when it is missing or
  holds no frame."""
  check_split(split)
  split_folder = os.path.join(root, SEQUENCE_FOLDER, SPLIT_FOLDERS[split])
  if not os.path.isdir(split_folder):
    raise _unavailable(f"the folder {split_folder} does not exist")
  frames_of = collections.defaultdict(list)  # (city, sequence) -> frame numbers
  for city in sorted(os.listdir(split_folder)):
    city_folder = os.path.join(split_folder, city)
    if not os.path.isdir(city_folder):
      continue
    for name in os.listdir(city_folder):
      match = _FILE_NAME.fullmatch(name)
      if match and match.group(1) == city:
        frames_of[(city, match.group(2))].append(int(match.group(3)))
  if not frames_of:
    raise _unavailable(f"{split_folder} has no <city>/<city>_<seq>_<frame>_leftImg8bit.png file")
  items = []
  for (city, sequence), frames in sorted(frames_of.items()):
    for start in _snippet_starts(sorted(frames)):
      items.append(f"{SPLIT_FOLDERS[split]}/{city}/{city}_{sequence}_{start:06d}")
  return items


def convert_frame(frame: np.ndarray, image_size: int) -> np.ndarray:
  """The reference's Cityscapes conversion of one uint8 RGB frame [H, W, 3]: centre crop to a
  square, then Lanczos resize to [image_size, image_size, 3]."""
  return video_decode.resize_lanczos(video_decode.centre_crop_square(frame), image_size, image_size)


def _read_png(path: str) -> np.ndarray:
  """uint8 RGB [H, W, 3] of a PNG file; CorruptFileError naming it when it cannot be read."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for damaged images
    raise CorruptFileError(path, f"PIL could not read this PNG ({err})") from err


def snippet_paths(root: str, item: str) -> list[str]:
  """The SNIPPET_LENGTH frame files of a snippet item, in frame order (existing or not)."""
  split_folder, city, stem = item.split("/")
  _, sequence, start = stem.rsplit("_", 2)
  city_folder = os.path.join(root, SEQUENCE_FOLDER, split_folder, city)
  return [os.path.join(city_folder, _frame_name(city, sequence, frame))
          for frame in range(int(start), int(start) + SNIPPET_LENGTH)]


def item_files(root: str, item: str) -> list[str]:
  """The snippet's frame files that exist (for the cache's fingerprint). A missing one is left to
  read_item, which reports it as a CorruptFileError (skippable with data.skip_corrupt)."""
  return [path for path in snippet_paths(root, item) if os.path.isfile(path)]


def read_item(root: str, item: str, image_size: int) -> list[Video]:
  """One snippet as one Video of uint8 RGB frames [30, image_size, image_size, 3], in frame order.

  Raises CorruptFileError naming the first missing or unreadable frame file."""
  frames = []
  for path in snippet_paths(root, item):
    if not os.path.isfile(path):
      raise CorruptFileError(path, f"this frame of the {SNIPPET_LENGTH}-frame snippet {item} is "
                             "missing")
    frames.append(convert_frame(_read_png(path), image_size))
  return [Video(item, np.stack(frames))]


def test_windows(lengths, num_frames: int, num_videos: int) -> list[tuple[int, int]]:
  """(video index, first frame) of the `num_videos` test clips (256 in the paper), spread evenly
  over the test snippets in list_items order, as the reference."""
  return spread_clips.spread_test_windows(lengths, num_frames, num_videos)
