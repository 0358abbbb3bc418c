"""SMPL (and the SMPL-H / SMPL-X files AMASS uses) from the user's own licensed model files.

The SMPL licence forbids redistributing the model, so nothing here ships it: the user registers,
downloads the files and points us at them. Accepted files:
- SMPL 1.0.0 (https://smpl.is.tue.mpg.de, "SMPL for Python"): basicModel_f_lbs_10_207_0_v1.0.0.pkl,
  basicmodel_m_lbs_10_207_0_v1.0.0.pkl (lower-case in the official zip; either case is found);
  the neutral basicModel_neutral_lbs_10_207_0_v1.0.0.pkl comes with SMPLify
  (https://smplify.is.tue.mpg.de). These are chumpy pickles, read by `chumpy_pickle` (no chumpy,
  no arbitrary code).
- SMPL-H as AMASS uses it (https://mano.is.tue.mpg.de, "Extended SMPL+H model"):
  smplh/{male,female,neutral}/model.npz; SMPL-X (https://smpl-x.is.tue.mpg.de):
  SMPLX_{MALE,FEMALE,NEUTRAL}.npz. Read with numpy, never with allow_pickle.

Joints are precomputed per file: joint_template = J_regressor . v_template [J, 3] and
joint_shapedirs = J_regressor . shapedirs[..., :num_betas] [J, 3, num_betas] (24 joints for SMPL).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.errors import ProjectError
from mcvd_jax.pose import chumpy_pickle
from mcvd_jax.pose.body_model import BodyModel, Mesh

GENDERS = ("male", "female", "neutral")  # SMPL-IK's gender index: 0, 1, 2
SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand")
_FILE_NAMES = {
    "smpl": {g: f"basicModel_{g[0] if g != 'neutral' else g}_lbs_10_207_0_v1.0.0.pkl" for g in GENDERS},
    "smplh": {g: f"smplh/{g}/model.npz" for g in GENDERS},
    "smplx": {g: f"SMPLX_{g.upper()}.npz" for g in GENDERS},
}
_WHERE = {
    "smpl": "register at https://smpl.is.tue.mpg.de and download 'SMPL for Python' 1.0.0 (the male "
            "and female files); the neutral file comes with SMPLify (https://smplify.is.tue.mpg.de)",
    "smplh": "register at https://mano.is.tue.mpg.de and download the 'Extended SMPL+H model' "
             "(the one AMASS uses)",
    "smplx": "register at https://smpl-x.is.tue.mpg.de and download the SMPL-X model (.npz)",
}
REQUIRED_KEYS = ("v_template", "shapedirs", "J_regressor", "kintree_table", "weights", "f")


class MissingModelFileError(ProjectError, FileNotFoundError):
  """A licensed body-model file the user must download is not where we looked."""


class BadModelFileError(ProjectError, ValueError):
  """A body-model file is there but does not hold what an SMPL-family model file holds."""


def find_model_file(model_dir: str | pathlib.Path, gender: str, family: str = "smpl") -> pathlib.Path:
  """The file of one gender in model_dir (case-insensitive name match), or a clear error."""
  if family not in _FILE_NAMES or gender not in GENDERS:
    raise ValueError(f"family must be one of {sorted(_FILE_NAMES)} and gender one of {GENDERS}")
  model_dir = pathlib.Path(model_dir)
  wanted = _FILE_NAMES[family][gender]
  if model_dir.is_dir():
    for path in model_dir.rglob("*"):
      if path.is_file() and str(path.relative_to(model_dir)).lower().endswith(wanted.lower()):
        return path
  raise MissingModelFileError(
      f"no {family.upper()} {gender} model file '{wanted}' under {model_dir}. Its licence forbids "
      f"shipping it: {_WHERE[family]}, then put the file at {model_dir / wanted}")


def read_model_file(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """The arrays of an SMPL-family .pkl (chumpy pickle, restricted reader) or .npz file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise MissingModelFileError(f"body-model file {path} does not exist; SMPL files are not "
                                f"shipped: {_WHERE['smpl']}")
  try:
    if path.suffix == ".pkl":
      data = chumpy_pickle.load(path)
    elif path.suffix == ".npz":
      with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files if k in REQUIRED_KEYS + ("posedirs",)}
    else:
      raise BadModelFileError(f"{path}: expected an SMPL .pkl or an SMPL-H/SMPL-X .npz file")
  except (chumpy_pickle.UnsafePickleError, BadModelFileError):
    raise
  except Exception as e:  # a truncated or foreign file: say which and why
    raise BadModelFileError(f"{path} could not be read as an SMPL-family model file: {e}") from e
  if not isinstance(data, dict):
    raise BadModelFileError(f"{path} holds a {type(data).__name__}, not the dict of an SMPL model")
  missing = [k for k in REQUIRED_KEYS if k not in data]
  if missing:
    raise BadModelFileError(f"{path} lacks {missing}: not an SMPL-family model file")
  return data


