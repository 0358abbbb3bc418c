"""CIFAR-10 (32x32 RGB) from the official python release or a prepared tensorflow-datasets copy.

Two sources, neither of which downloads anything:

- "files": `data.path` holds the official `cifar-10-python.tar.gz` or the `cifar-10-batches-py/`
  folder extracted from it (data.path may also be that folder, or the .tar.gz itself). The five
  `data_batch_<k>` files are the 50,000 training images, `test_batch` the 10,000 test images. Each
  is a pickle written by Python 2 (protocol 2) of a dict {b"batch_label", b"labels",
  b"data": uint8 [10000, 3072], b"filenames"}; a row of `data` is the 1024 red pixels, then the
  1024 green, then the 1024 blue ones, each plane row-major 32x32. The pickles are read with a
  restricted unpickler (NumPy arrays, dicts, lists, bytes and numbers; a file that refers to any
  other class or function is refused, naming the file), straight out of the .tar.gz when that is
  what data.path holds (no extraction to disk).
- "tfds": the `cifar10` builder, prepared beforehand (`tfds build cifar10`); its data directory
  is data.path, or tfds's default ($TFDS_DATA_DIR or ~/tensorflow_datasets) when data.path is "".

"auto" takes the files when they are under data.path, else a prepared tfds copy, else it is an
error that says what to put where.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import zlib
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from absl import logging

from mcvd_jax.data.bair import tfds_data_dir
from mcvd_jax.data.sources import DataConfigError, DatasetUnavailableError
from mcvd_jax.metrics.weight_files import _ArraysOnlyUnpickler

SOURCES = ("auto", "files", "tfds")
IMAGE_SIZE = 32
CHANNELS = 3
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TFDS_NAME = "cifar10"
BATCH_FILES = {"train": tuple(f"data_batch_{k}" for k in range(1, 6)), "test": ("test_batch",)}
_ROW = IMAGE_SIZE * IMAGE_SIZE * CHANNELS  # 3072 bytes per image

LAYOUT = f"""CIFAR-10: data.path must hold the official python release, either
  <data.path>/{ARCHIVE}                  (as downloaded, 163 MB; read without extracting)
or the folder extracted from it
  <data.path>/{FOLDER}/data_batch_1 ... data_batch_5, test_batch
(data.path may also be that folder or the .tar.gz itself). Get it with
  wget {URL} -P <data.path>
Or prepare it for tensorflow-datasets (tfds build {TFDS_NAME} [--data_dir DIR]) and set
--config.data.source=tfds (data.path: that tfds data directory; empty means tfds's default,
$TFDS_DATA_DIR or ~/tensorflow_datasets)."""


class Split(NamedTuple):
  """images: uint8 [N, 32, 32, 3]; labels: int64 [N]; where: what was read, for the log."""
  images: np.ndarray
  labels: np.ndarray
  where: str


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
  """What `_codecs.encode` does in a protocol-2 pickle written by Python 3 (its spelling of a bytes
  object), allowed only for that: latin-1 text to bytes."""
  if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
    raise pickle.UnpicklingError(f"the file calls _codecs.encode({type(text).__name__}, "
                                 f"{encoding!r}); only latin-1 text to bytes is allowed")
  return text.encode("latin1")


class _BatchUnpickler(_ArraysOnlyUnpickler):
  """NumPy arrays, dicts, lists, bytes and numbers, nothing else. Python 2's pickles of the
  official release need nothing beyond the arrays; the same dict re-pickled by Python 3 with
  protocol 2 spells its bytes as `_codecs.encode(text, "latin1")`, which maps to `_latin1_bytes`."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("_codecs", "encode"):
      return _latin1_bytes
    return super().find_class(module, name)


