"""UCF-101, read from the original AVI files and the official train/test split lists.

As the reference (`datasets/ucf101_convert.py`, `datasets/ucf101.py`): the split is official
split 3 (the converter's default, which the reference's instructions use); every frame is resized
with PIL's Lanczos filter so that its short side is image_size (320x240 -> 85x64 for 64), and the
pipeline then crops image_size x image_size: at random in training, in the centre in test;
training windows are flipped at random (`random_flip: true` in `configs/ucf101.yml`). The test
clips come from every tenth test video (as arXiv 1511.05440), 256 of them spread evenly over
those videos.

Items keep the order of the split lists (class, group, clip), not Python's sort order: the
reference's every-tenth-video rule counts positions in that list.
"""

from __future__ import annotations

import os

from mcvd_jax.data import spread_clips, video_decode
from mcvd_jax.data.sources import DatasetUnavailableError, Video, check_split

NAME = "ucf101"
CHANNELS = 3
TRAIN_FLIP = True
RANDOM_CROP = True

SPLIT_NUMBER = 3  # which of the three official splits (the reference converts split 3)
TEST_VIDEO_STRIDE = 10  # test clips come from every tenth video of the test list
VIDEO_FOLDER = "UCF-101"
SPLIT_FOLDER = "ucfTrainTestlist"

LAYOUT = (
    "data.path must hold the UCF-101 videos and the official split lists:\n"
    f"  <data.path>/{VIDEO_FOLDER}/<Class>/v_<Class>_g<NN>_c<NN>.avi   (13,320 files)\n"
    f"  <data.path>/{SPLIT_FOLDER}/trainlist0{SPLIT_NUMBER}.txt and testlist0{SPLIT_NUMBER}.txt\n"
    "Obtain them from the UCF-101 page (https://www.crcv.ucf.edu/data/UCF101.php): unpack "
    f"UCF101.rar (it holds the {VIDEO_FOLDER} folder) and "
    f"UCF101TrainTestSplits-RecognitionTask.zip (it holds {SPLIT_FOLDER}) into data.path.")


def _unavailable(problem: str) -> DatasetUnavailableError:
  return DatasetUnavailableError(f"UCF-101: {problem}.\n{LAYOUT}")


def split_list_path(root: str, split: str) -> str:
  """Path of the official list of the split's videos (trainlist03.txt or testlist03.txt)."""
  return os.path.join(root, SPLIT_FOLDER, f"{split}list0{SPLIT_NUMBER}.txt")


def read_split_list(path: str) -> list[str]:
  """The '<Class>/v_<Class>_gNN_cNN.avi' entries of an official split list, in its order.

  Train lists append a class number to each line ('... .avi 1'); test lists do not."""
  with open(path, encoding="utf-8") as file:
    return [line.split()[0] for line in file if line.strip()]


def list_items(root: str, split: str) -> list[str]:
  """The split's videos as '<Class>/<file name>', in the order of the official split list.

  Raises DatasetUnavailableError naming the missing path (or the listed videos that are missing)
  and the expected layout."""
  check_split(split)
  list_path = split_list_path(root, split)
  if not os.path.isfile(list_path):
    raise _unavailable(f"the split list {list_path} does not exist")
  video_folder = os.path.join(root, VIDEO_FOLDER)
  if not os.path.isdir(video_folder):
    raise _unavailable(f"the video folder {video_folder} does not exist")
  items = read_split_list(list_path)
  if not items:
    raise _unavailable(f"the split list {list_path} is empty")
  missing = [item for item in items if not os.path.isfile(os.path.join(video_folder, item))]
  if missing:
    examples = ", ".join(os.path.join(video_folder, item) for item in missing[:3])
    raise _unavailable(f"{len(missing)} of the {len(items)} videos listed in {list_path} are "
                       f"missing, e.g. {examples}")
  return items


def item_files(root: str, item: str) -> list[str]:
  """The one file an item is decoded from (items are relative to the video folder, not root)."""
  return [os.path.join(root, VIDEO_FOLDER, item)]


def read_item(root: str, item: str, image_size: int) -> list[Video]:
  """One AVI file as one Video of uint8 RGB frames [T, image_size, W, 3], W >= image_size the
  long side after resizing (85 for 320x240 at 64).

  Raises CorruptFileError naming the file when it cannot be decoded."""
  [path] = item_files(root, item)
  frames = video_decode.read_video(path)
  return [Video(item, video_decode.resize_short_side(frames, image_size))]


def test_windows(lengths, num_frames: int, num_videos: int) -> list[tuple[int, int]]:
  """(video index, first frame) of the `num_videos` test clips (256 in the paper): spread evenly
  over every tenth video of the test list (positions 0, 10, 20, ..., len(lengths) // 10 of them,
  as the reference; at least the first video when the list is shorter than ten)."""
  num_candidates = max(1, len(lengths) // TEST_VIDEO_STRIDE)
  every_tenth = range(0, num_candidates * TEST_VIDEO_STRIDE, TEST_VIDEO_STRIDE)
  return spread_clips.spread_test_windows(lengths, num_frames, num_videos, candidates=every_tenth)
