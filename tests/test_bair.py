"""BAIR robot pushing: the reader on TFRecord files in the release's format, and through tfds.

The fixtures are real `tf.train.Example` records written with TensorFlow's TFRecordWriter, with
every feature of the release (both cameras, actions, end-effector positions). Pixels of the
camera the paper uses (image_aux1) say where they come from: channel 0 = frame index, channel 1 =
video number (10 * file + record; test videos from 100), channel 2 = column. The other camera
holds 255 - that, so reading the wrong one shows.
"""

import inspect
import os
import shutil
from unittest import mock

from etils import epath
import ml_collections
import numpy as np
import pytest

from mcvd_jax import data as data_lib
from mcvd_jax.data import bair
from mcvd_jax.data import sources

tf = pytest.importorskip("tensorflow")

FRAMES = 30
TRAIN_FILES = {"traj_0_to_2.tfrecords": 3, "traj_3_to_5.tfrecords": 3}
TEST_FILES = {"traj_0_to_3.tfrecords": 4}
TEST_BASE = 100


def aux_frames(number, frames=FRAMES):
  video = np.zeros((frames, 64, 64, 3), np.uint8)
  video[..., 0] = np.arange(frames)[:, None, None]
  video[..., 1] = number
  video[..., 2] = np.arange(64)
  return video


def example(number, frames=FRAMES):
  """One video as the release stores it: a tf.train.Example of per-frame features."""
  def raw(array):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[array.tobytes()]))

  def floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))

  aux = aux_frames(number, frames)
  feature = {}
  for t in range(frames):
    feature[f"{t}/image_aux1/encoded"] = raw(aux[t])
    feature[f"{t}/image_main/encoded"] = raw(255 - aux[t])
    feature[f"{t}/action"] = floats([0.1, 0.2, 0.3, 0.4])
    feature[f"{t}/endeffector_pos"] = floats([1.0, 2.0, 3.0])
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_release(root):
  """<root>/softmotion30_44k/{train,test}/*.tfrecords; returns root."""
  for split, files, base in (("train", TRAIN_FILES, 0), ("test", TEST_FILES, TEST_BASE)):
    folder = os.path.join(root, bair.RELEASE_FOLDER, split)
    os.makedirs(folder, exist_ok=True)
    for f, (name, count) in enumerate(files.items()):
      with tf.io.TFRecordWriter(os.path.join(folder, name)) as writer:
        for k in range(count):
          writer.write(example(base + 10 * f + k))
  return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  return str(write_release(tmp_path_factory.mktemp("bair")))


def section(**overrides):
  values = dict(dataset="bair", path="", source="auto", cache_dir="", skip_corrupt=False,
                test_videos=4)
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def copy_release(release, tmp_path):
  return shutil.copytree(release, tmp_path / "bair", ignore=shutil.ignore_patterns("mcvd_jax_*"))


def video_numbers(batch):
  numbers = batch[:, 0, 0, 0, 1]
  assert (batch[..., 1] == numbers[:, None, None, None]).all()
  return numbers.tolist()


# ------------------------------------------------------------------------------------ reader

def test_reader_reads_the_aux1_camera_in_frame_order(release):
  items = bair.list_items(release, "train")
  assert items == [f"softmotion30_44k/train/{n}" for n in sorted(TRAIN_FILES)]
  videos = bair.read_item(release, items[1], 64)
  assert [v.name for v in videos] == [f"{items[1]}#{k}" for k in range(3)]
  for k, video in enumerate(videos):
    np.testing.assert_array_equal(video.frames, aux_frames(10 + k))


def test_split_membership_and_the_release_folder_as_data_path(release):
  assert bair.list_items(release, "test") == ["softmotion30_44k/test/traj_0_to_3.tfrecords"]
  inner = os.path.join(release, bair.RELEASE_FOLDER)
  assert bair.list_items(inner, "train") == [f"train/{n}" for n in sorted(TRAIN_FILES)]


