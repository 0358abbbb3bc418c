"""The reference's test-clip construction for KTH, Cityscapes and UCF-101, made deterministic.

The reference evaluates on a fixed number of test clips (256) however many test videos there are:
clip i of n takes video round(i / (n - 1) * (N - 1)) of the N candidate videos, so the clips are
spread evenly over the test set (with 120 KTH test videos, most videos give two clips), and a
window of the clip's length starts at a uniformly random frame of that video. The reference draws
that frame from the global NumPy generator each time the loader visits the clip; here it comes
from a generator seeded with TEST_WINDOW_SEED, so every evaluation sees the same clips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TEST_WINDOW_SEED = 0


def spread_positions(num_candidates: int, num_clips: int) -> list[int]:
  """Positions round(i / (num_clips - 1) * (num_candidates - 1)) for i < num_clips: evenly spread
  over [0, num_candidates), first and last included; Python's round (half to even), as the
  reference. One clip takes the first candidate."""
  if num_candidates < 1 or num_clips < 1:
    raise ValueError(f"need at least one candidate video and one clip, got {num_candidates} "
                     f"candidates and {num_clips} clips")
  if num_clips == 1:
    return [0]
  return [round(i / (num_clips - 1) * (num_candidates - 1)) for i in range(num_clips)]


def spread_test_windows(lengths: Sequence[int], num_frames: int, num_videos: int,
                        candidates: Sequence[int] | None = None,
                        seed: int = TEST_WINDOW_SEED) -> list[tuple[int, int]]:
  """(video index, first frame) of `num_videos` deterministic test clips of `num_frames` frames.

  lengths: frames in each video of the split, in the reader's item order.
  candidates: the video indices clips may come from (default: all), in order; those shorter than
    `num_frames` are left out, since they cannot give a whole clip (the reference would have
    returned a shorter clip, which cannot be batched).
  The first frame is uniform over every whole window, 0 .. length - num_frames (the reference
  leaves out the last one, an off-by-one of no consequence that we do not keep).
  """
  if num_frames < 1:
    raise ValueError(f"num_frames must be at least 1, got {num_frames}")
  candidates = range(len(lengths)) if candidates is None else candidates
  usable = [index for index in candidates if lengths[index] >= num_frames]
  if not usable:
    raise ValueError(f"no test video has the {num_frames} frames a test clip needs "
                     f"(the longest has {max(lengths, default=0)})")
  rng = np.random.default_rng(seed)
  windows = []
  for position in spread_positions(len(usable), num_videos):
    video = usable[position]
    first = int(rng.integers(0, lengths[video] - num_frames + 1))
    windows.append((video, first))
  return windows
