"""The clip pipeline and its frame cache, on a small reader of .npy files (no TensorFlow).

Every fixture pixel says where it came from: channel 0 is the frame index, channel 1 the video
number, channel 2 the stored column, so a test can check frame order, split membership, flips and
crops from the clips alone.
"""

import json
import os
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

from mcvd_jax.data import clips
from mcvd_jax.data import sources
from mcvd_jax.data import video_cache

LENGTHS = {"train": [3, 10, 20, 12], "test": [9, 14, 30]}
TEST_VIDEO_BASE = 100  # test videos are numbered from here, so their pixels never look like train


def write_video(path, number, length, height=8, width=8):
  """uint8 [length, height, width, 3]: (frame index, video number, column) in every pixel."""
  frames = np.zeros((length, height, width, 3), np.uint8)
  frames[..., 0] = np.arange(length)[:, None, None]
  frames[..., 1] = number
  frames[..., 2] = np.arange(width)
  np.save(path, frames)


def make_root(root, height=8, width=8, lengths=LENGTHS):
  for split, split_lengths in lengths.items():
    os.makedirs(root / split, exist_ok=True)
    for i, length in enumerate(split_lengths):
      number = i + (TEST_VIDEO_BASE if split == "test" else 0)
      write_video(root / split / f"video{i:02d}.npy", number, length, height, width)
  return root


class NpyReader:
  """The reader contract over <root>/<split>/videoNN.npy; counts the items it decodes."""
  NAME = "npy"
  CHANNELS = 3
  LAYOUT = "<root>/{train,test}/videoNN.npy"

  def __init__(self, train_flip=True, random_crop=False, corrupt=()):
    self.TRAIN_FLIP = train_flip  # pylint: disable=invalid-name
    self.RANDOM_CROP = random_crop  # pylint: disable=invalid-name
    self.corrupt = set(corrupt)
    self.decoded = []

  def list_items(self, root, split):
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
      raise sources.DatasetUnavailableError(f"no folder {folder}.\n{self.LAYOUT}")
    return sorted(f"{split}/{n}" for n in os.listdir(folder) if n.endswith(".npy"))

  def read_item(self, root, item, image_size):
    self.decoded.append(item)
    path = os.path.join(root, item)
    if item in self.corrupt:
      raise sources.CorruptFileError(path, "cannot be decoded")
    return [sources.Video(item, np.load(path))]

  def test_windows(self, lengths, num_frames, num_videos):
    """Clip k: video k mod N (of those long enough), starting at frame k mod (spare + 1)."""
    usable = [v for v, n in enumerate(lengths) if n >= num_frames]
    return [(usable[k % len(usable)], k % (lengths[usable[k % len(usable)]] - num_frames + 1))
            for k in range(num_videos)]


def dataset(root, reader=None, image_size=8, **kwargs):
  return clips.ClipDataset(reader or NpyReader(), str(root), image_size, **kwargs)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return make_root(tmp_path_factory.mktemp("npy_videos"))


@pytest.fixture(scope="module")
def shared(root):
  return dataset(root)


def check_clips(batch, numbers, num_frames, flipped=None):
  """Every clip: consecutive frame indices, one video of `numbers`, columns in order or mirrored."""
  assert batch.dtype == np.uint8 and batch.ndim == 5
  first = batch[:, :1, 0, 0, 0].astype(int)
  frame = (first + np.arange(num_frames))[:, :, None, None]
  np.testing.assert_array_equal(batch[..., 0], np.broadcast_to(frame, batch.shape[:4]))
  video = batch[:, 0, 0, 0, 1]
  assert set(video.tolist()) <= set(numbers)
  assert (batch[..., 1] == video[:, None, None, None]).all()
  mirrored = batch[:, 0, 0, 0, 2] > batch[:, 0, 0, -1, 2]
  columns = np.where(mirrored[:, None], np.arange(8)[::-1], np.arange(8))[:, None, None]
  np.testing.assert_array_equal(batch[..., 2], np.broadcast_to(columns, batch.shape[:4]))
  if flipped is not None:
    assert (mirrored == flipped).all()
  return video, mirrored


# ----------------------------------------------------------------------------------- batches

