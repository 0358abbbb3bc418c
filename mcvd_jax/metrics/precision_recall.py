"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
for Assessing Generative Models", arXiv 1904.06991) on feature vectors (Inception-v3 pool
features as FID's, or any other embedding).

The manifold of a set of features is the union of closed balls, one around each of its vectors,
whose radius is that vector's distance to its k-th nearest neighbour within the set (the vector
itself excluded; k = 3 as the paper). Precision is the share of generated vectors inside the real
manifold (are the samples realistic?); recall is the share of real vectors inside the generated
manifold (is the data covered?). A vector on a ball's boundary is inside, as in the authors' code.

Scale: 50,000 x 50,000 sets of 2048-d features are usual. Squared distances are computed in row
blocks in matmul form ||a||² − 2 a·b + ||b||² (float32 at full matmul precision, clamped at 0),
`batch_size` rows against the whole other set at a time, sharded over the devices with
`sharded.map_batches`: memory is about batch_size x N x 4 bytes per block, never N x N. Both sets
are first centred on their joint mean (in float64), which leaves distances unchanged and keeps the
matmul form's cancellation small.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mcvd_jax.metrics.sharded import map_batches

DEFAULT_K = 3
DEFAULT_BATCH_SIZE = 1024  # rows per block: 1024 x 50,000 x 4 bytes = 205 MB of distances


def _squared_distances(rows: jax.Array, ref: jax.Array, ref_sq: jax.Array) -> jax.Array:
  """[B, D], [N, D], [N] -> [B, N] squared Euclidean distances, clamped at 0 (float32)."""
  cross = jnp.dot(rows, ref.T, precision=jax.lax.Precision.HIGHEST)
  rows_sq = jnp.sum(rows * rows, axis=1)
  return jnp.maximum(rows_sq[:, None] - 2.0 * cross + ref_sq[None, :], 0.0)


@functools.lru_cache(maxsize=None)
def _kth_neighbour_fn(k: int):
  """fn((ref, ref_sq), rows [B, D], index [B]) -> [B] squared distance of each row (row `index` of
  ref) to its k-th nearest neighbour in ref, itself excluded. One function per k (map_batches
  caches compilations per function object)."""
  def kth(consts, rows, index):
    ref, ref_sq = consts
    d = _squared_distances(rows, ref, ref_sq)
    d = jnp.where(index[:, None] == jnp.arange(ref.shape[0])[None, :], jnp.inf, d)
    nearest, _ = jax.lax.top_k(-d, k)  # the k smallest distances, negated, largest first
    return -nearest[:, k - 1]
  return kth


def _in_manifold(consts, rows: jax.Array) -> jax.Array:
  """((ref, ref_sq, radii_sq), rows [B, D]) -> bool [B]: within some ref vector's ball."""
  ref, ref_sq, radii_sq = consts
  return jnp.any(_squared_distances(rows, ref, ref_sq) <= radii_sq[None, :], axis=1)


def _check_features(feats: np.ndarray, name: str, k: int) -> None:
  if feats.ndim != 2:
    raise ValueError(f"precision_recall: {name} features must be [N, D], got shape {feats.shape}")
  if feats.shape[0] < k + 1:
    raise ValueError(f"precision_recall: {name} features hold {feats.shape[0]} vectors; the k-th "
                     f"nearest neighbour (k={k}) needs at least k + 1 = {k + 1} (thousands for a "
                     f"meaningful value; 50,000 is usual)")
  if not np.all(np.isfinite(feats)):
    raise ValueError(f"precision_recall: {name} features contain NaN or inf")


def manifold_radii(feats, k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH_SIZE,
                   mesh: Mesh | None = None) -> np.ndarray:
  """[N, D] features -> [N] float32 squared distance of each to its k-th nearest neighbour among
  the others (N >= k + 1). Features should already be centred (see `precision_recall`)."""
  feats = np.asarray(feats, np.float32)
  sq = np.sum(feats * feats, axis=1)
  index = np.arange(feats.shape[0], dtype=np.int32)
  return map_batches(_kth_neighbour_fn(k), (feats, sq), [feats, index], batch_size=batch_size,
                     mesh=mesh)


def share_in_manifold(queries, ref, radii_sq, batch_size: int = DEFAULT_BATCH_SIZE,
                      mesh: Mesh | None = None) -> float:
  """Share of [M, D] `queries` within distance sqrt(radii_sq[j]) of some ref[j] ([N, D], [N])."""
  queries, ref = np.asarray(queries, np.float32), np.asarray(ref, np.float32)
  consts = (ref, np.sum(ref * ref, axis=1), np.asarray(radii_sq, np.float32))
  inside = map_batches(_in_manifold, consts, [queries], batch_size=batch_size, mesh=mesh)
  return float(np.mean(inside))


def precision_recall(real_feats, fake_feats, k: int = DEFAULT_K,
                     batch_size: int = DEFAULT_BATCH_SIZE,
                     mesh: Mesh | None = None) -> tuple[float, float]:
  """(precision, recall) of generated features against real ones.

  Args:
    real_feats: [N, D] features of real images (N >= k + 1).
    fake_feats: [M, D] features of generated images (M >= k + 1), the same D.
    k: the neighbourhood size that sets each ball's radius (the paper's k = 3).
    batch_size: rows per block of distances (rounded up to a multiple of the device count).
    mesh: from `core.sharding.make_mesh` (default: every device).
  Returns:
    precision: share of fake vectors inside the real manifold, in [0, 1].
    recall: share of real vectors inside the fake manifold, in [0, 1].
  """
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
    raise ValueError(f"precision_recall: k must be an integer >= 1, got {k!r}")
  real, fake = np.asarray(real_feats), np.asarray(fake_feats)
  _check_features(real, "real", k)
  _check_features(fake, "fake", k)
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f"precision_recall: real and fake features differ in dimension: "
                     f"{real.shape} and {fake.shape}")
  mean = (real.sum(axis=0, dtype=np.float64) + fake.sum(axis=0, dtype=np.float64)) / (
      len(real) + len(fake))
  real = (real - mean).astype(np.float32)
  fake = (fake - mean).astype(np.float32)
  real_radii = manifold_radii(real, int(k), batch_size, mesh)
  fake_radii = manifold_radii(fake, int(k), batch_size, mesh)
  precision = share_in_manifold(fake, real, real_radii, batch_size, mesh)
  recall = share_in_manifold(real, fake, fake_radii, batch_size, mesh)
  return precision, recall
