"""KTH reader on fixture AVI files in the original layout, <action>/personNN_<action>_dN_uncomp.avi."""

import numpy as np
import pytest

from mcvd_jax.data import kth, sources, spread_clips, video_decode

# (person, action, condition, number of frames) of the fixture files.
FIXTURE_FILES = [(1, "boxing", 1, 9), (2, "walking", 3, 7), (20, "handwaving", 2, 6),
                 (21, "running", 4, 8), (25, "boxing", 2, 10), (21, "boxing", 1, 6)]


def grey_level(person, frame):
  """The fixture's grey level of `frame` of `person`'s video: the frame order is in the pixels."""
  return 10 + 8 * frame + person


def write_kth(root, files=FIXTURE_FILES, codec="ffv1"):
  """KTH-like AVIs (160x120 RGB, grey content, as the originals) under root/<action>/; all six
  action folders exist, as after unzipping the six archives."""
  for action in kth.ACTIONS:
    (root / action).mkdir(parents=True, exist_ok=True)
  for person, action, condition, length in files:
    frames = np.stack([np.full((120, 160, 3), grey_level(person, t), np.uint8)
                       for t in range(length)])
    name = f"person{person:02d}_{action}_d{condition}_uncomp.avi"
    video_decode.write_video(root / action / name, frames, codec=codec)
  return root


@pytest.fixture(scope="module")
def kth_root(tmp_path_factory):
  return write_kth(tmp_path_factory.mktemp("kth"))


def test_module_constants_follow_the_reference():
  assert kth.NAME == "kth" and kth.CHANNELS == 1
  assert kth.TRAIN_FLIP is True and kth.RANDOM_CROP is False
  assert "person<NN>_<action>_d<N>_uncomp.avi" in kth.LAYOUT


def test_split_membership_is_persons_1_to_20_and_21_to_25(kth_root):
  train = kth.list_items(str(kth_root), "train")
  test = kth.list_items(str(kth_root), "test")
  assert train == ["boxing/person01_boxing_d1_uncomp.avi", "walking/person02_walking_d3_uncomp.avi",
                   "handwaving/person20_handwaving_d2_uncomp.avi"]
  # By person, then by path, as the reference's test index.
  assert test == ["boxing/person21_boxing_d1_uncomp.avi", "running/person21_running_d4_uncomp.avi",
                  "boxing/person25_boxing_d2_uncomp.avi"]
  assert {kth.person_of(item) for item in train} <= set(range(1, 21))
  assert {kth.person_of(item) for item in test} <= set(range(21, 26))
  assert kth.list_items(str(kth_root), "test") == test  # deterministic


def test_read_item_gives_grey_square_frames_in_order(kth_root):
  item = "running/person21_running_d4_uncomp.avi"
  [video] = kth.read_item(str(kth_root), item, 64)
  assert video.name == item
  assert video.frames.dtype == np.uint8 and video.frames.shape == (8, 64, 64, 1)
  for t, frame in enumerate(video.frames):
    assert np.all(frame == grey_level(21, t)), t


def test_conversion_is_grey_then_bilinear_squeeze_of_the_whole_frame():
  rows, cols = np.mgrid[:120, :160]
  frame = np.stack([cols % 256, rows * 2, (rows + cols) % 256], -1).astype(np.uint8)[None]
  converted = kth.convert_frames(frame, 64)
  expected = video_decode.resize_bilinear(video_decode.rgb_to_gray(frame), 64, 64)
  np.testing.assert_array_equal(converted[..., 0], expected)
  # The whole 4:3 frame is squeezed (no crop): the left and right edges survive.
  grey = video_decode.rgb_to_gray(frame)[0].astype(int)
  assert abs(int(converted[0, 32, 0, 0]) - grey[60, :2].mean()) <= 3
  assert abs(int(converted[0, 32, -1, 0]) - grey[60, -2:].mean()) <= 3


