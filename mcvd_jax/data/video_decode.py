"""Decode video files to uint8 frames, and the frame conversions the dataset readers share.

Decoding runs the ffmpeg binary that the `imageio-ffmpeg` package ships (no system ffmpeg is
needed) directly rather than through imageio's reader, which ignores ffmpeg's error messages.
ffmpeg writes every decoded frame, in stream order, as a PPM image to a pipe. Any error it
reports (a damaged packet, no video stream), and an AVI or MP4 file shorter than its own header
says (ffmpeg decodes a file cut between two frames without a word), makes the file a
`CorruptFileError`, so that a damaged video never enters the data as a silently shortened clip.

The conversions reproduce the reference's preprocessing without OpenCV:
  - `rgb_to_gray`: OpenCV 4's fixed-point COLOR_BGR2GRAY (KTH, `kth_convert.py`), bit-exact;
  - `resize_bilinear`: OpenCV 4's default `cv2.resize` (INTER_LINEAR in fixed point, no
    anti-aliasing; KTH), bit-exact for downscaling such as KTH's 160x120 -> 64x64;
  - `resize_lanczos`, `resize_short_side`, `centre_crop_square`: PIL's Lanczos resize, and the
    reference's square centre crop (Cityscapes `cityscapes_convert.py`, UCF-101
    `ucf101_convert.py`).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import numpy as np
from PIL import Image

from mcvd_jax.data.sources import CorruptFileError

# ffmpeg's PPM encoder starts every frame with this header (maxval 255 for rgb24).
_PPM_HEADER = re.compile(rb"P6\n(\d+) (\d+)\n255\n")

# OpenCV 4's fixed-point constants (the reference's `opencv-python` is unpinned, and OpenCV 4 was
# current when it converted KTH): grey weights in 1/2**15 for R, G, B (0.299, 0.587, 0.114,
# summing to exactly 2**15), and resize weights in 1/2**11 (its INTER_RESIZE_COEF_BITS).
_GRAY_BITS = 15
_GRAY_WEIGHTS_RGB = (9798, 19235, 3735)
_RESIZE_BITS = 11


def ffmpeg_executable() -> str:
  """Path of the ffmpeg binary from the `imageio-ffmpeg` package (or IMAGEIO_FFMPEG_EXE)."""
  try:
    import imageio_ffmpeg
  except ImportError as err:
    raise ImportError("decoding video files needs the imageio-ffmpeg package, which ships an "
                      "ffmpeg binary: pip install imageio-ffmpeg") from err
  return imageio_ffmpeg.get_ffmpeg_exe()


def read_video(path: str | os.PathLike) -> np.ndarray:
  """All frames of a video file (AVI, MP4, ...) in stream order.

  Returns uint8 [T, H, W, 3] RGB, T >= 1. Every decoded frame is returned once, as OpenCV's
  VideoCapture and imageio do (no frame-rate conversion). Raises FileNotFoundError when `path`
  does not exist, and CorruptFileError naming `path` when ffmpeg reports any error while decoding
  it or it holds no video frame.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video file {path} does not exist")
  _check_container_size(path)
  command = [ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error",
             "-i", path, "-map", "0:v:0", "-fps_mode", "passthrough",
             "-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "-"]
  # ffmpeg's messages go to a file, not a second pipe: a damaged file can print more than a pipe
  # holds while we are still reading the frames. (One blocking read of stdout is also about twice
  # as fast as subprocess.run's polling of both pipes.)
  with tempfile.TemporaryFile() as messages:
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=messages)
    stream = process.stdout.read()
    process.stdout.close()
    status = process.wait()
    messages.seek(0)
    errors = messages.read().decode("utf-8", "replace").strip()
  if status != 0 or errors:
    lines = errors.splitlines()
    more = f" (and {len(lines) - 3} more lines)" if len(lines) > 3 else ""
    summary = "; ".join(lines[:3]) + more
    raise CorruptFileError(path, f"ffmpeg could not decode it (exit status {status}): "
                           f"{summary or 'no message'}")
  return _frames_from_ppm_stream(stream, path)