def test_dataset_batches_and_test_clips(release, tmp_path):
  dataset = data_lib.make_dataset(section(path=release, cache_dir=str(tmp_path)), 64, 3)
  batch = dataset.train_batch(seed=0, step=0, batch_size=64, num_frames=7)
  assert batch.shape == (64, 7, 64, 64, 3) and batch.dtype == np.uint8
  assert set(video_numbers(batch)) == {0, 1, 2, 10, 11, 12}  # train videos only
  start = batch[:, 0, 0, 0, 0].astype(int)
  np.testing.assert_array_equal(batch[:, :, 0, 0, 0], start[:, None] + np.arange(7))
  assert start.min() >= 0 and start.max() <= FRAMES - 7
  flipped = batch[:, 0, 0, 0, 2] == 63
  assert 0 < flipped.sum() < 64
  columns = np.where(flipped[:, None], np.arange(64)[::-1], np.arange(64))[:, None, None]
  np.testing.assert_array_equal(batch[..., 2], np.broadcast_to(columns, batch.shape[:4]))
  test = dataset.test_videos(num_frames=16)
  assert test.shape == (4, 16, 64, 64, 3)
  assert video_numbers(test) == [100, 101, 102, 103]  # every test video, in file order
  np.testing.assert_array_equal(test[:, 0, 0, :, 2], np.broadcast_to(np.arange(64), (4, 64)))
  expected_first = [f for _, f in bair.test_windows([FRAMES] * 4, 16, 4)]
  np.testing.assert_array_equal(test[:, 0, 0, 0, 0], expected_first)
  # More clips than test videos: the videos again, with their own windows; fewer: a prefix.
  more = dataset.test_videos(16, 6)
  assert video_numbers(more) == [100, 101, 102, 103, 100, 101]
  np.testing.assert_array_equal(more[:4], test)
  assert "softmotion30_44k" in dataset.description and "train: 6 videos" in dataset.description


def test_test_windows_cover_every_start_and_are_fixed():
  windows = bair.test_windows([30] * 256, 16, 256)
  assert [v for v, _ in windows] == list(range(256))
  firsts = [f for _, f in windows]
  assert set(firsts) == set(range(15)) and windows == bair.test_windows([30] * 256, 16, 256)
  assert bair.test_windows([30, 10, 30], 16, 3) == [(0, firsts[0]), (2, firsts[1]),
                                                      (0, firsts[2])]


def test_second_run_reads_the_cache_without_tensorflow(release, tmp_path, monkeypatch):
  config = section(path=release, cache_dir=str(tmp_path))
  first = data_lib.make_dataset(config, 64, 3).train_batch(0, 3, 8, 5)
  monkeypatch.setattr(bair, "import_tensorflow",
                      mock.Mock(side_effect=AssertionError("decoded again")))
  np.testing.assert_array_equal(data_lib.make_dataset(config, 64, 3).train_batch(0, 3, 8, 5),
                                first)


