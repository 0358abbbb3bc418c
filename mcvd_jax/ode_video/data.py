"""The neural-ODE video family's data: the fixed training set and the validation draw of
deterministic Moving MNIST (mcvd_jax/data/moving_mnist.py) from the `data` section.

`data.val_digits="test"` (the default) draws the validation videos from the held-out MNIST test
digits, so their errors measure digits the model has not seen; "train" reproduces the reference,
whose validation videos reuse the training digits (and so measure motion only).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from mcvd_jax.data import mnist_digits
from mcvd_jax.data.moving_mnist import MovingMNIST
from mcvd_jax.data.smmnist import resize_digits

VAL_DIGITS = ("test", "train")


def moving_mnist(config: Any) -> MovingMNIST:
  """The sets of config.data (digits resized to data.digit_size when it is not MNIST's 28)."""
  d = config.data
  train = mnist_digits.load_digits("train", d.mnist_source, d.mnist_path)
  val = mnist_digits.load_digits("test", d.mnist_source, d.mnist_path) \
      if d.val_digits == "test" else None

  def sized(images: np.ndarray) -> np.ndarray:
    return images if images.shape[1] == d.digit_size else resize_digits(images, d.digit_size)

  where = "held-out test digits" if val is not None else "the training digits (as the reference)"
  return MovingMNIST(
      digits=sized(train.images), val_digits=None if val is None else sized(val.images),
      num_videos=d.num_videos, num_frames=d.num_frames, num_digits=d.num_digits,
      image_size=config.model.image_size, seed=config.seed, num_val_videos=d.num_val_videos,
      description=(f"deterministic Moving MNIST, {d.num_digits} digit(s) of {d.digit_size} px on "
                   f"{config.model.image_size} px, {d.num_videos:,} training videos from "
                   f"{len(train.images):,} MNIST train digits ({train.source}), "
                   f"{d.num_val_videos} validation videos from {where}, {d.num_frames} frames"))


def train_batch_fn(sets: MovingMNIST, train_frames: int) -> Callable:
  """The loop's train_batch(seed, step, batch_size, process_index, process_count): this process's
  slice of batch `step` (epochs over the fixed set, reshuffled each epoch), its first
  `train_frames` frames only (the later ones are never a training target). The seed is the
  sets' own (config.seed)."""

  def train_batch(seed, step, batch_size, process_index=0, process_count=1):
    del seed  # the sets were drawn from config.seed; the epoch order follows it
    return sets.train_batch(step, batch_size, process_index, process_count)[:, :train_frames]

  return train_batch
