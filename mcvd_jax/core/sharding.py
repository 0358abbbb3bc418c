"""The one mesh every part of the project uses, and the padding that gives batches one shape.

A 1-D mesh with axis 'data' over every device of every process (or a given list): the training
loop shards its batches on it, the metric passes and the evaluation's sampling map over it
(metrics.sharded.map_batches). Imports nothing of the project: the metrics use it too.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: every device of every process). Auto
  axes: the network's reshapes of a batch-sharded input need them on jax >= 0.7."""
  devices = list(devices) if devices is not None else jax.devices()
  return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def pad_rows(x: np.ndarray | None, rows: int) -> np.ndarray | None:
  """x [n, ...] with n <= rows -> [rows, ...] by repeating its last row (None stays None). Every
  batch then has one shape (one compilation), the padding stays inside the inputs' value range,
  and the caller drops the padded rows' results."""
  if x is None or x.shape[0] == rows:
    return x
  if x.shape[0] > rows or x.shape[0] == 0:
    raise ValueError(f"pad_rows: cannot pad {x.shape[0]} rows to {rows}")
  return np.concatenate([x, np.repeat(x[-1:], rows - x.shape[0], axis=0)])