def parents_from_kintree(kintree_table: np.ndarray) -> tuple[int, ...]:
  """kintree_table [2, J] -> parents with -1 at the root (the files store 2**32 - 1 or -1)."""
  parents = np.asarray(kintree_table[0], np.int64).copy()
  parents[0] = -1
  return tuple(int(p) for p in parents)


def model_from_arrays(data: dict[str, np.ndarray], name: str, num_betas: int = 10,
                      with_mesh: bool = False) -> BodyModel:
  """Builds the BodyModel (joints precomputed; mesh only if asked) from a model file's arrays."""
  v_template = np.asarray(data["v_template"], np.float64)
  shapedirs = np.asarray(data["shapedirs"], np.float64)
  regressor = np.asarray(data["J_regressor"], np.float64)
  if shapedirs.ndim != 3 or shapedirs.shape[-1] < num_betas:
    raise BadModelFileError(f"{name}: shapedirs {shapedirs.shape} has fewer than {num_betas} betas")
  shapedirs = shapedirs[..., :num_betas]
  if regressor.shape[1] != v_template.shape[0]:
    raise BadModelFileError(f"{name}: J_regressor {regressor.shape} does not match "
                            f"{v_template.shape[0]} vertices")
  parents = parents_from_kintree(data["kintree_table"])
  j = len(parents)
  names = SMPL_JOINT_NAMES if j == 24 else SMPL_JOINT_NAMES[:22] + tuple(f"joint{i}" for i in range(22, j))
  mesh = None
  if with_mesh:
    posedirs = data.get("posedirs")
    if posedirs is not None:  # [V, 3, P] -> [P, V*3], matching vertices.reshape(V*3)
      posedirs = np.asarray(posedirs, np.float32).reshape(-1, np.shape(posedirs)[-1]).T
    mesh = Mesh(vertex_template=v_template.astype(np.float32),
                vertex_shapedirs=shapedirs.astype(np.float32),
                skin_weights=np.asarray(data["weights"], np.float32),
                faces=np.asarray(data["f"], np.int32), posedirs=posedirs)
  bound = np.full(num_betas, 5.0, np.float32)
  return BodyModel(
      name=name, parents=parents, joint_names=names,
      joint_template=(regressor @ v_template).astype(np.float32),
      joint_shapedirs=np.einsum("jv,vck->jck", regressor, shapedirs).astype(np.float32),
      shape_kind="linear", shape_lower=-bound, shape_upper=bound,
      shape_default=np.zeros(num_betas, np.float32), mesh=mesh)


def load_smpl(path: str | pathlib.Path, num_betas: int = 10, with_mesh: bool = False) -> BodyModel:
  """One SMPL / SMPL-H / SMPL-X model file -> BodyModel (shape input: num_betas betas)."""
  path = pathlib.Path(path)
  return model_from_arrays(read_model_file(path), name=path.name, num_betas=num_betas,
                           with_mesh=with_mesh)


def load_smpl_genders(model_dir: str | pathlib.Path, family: str = "smpl", num_betas: int = 10,
                      with_mesh: bool = False) -> dict[str, BodyModel]:
  """{male, female, neutral} models from model_dir; a missing file says where to get it."""
  return {g: load_smpl(find_model_file(model_dir, g, family), num_betas, with_mesh) for g in GENDERS}


def stack_genders(models: dict[str, BodyModel]) -> tuple[np.ndarray, np.ndarray]:
  """Per-gender joint tables, in GENDERS order: ([3, J, 3] templates, [3, J, 3, K] shapedirs)."""
  return (np.stack([models[g].joint_template for g in GENDERS]),
          np.stack([models[g].joint_shapedirs for g in GENDERS]))


def rest_joints_by_gender(templates: jax.Array, shapedirs: jax.Array, betas: jax.Array,
                          gender: jax.Array) -> jax.Array:
  """Rest joints [B, J, 3] for betas [B, K] and gender [B] int (0 male, 1 female, 2 neutral).

  Gathers each sample's gender table instead of evaluating all three and selecting (SMPL-IK's
  `where`), which gives the same joints for a third of the work.
  """
  return templates[gender] + jnp.einsum("bjck,bk->bjc", shapedirs[gender], betas)
