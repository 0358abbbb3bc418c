"""How fast a `ClipDataset` delivers training batches from its frame cache (for `mcvd_jax.bench`).

A synthetic reader stands in for a real dataset: it produces videos of random bytes with the
shape of the real ones (BAIR by default: 30 frames of 64x64x3), decoded through the same cache
code into a real memory-mapped .npy of the real size, and then read through the same
`ClipDataset.train_batch` that training calls. Only the decoding differs (none), which the cache
pays once.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from mcvd_jax.data import clips
from mcvd_jax.data import sources

VIDEOS_PER_ITEM = 256  # as one BAIR TFRecord file


class SyntheticReader:
  """The reader contract over `num_videos` random videos of [frames, size, size, channels]."""
  NAME = "synthetic"
  LAYOUT = "synthetic videos (nothing on disk)"
  TRAIN_FLIP = True
  RANDOM_CROP = False

  def __init__(self, num_videos: int, frames: int = 30, size: int = 64, channels: int = 3):
    self.num_videos, self.frames, self.size = num_videos, frames, size
    self.CHANNELS = channels  # pylint: disable=invalid-name
    self.CACHE_NAME = f"synthetic_{num_videos}x{frames}"  # pylint: disable=invalid-name

  def list_items(self, root, split):
    del root
    count = self.num_videos if split == "train" else min(self.num_videos, VIDEOS_PER_ITEM)
    return [f"{split}/{first}:{min(first + VIDEOS_PER_ITEM, count)}"
            for first in range(0, count, VIDEOS_PER_ITEM)]

  def item_files(self, root, item):
    del root, item
    return []  # nothing on disk: the cache is keyed by the item names only

  def read_item(self, root, item, image_size):
    del root, image_size
    first, stop = (int(n) for n in item.split("/")[1].split(":"))
    rng = np.random.default_rng(first)
    shape = (stop - first, self.frames, self.size, self.size, self.CHANNELS)
    videos = np.frombuffer(rng.bytes(int(np.prod(shape))), np.uint8).reshape(shape)
    return [sources.Video(f"{item}#{k}", v) for k, v in enumerate(videos)]

  def test_windows(self, lengths, num_frames, num_videos):
    return [(k % len(lengths), 0) for k in range(num_videos)]


def synthetic_dataset(directory: str, num_videos: int, frames: int = 30, size: int = 64,
                      channels: int = 3) -> tuple[clips.ClipDataset, float]:
  """A ClipDataset over a synthetic cache in `directory` (built now if absent) and the seconds
  the build took (0 when the cache existed)."""
  reader = SyntheticReader(num_videos, frames, size, channels)
  dataset = clips.ClipDataset(reader, directory, size, cache_dir=directory)
  start = time.perf_counter()
  dataset.split("train")
  return dataset, time.perf_counter() - start


def time_train_batches(dataset: clips.ClipDataset, batch_size: int, num_frames: int,
                       num_batches: int, process_count: int = 1) -> dict:
  """Seconds per `train_batch` call (one process's slice of steps 0..num_batches-1, after one
  untimed call) and the frames and clips per second one process delivers."""
  dataset.train_batch(0, num_batches, batch_size, num_frames, 0, process_count)  # warm-up
  times = []
  for step in range(num_batches):
    start = time.perf_counter()
    dataset.train_batch(0, step, batch_size, num_frames, 0, process_count)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  clips_per_batch = batch_size // process_count
  return {"batch_size": batch_size, "clip_frames": num_frames, "process_count": process_count,
          "seconds_median": median, "seconds_max": max(times),
          "clips_per_second": clips_per_batch / median,
          "frames_per_second": clips_per_batch * num_frames / median}