def read_batch(stream: BinaryIO, where: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [n, 32, 32, 3], labels int64 [n]) of one batch pickle; `where` names the file
  in errors (DatasetUnavailableError: unreadable, truncated, foreign classes, wrong content)."""
  def bad(problem: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(f"CIFAR-10 batch file {where}: {problem}. Re-download "
                                   f"{ARCHIVE} from {URL}")
  try:
    batch = _BatchUnpickler(stream, encoding="bytes").load()
  except pickle.UnpicklingError as e:
    raise bad(f"refused or corrupt pickle ({e})") from e
  except (EOFError, OSError, tarfile.TarError, zlib.error) as e:  # truncated file or gzip stream
    raise bad(f"cannot be read, truncated? ({e})") from e
  except (ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
    raise bad(f"corrupt pickle ({type(e).__name__}: {e})") from e
  if not isinstance(batch, dict) or b"data" not in batch:
    keys = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
    raise bad(f"holds {keys}, expected a dict with b'data' and b'labels'")
  data = batch[b"data"]
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or \
      data.shape[1] != _ROW or not len(data):
    raise bad(f"b'data' is {getattr(data, 'dtype', type(data).__name__)} "
              f"{getattr(data, 'shape', '')}, expected uint8 [n, {_ROW}] (rows of 1024 R, "
              f"1024 G, 1024 B)")
  labels = np.asarray(batch.get(b"labels", []), np.int64)
  if labels.shape != (len(data),) or labels.min() < 0 or labels.max() > 9:
    raise bad(f"b'labels' has shape {labels.shape} (values {labels.min() if labels.size else '-'}"
              f"..{labels.max() if labels.size else '-'}) for {len(data)} images; expected one "
              f"label in 0..9 per image")
  # Planes first: [n, 3, 32, 32] -> channels last.
  images = data.reshape(-1, CHANNELS, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


# -------------------------------------------------------------------------------- original files

def find_files(path: str) -> tuple[str, str] | None:
  """("folder", dir) or ("archive", file) of the official release under data.path, else None."""
  if not path:
    return None
  if os.path.isfile(path) and path.endswith((".tar.gz", ".tgz")):
    return "archive", path
  for folder in (os.path.join(path, FOLDER), path):
    if any(os.path.isfile(os.path.join(folder, f)) for f in BATCH_FILES["train"] + ("test_batch",)):
      return "folder", folder
  archive = os.path.join(path, ARCHIVE)
  return ("archive", archive) if os.path.isfile(archive) else None


def _concat(parts: list[tuple[np.ndarray, np.ndarray]], where: str) -> Split:
  return Split(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), where)


def read_folder(folder: str, split: str) -> Split:
  """The split's batches from the extracted cifar-10-batches-py folder."""
  missing = [f for f in BATCH_FILES[split] if not os.path.isfile(os.path.join(folder, f))]
  if missing:
    raise DatasetUnavailableError(f"CIFAR-10: {folder} lacks {', '.join(missing)} (the {split} "
                                  f"images).\n{LAYOUT}")
  parts = []
  for name in BATCH_FILES[split]:
    path = os.path.join(folder, name)
    with open(path, "rb") as f:
      parts.append(read_batch(f, path))
  return _concat(parts, f"{FOLDER} at {folder}")


def read_archive(archive: str, split: str) -> Split:
  """The split's batches read straight out of cifar-10-python.tar.gz (one pass, no extraction)."""
  wanted = {f"{FOLDER}/{name}": name for name in BATCH_FILES[split]}
  found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  try:
    with tarfile.open(archive, "r:gz") as tar:
      for member in tar:
        name = wanted.get(member.name.lstrip("./"))
        if name is not None and member.isfile():
          found[name] = read_batch(tar.extractfile(member), f"{archive}:{member.name}")
          if len(found) == len(wanted):
            break
  except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
    raise DatasetUnavailableError(f"CIFAR-10 archive {archive} cannot be read, truncated or not "
                                  f"a .tar.gz? ({e}). Re-download it from {URL}") from e
  missing = [n for n in BATCH_FILES[split] if n not in found]
  if missing:
    raise DatasetUnavailableError(
        f"CIFAR-10 archive {archive} has no {', '.join(f'{FOLDER}/{n}' for n in missing)} (the "
        f"{split} images); is it the python release {ARCHIVE}?\n{LAYOUT}")
  return _concat([found[n] for n in BATCH_FILES[split]], f"{ARCHIVE} at {archive}")


