"""Cityscapes reader on fixture PNG sequences in the leftImg8bit_sequence layout."""

import numpy as np
import pytest
from PIL import Image

from mcvd_jax.data import cityscapes, sources

HEIGHT, WIDTH = 16, 32  # the real frames are 1024 x 2048: the same 1:2 shape

# (split folder, city, sequence, first frame) of each fixture snippet. Frankfurt's sequence 0
# holds two snippets far apart, as in the real val set.
SNIPPETS = [("train", "aachen", 0, 0), ("train", "aachen", 1, 0), ("train", "bochum", 0, 0),
            ("train", "frankfurt", 0, 275), ("train", "frankfurt", 0, 556),
            ("test", "berlin", 0, 0), ("test", "bonn", 3, 0),
            ("val", "lindau", 0, 0)]


def level(snippet_index, frame):
  """Fixture brightness of frame `frame` (0..29) of a snippet: the frame order is visible."""
  return 10 + 7 * frame + snippet_index


def frame_image(snippet_index, frame):
  """uint8 [HEIGHT, WIDTH, 3]: the centre square carries the level; the side quarters, which the
  centre crop must remove, are black."""
  image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
  image[:, WIDTH // 4: 3 * WIDTH // 4] = level(snippet_index, frame)
  return image


def png_path(root, split, city, sequence, frame):
  return (root / "leftImg8bit_sequence" / split / city /
          f"{city}_{sequence:06d}_{frame:06d}_leftImg8bit.png")


def write_cityscapes(root, snippets=SNIPPETS):
  for index, (split, city, sequence, first) in enumerate(snippets):
    for t in range(30):
      path = png_path(root, split, city, sequence, first + t)
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(frame_image(index, t)).save(path)
  return root


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
  return write_cityscapes(tmp_path_factory.mktemp("cityscapes"))


def test_module_constants_follow_the_reference():
  assert cityscapes.NAME == "cityscapes" and cityscapes.CHANNELS == 3
  assert cityscapes.TRAIN_FLIP is True and cityscapes.RANDOM_CROP is False
  assert cityscapes.SPLIT_FOLDERS == {"train": "train", "test": "test"}  # val is unused
  assert "leftImg8bit_sequence" in cityscapes.LAYOUT


def test_snippets_are_grouped_by_city_sequence_and_frame_numbers(city_root):
  assert cityscapes.list_items(str(city_root), "train") == [
      "train/aachen/aachen_000000_000000", "train/aachen/aachen_000001_000000",
      "train/bochum/bochum_000000_000000", "train/frankfurt/frankfurt_000000_000275",
      "train/frankfurt/frankfurt_000000_000556"]
  assert cityscapes.list_items(str(city_root), "test") == [
      "test/berlin/berlin_000000_000000", "test/bonn/bonn_000003_000000"]


def test_read_item_gives_30_cropped_resized_frames_in_order(city_root):
  item = "train/frankfurt/frankfurt_000000_000556"
  [video] = cityscapes.read_item(str(city_root), item, 8)
  assert video.name == item
  assert video.frames.dtype == np.uint8 and video.frames.shape == (30, 8, 8, 3)
  for t, frame in enumerate(video.frames):
    # Only the centre square remains: no black from the side quarters reaches the result.
    assert np.all(frame == level(4, t)), t


def test_conversion_is_centre_crop_then_pil_lanczos():
  rows, cols = np.mgrid[:64, :128]
  frame = np.stack([rows * 4, cols * 2, (rows + cols) % 256], -1).astype(np.uint8)
  expected = np.asarray(Image.fromarray(frame[:, 32:96]).resize((16, 16),
                                                                Image.Resampling.LANCZOS))
  np.testing.assert_array_equal(cityscapes.convert_frame(frame, 16), expected)


def test_test_windows_spread_over_the_snippets_deterministically():
  lengths = [30] * 1525  # the test set's snippets
  windows = cityscapes.test_windows(lengths, 7, 256)
  assert windows == cityscapes.test_windows(lengths, 7, 256)
  assert [video for video, _ in windows] == [round(i / 255 * 1524) for i in range(256)]
  assert all(0 <= first <= 23 for _, first in windows)


def test_a_small_loop_over_the_reader(city_root):
  root = str(city_root)
  videos = [video for item in cityscapes.list_items(root, "test")
            for video in cityscapes.read_item(root, item, 16)]
  windows = cityscapes.test_windows([len(video.frames) for video in videos], 10, 4)
  assert [video for video, _ in windows] == [0, 0, 1, 1]
  clips = np.stack([videos[v].frames[first:first + 10] for v, first in windows])
  assert clips.shape == (4, 10, 16, 16, 3)
  assert np.all(np.diff(clips.reshape(4, 10, -1).mean(axis=2), axis=1) == 7)


def test_missing_folder_names_the_path_and_layout(tmp_path):
  with pytest.raises(sources.DatasetUnavailableError) as caught:
    cityscapes.list_items(str(tmp_path), "test")
  message = str(caught.value)
  assert str(tmp_path / "leftImg8bit_sequence" / "test") in message
  assert "leftImg8bit_sequence_trainvaltest.zip" in message


def test_folder_without_frames_is_unavailable(tmp_path):
  (tmp_path / "leftImg8bit_sequence" / "train" / "aachen").mkdir(parents=True)
  with pytest.raises(sources.DatasetUnavailableError, match="has no"):
    cityscapes.list_items(str(tmp_path), "train")


def test_missing_frame_is_a_corrupt_file_error_naming_it(tmp_path):
  root = write_cityscapes(tmp_path, [("train", "ulm", 2, 0)])
  missing = png_path(root, "train", "ulm", 2, 17)
  missing.unlink()
  [item] = cityscapes.list_items(str(root), "train")
  with pytest.raises(sources.CorruptFileError) as caught:
    cityscapes.read_item(str(root), item, 8)
  assert caught.value.path == str(missing)


def test_truncated_png_is_a_corrupt_file_error_naming_it(tmp_path):
  root = write_cityscapes(tmp_path, [("test", "mainz", 0, 0)])
  damaged = png_path(root, "test", "mainz", 0, 5)
  damaged.write_bytes(damaged.read_bytes()[:60])
  with pytest.raises(sources.CorruptFileError) as caught:
    cityscapes.read_item(str(root), "test/mainz/mainz_000000_000000", 8)
  assert caught.value.path == str(damaged) and str(damaged) in str(caught.value)
