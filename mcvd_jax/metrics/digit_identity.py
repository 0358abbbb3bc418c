"""Digit identity in predicted SMMNIST frames: is the right digit where the real one is?

For every frame after the conditioning frames and every digit whose strokes touch no other
digit's, the other digits' strokes (grown by a pixel) are erased, and the digit's square (digit_size
pixels, top-left at its true position in that frame) is cut out of the frame and classified by
the project's digit classifier (`metrics.digit_classifier`; the square is resized bilinearly to
28 x 28, as the dataset shrank the 28 x 28 MNIST digit to it). The digit counts as kept when the
class is its label. A frame's score is the share kept over all its separate digits (every video
and sample). Touching digits are left out: erasing one would cut strokes of the other, and no
single class is right for both. Erasing uses only where the other digits are, never the shape of
the digit being classified.

The score asks for the right digit in the right place, so it falls both when a prediction loses a
digit's shape and when it puts the digit elsewhere. Three bars come with it: the real frames (the
classifier's accuracy on these squares); other real futures of the same past, with the bounces
after the conditioning frames drawn again (what a model that samples the data distribution
exactly scores: a digit that bounced somewhere else is not at the true position, so this is the
ceiling for a sampling model); and copying the last conditioning frame (what a prediction that
does not move the digits keeps). The model's share is also split in two: digits still moving
straight (no wall met since the conditioning frames, so their place follows from them) and
digits that met a wall (from the frame after it their new direction is a random draw, so the
true place is one of several). Where the digits went is left open by a third score
(`metrics.digit_search`, for one-digit clips): each frame searched for the right digit anywhere,
with the distance it was found from its place in the last given frame.

The command that scores a `--mode=sample` file of predictions is `metrics.sample_identity`; an
evaluation computes the same shares for the model and copy-last with
`--mode=eval --config.eval.metrics=...,identity`.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from mcvd_jax.data.smmnist import Trajectories, render

# A classifier: uint8 [n, s, s, 1] digit squares -> int [n] classes in [0, 9].
Classify = Callable[[np.ndarray], np.ndarray]
INK = 64  # a glyph pixel at least this bright is part of a stroke
DEFAULT_CLASSIFIER = os.path.join(os.path.expanduser("~"), ".cache", "mcvd_jax",
                                  "digit_classifier.npz")


def _dilate(mask: np.ndarray) -> np.ndarray:
  """bool [..., H, W] grown by one pixel in the 8 directions."""
  padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
  h, w = mask.shape[-2:]
  return np.any([padded[..., i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def digit_layout(positions: np.ndarray, glyphs: np.ndarray, image_size: int,
                 ink: int = INK) -> tuple[np.ndarray, np.ndarray]:
  """Where the digits' strokes lie, from their tracks.

  positions int [B, D, T, 2], glyphs uint8 [B, D, s, s] (each digit as drawn) ->
  separate bool [B, D, T]: the digit's strokes (pixels >= `ink`) touch no other digit's strokes
  grown by a pixel; others bool [B, D, T, H, W]: the other digits' strokes grown by a pixel (what
  is erased from a frame before this digit's square is classified: the squares themselves nearly
  always overlap, as SMMNIST's free space is one digit wide).
  """
  positions, glyphs = np.asarray(positions), np.asarray(glyphs)
  b, d = positions.shape[:2]
  index = np.arange(b * d).reshape(b, d)
  flat_glyphs = glyphs.reshape(b * d, *glyphs.shape[2:])
  strokes = np.stack([  # each digit drawn on its own: [B, D, T, H, W]
      render(flat_glyphs, Trajectories(positions[:, k:k + 1], None, index[:, k:k + 1]),
             image_size)[..., 0] >= ink for k in range(d)], axis=1)
  others = np.stack([_dilate(np.delete(strokes, k, axis=1).any(axis=1)) for k in range(d)], 1)
  separate = ~np.any(strokes & others, axis=(-2, -1))
  return separate, others


def digit_squares(videos: np.ndarray, positions: np.ndarray, digit_size: int) -> np.ndarray:
  """videos [B, T, H, W, C], positions int [B, D, T, 2] -> [B, D, T, s, s, C], s = digit_size."""
  videos, positions = np.asarray(videos), np.asarray(positions)
  b, d, t, _ = positions.shape
  offsets = np.arange(digit_size)
  rows = positions[..., 0, None] + offsets  # [B, D, T, s]
  cols = positions[..., 1, None] + offsets
  vid = np.arange(b)[:, None, None, None, None]
  frame = np.arange(t)[None, None, :, None, None]
  return videos[vid, frame, rows[..., :, None], cols[..., None, :]]


def check_inputs(videos: np.ndarray, tracks, first_frame: int) -> None:
  """ValueError naming the mismatch between videos [B, (S,) T, H, W, C] and their tracks."""
  videos = np.asarray(videos)
  positions, labels, glyphs = map(np.asarray, (tracks.positions, tracks.labels, tracks.glyphs))
  if videos.ndim not in (5, 6) or videos.dtype != np.uint8:
    raise ValueError(f"videos must be uint8 [B, T, H, W, C] or [B, S, T, H, W, C], got "
                     f"{videos.dtype} {videos.shape}")
  b, t, h = videos.shape[0], videos.shape[-4], videos.shape[-3]
  if positions.ndim != 4 or positions.shape[0] != b or positions.shape[2] != t:
    raise ValueError(f"positions must be [B={b}, D, T={t}, 2] for videos of shape "
                     f"{videos.shape}, got {positions.shape}: score the test clips the videos "
                     f"were predicted from, with the same number of frames")
  if labels.shape != positions.shape[:2] or glyphs.shape[:2] != positions.shape[:2]:
    raise ValueError(f"labels [B, D] and glyphs [B, D, s, s] must match positions "
                     f"{positions.shape}, got {labels.shape} and {glyphs.shape}")
  if positions.min() < 0 or positions.max() + glyphs.shape[-1] > h:
    raise ValueError(f"digit squares of {glyphs.shape[-1]} pixels at the given positions leave "
                     f"the {h}-pixel frame: are these the tracks of these videos?")
  if not 0 <= first_frame < t:
    raise ValueError(f"first_frame={first_frame} leaves no frame of the {t} to score")


def moving_straight(positions: np.ndarray, first_frame: int) -> np.ndarray:
  """bool [B, D, T - first_frame]: whether each digit is, in every frame from `first_frame` up to
  this one, where the line through its last two given positions puts it (no wall met since the
  given frames: where it is follows from them; after a wall its new direction is a random draw).
  positions: int [B, D, T, 2]; first_frame >= 2 (a velocity needs two given frames)."""
  positions = np.asarray(positions)
  if first_frame < 2:
    raise ValueError(f"first_frame={first_frame}: a digit's velocity needs two given frames")
  last, velocity = positions[:, :, first_frame - 1], (positions[:, :, first_frame - 1] -
                                                      positions[:, :, first_frame - 2])
  ahead = np.arange(1, positions.shape[2] - first_frame + 1)[None, None, :, None]
  on_line = (positions[:, :, first_frame:] == last[:, :, None] + ahead * velocity[:, :, None])
  return np.cumprod(on_line.all(axis=-1), axis=-1).astype(bool)


GROUPS = ("", "straight_", "after_wall_")  # prefixes of identity_counts' keys
ANYWHERE = ("anywhere_digits", "anywhere_kept", "anywhere_moved")  # digit_search.anywhere_counts


def count_names(first_frame: int, num_digits: int) -> tuple[str, ...]:
  """The keys `identity_counts` returns for `first_frame` and clips of `num_digits` digits (the
  split by `moving_straight` needs two given frames; the search for digits anywhere, one digit
  and one given frame)."""
  groups = GROUPS if first_frame >= 2 else GROUPS[:1]
  names = tuple(group + name for group in groups for name in ("digits", "kept"))
  return names + (ANYWHERE if searched(first_frame, num_digits) else ())


def searched(first_frame: int, num_digits: int) -> bool:
  """Whether `identity_counts` searches the frames for the digits anywhere: with one digit per
  clip (with more, SMMNIST's free space being one digit wide, a square found around one digit
  mostly holds strokes of another: on the quick config's two-digit clips the search read 61-79%
  of the real frames' digits against 95-98% at their true place) after at least one given
  frame (the distance moved starts there)."""
  return first_frame >= 1 and num_digits == 1


def identity_counts(videos: np.ndarray, tracks, classify: Classify,
                    first_frame: int) -> dict[str, np.ndarray]:
  """Per video and frame from `first_frame` on, how many separate digits there are and how many
  `classify` gives their label: what batches of an evaluation add up (`kept_shares`).

  videos: uint8 [B, T, H, W, C] or [B, S, T, H, W, C] (S samples of each video, scored against
  the same tracks); tracks: `data.smmnist.DigitTracks` of the B real videos (positions
  [B, D, T, 2], labels [B, D], glyphs [B, D, s, s]).
  Returns int [B, T - first_frame] arrays "digits" and "kept" (summed over the S samples), and
  where first_frame >= 2 the same split by `moving_straight`: "straight_digits",
  "straight_kept" (digits whose place follows from the given frames) and "after_wall_digits",
  "after_wall_kept" (digits that met a wall since: their place is a draw); where `searched`, also
  the digits found anywhere in the frame (`digit_search.anywhere_counts`: "anywhere_digits",
  "anywhere_kept", "anywhere_moved").
  """
  check_inputs(videos, tracks, first_frame)
  videos = np.asarray(videos)
  if videos.ndim == 5:
    videos = videos[:, None]
  b, s = videos.shape[:2]
  positions = np.asarray(tracks.positions)[:, :, first_frame:]
  separate, others = digit_layout(positions, tracks.glyphs, videos.shape[-2])
  scored = videos[:, :, first_frame:]  # [B, S, T', H, W, C]
  size, num_digits = np.shape(tracks.glyphs)[-1], positions.shape[1]
  labels = np.asarray(tracks.labels)
  straight = (moving_straight(tracks.positions, first_frame) if first_frame >= 2
              else None)  # [B, D, T']
  counts = {}

  def add(name, mask):  # mask bool [B, S, T'] -> counts over the samples
    counts[name] = counts.get(name, 0) + mask.sum(axis=1)

  for k in range(num_digits):  # erase the other digits' strokes, cut out this digit's square
    cleaned = np.where(others[:, None, k, ..., None], 0, scored)
    squares = digit_squares(cleaned.reshape(b * s, *scored.shape[2:]),
                            np.repeat(positions[:, k:k + 1], s, axis=0), size)[:, 0]
    squares = squares.reshape(b, s, *squares.shape[1:])  # [B, S, T', s, s, C]
    mask = np.broadcast_to(separate[:, None, k], (b, s, scored.shape[2]))
    hit = np.zeros(mask.shape, bool)
    hit[mask] = np.asarray(classify(squares[mask])) == np.broadcast_to(
        labels[:, None, None, k], mask.shape)[mask]
    add("digits", mask)
    add("kept", hit)
    if straight is not None:
      line = np.broadcast_to(straight[:, None, k], mask.shape)
      add("straight_digits", mask & line)
      add("straight_kept", hit & line)
      add("after_wall_digits", mask & ~line)
      add("after_wall_kept", hit & ~line)
  if searched(first_frame, num_digits):
    from mcvd_jax.metrics.digit_search import anywhere_counts
    counts.update(anywhere_counts(scored, np.asarray(tracks.glyphs),
                                  np.asarray(tracks.positions)[:, :, first_frame - 1], labels,
                                  separate, classify))
  return {name: np.asarray(value, np.int64) for name, value in counts.items()}


def kept_shares(counts: dict[str, np.ndarray]) -> dict:
  """`identity_counts` (of one or several batches, concatenated over videos) -> {"kept": per
  frame share in [0, 1] (nan where no digit is separate), "digits": per frame count}, with
  "straight" and "after_wall" the same where the counts have them, and "anywhere" (digits read
  wherever they are) with "moved_px", the mean distance the kept ones were found from their place
  in the last given frame."""
  def shares(prefix):
    digits = np.asarray(counts[prefix + "digits"]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
      kept = np.asarray(counts[prefix + "kept"]).sum(axis=0) / digits
    return {"kept": kept.tolist(), "digits": digits.tolist()}
  report = shares("")
  for prefix in GROUPS[1:]:
    if prefix + "digits" in counts:
      report[prefix[:-1]] = shares(prefix)
  if "anywhere_digits" in counts:
    report["anywhere"] = shares("anywhere_")
    kept = np.asarray(counts["anywhere_kept"]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
      moved = np.asarray(counts["anywhere_moved"]).sum(axis=0) / kept
    report["anywhere"]["moved_px"] = moved.tolist()
  return report


def kept_by_frame(videos: np.ndarray, tracks, classify: Classify, first_frame: int) -> dict:
  """Per frame from `first_frame` on, the share of separate digits `classify` gives their label
  (`identity_counts`' arguments; `kept_shares`' report)."""
  return kept_shares(identity_counts(videos, tracks, classify, first_frame))


def classifier_classify(params: dict) -> Classify:
  """The project's digit classifier as a `Classify` (squares resized to 28 x 28, bilinearly)."""
  from mcvd_jax.metrics.digit_classifier import classifier_features_and_probs

  def classify(squares: np.ndarray) -> np.ndarray:
    if not len(squares):
      return np.zeros((0,), np.int64)
    _, probs = classifier_features_and_probs(params, squares, pad32=False)
    return np.argmax(probs, axis=-1)
  return classify


def format_table(report: dict) -> str:
  """The report as a Markdown table, one row per source, one column per predicted frame."""
  frames = report["frames"]
  lines = ["| kept (%) | " + " | ".join(str(i + 1) for i in range(len(frames))) + " |",
           "| --- |" + " --- |" * len(frames)]
  def row(name, values, scale=100, digits=0):
    lines.append(f"| {name} | " + " | ".join(
        "-" if k is None or np.isnan(k) else f"{scale * k:.{digits}f}" for k in values) + " |")
  model = report["model"]
  row("model", model["kept"])
  if "straight" in model:
    row("model: digits moving straight", model["straight"]["kept"])
    row("model: digits past a wall", model["after_wall"]["kept"])
  sources = (("copy_last", "copy the last past frame"),
             ("other_future", "another real future (bounces re-drawn)"), ("real", "real frames"))
  for key, name in sources:
    if key in report:  # reports written before the other futures were scored have none
      row(name, report[key]["kept"])
  for key, name in (("model", "model"),) + sources:
    found = report.get(key, {}).get("anywhere")
    if found:  # reports written before digits were searched for have none
      row(f"{name}: right digit anywhere", found["kept"])
      row(f"{name}: pixels the kept digits moved", found["moved_px"], scale=1, digits=1)
  counts = report.get("real", model)  # the digits are the real frames' (an eval has no row)
  if "straight" in counts:
    label, cells = "separate digits (straight / past a wall)", [
        f"{a} / {w}" for a, w in zip(counts["straight"]["digits"], counts["after_wall"]["digits"])]
  else:
    label, cells = "separate digits", [str(n) for n in counts["digits"]]
  lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
