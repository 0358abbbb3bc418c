"""Digits found wherever a prediction put them: does each digit keep its identity while it moves?

`digit_identity` asks for the right digit at its true place, so a digit that turned at a wall in
another direction (as likely as the real one: SMMNIST draws a new velocity at every wall) counts
as lost even when it is drawn perfectly. Here each predicted frame is searched for the clip's D
digits wherever they are: the digit_size square holding the most ink, moved onto the centre of mass
of the ink inside it (MNIST centres every digit on its centre of mass, so a found digit sits as the
classifier saw digits in training), classified, erased, then the next square. A digit is kept
anywhere when one of the frame's D squares is read as its label (labels matched one to one).
Scored only where the real digits' strokes are apart (where they touch, no square holds one digit).

Keeping the digits by not moving them also keeps them all (copying the last given frame does), so
the distance each kept digit was found from its place in the last given frame comes with the
share: the real frames give how far digits really go; a frozen prediction gives 0.
"""

from __future__ import annotations

import numpy as np

from mcvd_jax.data.smmnist import Trajectories, render
from mcvd_jax.metrics.digit_identity import digit_squares

CENTRING_STEPS = 3  # moves onto the centre of mass (each a mean-shift step with a square window)


def box_sums(frames: np.ndarray, size: int) -> np.ndarray:
  """float [N, H, W] -> [N, H - size + 1, W - size + 1]: the sum over each size x size square
  (element [n, r, c] is the square with its top-left corner at (r, c))."""
  summed = np.pad(frames.cumsum(axis=1).cumsum(axis=2), ((0, 0), (1, 0), (1, 0)))
  return (summed[:, size:, size:] - summed[:, :-size, size:] - summed[:, size:, :-size]
          + summed[:, :-size, :-size])