# ------------------------------------------------------------------------------ tensorflow-datasets

def _import_tfds():
  """tensorflow_datasets, or None when it is not installed (an optional dependency)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tfds


def tfds_prepared(path: str) -> bool:
  """Whether tfds is installed and cifar10 is prepared in its data directory (never downloads)."""
  data_dir = tfds_data_dir(path)
  if not os.path.isdir(os.path.join(data_dir, TFDS_NAME)):
    return False
  tfds = _import_tfds()
  return tfds is not None and bool(tfds.builder(TFDS_NAME, data_dir=data_dir).is_prepared())


def read_tfds(path: str, split: str) -> Split:
  """The split from a prepared tfds cifar10 (data directory: data.path or tfds's default)."""
  data_dir = tfds_data_dir(path)
  tfds = _import_tfds()
  if tfds is None:
    raise DatasetUnavailableError("CIFAR-10 with data.source='tfds' needs tensorflow-datasets: "
                                  "pip install tensorflow-datasets && tfds build cifar10")
  if not tfds_prepared(path):
    raise DatasetUnavailableError(
        f"CIFAR-10: {TFDS_NAME} is not prepared in the tfds data directory {data_dir}, and "
        f"nothing is downloaded at run time: run `tfds build {TFDS_NAME} --data_dir {data_dir}`, "
        f"or use the original files.\n{LAYOUT}")
  data = tfds.as_numpy(tfds.load(TFDS_NAME, split=split, data_dir=data_dir, download=False,
                                 batch_size=-1))
  images = np.asarray(data["image"])
  if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, CHANNELS):
    raise DatasetUnavailableError(f"tfds {TFDS_NAME} {split} in {data_dir} holds images "
                                  f"{images.dtype} {images.shape}, expected uint8 [N, 32, 32, 3]")
  labels = np.asarray(data.get("label", np.zeros(len(images))), np.int64)
  return Split(images, labels, f"tfds {TFDS_NAME} in {data_dir}")


# ------------------------------------------------------------------------------------- choosing

def resolve_source(data: Any) -> str:
  """"files" or "tfds" for `data.source` (auto: the files when they are under data.path, else a
  prepared tfds copy, else "files", whose reader says what is missing)."""
  source = getattr(data, "source", "auto")
  if source not in SOURCES:
    raise DataConfigError(f"--config.data.source={source!r} is not one of {SOURCES} for "
                          f"data.dataset='cifar10'")
  if source != "auto":
    return source
  path = getattr(data, "path", "")
  if find_files(path) is not None:
    return "files"
  if tfds_prepared(path):
    logging.info("CIFAR-10 source auto -> tfds (no release files under data.path=%r)", path)
    return "tfds"
  return "files"


def load_split(data: Any, split: str) -> Split:
  """The CIFAR-10 `split` ("train" or "test") from the source `data.source` picks."""
  if split not in BATCH_FILES:
    raise ValueError(f"CIFAR-10 split {split!r} is not one of {tuple(BATCH_FILES)}")
  path = getattr(data, "path", "")
  source = resolve_source(data)
  if source == "tfds":
    return read_tfds(path, split)
  found = find_files(path)
  if found is None:
    where = (f"data.path={path!r} holds neither {FOLDER}/ nor {ARCHIVE}" if path else
             "data.path is not set")
    if getattr(data, "source", "auto") == "auto":
      where += f" and tfds has no prepared {TFDS_NAME} in {tfds_data_dir(path)}"
    raise DatasetUnavailableError(f"CIFAR-10: {where}. Pass --config.data.path=/path/to/cifar10 "
                                  f"with the files below.\n{LAYOUT}")
  kind, location = found
  return read_folder(location, split) if kind == "folder" else read_archive(location, split)