def _check_container_size(path: str) -> None:
  """CorruptFileError when an AVI or MP4/MOV file is shorter than its own header says.

  ffmpeg decodes a file cut between two frames without any message, returning fewer frames; the
  container's sizes reveal the cut: an AVI's RIFF header holds the size of the whole file, and the
  top-level boxes of an MP4 must each end inside it. Other containers are left to ffmpeg.
  """
  file_size = os.path.getsize(path)
  with open(path, "rb") as file:
    start = file.read(12)
    if len(start) == 12 and start[:4] == b"RIFF" and start[8:12] == b"AVI ":
      declared = int.from_bytes(start[4:8], "little") + 8
      if file_size < declared - 1:  # one byte of slack for a final padding byte
        raise CorruptFileError(path, f"it is truncated: {file_size} bytes where its AVI header "
                               f"declares {declared}")
    elif len(start) == 12 and start[4:8] == b"ftyp":
      offset = 0
      while offset + 8 <= file_size:
        file.seek(offset)
        header = file.read(16)
        box_size = int.from_bytes(header[:4], "big")
        if box_size == 1:  # a 64-bit size follows the type
          box_size = int.from_bytes(header[8:16], "big")
        elif box_size == 0:  # the last box runs to the end of the file
          return
        if box_size < 8:
          raise CorruptFileError(path, f"its MP4 box at byte {offset} has the impossible size "
                                 f"{box_size}")
        offset += box_size
      if offset > file_size:
        raise CorruptFileError(path, f"it is truncated: {file_size} bytes where its MP4 boxes "
                               f"need {offset}")


def _frames_from_ppm_stream(stream: bytes, path: str) -> np.ndarray:
  """uint8 [T, H, W, 3] from concatenated PPM images that all have the first image's size."""
  header = _PPM_HEADER.match(stream)
  if header is None:
    raise CorruptFileError(path, "ffmpeg decoded no video frame from it")
  width, height = int(header.group(1)), int(header.group(2))
  frame_bytes = header.end() + height * width * 3
  if len(stream) % frame_bytes:
    raise CorruptFileError(path, f"ffmpeg's output is not a whole number of {width}x{height} "
                           "frames")
  records = np.frombuffer(stream, np.uint8).reshape(-1, frame_bytes)
  headers = records[:, :header.end()]
  if not np.array_equal(headers, np.broadcast_to(headers[0], headers.shape)):
    raise CorruptFileError(path, "its frames do not all have the same size")
  return records[:, header.end():].reshape(-1, height, width, 3).copy()  # writable, contiguous


def rgb_to_gray(frames: np.ndarray) -> np.ndarray:
  """OpenCV 4's COLOR_BGR2GRAY on uint8 frames, bit-exact: 0.299 R + 0.587 G + 0.114 B, rounded.

  frames: uint8 [..., 3] RGB. Returns uint8 [...].
  """
  red, green, blue = (frames[..., i].astype(np.int32) for i in range(3))
  red_weight, green_weight, blue_weight = _GRAY_WEIGHTS_RGB
  weighted = red * red_weight + green * green_weight + blue * blue_weight  # < 2**23
  return ((weighted + (1 << (_GRAY_BITS - 1))) >> _GRAY_BITS).astype(np.uint8)


