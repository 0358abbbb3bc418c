"""Reads SMPL's chumpy pickles (basicModel_*_lbs_10_207_0_v1.0.0.pkl) without chumpy or scipy.

The files are Python 2 pickles (protocol 2) of a dict whose values are numpy arrays, a few strings,
`chumpy.ch.Ch` objects (a wrapper whose state holds the array in `x`), and a
`scipy.sparse.csc_matrix` (J_regressor). Unpickling runs whatever a pickle names, so this reader
resolves only the names those files use, turns the chumpy and scipy-sparse objects into plain
numpy arrays, and refuses every other name before anything runs.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from mcvd_jax.errors import ProjectError


class UnsafePickleError(ProjectError, pickle.UnpicklingError):
  """The pickle names a class or function that an SMPL model file has no reason to contain."""


class _Placeholder:
  """Stands in for a chumpy or scipy-sparse object: records its pickled state, runs nothing."""

  kind = ""

  def __init__(self, *args):
    self.args = args
    self.state = None

  def __setstate__(self, state):
    self.state = state


class _Chumpy(_Placeholder):
  kind = "chumpy"


class _SparseCSC(_Placeholder):
  kind = "csc"


class _SparseCSR(_Placeholder):
  kind = "csr"


def _reconstruct_array(*args):
  """numpy's pickled-array constructor, resolved lazily (numpy 2 moved it to numpy._core)."""
  try:
    from numpy._core.multiarray import _reconstruct
  except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct
  return _reconstruct(*args)


def _scalar(*args):
  try:
    from numpy._core.multiarray import scalar
  except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar
  return scalar(*args)


def _reconstructor(cls, base, state):
  """copy_reg._reconstructor (protocol 0/1 pickles of new-style classes), for our placeholders only."""
  if not (isinstance(cls, type) and issubclass(cls, _Placeholder)) or base is not object:
    raise UnsafePickleError(f"copy_reg._reconstructor may only rebuild chumpy/scipy objects, not {cls}")
  return cls()


_SPARSE_MODULES = ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
                   "scipy.sparse.compressed", "scipy.sparse._compressed")
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("__builtin__", "set"): set,  # chumpy's state holds a set (_dirty_vars)
    ("__builtin__", "frozenset"): frozenset,
    ("__builtin__", "object"): object,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("chumpy.ch", "Ch"): _Chumpy,
}
# The same under their Python 3 names (find_class sees the names as written in the stream).
_ALLOWED.update({("builtins", n): _ALLOWED[("__builtin__", n)] for n in ("set", "frozenset", "object")})
_ALLOWED[("copyreg", "_reconstructor")] = _reconstructor
_ALLOWED.update({(m, "csc_matrix"): _SparseCSC for m in _SPARSE_MODULES})
_ALLOWED.update({(m, "csr_matrix"): _SparseCSR for m in _SPARSE_MODULES})


class RestrictedUnpickler(pickle.Unpickler):
  """An Unpickler whose find_class knows only the names of SMPL's model files."""

  def find_class(self, module: str, name: str) -> Any:
    target = _ALLOWED.get((module, name))
    if target is None:
      raise UnsafePickleError(
          f"refusing to load {module}.{name}: this reader accepts only SMPL model pickles "
          "(numpy arrays, chumpy.ch.Ch, scipy sparse matrices). If this really is an SMPL file, "
          "convert it once to .npz in an environment you trust (e.g. with chumpy installed)")
    return target

  def persistent_load(self, pid):
    raise UnsafePickleError(f"refusing a persistent id {pid!r}: SMPL model pickles have none")


def _sparse_to_dense(obj: _Placeholder) -> np.ndarray:
  state = getattr(obj, "state", None) or {}
  try:
    shape = tuple(int(n) for n in state.get("_shape", state.get("shape")))
    data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
  except (KeyError, TypeError) as e:
    raise ValueError(f"a pickled scipy sparse matrix lacks {e}: not a csc/csr matrix") from e
  compressed_rows = obj.kind == "csr"
  if indptr.size != shape[0 if compressed_rows else 1] + 1:
    raise ValueError(f"a pickled {obj.kind} matrix of shape {shape} has {indptr.size} pointers")
  dense = np.zeros(shape, data.dtype)
  for major in range(indptr.size - 1):
    cols = indices[indptr[major]:indptr[major + 1]]
    vals = data[indptr[major]:indptr[major + 1]]
    if compressed_rows:
      dense[major, cols] = vals
    else:  # csc: indptr runs over columns
      dense[cols, major] = vals
  return dense


def _to_plain(value: Any) -> Any:
  """Replaces the placeholders inside a loaded value by numpy arrays."""
  if isinstance(value, _Chumpy):
    state = getattr(value, "state", None)
    state = state if isinstance(state, dict) else {}
    if "x" not in state:
      raise ValueError("a pickled chumpy object has no 'x' array: only plain chumpy.ch.Ch "
                       "objects (not expressions) can be read without chumpy")
    return np.asarray(_to_plain(state["x"]))
  if isinstance(value, (_SparseCSC, _SparseCSR)):
    return _sparse_to_dense(value)
  if isinstance(value, dict):
    return {k: _to_plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(_to_plain(v) for v in value)
  return value


def loads(data: bytes) -> Any:
  """Unpickles SMPL-style bytes with the restricted reader; chumpy/sparse objects -> ndarrays."""
  # latin1: Python 2 str holds both text and the raw bytes of arrays; numpy expects this.
  return _to_plain(RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load())


def load(path) -> Any:
  """Reads a chumpy pickle file (see loads)."""
  with open(path, "rb") as f:
    return loads(f.read())
