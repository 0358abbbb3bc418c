"""A body model: a kinematic tree, rest joints as a function of shape, and optionally a skinned mesh.

Joints are linear in K shape coefficients c, and c is a function of the shape input:

  rest_joints(shape) = joint_template + joint_shapedirs . c(shape)       [J, 3] + [J, 3, K] . [K]

- SMPL ("linear" shape): c = the betas themselves (K = 10 for SMPL, 16 for AMASS's SMPL-H);
  joint_template = J_regressor . v_template and joint_shapedirs = J_regressor . shapedirs, so the
  joints equal SMPL's J_regressor applied to the shaped mesh, without building the mesh.
- anny ("phenotype" shape, see `embedded.py`): the shape is 6 phenotypes and c_k is a product of
  piecewise-linear interpolation weights, one per variation target k is defined for.

All functions take the model as a plain Python value (close over it: `jax.jit(functools.partial(
pose_joints, model))`), so its arrays become compile-time constants; the arrays they take are
batched ([B, ...]) and everything is jittable and differentiable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.pose import kinematics


@dataclasses.dataclass(frozen=True, eq=False)
class Mesh:
  """A skinned mesh bound to the model's joints.

  vertex_template:  [V, 3] rest vertices at shape coefficients c = 0;
  vertex_shapedirs: [V, 3, R] shape offsets, applied to c @ shape_projection ([K] -> [R]) when
                    shape_projection [K, R] is given (a truncated basis), else to c (R = K);
  skin_weights:     [V, J], rows summing to 1;
  faces:            [F, 3] int vertex indices (counter-clockwise seen from outside);
  posedirs:         optional [(J-1)*9, V*3] pose-corrective offsets (SMPL's posedirs).
  """

  vertex_template: np.ndarray
  vertex_shapedirs: np.ndarray
  skin_weights: np.ndarray
  faces: np.ndarray
  shape_projection: np.ndarray | None = None
  posedirs: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class BodyModel:
  """A body model (see the module docstring for how joints depend on shape).

  name:            e.g. "smpl-male", "anny-cmu_mb";
  parents:         static tuple, parents[0] = -1, every parent before its children;
  joint_names:     [J] names;
  joint_template:  [J, 3] metres, +Y up;
  joint_shapedirs: [J, 3, K];
  shape_kind:      "linear" (c = shape) or "phenotype";
  shape_lower, shape_upper, shape_default: [S] the documented range of the shape input and its
                   neutral value (SMPL's betas are unbounded: +-5 is the range used in practice);
  phenotype:       for "phenotype" models, the tables that map phenotypes to c (`embedded.py`);
  mesh:            optional Mesh.
  """

  name: str
  parents: tuple[int, ...]
  joint_names: tuple[str, ...]
  joint_template: np.ndarray
  joint_shapedirs: np.ndarray
  shape_kind: str
  shape_lower: np.ndarray
  shape_upper: np.ndarray
  shape_default: np.ndarray
  phenotype: dict | None = None
  mesh: Mesh | None = None

  def __post_init__(self):
    object.__setattr__(self, "parents", kinematics.check_parents(self.parents))
    j = len(self.parents)
    if self.joint_template.shape != (j, 3) or self.joint_shapedirs.shape[:2] != (j, 3):
      raise ValueError(f"{self.name}: {j} joints in parents but joint_template "
                       f"{self.joint_template.shape}, joint_shapedirs {self.joint_shapedirs.shape}")
    if self.shape_kind not in ("linear", "phenotype"):
      raise ValueError(f"{self.name}: shape_kind must be 'linear' or 'phenotype', got {self.shape_kind!r}")

  @property
  def num_joints(self) -> int:
    return len(self.parents)

  @property
  def num_shape(self) -> int:
    """S, the length of the shape input (betas or phenotypes)."""
    return len(self.shape_default)


def phenotype_coefficients(tables: dict, phenotypes: jax.Array) -> jax.Array:
  """Phenotypes [B, S] -> target weights [B, K] (anny's rule, without extrapolation).

  Each phenotype is clipped to its anchor range; each variation v (e.g. "young") gets the hat
  weight max(0, 1 - |p_f - anchor_v| / spacing_f) of its feature f (plain piecewise-linear
  interpolation between neighbouring anchors); target k weighs the product over the variations it
  is defined for (mask [K, V]).
  """
  lower = jnp.asarray(tables["shape_lower"])
  upper = jnp.asarray(tables["shape_upper"])
  p = jnp.clip(phenotypes, lower, upper)[..., tables["variation_feature"]]  # [B, V]
  hat = jnp.maximum(0.0, 1.0 - jnp.abs(p - tables["variation_anchor"]) / tables["variation_spacing"])
  mask = jnp.asarray(tables["target_variations"], hat.dtype)  # [K, V]
  return jnp.prod(hat[..., None, :] * mask + (1.0 - mask), axis=-1)


def shape_coefficients(model: BodyModel, shape: jax.Array) -> jax.Array:
  """Shape input [B, S] -> the K coefficients c [B, K] that joints and mesh are linear in."""
  if shape.shape[-1] != model.num_shape:
    raise ValueError(f"{model.name} takes {model.num_shape} shape values, got shape {shape.shape}")
  if model.shape_kind == "linear":
    return shape
  return phenotype_coefficients(model.phenotype, shape)


def rest_joints(model: BodyModel, shape: jax.Array) -> jax.Array:
  """Shape [B, S] -> rest-pose joints [B, J, 3] (metres)."""
  c = shape_coefficients(model, shape)
  return model.joint_template + jnp.einsum("jck,bk->bjc", model.joint_shapedirs, c)


def pose_joints(model: BodyModel, local_rots: jax.Array, shape: jax.Array,
                translation: jax.Array | None = None) -> kinematics.Posed:
  """Local rotations [B, J, 3, 3] and shape [B, S] -> posed joints [B, J, 3] and global rotations."""
  return kinematics.forward_kinematics(local_rots, rest_joints(model, shape), model.parents,
                                       translation)


def rest_vertices(model: BodyModel, shape: jax.Array) -> jax.Array:
  """Shape [B, S] -> rest-pose mesh vertices [B, V, 3]."""
  mesh = _require_mesh(model)
  c = shape_coefficients(model, shape)
  if mesh.shape_projection is not None:
    c = c @ mesh.shape_projection
  return mesh.vertex_template + jnp.einsum("vcr,br->bvc", mesh.vertex_shapedirs.astype(c.dtype), c)


def pose_vertices(model: BodyModel, local_rots: jax.Array, shape: jax.Array,
                  translation: jax.Array | None = None) -> tuple[jax.Array, kinematics.Posed]:
  """Posed mesh [B, V, 3] by linear blend skinning (with SMPL's pose correctives if the model has
  them), and the posed joints."""
  mesh = _require_mesh(model)
  joints0 = rest_joints(model, shape)
  vertices = rest_vertices(model, shape)
  if mesh.posedirs is not None:
    offsets = kinematics.pose_feature(local_rots) @ mesh.posedirs
    vertices = vertices + offsets.reshape(vertices.shape)
  posed = kinematics.forward_kinematics(local_rots, joints0, model.parents, translation)
  transforms = kinematics.skinning_transforms(posed, joints0)
  weights = jnp.asarray(mesh.skin_weights, vertices.dtype)
  return kinematics.linear_blend_skinning(vertices, weights, transforms), posed


def identity_pose(model: BodyModel, batch: int = 1) -> jax.Array:
  """[B, J, 3, 3] identity local rotations: the rest pose."""
  return jnp.broadcast_to(jnp.eye(3), (batch, model.num_joints, 3, 3))


def _require_mesh(model: BodyModel) -> Mesh:
  if model.mesh is None:
    raise ValueError(f"{model.name} has no mesh (it was loaded joints-only); load it with its "
                     "mesh to pose vertices")
  return model.mesh