def _cut(frames: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
  """frames [N, H, W], corners int [N, 2] -> the squares [N, size, size]."""
  return digit_squares(frames[:, None, :, :, None], corners[:, None, None], size)[:, 0, 0, ..., 0]


def _centred(frames: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
  """Each square moved, CENTRING_STEPS times, so that its centre is on the centre of mass of the
  ink inside it (a square without ink stays): frames [N, H, W], corners int [N, 2] -> int [N, 2]."""
  offsets = np.arange(size, dtype=np.float64)
  limit = np.array(frames.shape[1:]) - size
  for _ in range(CENTRING_STEPS):
    squares = _cut(frames, corners, size)
    mass = squares.sum(axis=(1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    centre = np.stack([(squares.sum(axis=2) * offsets).sum(axis=1) / safe,
                       (squares.sum(axis=1) * offsets).sum(axis=1) / safe], axis=1)
    shift = np.where(mass[:, None] > 0, np.rint(centre - (size - 1) / 2), 0).astype(np.int64)
    corners = np.clip(corners + shift, 0, limit)
  return corners


def find_digits(frames: np.ndarray, num_digits: int, size: int) -> np.ndarray:
  """Where the `num_digits` digits of each frame are, whatever their place.

  frames: [N, H, W, C] or [N, H, W] (grey levels; channels are averaged) -> corners int
  [N, num_digits, 2], top-left (row, col) of each found size x size square, the most inked first.
  Each is the square with the most ink left, centred on its ink's centre of mass; its pixels are
  then erased before the next is searched.
  """
  frames = np.asarray(frames, np.float64)
  if frames.ndim == 4:
    frames = frames.mean(axis=-1)
  n, h, w = frames.shape
  if not 0 < size <= min(h, w):
    raise ValueError(f"digit squares of {size} pixels do not fit {h} x {w} frames")
  left = frames.copy()
  found = []
  rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
  for _ in range(num_digits):
    sums = box_sums(left, size).reshape(n, -1)
    corners = np.stack(np.unravel_index(sums.argmax(axis=1), (h - size + 1, w - size + 1)), 1)
    corners = _centred(left, corners, size)
    found.append(corners)
    inside = ((rows >= corners[:, 0, None, None]) & (rows < corners[:, 0, None, None] + size) &
              (cols >= corners[:, 1, None, None]) & (cols < corners[:, 1, None, None] + size))
    left = np.where(inside, 0.0, left)
  return np.stack(found, axis=1)


def anywhere_counts(scored: np.ndarray, glyphs: np.ndarray, last_given: np.ndarray,
                    labels: np.ndarray, separate: np.ndarray, classify) -> dict[str, np.ndarray]:
  """Digits kept anywhere, per video and frame (what `digit_identity.identity_counts` adds).

  scored: uint8 [B, S, T', H, W, C], the frames to score (S samples of each video); glyphs uint8
  [B, D, s, s], each digit as drawn; last_given int [B, D, 2], their places in the last given
  frame; labels int [B, D]; separate bool [B, D, T'] (`digit_identity.digit_layout`); classify:
  uint8 [n, s, s, C] -> int [n].
  Returns int [B, T'] "anywhere_digits" (the digits of frames whose digits are all apart, over
  the S samples), "anywhere_kept" (those read in the frame) and "anywhere_moved" (for the kept
  ones, the summed distance in pixels, the larger of rows and columns, between the square each
  was read in and the square the search finds for it alone in the last given frame).
  """
  b, s, t = scored.shape[:3]
  d, size = glyphs.shape[1], glyphs.shape[-1]
  frames = scored.reshape(b * s * t, *scored.shape[3:])
  corners = find_digits(frames, d, size)  # [N, D, 2]
  before = _found_alone(glyphs, last_given, scored.shape[-2])  # [B, D, 2]
  squares = digit_squares(frames[:, None], corners[:, :, None], size)  # [N, D, 1, s, s, C]
  squares = squares.reshape(-1, *squares.shape[3:])
  read = np.asarray(classify(squares)).reshape(b, s, t, d)
  corners = corners.reshape(b, s, t, d, 2)
  counted = np.broadcast_to(separate.all(axis=1)[:, None], (b, s, t))  # [B, S, T']
  kept = np.zeros((b, s, t, d), bool)
  moved = np.zeros((b, s, t, d), np.int64)
  unread = np.ones((b, s, t, d), bool)  # found squares not yet matched to a digit
  for k in range(d):  # each digit takes the first unmatched square read as its label
    match = unread & (read == labels[:, None, None, k, None])
    has = match.any(axis=-1)
    first = match.argmax(axis=-1)
    kept[..., k] = has & counted
    unread &= ~(has[..., None] & (np.arange(d) == first[..., None]))
    where = np.take_along_axis(corners, first[..., None, None], axis=3)[..., 0, :]
    distance = np.abs(where - before[:, None, None, k]).max(axis=-1)
    moved[..., k] = np.where(kept[..., k], distance, 0)
  return {"anywhere_digits": (counted.sum(axis=1) * d).astype(np.int64),
          "anywhere_kept": kept.sum(axis=(1, 3)).astype(np.int64),
          "anywhere_moved": moved.sum(axis=(1, 3))}


def _found_alone(glyphs: np.ndarray, places: np.ndarray, image_size: int) -> np.ndarray:
  """Where the search finds each digit drawn alone at its place: glyphs [B, D, s, s], places int
  [B, D, 2] -> int [B, D, 2] (the place moved onto the glyph's centre of mass, as the search
  moves every square it finds)."""
  b, d, size = glyphs.shape[0], glyphs.shape[1], glyphs.shape[-1]
  alone = render(glyphs.reshape(b * d, size, size),
                 Trajectories(places.reshape(b * d, 1, 1, 2), None, np.arange(b * d)[:, None]),
                 image_size)[:, 0]  # [B * D, H, W, 1]
  return find_digits(alone, 1, size).reshape(b, d, 2)
