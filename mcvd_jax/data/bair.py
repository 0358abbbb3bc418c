"""BAIR robot pushing (Ebert et al. 2017), 64x64 RGB, 30 frames per video: the reader.

Two sources of the same videos (`data.source`):

- "files": the original release, `softmotion30_44k/{train,test}/*.tfrecords`. Each TFRecord file
  is one item and holds many videos (256 in the release), one `tf.train.Example` per video; frame
  t of the camera the paper uses is the feature `{t}/image_aux1/encoded`: 64*64*3 raw uint8 bytes,
  row-major RGB (the reference's `datasets/bair_convert.py` reads the same key with
  `Image.frombytes`). The other camera, actions and end-effector positions are ignored.
- "tfds": the tensorflow-datasets builder `bair_robot_pushing_small`, prepared beforehand by the
  user (`tfds build bair_robot_pushing_small`); its `image_aux1` feature is the same camera. An
  item is a slice of 256 examples of a split. tfds stores examples in its own (hashed) order, so
  the test clips are the same 256 videos in another order than with "files".
- "auto": the files when they are under data.path, else a prepared tfds dataset, else an error
  that says how to get either.

Test set: the release's test split, 256 videos, all of them (the reference's test dataset takes
every video of its converted test split). The reference draws a random first frame for each test
clip at every evaluation (`random_time=True`); we draw it once, uniformly over every window, from a
fixed generator per clip, so every run evaluates the same clips. More clips than videos cycle
through the videos again with new windows. Training: every window, flipped left-right with
probability 1/2 (the reference's BAIR config sets `random_flip: true`).

TensorFlow is imported only while a split is decoded into the cache.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any

import numpy as np

from mcvd_jax.data import sources
from mcvd_jax.data.sources import CorruptFileError
from mcvd_jax.data.sources import DatasetUnavailableError
from mcvd_jax.data.sources import Video

NAME = "bair"
CHANNELS = 3
IMAGE_SIZE = 64  # frames are stored at 64x64; model.image_size must match
TRAIN_FLIP = True
RANDOM_CROP = False
SOURCES = ("auto", "files", "tfds")
SOURCE_DESCRIPTION = "BAIR robot pushing (softmotion30_44k TFRecords, camera image_aux1)"
TFDS_NAME = "bair_robot_pushing_small"
RELEASE_FOLDER = "softmotion30_44k"
FRAME_KEY = "{}/image_aux1/encoded"
FRAME_BYTES = IMAGE_SIZE * IMAGE_SIZE * CHANNELS
TFDS_ITEM_VIDEOS = 256  # videos per item of the tfds source (one original file's worth)
_TEST = 4  # first word of the test windows' seeds

LAYOUT = f"""BAIR robot pushing: data.path must hold the extracted original release,
  <data.path>/{RELEASE_FOLDER}/train/*.tfrecords   (43,264 videos)
  <data.path>/{RELEASE_FOLDER}/test/*.tfrecords    (256 videos)
(data.path may also be the {RELEASE_FOLDER} folder itself). Get it with
  wget http://rail.eecs.berkeley.edu/datasets/bair_robot_pushing_dataset_v0.tar   (30 GB)
  tar -xf bair_robot_pushing_dataset_v0.tar -C <data.path>
Or prepare it for tensorflow-datasets (tfds build {TFDS_NAME} [--data_dir DIR]) and set
data.source='tfds' (data.path: that tfds data directory; empty means tfds's default,
$TFDS_DATA_DIR or ~/tensorflow_datasets)."""


def reader_from_config(data: Any) -> Any:
  """The reader of `data.source`: this module (original files) or `TFDS_READER`."""
  source = getattr(data, "source", "auto")
  if source not in SOURCES:
    raise ValueError(f"data.source={source!r} is not one of {SOURCES} for data.dataset='bair'")
  path = getattr(data, "path", "")
  if source == "auto":
    has_files = bool(path) and any(os.path.isdir(d) for d in _split_dirs(path, "train"))
    source = "files" if has_files or not tfds_prepared(path) else "tfds"
  return TFDS_READER if source == "tfds" else sys.modules[__name__]


# ------------------------------------------------------------------------------ original files

def _split_dirs(root: str, split: str) -> tuple[str, str]:
  """Where a split's files may be: under root/softmotion30_44k, or root is that folder."""
  return os.path.join(root, RELEASE_FOLDER, split), os.path.join(root, split)


def list_items(root: str, split: str) -> list[str]:
  """The split's .tfrecords files, as sorted paths relative to root."""
  sources.check_split(split)
  for directory in _split_dirs(root, split):
    if os.path.isdir(directory):
      names = sorted(n for n in os.listdir(directory) if n.endswith(".tfrecords"))
      if names:
        return [os.path.relpath(os.path.join(directory, n), root) for n in names]
  raise DatasetUnavailableError(
      f"data.dataset='bair': no {split} .tfrecords files in {_split_dirs(root, split)[0]}.\n"
      f"{LAYOUT}")


def read_item(root: str, item: str, image_size: int) -> list[Video]:
  """The videos of one TFRecord file, in file order: uint8 [T, 64, 64, 3] each (T = 30 in the
  release), named "<item>#<record index>". CorruptFileError naming the file when a record is
  truncated, fails its checksum, or lacks 64x64x3 image_aux1 frames."""
  _check_image_size(image_size)
  tf = import_tensorflow()
  path = os.path.join(root, item)
  videos = []
  try:
    for k, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
      videos.append(Video(f"{item}#{k}", _frames_of_record(tf, record, path, k)))
  except tf.errors.OpError as e:  # truncated record, checksum mismatch, unreadable file
    raise CorruptFileError(path, _op_error_text(e)) from e
  if not videos:
    raise CorruptFileError(path, "holds no records")
  return videos


def _frames_of_record(tf, record: bytes, path: str, k: int) -> np.ndarray:
  """uint8 [T, 64, 64, 3] of the image_aux1 frames 0, 1, ... that record k holds."""
  try:
    features = tf.train.Example.FromString(record).features.feature
  except Exception as e:  # pylint: disable=broad-except  (protobuf's DecodeError varies by backend)
    raise CorruptFileError(path, f"record {k} is not a tf.train.Example ({e})") from e
  frames = []
  while FRAME_KEY.format(len(frames)) in features:
    key = FRAME_KEY.format(len(frames))
    values = features[key].bytes_list.value
    if len(values) != 1 or len(values[0]) != FRAME_BYTES:
      size = len(values[0]) if len(values) == 1 else f"{len(values)} values"
      raise CorruptFileError(path, f"record {k}: {key} holds {size} bytes, expected one raw "
                                   f"64x64x3 frame of {FRAME_BYTES} bytes")
    frames.append(values[0])
  if not frames:
    raise CorruptFileError(path, f"record {k} has no {FRAME_KEY.format(0)} feature (is this "
                                 "the softmotion30_44k release?)")
  return np.frombuffer(b"".join(frames), np.uint8).reshape(len(frames), IMAGE_SIZE,
                                                           IMAGE_SIZE, CHANNELS)


def test_windows(lengths: list[int], num_frames: int, num_videos: int) -> list[tuple[int, int]]:
  """(video, first frame) of test clip k = 0..num_videos-1: the videos in order (cycling when
  more clips than videos are asked for), skipping those shorter than num_frames; first frame
  uniform over every window, from default_rng([_TEST, k]) (see the module docstring)."""
  eligible = [v for v, n in enumerate(lengths) if n >= num_frames]
  if not eligible:
    raise ValueError(f"data.dataset='bair': no test video has {num_frames} frames")
  windows = []
  for k in range(num_videos):
    video = eligible[k % len(eligible)]
    first = np.random.default_rng([_TEST, k]).integers(0, lengths[video] - num_frames + 1)
    windows.append((video, int(first)))
  return windows


def _check_image_size(image_size: int) -> None:
  if image_size != IMAGE_SIZE:
    raise ValueError(f"BAIR frames are {IMAGE_SIZE}x{IMAGE_SIZE}; set model.image_size="
                     f"{IMAGE_SIZE} (got {image_size})")


def import_tensorflow():
  """TensorFlow, kept off the GPUs (JAX owns them); DatasetUnavailableError when missing."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DatasetUnavailableError(
        "reading BAIR's TFRecords needs TensorFlow: pip install tensorflow-cpu") from e
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # already initialised by someone else: leave it
    pass
  return tf


def _op_error_text(error) -> str:
  """A TensorFlow error's message without its {{function_node ...}} prefix."""
  return re.sub(r"\{\{[^}]*\}\}\s*", "", getattr(error, "message", str(error))).strip()


# ---------------------------------------------------------------------- tensorflow-datasets

def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tfds


def tfds_data_dir(path: str) -> str:
  """The tfds data directory: data.path, else $TFDS_DATA_DIR or ~/tensorflow_datasets."""
  if path:
    return path
  return os.environ.get("TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"),
                                                      "tensorflow_datasets"))


def tfds_prepared(path: str) -> bool:
  """Whether tfds is installed and bair_robot_pushing_small is prepared in its data directory."""
  tfds = _import_tfds()
  if tfds is None or not os.path.isdir(os.path.join(tfds_data_dir(path), TFDS_NAME)):
    return False
  return bool(tfds.builder(TFDS_NAME, data_dir=tfds_data_dir(path)).is_prepared())


class TfdsReader:
  """The reader contract over a prepared tfds `bair_robot_pushing_small` (see module doc)."""
  NAME = NAME
  CACHE_NAME = "bair_tfds"
  CHANNELS = CHANNELS
  IMAGE_SIZE = IMAGE_SIZE
  TRAIN_FLIP = TRAIN_FLIP
  RANDOM_CROP = RANDOM_CROP
  LAYOUT = LAYOUT
  SOURCE_DESCRIPTION = f"BAIR robot pushing (tfds {TFDS_NAME}, camera image_aux1)"

  @staticmethod
  def resolve_root(path: str) -> str:
    """The tfds data directory holding the prepared dataset; DatasetUnavailableError otherwise."""
    root = tfds_data_dir(path)
    if _import_tfds() is None:
      raise DatasetUnavailableError(
          "data.source='tfds' needs tensorflow-datasets: pip install tensorflow-datasets")
    if not tfds_prepared(root):
      raise DatasetUnavailableError(
          f"data.dataset='bair', data.source='tfds': {TFDS_NAME} is not prepared in the tfds "
          f"data directory {root} (data.path; nothing is downloaded at run time). Run "
          f"`tfds build {TFDS_NAME} --data_dir {root}`, or use the original files.\n{LAYOUT}")
    return root

  @staticmethod
  @functools.lru_cache(maxsize=None)  # one builder per data dir: item_files runs per item
  def _builder(root: str):
    return _import_tfds().builder(TFDS_NAME, data_dir=root)

  def list_items(self, root: str, split: str) -> list[str]:
    """Slices "<split>[a:b]" of TFDS_ITEM_VIDEOS examples covering the split, in order."""
    sources.check_split(split)
    count = self._builder(root).info.splits[split].num_examples
    return [f"{split}[{a}:{min(a + TFDS_ITEM_VIDEOS, count)}]"
            for a in range(0, count, TFDS_ITEM_VIDEOS)]

  def item_files(self, root: str, item: str) -> list[str]:
    """The prepared split's record files and the dataset's metadata."""
    builder = self._builder(root)
    split = item.split("[", 1)[0]
    paths = [str(p) for p in builder.info.splits[split].filepaths]
    return sorted(paths) + [os.path.join(str(builder.data_dir), "dataset_info.json")]

  def read_item(self, root: str, item: str, image_size: int) -> list[Video]:
    """The videos of slice `item`, named "<split>/<example index>": uint8 [30, 64, 64, 3]."""
    _check_image_size(image_size)
    tf, tfds = import_tensorflow(), _import_tfds()
    builder = self._builder(root)
    split, first = item.split("[", 1)[0], int(item.split("[", 1)[1].split(":", 1)[0])
    videos = []
    try:
      dataset = builder.as_dataset(split=item, shuffle_files=False)
      for k, example in enumerate(tfds.as_numpy(dataset)):
        frames = np.asarray(example["image_aux1"], np.uint8)
        if frames.ndim != 4 or frames.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, CHANNELS):
          raise CorruptFileError(str(builder.data_dir), f"{item} example {k}: image_aux1 has "
                                                        f"shape {frames.shape}")
        videos.append(Video(f"{split}/{first + k}", frames))
    except tf.errors.OpError as e:
      raise CorruptFileError(str(builder.data_dir), f"{item}: {_op_error_text(e)}") from e
    return videos

  test_windows = staticmethod(test_windows)


TFDS_READER = TfdsReader()
