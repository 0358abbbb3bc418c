"""KTH human actions, read from the original AVI files (grey, resized to image_size x image_size).

The reference (`datasets/kth_convert.py`, `datasets/kth.py`) converts each AVI whole (it does not
cut them at the frame ranges of KTH's sequence table): every decoded frame is turned grey with
OpenCV's BGR2GRAY and resized straight to image_size x image_size with `cv2.resize`'s default
bilinear filter, which squeezes the 4:3 frames to a square. Persons 1-20 train and persons 21-25
test; training windows are flipped at random (`random_flip: true` in `configs/kth64_big.yml`).
The test set is 256 clips spread evenly over the test videos, taken in the reference's order:
by person, then by path (action folder, then file name).
"""

from __future__ import annotations

import os
import re

from mcvd_jax.data import spread_clips, video_decode
from mcvd_jax.data.sources import DatasetUnavailableError, Video, check_split

NAME = "kth"
CHANNELS = 1
TRAIN_FLIP = True
RANDOM_CROP = False

ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
PERSONS = {"train": range(1, 21), "test": range(21, 26)}

LAYOUT = (
    "data.path must be the folder that holds the six KTH action folders, each with that "
    "action's original AVI files:\n"
    "  <data.path>/<action>/person<NN>_<action>_d<N>_uncomp.avi   (599 files; persons 01-25)\n"
    f"  with <action> one of {', '.join(ACTIONS)}.\n"
    "Obtain them from the KTH action recognition page (https://www.csc.kth.se/cvap/actions/, "
    "formerly www.nada.kth.se/cvap/actions/): one zip per action (walking.zip, jogging.zip, ...), "
    "each unzipped into its own folder named after the action. Persons 01-20 are the training "
    "split and persons 21-25 the test split.")

_FILE_NAME = re.compile(r"person(\d+)_([a-z]+)_d(\d+)_uncomp\.avi")


def person_of(item: str) -> int:
  """The person number of an item such as 'boxing/person01_boxing_d1_uncomp.avi'."""
  match = _FILE_NAME.fullmatch(os.path.basename(item))
  if match is None:
    raise ValueError(f"{item!r} is not a KTH file name (person<NN>_<action>_d<N>_uncomp.avi)")
  return int(match.group(1))


def _unavailable(problem: str) -> DatasetUnavailableError:
  return DatasetUnavailableError(f"KTH: {problem}.\n{LAYOUT}")


def list_items(root: str, split: str) -> list[str]:
  """The split's AVI files as '<action>/<file name>', ordered by person, then path.

  Raises DatasetUnavailableError naming `root` and the expected layout when the action folders
  or the split's files are missing."""
  check_split(split)
  missing = [action for action in ACTIONS if not os.path.isdir(os.path.join(root, action))]
  if missing:
    hint = ""
    if os.path.isdir(os.path.join(root, "raw", ACTIONS[0])):
      hint = f" (they are in {os.path.join(root, 'raw')}: set data.path to that folder)"
    raise _unavailable(f"{root} has no folder {', '.join(missing)}{hint}")
  persons = PERSONS[split]
  items = []
  for action in ACTIONS:
    for name in os.listdir(os.path.join(root, action)):
      match = _FILE_NAME.fullmatch(name)
      if match and match.group(2) == action and int(match.group(1)) in persons:
        items.append(f"{action}/{name}")
  if not items:
    raise _unavailable(f"{root} has no AVI file of persons {persons.start}-"
                       f"{persons.stop - 1} (the {split} split)")
  return sorted(items, key=lambda item: (person_of(item), item))


def convert_frames(frames, image_size: int):
  """The reference's KTH conversion of decoded frames: uint8 RGB [T, H, W, 3] -> uint8 grey
  [T, image_size, image_size, 1] (OpenCV's grey conversion, then its bilinear resize of the whole
  frame to a square)."""
  grey = video_decode.rgb_to_gray(frames)
  return video_decode.resize_bilinear(grey, image_size, image_size)[..., None]


def read_item(root: str, item: str, image_size: int) -> list[Video]:
  """One AVI file as one Video of uint8 frames [T, image_size, image_size, 1].

  Raises CorruptFileError naming the file when it cannot be decoded."""
  frames = video_decode.read_video(os.path.join(root, item))
  return [Video(item, convert_frames(frames, image_size))]


def test_windows(lengths, num_frames: int, num_videos: int) -> list[tuple[int, int]]:
  """(video index, first frame) of the `num_videos` test clips (256 in the paper), spread evenly
  over the test videos in list_items order as the reference's KTH test loader."""
  return spread_clips.spread_test_windows(lengths, num_frames, num_videos)
