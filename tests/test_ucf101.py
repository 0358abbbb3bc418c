"""UCF-101 reader on fixture AVI files and official-format split lists (ucfTrainTestlist)."""

import numpy as np
import pytest

from mcvd_jax.data import sources, ucf101, video_decode

# The official lists keep UCF-101's own class order, which is not Python's sort order
# ('JumpingJack' before 'JumpRope'); the reader must keep the list order.
CLASSES = ["ApplyEyeMakeup", "JumpingJack", "JumpRope"]


def video_name(class_name, group, clip):
  return f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}.avi"


TRAIN = [video_name(c, g, k) for c in CLASSES for g in (8, 9) for k in (1, 2)]
TEST = [video_name(c, g, k) for c in CLASSES for g in (1, 2) for k in (1, 2, 3, 4)]


def level(index, frame):
  """Fixture brightness of `frame` of the index-th written video: the frame order is visible."""
  return 30 + 11 * frame + 2 * index


def write_ucf(root, size=(24, 32), num_frames=6, train=TRAIN, test=TEST):
  """Videos under root/UCF-101/<Class>/ and split lists (CRLF, as the official files) under
  root/ucfTrainTestlist/. size: (height, width) of the fixture frames."""
  for index, item in enumerate(train + test):
    path = root / ucf101.VIDEO_FOLDER / item
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.stack([np.full(size + (3,), level(index, t), np.uint8) for t in range(num_frames)])
    video_decode.write_video(path, frames)
  lists = root / ucf101.SPLIT_FOLDER
  lists.mkdir(parents=True, exist_ok=True)
  number = ucf101.SPLIT_NUMBER
  train_lines = [f"{item} {CLASSES.index(item.split('/')[0]) + 1}" for item in train]
  (lists / f"trainlist0{number}.txt").write_bytes(("\r\n".join(train_lines) + "\r\n").encode())
  (lists / f"testlist0{number}.txt").write_bytes(("\r\n".join(test) + "\r\n").encode())
  # Another split's lists, which must be ignored.
  (lists / "trainlist01.txt").write_text(f"{test[0]} 1\n")
  (lists / "testlist01.txt").write_text(f"{train[0]}\n")
  return root


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory):
  return write_ucf(tmp_path_factory.mktemp("ucf101"))


def test_module_constants_follow_the_reference():
  assert ucf101.NAME == "ucf101" and ucf101.CHANNELS == 3
  assert ucf101.TRAIN_FLIP is True and ucf101.RANDOM_CROP is True
  assert ucf101.SPLIT_NUMBER == 3  # ucf101_convert.py's default split
  assert "ucfTrainTestlist" in ucf101.LAYOUT and "UCF-101" in ucf101.LAYOUT


def test_split_membership_and_order_come_from_the_official_lists(ucf_root):
  assert ucf101.list_items(str(ucf_root), "train") == TRAIN
  assert ucf101.list_items(str(ucf_root), "test") == TEST
  assert TEST != sorted(TEST)  # the list order was kept, not re-sorted


def test_read_item_resizes_the_short_side_to_image_size(tmp_path):
  root = write_ucf(tmp_path / "ucf", size=(240, 320), num_frames=5, train=TRAIN[:1],
                   test=TEST[:1])
  [video] = ucf101.read_item(str(root), TEST[0], 64)
  assert video.name == TEST[0]
  assert video.frames.dtype == np.uint8 and video.frames.shape == (5, 64, 85, 3)
  for t, frame in enumerate(video.frames):
    assert np.all(frame == level(1, t)), t  # flat frames stay flat under Lanczos, in order


def test_resize_is_pil_lanczos_of_each_frame(tmp_path):
  rows, cols = np.mgrid[:240, :320]
  frame = np.stack([rows % 256, cols % 256, (rows * cols) % 256], -1).astype(np.uint8)
  path = tmp_path / "ucf" / ucf101.VIDEO_FOLDER / TEST[0]
  path.parent.mkdir(parents=True)
  video_decode.write_video(path, np.stack([frame, frame[::-1]]))
  [video] = ucf101.read_item(str(tmp_path / "ucf"), TEST[0], 64)
  from PIL import Image
  expected = np.asarray(Image.fromarray(frame).resize((85, 64), Image.Resampling.LANCZOS))
  np.testing.assert_array_equal(video.frames[0], expected)


def test_test_windows_take_every_tenth_test_video():
  lengths = [40 + i % 7 for i in range(3783)]  # split 3 has 3,783 test videos
  windows = ucf101.test_windows(lengths, 16, 256)
  assert windows == ucf101.test_windows(lengths, 16, 256)
  assert [video for video, _ in windows] == [round(i / 255 * 377) * 10 for i in range(256)]
  assert all(0 <= first <= lengths[video] - 16 for video, first in windows)


def test_test_windows_skip_videos_too_short_for_a_clip():
  lengths = [20] * 30
  lengths[10] = 5
  windows = ucf101.test_windows(lengths, 8, 6)
  assert {video for video, _ in windows} == {0, 20}


def test_a_small_loop_over_the_reader(ucf_root):
  root = str(ucf_root)
  items = ucf101.list_items(root, "test")
  videos = [video for item in items for video in ucf101.read_item(root, item, 32)]
  assert [video.name for video in videos] == items
  windows = ucf101.test_windows([len(video.frames) for video in videos], 4, 5)
  assert {video for video, _ in windows} <= {0, 10}  # 24 test videos: positions 0 and 10
  clips = np.stack([videos[v].frames[first:first + 4] for v, first in windows])
  assert clips.shape == (5, 4, 32, 42, 3)
  means = clips.reshape(5, 4, -1).mean(axis=2)
  np.testing.assert_allclose(np.diff(means, axis=1), 11, atol=1)


def test_missing_split_list_names_its_path(tmp_path):
  with pytest.raises(sources.DatasetUnavailableError) as caught:
    ucf101.list_items(str(tmp_path / "nothing"), "train")
  message = str(caught.value)
  assert str(tmp_path / "nothing" / "ucfTrainTestlist" / "trainlist03.txt") in message
  assert "UCF101.rar" in message


def test_listed_video_missing_on_disk_is_unavailable(tmp_path):
  root = write_ucf(tmp_path / "ucf", train=TRAIN[:2], test=TEST[:2])
  (root / ucf101.VIDEO_FOLDER / TEST[1]).unlink()
  with pytest.raises(sources.DatasetUnavailableError, match=r"1 of the 2 videos .*g01_c02\.avi"):
    ucf101.list_items(str(root), "test")


def test_truncated_avi_is_a_corrupt_file_error_naming_it(tmp_path):
  root = write_ucf(tmp_path / "ucf", num_frames=20, train=TRAIN[:1], test=TEST[:1])
  path = root / ucf101.VIDEO_FOLDER / TEST[0]
  path.write_bytes(path.read_bytes()[:-400])
  with pytest.raises(sources.CorruptFileError) as caught:
    ucf101.read_item(str(root), TEST[0], 64)
  assert caught.value.path == str(path)
