"""Decode a dataset split once into a uint8 frame cache that later runs memory-map.

A reader (see `sources.py`) decodes one item at a time; decoding BAIR's 44k videos or UCF-101's
13k AVIs takes far longer than a training step, so every split is decoded once, on each host, into
two files in the cache directory (`data.cache_dir`, by default `<data.path>/mcvd_jax_cache`):

  <name>_<split>_<size>.json                  the index (read first): format version, fingerprint
                                              of the source files, image size, frame shape, the
                                              videos' names, offsets and lengths, skipped items
  <name>_<split>_<size>_<fingerprint>.npy     uint8 [sum of T, H, W, C]: every video's frames,
                                              concatenated in index order

Later runs `np.load(..., mmap_mode="r")` the frames, so a process touches only the windows it
reads. The fingerprint hashes (path, size, mtime) of every source file: when the files change, the
cache is rebuilt (with a log line saying why). Both files are written under temporary names and
renamed into place, the index last, so a reader never sees a half-written cache; a lock file
keeps several processes on one host from decoding the same split at once (where the filesystem
supports `flock`; elsewhere they race harmlessly and the last rename wins).

A corrupt item raises `sources.CorruptFileError`, unless `skip_corrupt`: then it is left out,
logged by name, counted, and recorded in the index. A cache built with skipped items refuses to
open without `skip_corrupt`, so a hole never goes unnoticed.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import struct
import time
import uuid
from typing import Any, Iterator, NamedTuple

import numpy as np
from absl import logging

from mcvd_jax.data import sources
from mcvd_jax.errors import ProjectError

FORMAT_VERSION = 1
CACHE_FOLDER = "mcvd_jax_cache"  # inside data.path when data.cache_dir is ""
_NPY_HEADER_BYTES = 128  # fixed, so frames can be written before their count is known
_LOG_EVERY_SECONDS = 30.0


class CacheDirError(ValueError, ProjectError):
  """The cache directory cannot be created or written (the message names data.cache_dir)."""


class SplitCache(NamedTuple):
  """One decoded split. frames: uint8 [total_frames, H, W, C] in [0, 255], memory-mapped (a
  read-only ndarray view of an np.memmap); video i is
  frames[offsets[i]:offsets[i] + lengths[i]]. names: one per video (unique). skipped: dicts
  {item, file, reason} of the items left out as corrupt. index_path: the index file."""
  frames: np.ndarray
  names: tuple[str, ...]
  offsets: np.ndarray
  lengths: np.ndarray
  skipped: tuple[dict, ...]
  index_path: str


def resolve_cache_dir(cache_dir: str, root: str) -> str:
  """`data.cache_dir`, or `<root>/mcvd_jax_cache` when it is empty."""
  return cache_dir if cache_dir else os.path.join(root, CACHE_FOLDER)


def cache_name(reader: Any) -> str:
  """Prefix of the cache files: the reader's CACHE_NAME (a source variant, e.g. BAIR from tfds),
  else its NAME."""
  return getattr(reader, "CACHE_NAME", reader.NAME)


def item_files(reader: Any, root: str, item: str) -> list[str]:
  """The files one item is decoded from: the reader's `item_files(root, item)` when it has one,
  else the item as a path under root (a file, or a directory whose files are all taken)."""
  if hasattr(reader, "item_files"):
    return list(reader.item_files(root, item))
  path = os.path.join(root, item)
  if os.path.isfile(path):
    return [path]
  if os.path.isdir(path):
    return sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
  raise ValueError(f"reader {reader.NAME!r}: item {item!r} is not a file or directory under "
                   f"{root}; the reader must define item_files(root, item) so that the cache can "
                   "tell when its source files change")


def source_fingerprint(reader: Any, root: str, items: list[str], image_size: int) -> str:
  """sha256 (hex) of the reader, the image size and (path, size, mtime) of every source file."""
  digest = hashlib.sha256()
  digest.update(json.dumps([FORMAT_VERSION, cache_name(reader), image_size]).encode())
  for item in items:
    stats = []
    for path in item_files(reader, root, item):
      try:
        st = os.stat(path)
      except OSError as e:
        raise sources.DatasetUnavailableError(f"{path}: cannot read ({e})") from e
      stats.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
    digest.update(json.dumps([item, stats]).encode())
  return digest.hexdigest()


def open_split(reader: Any, root: str, split: str, image_size: int, cache_dir: str,
               skip_corrupt: bool = False) -> SplitCache:
  """The split's cache, decoding the split first when there is no valid cache for these source
  files. cache_dir: the resolved directory (see `resolve_cache_dir`)."""
  sources.check_split(split)
  items = list(reader.list_items(root, split))
  if not items:
    raise sources.DatasetUnavailableError(
        f"data.dataset={reader.NAME!r}: no {split} items under {root}.\n{reader.LAYOUT}")
  fingerprint = source_fingerprint(reader, root, items, image_size)
  index_path = os.path.join(cache_dir, f"{cache_name(reader)}_{split}_{image_size}.json")
  cache = _load_valid(index_path, fingerprint, log_mismatch=True)
  if cache is None:
    _make_cache_dir(cache_dir)
    with _build_lock(index_path):
      cache = _load_valid(index_path, fingerprint)  # another process may have built it
      if cache is None:
        cache = _build(reader, root, split, items, image_size, fingerprint, index_path,
                       skip_corrupt)
  _check_skipped(cache, skip_corrupt)
  return cache


# ------------------------------------------------------------------------------------- reading

def _load_valid(index_path: str, fingerprint: str, log_mismatch: bool = False) -> SplitCache | None:
  """The cache at index_path when it exists, is complete and matches `fingerprint`; else None."""
  if not os.path.exists(index_path):
    return None
  try:
    with open(index_path) as f:
      index = json.load(f)
    if index.get("format_version") != FORMAT_VERSION:
      reason = f"format version {index.get('format_version')} is not {FORMAT_VERSION}"
    elif index["fingerprint"] != fingerprint:
      reason = "the source files changed (path, size or modification time)"
    else:
      return _open_frames(index_path, index)
  except (OSError, ValueError, KeyError, TypeError) as e:  # torn, truncated or foreign files
    reason = f"it cannot be read ({e})"
  if log_mismatch:
    logging.info("rebuilding the frame cache %s: %s", index_path, reason)
  return None


def _open_frames(index_path: str, index: dict) -> SplitCache:
  frames_path = os.path.join(os.path.dirname(index_path), index["frames_file"])
  lengths = np.asarray(index["lengths"], np.int64)
  offsets = np.asarray(index["offsets"], np.int64)
  shape = (int(lengths.sum()), *index["frame_shape"])
  frames = np.load(frames_path, mmap_mode="r")
  if frames.shape != shape or frames.dtype != np.uint8:
    raise ValueError(f"{frames_path} holds {frames.dtype} {frames.shape}, the index says "
                     f"uint8 {shape}")
  # A plain ndarray over the same mapping (its base keeps the memmap open): slices of an
  # np.memmap pay for the subclass on every window read.
  return SplitCache(frames.view(np.ndarray), tuple(index["names"]), offsets, lengths,
                    tuple(index["skipped"]), index_path)


def _check_skipped(cache: SplitCache, skip_corrupt: bool) -> None:
  if not cache.skipped:
    return
  names = ", ".join(s["file"] for s in cache.skipped)
  if not skip_corrupt:
    first = cache.skipped[0]
    raise sources.CorruptFileError(
        first["file"], f"{first['reason']} (recorded in the cache index {cache.index_path}, "
        f"built with data.skip_corrupt=True, which left out {len(cache.skipped)} item(s): "
        f"{names})")
  logging.warning("%s: %d corrupt item(s) were left out when this cache was built: %s",
                  cache.index_path, len(cache.skipped), names)


# ------------------------------------------------------------------------------------- building

def _make_cache_dir(cache_dir: str) -> None:
  """Creates cache_dir and checks that a file can be written there (CacheDirError otherwise)."""
  probe = os.path.join(cache_dir, f".write_test_{os.getpid()}_{uuid.uuid4().hex}")
  try:
    os.makedirs(cache_dir, exist_ok=True)
    with open(probe, "wb"):
      pass
    os.remove(probe)
  except OSError as e:
    raise CacheDirError(
        f"data.cache_dir: cannot write the frame cache to {cache_dir} ({e}). Set "
        f"data.cache_dir to a writable directory with room for the decoded frames (the default, "
        f"\"\", puts it in <data.path>/{CACHE_FOLDER})") from e


@contextlib.contextmanager
def _build_lock(index_path: str) -> Iterator[None]:
  """An exclusive flock on <index>.lock while one process builds; a no-op where flock fails."""
  try:
    import fcntl  # pylint: disable=g-import-not-at-top  (POSIX only)
    handle = open(index_path + ".lock", "a")  # pylint: disable=consider-using-with
  except (ImportError, OSError):
    yield
    return
  with handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as e:  # e.g. some network filesystems
      logging.info("no lock for %s (%s); concurrent builds race, the last rename wins",
                   index_path, e)
    yield


def _npy_header(shape: tuple[int, ...]) -> bytes:
  """A version-1.0 .npy header for uint8 `shape`, padded to exactly _NPY_HEADER_BYTES."""
  text = repr({"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
  body_bytes = _NPY_HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
  if len(text) + 1 > body_bytes:
    raise ValueError(f"shape {shape} does not fit a {_NPY_HEADER_BYTES}-byte .npy header")
  body = text.ljust(body_bytes - 1).encode("latin1") + b"\n"
  return b"\x93NUMPY\x01\x00" + struct.pack("<H", body_bytes) + body


def _check_video(reader: Any, video: sources.Video, image_size: int, item: str,
                 frame_shape: tuple[int, ...] | None) -> None:
  """ValueError naming the reader and item when a decoded video breaks the reader contract."""
  f = video.frames
  where = f"reader {reader.NAME!r}, item {item!r}, video {video.name!r}"
  if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4:
    raise ValueError(f"{where}: frames must be uint8 [T, H, W, C], got "
                     f"{getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}")
  h, w, c = f.shape[1:]
  if c != reader.CHANNELS:
    raise ValueError(f"{where}: {c} channels, the reader declares CHANNELS={reader.CHANNELS}")
  if reader.RANDOM_CROP:
    if min(h, w) < image_size:
      raise ValueError(f"{where}: frames {h}x{w} are smaller than image_size {image_size}")
  elif (h, w) != (image_size, image_size):
    raise ValueError(f"{where}: frames {h}x{w}, expected {image_size}x{image_size}")
  if frame_shape is not None and f.shape[1:] != frame_shape:
    raise ValueError(f"{where}: frames {f.shape[1:]} differ from the split's first video "
                     f"{frame_shape}; every video of a split must share one frame shape")


def _build(reader: Any, root: str, split: str, items: list[str], image_size: int,
           fingerprint: str, index_path: str, skip_corrupt: bool) -> SplitCache:
  """Decodes every item into a new cache (see the module docstring); returns it opened."""
  cache_dir = os.path.dirname(index_path)
  base = os.path.basename(index_path)[:-len(".json")]
  frames_file = f"{base}_{fingerprint[:16]}.npy"
  frames_path = os.path.join(cache_dir, frames_file)
  temp_suffix = f".{os.getpid()}.{uuid.uuid4().hex}.tmp"
  names, offsets, lengths, skipped = [], [], [], []
  frame_shape, total = None, 0
  started = last_log = time.monotonic()
  logging.info("decoding %d %s item(s) of %s from %s into %s (once; later runs memory-map it)",
               len(items), split, reader.NAME, root, frames_path)
  try:
    with open(frames_path + temp_suffix, "wb") as out:
      out.seek(_NPY_HEADER_BYTES)
      for done, item in enumerate(items, 1):
        try:
          videos = reader.read_item(root, item, image_size)
        except sources.CorruptFileError as e:
          if not skip_corrupt:
            raise
          logging.warning("skipping corrupt %s item %s: %s", split, e.path, e.reason)
          skipped.append({"item": item, "file": e.path, "reason": e.reason})
          continue
        for video in videos:
          _check_video(reader, video, image_size, item, frame_shape)
          frame_shape = video.frames.shape[1:]
          out.write(np.ascontiguousarray(video.frames).tobytes())
          names.append(video.name)
          offsets.append(total)
          lengths.append(len(video.frames))
          total += len(video.frames)
        now = time.monotonic()
        if now - last_log >= _LOG_EVERY_SECONDS:
          last_log = now
          eta = (now - started) / done * (len(items) - done)
          logging.info("%s %s cache: %d/%d items, %d videos, %d frames, %d skipped, "
                       "%.0f s elapsed, ~%.0f s to go", reader.NAME, split, done, len(items),
                       len(names), total, len(skipped), now - started, eta)
      if not names:
        raise sources.DatasetUnavailableError(
            f"data.dataset={reader.NAME!r}: none of the {len(items)} {split} items under {root} "
            f"gave a video ({len(skipped)} skipped as corrupt).\n{reader.LAYOUT}")
      if len(set(names)) != len(names):
        raise ValueError(f"reader {reader.NAME!r} gave duplicate video names in {split}")
      out.seek(0)
      out.write(_npy_header((total, *frame_shape)))
      out.flush()
      os.fsync(out.fileno())
    os.replace(frames_path + temp_suffix, frames_path)
    index = {"format_version": FORMAT_VERSION, "dataset": reader.NAME, "split": split,
             "root": root, "image_size": image_size, "fingerprint": fingerprint,
             "num_items": len(items), "frames_file": frames_file,
             "frame_shape": list(frame_shape), "names": names, "offsets": offsets,
             "lengths": lengths, "skipped": skipped}
    with open(index_path + temp_suffix, "w") as f:
      json.dump(index, f)
    os.replace(index_path + temp_suffix, index_path)
  except BaseException:
    for leftover in (frames_path + temp_suffix, index_path + temp_suffix):
      with contextlib.suppress(OSError):
        os.remove(leftover)
    raise
  _remove_stale_frames(cache_dir, base, frames_file)
  logging.info("%s %s cache done in %.0f s: %d videos, %d frames (%.2f GB), %d corrupt item(s) "
               "skipped%s", reader.NAME, split, time.monotonic() - started, len(names), total,
               total * np.prod(frame_shape) / 1e9, len(skipped),
               (": " + ", ".join(s["file"] for s in skipped)) if skipped else "")
  return _open_frames(index_path, index)


def _remove_stale_frames(cache_dir: str, base: str, keep: str) -> None:
  """Frames files of older fingerprints of this split (a process still mapping one keeps reading
  it: on POSIX an unlinked file lives until it is closed)."""
  for path in glob.glob(os.path.join(cache_dir, f"{glob.escape(base)}_*.npy")):
    if os.path.basename(path) != keep:
      with contextlib.suppress(OSError):
        os.remove(path)
