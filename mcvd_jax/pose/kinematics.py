"""Forward kinematics on a kinematic tree, and linear blend skinning. Pure array functions.

Conventions (SMPL's, which every body model here follows): in the rest pose every joint frame is
aligned with the world axes; joint j's local rotation R_j turns its children about the joint's
rest position; the global transform is T_j = T_parent(j) [R_j | J_j - J_parent(j)] and the root's
is [R_0 | J_0 + translation]. `parents` is a static tuple in which every parent precedes its
children (parents[0] = -1), so one pass in index order visits the tree top-down.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_parents(parents: Sequence[int]) -> tuple[int, ...]:
  """Returns parents as a tuple of ints after checking it is a tree listed top-down."""
  parents = tuple(int(p) for p in parents)
  if not parents or parents[0] != -1:
    raise ValueError(f"joint 0 must be the root (parent -1); got parents {parents[:4]}...")
  bad = [j for j, p in enumerate(parents[1:], 1) if not 0 <= p < j]
  if bad:
    raise ValueError(f"joints {bad} have a parent that does not precede them (or a second root); "
                     "reorder the joints so that every parent comes before its children")
  return parents


class Posed(NamedTuple):
  """What forward kinematics returns.

  joints:      [B, J, 3] world joint positions;
  global_rots: [B, J, 3, 3] world rotation of each joint frame.
  """

  joints: jax.Array
  global_rots: jax.Array


def forward_kinematics(local_rots: jax.Array, rest_joints: jax.Array, parents: Sequence[int],
                       translation: jax.Array | None = None) -> Posed:
  """Local rotations -> global joint transforms.

  local_rots:  [B, J, 3, 3] rotation of each joint relative to its parent (joint 0: global);
  rest_joints: [B, J, 3] joint positions in the rest pose (already shaped);
  parents:     static tuple, parents[0] = -1, parents[j] < j;
  translation: optional [B, 3] added to the root.
  """
  parents = check_parents(parents)
  if local_rots.shape[-3:] != (len(parents), 3, 3) or rest_joints.shape[-2:] != (len(parents), 3):
    raise ValueError(f"{len(parents)} joints expected: local_rots {local_rots.shape} "
                     f"(want [B, {len(parents)}, 3, 3]), rest_joints {rest_joints.shape}")
  parent_index = np.maximum(np.asarray(parents), 0)
  offsets = rest_joints - rest_joints[..., parent_index, :]  # bone vectors; the root keeps J_0
  offsets = offsets.at[..., 0, :].set(rest_joints[..., 0, :])
  if translation is not None:
    offsets = offsets.at[..., 0, :].add(translation)
  rots, trans = [local_rots[..., 0, :, :]], [offsets[..., 0, :]]
  for j in range(1, len(parents)):  # J is small and static: this unrolls under jit
    p = parents[j]
    rots.append(rots[p] @ local_rots[..., j, :, :])
    trans.append(trans[p] + jnp.einsum("...ij,...j->...i", rots[p], offsets[..., j, :]))
  return Posed(joints=jnp.stack(trans, axis=-2), global_rots=jnp.stack(rots, axis=-3))


def skinning_transforms(posed: Posed, rest_joints: jax.Array) -> jax.Array:
  """[B, J, 3, 4] transforms taking a rest-pose point bound to joint j to its posed place.

  A_j = [G_j | t_j - G_j J_j]: undo the rest position, rotate, then put at the posed joint.
  """
  t = posed.joints - jnp.einsum("...jik,...jk->...ji", posed.global_rots, rest_joints)
  return jnp.concatenate([posed.global_rots, t[..., None]], axis=-1)


def linear_blend_skinning(vertices: jax.Array, weights: jax.Array,
                          transforms: jax.Array) -> jax.Array:
  """Rest-pose vertices [B, V, 3], weights [V, J] (rows sum to 1), transforms [B, J, 3, 4] ->
  posed vertices [B, V, 3]: each vertex moved by the weight-blended joint transform."""
  blended = jnp.einsum("vj,bjik->bvik", weights, transforms)
  return jnp.einsum("bvik,bvk->bvi", blended[..., :3], vertices) + blended[..., 3]


def pose_feature(local_rots: jax.Array) -> jax.Array:
  """[B, J, 3, 3] -> [B, (J-1)*9]: (R_j - I) of the non-root joints, flattened row-major; the
  input of SMPL's pose blend shapes (207 = 23 * 9 values for SMPL)."""
  eye = jnp.eye(3, dtype=local_rots.dtype)
  rel = local_rots[..., 1:, :, :] - eye
  return rel.reshape(*rel.shape[:-3], -1)