def _linear_taps(source_size: int, target_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """OpenCV's INTER_LINEAR taps along one axis: first source index, second source index, and
  the fixed-point weights [target, 2] in 1/2**11. Pixel centres are aligned (half-pixel offset)
  and positions outside the image are clamped to its edge. The arithmetic (a float64 scale, then
  float32 positions and fractions, weights rounded half to even) is OpenCV's, so that the
  weights are bit-identical to its own."""
  scale = 1.0 / (target_size / source_size)  # OpenCV inverts its inverse scale: same rounding
  position = ((np.arange(target_size) + 0.5) * scale - 0.5).astype(np.float32)
  first = np.floor(position).astype(np.int64)
  fraction = position - first.astype(np.float32)
  fraction = np.where(first < 0, np.float32(0), fraction)
  first = np.maximum(first, 0)
  fraction = np.where(first >= source_size - 1, np.float32(0), fraction)
  first = np.minimum(first, source_size - 1)
  second = np.minimum(first + 1, source_size - 1)
  one = np.float32(1 << _RESIZE_BITS)
  weights = np.stack([np.rint((np.float32(1) - fraction) * one), np.rint(fraction * one)], axis=-1)
  return first, second, weights.astype(np.int32)


def resize_bilinear(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """`cv2.resize(frame, (width, height))` (INTER_LINEAR) on uint8 frames, without OpenCV.

  Bilinear with aligned pixel centres and no anti-aliasing filter, in the fixed-point arithmetic
  of OpenCV 4's vectorised x86 code (weights in 1/2048; the vertical pass drops 4 bits, keeps the
  high 16 bits of each product, then rounds away the last 2). Bit-exact with OpenCV for
  downscaling (KTH's 160x120 -> 64x64); when upscaling, a few pixels differ by one grey level.
  frames: uint8 [T, H, W] or [T, H, W, C]. Returns uint8 [T, height, width(, C)].
  """
  rows_a, rows_b, row_weights = _linear_taps(frames.shape[1], height)
  cols_a, cols_b, col_weights = _linear_taps(frames.shape[2], width)
  pixels = frames.astype(np.int32)  # every intermediate below stays under 2**27
  extra = (1,) * (frames.ndim - 3)  # broadcast the weights over a channel axis
  col_a = col_weights[:, 0].reshape((1, 1, width) + extra)
  col_b = col_weights[:, 1].reshape((1, 1, width) + extra)
  horizontal = pixels[:, :, cols_a] * col_a + pixels[:, :, cols_b] * col_b  # in 1/2048
  row_a = row_weights[:, 0].reshape((1, height, 1) + extra)
  row_b = row_weights[:, 1].reshape((1, height, 1) + extra)
  vertical = ((((horizontal[:, rows_a] >> 4) * row_a) >> 16) +
              (((horizontal[:, rows_b] >> 4) * row_b) >> 16))
  return np.clip((vertical + 2) >> 2, 0, 255).astype(np.uint8)


def resize_lanczos(frame: np.ndarray, height: int, width: int) -> np.ndarray:
  """PIL's Lanczos resize (with its anti-aliasing) of one uint8 frame [H, W, 3] or [H, W] to
  [height, width(, 3)]."""
  image = Image.fromarray(frame)
  return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) scaled so that the shorter side is `short_side`; the longer side is
  truncated, as the reference's UCF-101 conversion (320x240 -> 85x64 for 64)."""
  if height <= width:
    return short_side, int(short_side / height * width)
  return int(short_side / width * height), short_side


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
  """Lanczos-resize uint8 [T, H, W, 3] so that min(H, W) becomes `short_side` (aspect kept).

  Returns uint8 [T, H', W', 3]."""
  height, width = short_side_size(frames.shape[1], frames.shape[2], short_side)
  return np.stack([resize_lanczos(frame, height, width) for frame in frames])


def centre_crop_square(frame: np.ndarray) -> np.ndarray:
  """The reference's centre crop of one frame [H, W, ...] to a square of side 2 * (min(H, W) // 2)
  (the whole shorter side when it is even; one pixel less when it is odd)."""
  height, width = frame.shape[:2]
  half = min(height, width) // 2
  top, left = height // 2 - half, width // 2 - half
  return frame[top:top + 2 * half, left:left + 2 * half]


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0,
                codec: str = "ffv1") -> None:
  """Write uint8 RGB frames [T, H, W, 3] as a video file through imageio-ffmpeg.

  The default FFV1 codec (in AVI or MKV) is lossless, so `read_video` returns the frames exactly;
  other codecs ("mjpeg", "mpeg4", "libx264", ...) are lossy. Used by the tests to write fixtures.
  """
  import imageio_ffmpeg

  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  pixel_format = {"ffv1": "bgr0", "png": "rgb24", "mjpeg": "yuvj444p"}.get(codec, "yuv420p")
  quality = ["-qscale:v", "1"] if codec in ("mjpeg", "mpeg4", "libxvid") else []
  writer = imageio_ffmpeg.write_frames(
      os.fspath(path), (frames.shape[2], frames.shape[1]), fps=fps, codec=codec,
      pix_fmt_in="rgb24", pix_fmt_out=pixel_format, macro_block_size=1, quality=None,
      output_params=quality, ffmpeg_log_level="error")
  writer.send(None)  # start ffmpeg
  for frame in frames:
    writer.send(np.ascontiguousarray(frame))
  writer.close()
