"""Training and test clips of a video dataset the user obtained, read from its frame cache.

`ClipDataset` has the interface of the embedded `SMMNIST` (`train_batch`, `test_videos`,
`description`), so training and sampling do not care which dataset they get. It wraps a reader
(`sources.py`: BAIR, KTH, Cityscapes, UCF-101) whose splits are decoded once into a memory-mapped
cache (`video_cache.py`), each split on first use.

Training: every draw of global batch `step` -- video, first frame, flip, crop offset per sample --
comes from `np.random.default_rng([_TRAIN, seed, step])`, so the batch is a pure function of
(seed, step, batch_size, num_frames): resuming at step s sees what an uninterrupted run saw, and
the process slices concatenate to the single-process batch whatever the process count. Each
process copies out of the memmap only the windows of its own slice. As in the reference, a video
is drawn uniformly (among those with at least num_frames frames), then a window uniformly among
all its windows (the reference's `np.random.choice(len - frames)` never picks the last one; we
do). Horizontal flips with probability 1/2 where the reader says TRAIN_FLIP; readers with
RANDOM_CROP store frames larger than image_size**2 and get a uniform random crop.

Test: the reader's `test_windows` (the reference's construction for that dataset, deterministic),
centre-cropped where RANDOM_CROP, never flipped.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from absl import logging

from mcvd_jax.data import sources
from mcvd_jax.data import video_cache

_TRAIN = 2  # first word of every training seed (SMMNIST uses 0 and 1)


@dataclasses.dataclass(eq=False)
class ClipDataset:
  """Clips of one dataset read from its cache. reader: a module or object with the contract of
  `sources.py`; root: the dataset directory; cache_dir: "" puts the cache in
  <root>/mcvd_jax_cache; skip_corrupt: leave corrupt items out (logged and counted) instead of
  raising; num_test_videos: default size of the test set."""
  reader: Any
  root: str
  image_size: int
  cache_dir: str = ""
  skip_corrupt: bool = False
  num_test_videos: int = 256
  _splits: dict = dataclasses.field(default_factory=dict, init=False, repr=False)
  _eligible: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

  def __post_init__(self):
    sources.check_count("model.image_size", self.image_size)
    sources.check_count("data.test_videos", self.num_test_videos)

  @classmethod
  def from_config(cls, data: Any, reader: Any, image_size: int) -> ClipDataset:
    """From the `config.data` section (path, cache_dir, skip_corrupt, test_videos) and
    `config.model.image_size`; DatasetUnavailableError naming data.path and the reader's LAYOUT
    when the dataset directory is missing."""
    path = getattr(data, "path", "")
    if hasattr(reader, "resolve_root"):  # e.g. BAIR from tfds, whose default is tfds's own dir
      root = reader.resolve_root(path)
    else:
      root = check_root(reader, path)
    return cls(reader=reader, root=root, image_size=image_size,
               cache_dir=getattr(data, "cache_dir", ""),
               skip_corrupt=bool(getattr(data, "skip_corrupt", False)),
               num_test_videos=data.test_videos)

  def split(self, name: str) -> video_cache.SplitCache:
    """The decoded split ("train" or "test"), building its cache on first use."""
    if name not in self._splits:
      self._splits[name] = video_cache.open_split(
          self.reader, self.root, name, self.image_size,
          video_cache.resolve_cache_dir(self.cache_dir, self.root), self.skip_corrupt)
    return self._splits[name]

  @property
  def description(self) -> str:
    """Where the data comes from and what each split holds (opens both splits)."""
    parts = []
    for name in sources.SPLITS:
      s = self.split(name)
      skipped = f", {len(s.skipped)} corrupt item(s) skipped" if s.skipped else ""
      parts.append(f"{name}: {len(s.names):,} videos, {len(s.frames):,} frames{skipped}")
    h, w, c = self.split("train").frames.shape[1:]
    source = getattr(self.reader, "SOURCE_DESCRIPTION", self.reader.NAME)
    cache_dir = video_cache.resolve_cache_dir(self.cache_dir, self.root)
    return (f"{source} at {self.root} ({'; '.join(parts)}; stored {h}x{w}x{c}, clips "
            f"{self.image_size}x{self.image_size}; cache {cache_dir})")

  def _eligible_videos(self, num_frames: int) -> np.ndarray:
    """Training videos with at least num_frames frames (the others are left out, logged once)."""
    if num_frames not in self._eligible:
      lengths = self.split("train").lengths
      eligible = np.flatnonzero(lengths >= num_frames)
      if not len(eligible):
        raise sources.DataConfigError(
            f"data.dataset={self.reader.NAME!r}: clips of {num_frames} frames are needed "
            f"(model.num_frames_cond + num_frames + num_frames_future) but the longest training "
            f"video has {lengths.max()} frames")
      if len(eligible) < len(lengths):
        logging.info("%s: %d of %d training videos are shorter than %d frames and are left out",
                     self.reader.NAME, len(lengths) - len(eligible), len(lengths), num_frames)
      self._eligible[num_frames] = eligible
    return self._eligible[num_frames]

  def train_batch(self, seed: int, step: int, batch_size: int, num_frames: int,
                  process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """This process's slice of global training batch `step`: uint8
    [batch_size // process_count, num_frames, image_size, image_size, C] in [0, 255]. The global
    batch is a pure function of (seed, step, batch_size, num_frames); process slices concatenate
    to it whatever the process count."""
    mine = sources.process_slice(seed, step, batch_size, num_frames, process_index,
                                 process_count)
    split = self.split("train")
    eligible = self._eligible_videos(num_frames)
    h, w = split.frames.shape[1:3]
    s = self.image_size
    # Every draw of the global batch, in a fixed order, whatever this process keeps of it.
    rng = np.random.default_rng([_TRAIN, seed, step])
    video = eligible[rng.integers(0, len(eligible), batch_size)]
    first = rng.integers(0, split.lengths[video] - num_frames + 1)
    flip = rng.random(batch_size) < 0.5
    row = rng.integers(0, h - s + 1, batch_size)
    col = rng.integers(0, w - s + 1, batch_size)
    if not self.reader.TRAIN_FLIP:
      flip[:] = False
    return _gather(split, video[mine], first[mine], num_frames, row[mine], col[mine], s,
                   flip[mine])

  def test_videos(self, num_frames: int, num_videos: int | None = None) -> np.ndarray:
    """The deterministic test clips of the reader's `test_windows`: uint8
    [num_videos or data.test_videos, num_frames, image_size, image_size, C] in [0, 255],
    centre-cropped, never flipped. Identical across calls and runs."""
    num_videos = self.num_test_videos if num_videos is None else num_videos
    sources.check_count("num_videos", num_videos)
    sources.check_count("num_frames", num_frames)
    split = self.split("test")
    if split.lengths.max() < num_frames:
      raise sources.DataConfigError(
          f"data.dataset={self.reader.NAME!r}: test clips of {num_frames} frames are needed but "
          f"the longest test video has {split.lengths.max()} frames")
    windows = self.reader.test_windows(split.lengths.tolist(), num_frames, num_videos)
    video = np.asarray([v for v, _ in windows], np.int64).reshape(-1)
    first = np.asarray([f for _, f in windows], np.int64).reshape(-1)
    bad = ((video < 0) | (video >= len(split.lengths)) | (first < 0) |
           (first + num_frames > split.lengths[np.clip(video, 0, len(split.lengths) - 1)]))
    if len(windows) != num_videos or bad.any():
      raise ValueError(f"reader {self.reader.NAME!r}: test_windows gave {len(windows)} windows "
                       f"for {num_videos} clips of {num_frames} frames, "
                       f"{int(bad.sum())} outside their videos")
    h, w = split.frames.shape[1:3]
    s = self.image_size
    row = np.full(num_videos, (h - s) // 2)
    col = np.full(num_videos, (w - s) // 2)
    return _gather(split, video, first, num_frames, row, col, s, np.zeros(num_videos, bool))


def _gather(split: video_cache.SplitCache, video: np.ndarray, first: np.ndarray,
            num_frames: int, row: np.ndarray, col: np.ndarray, size: int,
            flip: np.ndarray) -> np.ndarray:
  """uint8 [len(video), num_frames, size, size, C]: clip i is frames first[i].. of video[i],
  cropped at (row[i], col[i]) and flipped left-right where flip[i]. Reads only these windows."""
  channels = split.frames.shape[-1]
  out = np.empty((len(video), num_frames, size, size, channels), np.uint8)
  # A flip as one gather of whole pixels along each image row: ~4x faster than copying a
  # [..., ::-1, :] view, which numpy walks 3 bytes at a time.
  mirrored_row = ((size - 1 - np.arange(size))[:, None] * channels + np.arange(channels)).ravel()
  for i, (v, f, r, c, mirror) in enumerate(zip(video, first, row, col, flip)):
    start = split.offsets[v] + f
    clip = split.frames[start:start + num_frames, r:r + size, c:c + size]
    if mirror:
      rows = np.ascontiguousarray(clip).reshape(-1, size * channels)  # a copy only if cropped
      np.take(rows, mirrored_row, axis=1, out=out[i].reshape(-1, size * channels))
    else:
      out[i] = clip
  return out


def check_root(reader: Any, path: str) -> str:
  """`data.path` when it is an existing directory; DatasetUnavailableError naming the expected
  path and the reader's LAYOUT otherwise."""
  if not path:
    raise sources.DatasetUnavailableError(
        f"data.dataset={reader.NAME!r} reads the files you obtained from data.path, which is not "
        f"set: pass --config.data.path=/path/to/{reader.NAME} (or train on the embedded Stochastic "
        f"Moving MNIST with configs/smmnist.py).\n{reader.LAYOUT}")
  if not os.path.isdir(path):
    raise sources.DatasetUnavailableError(
        f"data.dataset={reader.NAME!r}: data.path={path!r} is not a directory. Put the dataset "
        f"there or point data.path at it (or train on the embedded Stochastic Moving MNIST with "
        f"configs/smmnist.py).\n{reader.LAYOUT}")
  return path