def test_train_batch_shapes_frame_order_and_membership(shared):
  batch = shared.train_batch(seed=0, step=0, batch_size=64, num_frames=8)
  assert batch.shape == (64, 8, 8, 8, 3)
  video, mirrored = check_clips(batch, numbers=range(4), num_frames=8)
  # Videos 1-3 are long enough for 8 frames; video 0 (3 frames) never appears.
  assert set(video.tolist()) == {1, 2, 3}
  assert 0 < mirrored.sum() < 64  # flips with probability 1/2


def test_batches_are_pure_functions_of_seed_and_step(shared, root):
  first = shared.train_batch(seed=3, step=7, batch_size=16, num_frames=5)
  np.testing.assert_array_equal(first, dataset(root).train_batch(3, 7, 16, 5))
  assert not np.array_equal(first, shared.train_batch(3, 8, 16, 5))
  assert not np.array_equal(first, shared.train_batch(4, 7, 16, 5))


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_slices_join_to_the_single_process_batch(shared, process_count):
  whole = shared.train_batch(1, 5, 16, 6)
  parts = [shared.train_batch(1, 5, 16, 6, p, process_count) for p in range(process_count)]
  assert all(p.shape[0] == 16 // process_count for p in parts)
  np.testing.assert_array_equal(np.concatenate(parts), whole)


class RecordingFrames:
  """Wraps the cached frames and records the frame ranges read."""

  def __init__(self, frames):
    self.frames, self.shape, self.reads = frames, frames.shape, []

  def __getitem__(self, key):
    self.reads.append((key[0].start, key[0].stop))
    return self.frames[key]


def test_a_process_reads_only_its_own_windows(root):
  data = dataset(root)
  split = data.split("train")
  recorder = RecordingFrames(split.frames)
  data._splits["train"] = split._replace(frames=recorder)  # pylint: disable=protected-access
  part = data.train_batch(0, 2, 16, 4, process_index=1, process_count=4)
  assert len(recorder.reads) == 4
  # The windows read are exactly those of this slice: frame index and video of each clip.
  for (start, stop), clip in zip(recorder.reads, part):
    assert stop - start == 4
    video = clip[0, 0, 0, 1]
    assert start == split.offsets[video] + clip[0, 0, 0, 0]


def test_short_videos_are_left_out_with_a_count(root, caplog):
  data = dataset(root)
  with caplog.at_level("INFO"):
    data.train_batch(0, 0, 8, 11)
  assert "3 of 4 training videos are shorter than 11 frames" not in caplog.text
  assert "2 of 4 training videos are shorter than 11 frames" in caplog.text
  with pytest.raises(ValueError, match="clips of 21 frames.*longest training video has 20"):
    data.train_batch(0, 0, 8, 21)


def test_no_flips_unless_the_reader_asks(root):
  batch = dataset(root, NpyReader(train_flip=False)).train_batch(0, 0, 64, 4)
  check_clips(batch, range(4), 4, flipped=np.zeros(64, bool))


def test_bad_batch_arguments_are_named(shared):
  with pytest.raises(ValueError, match="training.batch_size"):
    shared.train_batch(0, 0, 10, 4, 0, 4)
  with pytest.raises(ValueError, match="process_index"):
    shared.train_batch(0, 0, 8, 4, 2, 2)
  with pytest.raises(ValueError, match="step"):
    shared.train_batch(0, -1, 8, 4)


# ------------------------------------------------------------------------------------ crops

def test_random_crop_in_training_and_centre_crop_in_test(tmp_path):
  make_root(tmp_path, height=8, width=12)
  data = dataset(tmp_path, NpyReader(train_flip=False, random_crop=True))
  batch = data.train_batch(0, 0, 64, 4)
  assert batch.shape == (64, 4, 8, 8, 3)
  left_column = batch[:, 0, 0, 0, 2]
  assert set(left_column.tolist()) == set(range(5))  # every offset 0..12-8
  np.testing.assert_array_equal(
      batch[..., 2], np.broadcast_to(left_column[:, None, None, None] + np.arange(8),
                                     batch.shape[:4]))
  test = data.test_videos(4, 3)
  np.testing.assert_array_equal(test[..., 2], np.broadcast_to(np.arange(2, 10), test.shape[:4]))


def test_frames_of_the_wrong_size_are_a_reader_error(tmp_path):
  make_root(tmp_path, height=8, width=12)
  with pytest.raises(ValueError, match="frames 8x12, expected 8x8"):
    dataset(tmp_path).train_batch(0, 0, 4, 2)


# ------------------------------------------------------------------------------------- test set

def test_test_videos_follow_the_reader_windows(shared, root):
  test = shared.test_videos(num_frames=9, num_videos=5)
  assert test.shape == (5, 9, 8, 8, 3)
  video, _ = check_clips(test, numbers=range(100, 103), num_frames=9,
                         flipped=np.zeros(5, bool))
  expected = NpyReader().test_windows(LENGTHS["test"], 9, 5)
  np.testing.assert_array_equal(video, [TEST_VIDEO_BASE + v for v, _ in expected])
  np.testing.assert_array_equal(test[:, 0, 0, 0, 0], [f for _, f in expected])
  np.testing.assert_array_equal(test, dataset(root).test_videos(9, 5))
  assert dataset(root, num_test_videos=7).test_videos(4).shape[0] == 7


def test_test_windows_outside_a_video_are_refused(root):
  reader = NpyReader()
  reader.test_windows = lambda lengths, num_frames, num_videos: [(0, 5)] * num_videos
  with pytest.raises(ValueError, match="1 outside their videos"):
    dataset(root, reader).test_videos(5, 1)
  with pytest.raises(ValueError, match="test clips of 31 frames"):
    dataset(root).test_videos(31, 1)


# ------------------------------------------------------------------------------------- cache

def test_cache_files_and_reuse_without_decoding(tmp_path):
  make_root(tmp_path)
  first = NpyReader()
  dataset(tmp_path, first).split("train")
  assert sorted(first.decoded) == [f"train/video{i:02d}.npy" for i in range(4)]
  cache_dir = tmp_path / video_cache.CACHE_FOLDER  # the default: inside the dataset folder
  index = json.loads((cache_dir / "npy_train_8.json").read_text())
  assert index["lengths"] == LENGTHS["train"] and index["skipped"] == []
  assert index["offsets"] == [0, 3, 13, 33] and index["frame_shape"] == [8, 8, 3]
  frames = np.load(cache_dir / index["frames_file"], mmap_mode="r")
  assert frames.shape == (45, 8, 8, 3)
  second = NpyReader()
  reopened = dataset(tmp_path, second)
  np.testing.assert_array_equal(reopened.train_batch(0, 0, 4, 3),
                                dataset(tmp_path, NpyReader()).train_batch(0, 0, 4, 3))
  assert second.decoded == []
  frames = reopened.split("train").frames
  assert isinstance(frames.base, np.memmap) and not frames.flags.writeable


def test_changed_source_files_rebuild_the_cache(tmp_path, caplog):
  make_root(tmp_path)
  cache_dir = str(tmp_path / "cache")
  dataset(tmp_path, cache_dir=cache_dir).split("test")
  write_video(tmp_path / "test" / "video01.npy", 111, 25)  # new content, size and mtime
  reader = NpyReader()
  with caplog.at_level("INFO"):
    split = dataset(tmp_path, reader, cache_dir=cache_dir).split("test")
  assert "rebuilding the frame cache" in caplog.text and "source files changed" in caplog.text
  assert len(reader.decoded) == 3 and split.lengths.tolist() == [9, 25, 30]
  assert len([n for n in os.listdir(cache_dir) if n.endswith(".npy")]) == 1  # old one removed


def test_a_torn_index_is_rebuilt(tmp_path):
  make_root(tmp_path)
  dataset(tmp_path).split("test")
  index_path = tmp_path / video_cache.CACHE_FOLDER / "npy_test_8.json"
  index_path.write_text(index_path.read_text()[:100])
  reader = NpyReader()
  assert dataset(tmp_path, reader).split("test").lengths.tolist() == LENGTHS["test"]
  assert len(reader.decoded) == 3


def test_corrupt_item_raises_or_is_skipped_and_counted(tmp_path, caplog):
  make_root(tmp_path)
  bad = "train/video02.npy"
  with pytest.raises(sources.CorruptFileError, match="video02.npy: cannot be decoded"):
    dataset(tmp_path, NpyReader(corrupt=[bad])).split("train")
  assert not [n for n in os.listdir(tmp_path / video_cache.CACHE_FOLDER) if "tmp" in n]
  with caplog.at_level("INFO"):
    skipping = dataset(tmp_path, NpyReader(corrupt=[bad]), skip_corrupt=True)
    split = skipping.split("train")
  assert split.lengths.tolist() == [3, 10, 12] and len(split.skipped) == 1
  assert "skipping corrupt train item" in caplog.text and "1 corrupt item(s) skipped" in caplog.text
  assert set(skipping.train_batch(0, 0, 32, 8)[:, 0, 0, 0, 1].tolist()) == {1, 3}
  assert "1 corrupt item(s) skipped" in skipping.description
  # The cache remembers the hole: opening it without skip_corrupt names the file again.
  with pytest.raises(sources.CorruptFileError, match=r"video02\.npy.*skip_corrupt=True"):
    dataset(tmp_path).split("train")


def test_unwritable_cache_dir_names_the_field(tmp_path):
  make_root(tmp_path)
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(video_cache.CacheDirError, match="data.cache_dir.*a_file"):
    dataset(tmp_path, cache_dir=str(blocker / "cache")).split("test")


def test_missing_dataset_names_the_path_and_layout(tmp_path):
  config = ml_collections.ConfigDict(dict(path=str(tmp_path / "absent"), test_videos=4))
  with pytest.raises(sources.DatasetUnavailableError, match="absent.*\n.*videoNN.npy"):
    clips.ClipDataset.from_config(config, NpyReader(), 8)
  config.path = ""
  with pytest.raises(sources.DatasetUnavailableError, match="data.path"):
    clips.ClipDataset.from_config(config, NpyReader(), 8)
  with pytest.raises(sources.DatasetUnavailableError, match="no folder"):
    dataset(tmp_path).split("train")  # the folder exists but holds no split


_RACE_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_clips import NpyReader
    from mcvd_jax.data import video_cache

    class Slow(NpyReader):
      def read_item(self, root, item, image_size):
        time.sleep(0.1)
        with open(os.path.join({log!r}, f"{{os.getpid()}}_{{os.path.basename(item)}}"), "w"):
          pass
        return super().read_item(root, item, image_size)

    split = video_cache.open_split(Slow(), {root!r}, "train", 8, {cache!r})
    print(int(np.asarray(split.frames).sum()))
""")


def test_processes_racing_on_one_cache_decode_it_once(tmp_path):
  make_root(tmp_path / "data")
  (tmp_path / "log").mkdir()
  script = tmp_path / "race.py"
  script.write_text(_RACE_SCRIPT.format(tests=os.path.dirname(__file__), log=str(tmp_path / "log"),
                                        root=str(tmp_path / "data"), cache=str(tmp_path / "c")))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  runs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                           env=env) for _ in range(3)]
  outputs = [run.communicate(timeout=60)[0] for run in runs]
  assert all(run.returncode == 0 for run in runs)
  assert len(set(outputs)) == 1  # every process sees the same frames
  assert len(os.listdir(tmp_path / "log")) == 4  # 4 items decoded once, by one process


# ---------------------------------------------------------------------------------- registry

def test_a_reader_module_not_importable_yet_is_reported(monkeypatch):
  from mcvd_jax.data import registry  # pylint: disable=g-import-not-at-top

  def missing(name):
    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

  monkeypatch.setattr(registry.importlib, "import_module", missing)
  config = ml_collections.ConfigDict(dict(dataset="kth", path="/data/kth", test_videos=4))
  with pytest.raises(sources.DatasetUnavailableError,
                     match=r"(?s)mcvd_jax/data/kth.py\) is not in this version.*/data/kth"):
    registry.make_dataset(config, 64, 1)

  def broken(name):  # the reader exists, but a package it needs does not
    raise ModuleNotFoundError("No module named 'cv2'", name="cv2")

  monkeypatch.setattr(registry.importlib, "import_module", broken)
  with pytest.raises(ModuleNotFoundError, match="cv2"):
    registry.make_dataset(config, 64, 1)