def test_conversion_matches_opencv_when_it_is_installed(tmp_path):
  cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (an optional cross-check)")
  rows, cols = np.mgrid[:120, :160]
  frames = np.stack([np.stack([(np.sin(cols / 9 + t) * 60 + 120 + rows / 3),
                               (np.cos(rows / 7) * 50 + 100), cols / 2], -1)
                     for t in range(4)]).astype(np.uint8)
  path = tmp_path / "person01_boxing_d1_uncomp.avi"
  video_decode.write_video(path, frames, codec="mpeg4")
  capture = cv2.VideoCapture(str(path))  # the reference's kth_convert.py path
  theirs = []
  while True:
    ok, bgr = capture.read()
    if not ok:
      break
    theirs.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (64, 64)))
  ours = kth.convert_frames(video_decode.read_video(path), 64)[..., 0]
  np.testing.assert_array_equal(ours, np.stack(theirs))


def test_a_divx_like_mpeg4_file_reads_too(tmp_path):
  root = write_kth(tmp_path / "kth", [(22, "jogging", 1, 6)], codec="mpeg4")
  [item] = kth.list_items(str(root), "test")
  [video] = kth.read_item(str(root), item, 64)
  assert video.frames.shape == (6, 64, 64, 1)
  levels = video.frames.reshape(6, -1).mean(axis=1)
  np.testing.assert_allclose(levels, [grey_level(22, t) for t in range(6)], atol=2)


def test_test_windows_follow_the_reference_spread_and_are_deterministic():
  lengths = [300 + 7 * i for i in range(120)]  # KTH has 120 test videos (persons 21-25)
  windows = kth.test_windows(lengths, 20, 256)
  assert windows == kth.test_windows(lengths, 20, 256)
  assert [video for video, _ in windows] == [round(i / 255 * 119) for i in range(256)]
  assert all(0 <= first <= lengths[video] - 20 for video, first in windows)
  assert len({first for _, first in windows}) > 100  # the first frames vary


def test_spread_edge_cases():
  assert spread_clips.spread_positions(120, 1) == [0]
  assert spread_clips.spread_positions(1, 3) == [0, 0, 0]
  assert spread_clips.spread_positions(3, 5) == [0, 0, 1, 2, 2]  # round half to even, as Python
  assert spread_clips.spread_test_windows([30, 5, 30], 30, 4) == [(0, 0), (0, 0), (2, 0), (2, 0)]
  with pytest.raises(ValueError, match="no test video has the 40 frames"):
    kth.test_windows([30, 35], 40, 4)


def test_a_small_training_loop_over_the_reader(kth_root):
  root = str(kth_root)
  videos = [video for item in kth.list_items(root, "test")
            for video in kth.read_item(root, item, 32)]
  windows = kth.test_windows([len(video.frames) for video in videos], 5, 8)
  clips = np.stack([videos[v].frames[first:first + 5] for v, first in windows])
  assert clips.shape == (8, 5, 32, 32, 1) and clips.dtype == np.uint8
  steps = np.diff(clips.reshape(8, 5, -1).mean(axis=2).astype(int), axis=1)
  assert np.all(steps == 8)  # consecutive frames in order


def test_missing_folder_names_the_path_and_layout(tmp_path):
  root = tmp_path / "no_kth_here"
  with pytest.raises(sources.DatasetUnavailableError) as caught:
    kth.list_items(str(root), "train")
  message = str(caught.value)
  assert str(root) in message and "boxing" in message and "uncomp.avi" in message


def test_pointing_at_the_download_folder_suggests_its_raw_subfolder(tmp_path):
  write_kth(tmp_path / "KTH" / "raw", [(3, "boxing", 1, 2)])
  with pytest.raises(sources.DatasetUnavailableError, match="set data.path to"):
    kth.list_items(str(tmp_path / "KTH"), "train")


def test_empty_split_is_unavailable(tmp_path):
  root = write_kth(tmp_path / "kth", [(3, "boxing", 1, 2)])
  assert kth.list_items(str(root), "train") == ["boxing/person03_boxing_d1_uncomp.avi"]
  with pytest.raises(sources.DatasetUnavailableError, match="persons 21-25"):
    kth.list_items(str(root), "test")


def test_truncated_avi_is_a_corrupt_file_error_naming_it(tmp_path):
  root = write_kth(tmp_path / "kth", [(4, "walking", 1, 30)], codec="mpeg4")
  item = "walking/person04_walking_d1_uncomp.avi"
  path = root / item
  path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
  with pytest.raises(sources.CorruptFileError) as caught:
    kth.read_item(str(root), item, 64)
  assert caught.value.path == str(path) and str(path) in str(caught.value)
