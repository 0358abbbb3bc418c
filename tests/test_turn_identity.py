"""Digit identity where digits turn (video_diffusion/turn_identity.py): the clips are split by
whether a digit turns in the first predicted frame; a sampler that returns the real future scores
as the real frames, one that repeats the last past frame as copy-last; the command samples one
block of the one-digit demo and prints both groups."""

import json

import numpy as np
import pytest

from mcvd_jax.data import smmnist
from mcvd_jax.video_diffusion import turn_identity as ti
from test_demo_model import DEMO_ONE_DIGIT
from test_identity_probe import setup  # noqa: F401  (the module's fixture: dataset, reader)

PAST, FRAMES, CLIPS = 5, 2, 12


def test_clips_split_by_a_turn_in_the_first_predicted_frame():
  line = [[0, 0], [0, 1], [0, 2], [0, 3]]
  turn = [[0, 0], [0, 1], [0, 2], [1, 2]]  # down instead of right at frame 4
  late = [[0, 0], [0, 1], [0, 2], [0, 3], [1, 3]][:4]  # turns after the first predicted frame
  positions = np.array([[line], [turn], [late], [line]])[:, :, :4]
  positions = np.concatenate([positions, positions], axis=1)  # two digits per clip
  positions[3, 1] = turn  # clip 3: one of its two digits turns
  turning, straight = ti.split_by_first_turn(positions, num_past=3)
  np.testing.assert_array_equal(turning, [1, 3])
  np.testing.assert_array_equal(straight, [0, 2])
  with pytest.raises(ValueError, match="two given frames"):
    ti.split_by_first_turn(positions, num_past=1)
  with pytest.raises(ValueError, match="one predicted frame"):
    ti.split_by_first_turn(positions, num_past=4)


def test_a_real_or_frozen_sampler_scores_as_the_real_or_copied_frames(setup):
  _, _, dataset, classify = setup
  clips = dataset.test_videos(PAST + FRAMES, ti.SEARCHED_CLIPS * CLIPS)
  by_past = {clip[:PAST].tobytes(): clip for clip in clips}

  def real_future(past):
    return np.stack([by_past[p.tobytes()] for p in past])

  def frozen(past):
    return np.concatenate([past, np.repeat(past[:, -1:], FRAMES, axis=1)], axis=1)

  exact = ti.turn_identity(dataset, real_future, classify, PAST, FRAMES, CLIPS)
  turning = exact["turning"]
  assert turning["clips"] == CLIPS and exact["straight"]["clips"] == CLIPS
  assert json.dumps(turning["model"]) == json.dumps(turning["real"])  # NaN where no digit
  assert turning["real"]["kept"][0] > 0.9 and turning["real"]["anywhere"]["kept"][0] > 0.9
  # every turning clip's digit is off its line at once; the straight ones are on it
  assert turning["model"]["after_wall"]["digits"][0] == CLIPS
  assert exact["straight"]["model"]["straight"]["digits"][0] == CLIPS
  still = ti.turn_identity(dataset, frozen, classify, PAST, FRAMES, CLIPS)
  assert json.dumps(still["turning"]["model"]) == json.dumps(still["turning"]["copy_last"])
  assert still["turning"]["model"]["kept"][1] < turning["real"]["kept"][1] - 0.3
  table = ti.format_turns(exact)
  assert f"| turning ({CLIPS}) | model |" in table and f"| straight ({CLIPS}) | model |" in table
  assert "frame 2: true place / anywhere" in table


class _StraightClips:
  """A dataset whose digits all move one pixel right per frame, never meeting a wall."""

  def test_videos(self, frames, count):
    return np.zeros((count, frames, 32, 32, 1), np.uint8)

  def test_tracks(self, frames, count):
    positions = np.zeros((count, 1, frames, 2), np.int64)
    positions[..., 1] = np.arange(frames)
    return smmnist.DigitTracks(positions, np.zeros((count, 1), np.int64),
                               np.zeros((count, 1, 16, 16), np.uint8))


def test_clips_without_a_turn_are_named(setup):
  *_, classify = setup
  with pytest.raises(ValueError, match="no digit turns"):
    ti.turn_identity(_StraightClips(), lambda past: past, classify, PAST, FRAMES, CLIPS)


def test_the_command_samples_one_block_of_the_demo(tmp_path, capsys):
  from mcvd_jax.metrics import digit_classifier as dc
  classifier = str(tmp_path / "classifier.npz")
  dc.save_classifier(dc.init_params(0), classifier, {"note": "untrained: the command's plumbing"})
  args = ["--config=configs/smmnist.py:quick1", f"--checkpoint={DEMO_ONE_DIGIT}", "--clips=3",
          f"--classifier={classifier}", "--config.sampling.subsample=2"]
  assert ti.main(args) == 0
  out = capsys.readouterr().out
  assert "| turning (3) | model |" in out and "| turning (3) | copy the last past frame |" in out
  assert "| straight (3) | model |" in out and "frame 1: true place / anywhere" in out
  assert ti.main(args[:1] + [f"--checkpoint={tmp_path / 'none'}"] + args[2:]) == 2
  assert "none" in capsys.readouterr().err
  assert ti.main(args + ["--config.data.dataset=kth"]) == 2
  assert "SMMNIST" in capsys.readouterr().err
