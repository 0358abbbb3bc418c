"""Rotations for body models: 6D representation, axis-angle, and a numerically safe geodesic angle.

Matrices act on column vectors (x' = R x) and are [..., 3, 3]. The 6D representation is the
first two ROWS of the matrix, flattened ([..., 6] = R[..., 0, :] ++ R[..., 1, :]), as pytorch3d's
`matrix_to_rotation_6d` and SMPL-IK (its ONNX metadata says `transpose_ortho6d`) use it, so
networks and data converted from the reference keep their meaning.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_EPS = 1e-12


def _safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
  """|x| with a zero (not NaN) gradient at x = 0: sqrt's derivative is infinite at 0."""
  sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(_safe_norm(x, keepdims=True), _EPS)


def rotation_6d_to_matrix(d6: jax.Array) -> jax.Array:
  """[..., 6] (two rows, any scale, not parallel) -> [..., 3, 3] rotation, by Gram-Schmidt.

  Row 0 is the normalised first 3-vector; row 1 the second with its component along row 0
  removed, normalised; row 2 = row 0 x row 1 (so det = +1).
  """
  if d6.shape[-1] != 6:
    raise ValueError(f"a 6D rotation has 6 values in its last axis, got shape {d6.shape}")
  b1 = _normalize(d6[..., :3])
  a2 = d6[..., 3:]
  b2 = _normalize(a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1)
  b3 = jnp.cross(b1, b2)
  return jnp.stack([b1, b2, b3], axis=-2)


def matrix_to_rotation_6d(matrix: jax.Array) -> jax.Array:
  """[..., 3, 3] -> [..., 6]: the first two rows (exact inverse of the above on rotations)."""
  return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def axis_angle_to_matrix(axis_angle: jax.Array) -> jax.Array:
  """[..., 3] axis * angle (radians; SMPL's pose parameters) -> [..., 3, 3], Rodrigues.

  Near angle 0 the sin(t)/t and (1 - cos t)/t^2 factors switch to their Taylor series, so the
  value and its gradient are exact and finite at the zero pose (where SMPL poses start).
  """
  t2 = jnp.sum(axis_angle * axis_angle, axis=-1)[..., None, None]
  small = t2 < 1e-8
  t2_safe = jnp.where(small, 1.0, t2)
  t = jnp.sqrt(t2_safe)
  a = jnp.where(small, 1.0 - t2 / 6.0, jnp.sin(t) / t)
  b = jnp.where(small, 0.5 - t2 / 24.0, (1.0 - jnp.cos(t)) / t2_safe)
  x, y, z = axis_angle[..., 0], axis_angle[..., 1], axis_angle[..., 2]
  zero = jnp.zeros_like(x)
  k = jnp.stack([jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1),
                 jnp.stack([-y, x, zero], -1)], -2)  # cross-product matrix of the axis vector
  eye = jnp.eye(3, dtype=axis_angle.dtype)
  return eye + a * k + b * (k @ k)


def geodesic_angle(r1: jax.Array, r2: jax.Array) -> jax.Array:
  """Angle in [0, pi] of the relative rotation r1^T r2; r1, r2: [..., 3, 3] -> [...].

  Computed as atan2(|sin|, cos) from the skew and trace parts of r1^T r2 instead of
  acos(clip((tr - 1) / 2)): acos' derivative is infinite at +-1, so the reference's clamp-then-acos
  gives inf/NaN gradients when the rotations agree (angle 0) or are opposite (angle pi). Here the
  gradient is finite everywhere (0 at exactly 0 and pi, where the angle has a kink), and the value
  is accurate near 0 and pi, where acos loses half its digits.
  """
  m = jnp.swapaxes(r1, -1, -2) @ r2
  skew = jnp.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1]], axis=-1)  # = 2 sin(angle) * axis
  cos2 = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2] - 1.0  # = 2 cos(angle)
  return jnp.arctan2(_safe_norm(skew), cos2)
