"""Datasets and the host-side input pipeline: uint8 videos [B, T, H, W, C] in [0, 255].

`make_dataset(config.data, image_size, channels)` builds the dataset a config names; today that is
the embedded Stochastic Moving MNIST (`SMMNIST`), made on the fly from real MNIST digits.
"""

from mcvd_jax.data.mnist_digits import Digits
from mcvd_jax.data.mnist_digits import DigitsUnavailableError
from mcvd_jax.data.mnist_digits import load_digits
from mcvd_jax.data.registry import check_dataset_name
from mcvd_jax.data.registry import DatasetUnavailableError
from mcvd_jax.data.registry import KNOWN_DATASETS
from mcvd_jax.data.registry import make_dataset
from mcvd_jax.data.smmnist import generate_videos
from mcvd_jax.data.smmnist import SMMNIST
from mcvd_jax.data.smmnist import Trajectories

__all__ = [
    "Digits", "DigitsUnavailableError", "load_digits", "check_dataset_name",
    "DatasetUnavailableError", "KNOWN_DATASETS", "make_dataset", "generate_videos", "SMMNIST",
    "Trajectories",
]
