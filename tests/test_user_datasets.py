"""KTH, UCF-101 and Cityscapes end to end: the dataset config -> make_dataset -> ClipDataset batches
from fixture files in the original on-disk formats (written by the readers' own test modules)."""

import importlib

import numpy as np
import pytest

from mcvd_jax.data import make_dataset
from test_cityscapes import write_cityscapes
from test_kth import write_kth
from test_ucf101 import write_ucf


def _dataset(name, root, cache, image_size):
  config = importlib.import_module(f"configs.{name}").get_config("")
  config.data.path, config.data.cache_dir = str(root), str(cache)
  config.data.test_videos = 4
  return make_dataset(config.data, image_size, config.model.channels), config


def _check(dataset, channels, size, frames):
  batch = dataset.train_batch(seed=3, step=7, batch_size=4, num_frames=frames)
  assert batch.dtype == np.uint8 and batch.shape == (4, frames, size, size, channels)
  again = dataset.train_batch(seed=3, step=7, batch_size=4, num_frames=frames)
  np.testing.assert_array_equal(batch, again)
  halves = [dataset.train_batch(3, 7, 4, frames, process_index=i, process_count=2) for i in (0, 1)]
  np.testing.assert_array_equal(np.concatenate(halves), batch)
  test = dataset.test_videos(frames)
  assert test.shape == (4, frames, size, size, channels)
  np.testing.assert_array_equal(test, dataset.test_videos(frames))
  return batch, test


def test_kth_trains_from_avi_files(tmp_path):
  dataset, config = _dataset("kth", write_kth(tmp_path / "kth"), tmp_path / "cache", 64)
  batch, test = _check(dataset, 1, 64, 5)
  # The fixture's frames are flat grey levels 10 + 8 t + person: consecutive frames of every
  # clip step by 8, in order (a flip cannot change a flat frame).
  steps = np.diff(batch[:, :, 32, 32, 0].astype(int), axis=1)
  assert np.all(np.abs(steps - 8) <= 1)
  # Every test clip is a window of a test video (persons 21-25; test_kth.py checks the split).
  from mcvd_jax.data import kth
  root = config.data.path

  def windows(split):
    return [video.frames[s:s + 5] for item in kth.list_items(root, split)
            for video in kth.read_item(root, item, 64) for s in range(len(video.frames) - 4)]
  test_windows = windows("test")
  for clip in test:
    assert any(np.array_equal(clip, w) for w in test_windows)


def test_ucf101_crops_the_short_side_resized_frames(tmp_path):
  root = write_ucf(tmp_path / "ucf", size=(24, 32), num_frames=6)
  dataset, _ = _dataset("ucf101", root, tmp_path / "cache", 64)
  batch, test = _check(dataset, 3, 64, 5)
  assert dataset.split("train").frames.shape[1:] == (64, 85, 3)  # short side 64, 4:3 kept
  steps = np.diff(batch[:, :, 32, 32, 0].astype(int), axis=1)
  assert np.all(np.abs(steps - 11) <= 1)


def test_cityscapes_snippets_of_30_frames(tmp_path):
  dataset, _ = _dataset("cityscapes", write_cityscapes(tmp_path / "city"), tmp_path / "cache", 128)
  batch, test = _check(dataset, 3, 128, 4)
  steps = np.diff(batch[:, :, 64, 64, 0].astype(int), axis=1)
  assert np.all(np.abs(steps - 7) <= 1)
  assert dataset.split("train").lengths.tolist() == [30] * 5


def test_the_cache_is_reused_by_a_second_run(tmp_path, monkeypatch):
  root = write_kth(tmp_path / "kth")
  first, _ = _dataset("kth", root, tmp_path / "cache", 64)
  expected = first.train_batch(0, 0, 2, 4)
  from mcvd_jax.data import kth

  def no_decoding(*args):
    raise AssertionError("the second run decoded a file instead of reading the cache")
  monkeypatch.setattr(kth, "read_item", no_decoding)
  second, _ = _dataset("kth", root, tmp_path / "cache", 64)
  np.testing.assert_array_equal(second.train_batch(0, 0, 2, 4), expected)


@pytest.mark.parametrize("name", ["kth", "ucf101", "cityscapes"])
def test_missing_dataset_names_the_path(tmp_path, name):
  from mcvd_jax.data import DatasetUnavailableError
  with pytest.raises(DatasetUnavailableError, match=str(tmp_path / "absent")):
    _dataset(name, tmp_path / "absent", tmp_path / "cache", {"cityscapes": 128}.get(name, 64))
