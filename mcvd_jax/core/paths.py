"""The one path abstraction for what a run writes and reads in its workdir: a local directory or
a URI of any filesystem etils.epath reaches (gs://, s3://, ...; with TensorFlow installed, epath
goes through tf.io.gfile, the filesystem layer TensorBoard's writer uses too).

Paths stay strings (`os.path.join` composes URIs correctly); what touches the filesystem goes
through these functions. Local paths keep their plain meaning; a URI is never made absolute or
created as a local directory. Writes that a reader must see whole (reports, eval batches) are
atomic: a temporary name, then a rename.
"""

from __future__ import annotations

import io
import json
import os
from typing import IO, Any, Mapping

import numpy as np
from etils import epath


def is_uri(path: str | os.PathLike) -> bool:
  """Whether `path` names a location by URI (gs://bucket/dir) rather than a local path."""
  return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> str:
  """A local path made absolute; a URI as given (without a trailing slash)."""
  path = os.fspath(path)
  return path.rstrip("/") if is_uri(path) else os.path.abspath(path)


def _path(path: str | os.PathLike) -> epath.Path:
  return epath.Path(os.fspath(path))


def makedirs(path: str | os.PathLike) -> None:
  _path(path).mkdir(parents=True, exist_ok=True)


def exists(path: str | os.PathLike) -> bool:
  return _path(path).exists()


def isdir(path: str | os.PathLike) -> bool:
  return _path(path).is_dir()


def listdir(path: str | os.PathLike) -> list[str]:
  """The names in directory `path` (FileNotFoundError when it does not exist)."""
  return sorted(p.name for p in _path(path).iterdir())


def size(path: str | os.PathLike) -> int:
  """The size of file `path` in bytes."""
  return int(_path(path).stat().length)


def open_file(path: str | os.PathLike, mode: str = "r") -> IO:
  return _path(path).open(mode)


def remove(path: str | os.PathLike) -> None:
  _path(path).unlink()


def rmtree(path: str | os.PathLike) -> None:
  _path(path).rmtree()


def replace(source: str | os.PathLike, target: str | os.PathLike) -> None:
  """Renames `source` to `target`, replacing it (a file, or an empty directory)."""
  _path(source).replace(os.fspath(target))


def copytree(source: str | os.PathLike, target: str | os.PathLike) -> None:
  """Copies directory `source` to `target` (across filesystems; `target` must not exist)."""
  makedirs(target)
  for entry in _path(source).iterdir():
    destination = os.path.join(os.fspath(target), entry.name)
    if entry.is_dir():
      copytree(entry, destination)
    else:
      entry.copy(destination)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` whole: to a temporary name, then renamed (a kill leaves the old file or the
  new one, never half of it)."""
  tmp = os.fspath(path) + ".tmp"
  with open_file(tmp, "wb") as f:
    f.write(data)
  replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> None:
  """`text` ending in a newline, written whole (see write_bytes)."""
  write_bytes(path, (text if text.endswith("\n") else text + "\n").encode())


def write_json(path: str | os.PathLike, value: Any, **dumps: Any) -> None:
  write_text(path, json.dumps(value, **dumps))


def read_text(path: str | os.PathLike) -> str:
  with open_file(path, "r") as f:
    return f.read()


def read_json(path: str | os.PathLike) -> Any:
  return json.loads(read_text(path))


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
             compressed: bool = False) -> None:
  """NumPy's .npz of `arrays`, written whole (see write_bytes)."""
  buffer = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
  write_bytes(path, buffer.getvalue())


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array))
  write_bytes(path, buffer.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every array of an .npz file (no pickles)."""
  with open_file(path, "rb") as f:
    data = f.read()
  with np.load(io.BytesIO(data), allow_pickle=False) as npz:
    return {name: npz[name] for name in npz.files}


def load_npy(path: str | os.PathLike) -> np.ndarray:
  with open_file(path, "rb") as f:
    return np.load(io.BytesIO(f.read()), allow_pickle=False)
