"""Datasets and the host-side input pipeline: uint8 videos [B, T, H, W, C] in [0, 255].

`make_dataset(config.data, image_size, channels)` builds the dataset a config names: the embedded
Stochastic Moving MNIST (`SMMNIST`, made on the fly from real MNIST digits), or a `ClipDataset`
over a dataset the user obtained (BAIR, KTH, Cityscapes, UCF-101), read by its reader module and
decoded once into a memory-mapped frame cache. Both have `train_batch`, `test_videos` and
`description`.
"""

from mcvd_jax.data.clips import ClipDataset
from mcvd_jax.data.mnist_digits import Digits
from mcvd_jax.data.mnist_digits import DigitsUnavailableError
from mcvd_jax.data.mnist_digits import load_digits
from mcvd_jax.data.registry import check_dataset_name
from mcvd_jax.data.registry import KNOWN_DATASETS
from mcvd_jax.data.registry import make_dataset
from mcvd_jax.data.smmnist import generate_videos
from mcvd_jax.data.smmnist import SMMNIST
from mcvd_jax.data.smmnist import Trajectories
from mcvd_jax.data.sources import CorruptFileError
from mcvd_jax.data.sources import DatasetUnavailableError
from mcvd_jax.data.video_cache import CacheDirError

__all__ = [
    "ClipDataset", "Digits", "DigitsUnavailableError", "load_digits", "check_dataset_name",
    "KNOWN_DATASETS", "make_dataset", "generate_videos", "SMMNIST", "Trajectories",
    "CorruptFileError", "DatasetUnavailableError", "CacheDirError",
]