def test_changed_files_are_decoded_again(release, tmp_path):
  root = copy_release(release, tmp_path)
  config = section(path=str(root))
  assert video_numbers(data_lib.make_dataset(config, 64, 3).test_videos(5)) == [100, 101, 102,
                                                                               103]
  test_file = root / bair.RELEASE_FOLDER / "test" / "traj_0_to_3.tfrecords"
  with tf.io.TFRecordWriter(str(test_file)) as writer:
    for number in (150, 151, 152, 153):
      writer.write(example(number))
  os.utime(test_file, ns=(1, 1))  # a new mtime even on a filesystem with coarse timestamps
  assert video_numbers(data_lib.make_dataset(config, 64, 3).test_videos(5)) == [150, 151, 152,
                                                                               153]


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "wrong_frame_size"])
def test_corrupt_file_is_named_or_skipped(release, tmp_path, damage):
  root = copy_release(release, tmp_path)
  bad = root / bair.RELEASE_FOLDER / "train" / "traj_3_to_5.tfrecords"
  if damage == "wrong_frame_size":
    with tf.io.TFRecordWriter(str(bad)) as writer:
      writer.write(example(10))
      features = {"0/image_aux1/encoded": tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[b"\x00" * 100]))}
      writer.write(tf.train.Example(features=tf.train.Features(feature=features))
                   .SerializeToString())
  else:
    raw = bytearray(bad.read_bytes())
    if damage == "truncate":
      raw = raw[:len(raw) // 2]
    else:
      raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
  config = section(path=str(root))
  dataset = data_lib.make_dataset(config, 64, 3)
  with pytest.raises(sources.CorruptFileError, match="traj_3_to_5.tfrecords") as error:
    dataset.train_batch(0, 0, 4, 5)
  assert error.value.path == str(bad)
  config.skip_corrupt = True
  skipping = data_lib.make_dataset(config, 64, 3)
  assert set(video_numbers(skipping.train_batch(0, 0, 32, 5))) == {0, 1, 2}
  assert "1 corrupt item(s) skipped" in skipping.description


def test_missing_dataset_names_the_path_and_how_to_get_it(tmp_path):
  with pytest.raises(sources.DatasetUnavailableError,
                     match=r"(?s)data.path=.*absent.*\n.*tar -xf"):
    data_lib.make_dataset(section(path=str(tmp_path / "absent")), 64, 3)
  with pytest.raises(sources.DatasetUnavailableError, match="data.path.*not set"):
    data_lib.make_dataset(section(source="files"), 64, 3)
  dataset = data_lib.make_dataset(section(path=str(tmp_path)), 64, 3)  # a folder, but empty
  with pytest.raises(sources.DatasetUnavailableError,
                     match="no train .tfrecords files in .*softmotion30_44k/train"):
    dataset.train_batch(0, 0, 4, 5)


def test_config_fields_are_checked_first(release):
  with pytest.raises(ValueError, match="model.channels=1; set model.channels=3"):
    data_lib.make_dataset(section(path=release), 64, 1)
  with pytest.raises(ValueError, match="model.image_size=32; set model.image_size=64"):
    data_lib.make_dataset(section(path=release), 32, 3)
  with pytest.raises(ValueError, match="data.source='hdf5'"):
    data_lib.make_dataset(section(path=release, source="hdf5"), 64, 3)


# -------------------------------------------------------------------------------------- tfds

def prepare_tfds(release, data_dir):
  """Runs tfds's own bair_robot_pushing_small builder on the fixture release, offline: its
  download step is pointed at the local folder instead of the release URL."""
  tfds = pytest.importorskip("tensorflow_datasets")
  builder = tfds.builder(bair.TFDS_NAME, data_dir=str(data_dir))
  builder_class = type(builder)
  # tfds 4.9 looks up its own source file through importlib_resources, which it does not
  # install on Python >= 3.9; the plain path is what that lookup would return.
  builder_class.code_path = epath.Path(inspect.getfile(builder_class))
  try:
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                           lambda self, url: release):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  finally:
    del builder_class.code_path


def test_tfds_source_reads_the_same_videos(release, tmp_path):
  prepare_tfds(release, tmp_path / "tfds")
  config = section(path=str(tmp_path / "tfds"))
  assert bair.reader_from_config(config) is bair.TFDS_READER  # auto: no files there, tfds is
  dataset = data_lib.make_dataset(config, 64, 3)
  assert "bair_robot_pushing_small" in dataset.description
  assert sorted(video_numbers(dataset.test_videos(FRAMES))) == [100, 101, 102, 103]
  np.testing.assert_array_equal(dataset.test_videos(FRAMES)[0],
                                aux_frames(video_numbers(dataset.test_videos(FRAMES, 1))[0]))
  train = dataset.split("train")
  assert len(train.names) == 6 and train.names[0] == "train/0"
  assert set(video_numbers(dataset.train_batch(0, 0, 64, 5))) == {0, 1, 2, 10, 11, 12}
  assert os.path.isdir(tmp_path / "tfds" / "mcvd_jax_cache")
  with pytest.raises(sources.DatasetUnavailableError, match="tfds build bair_robot_pushing_small"):
    data_lib.make_dataset(section(path=str(tmp_path / "elsewhere"), source="tfds"), 64, 3)
