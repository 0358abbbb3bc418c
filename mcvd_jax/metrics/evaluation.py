"""Scoring generated videos against real ones with every metric of the paper's tables.

Frame metrics (MSE, PSNR, SSIM, LPIPS) compare each generated sample with its real video over the
frames after the conditioning ones, then keep the best of the S samples per test video (max PSNR
and SSIM, min MSE and LPIPS) and summarise over test videos (mean, std, 95% interval). FVD uses
whole clips, conditioning frames included (the reference prepends them to both sets), and reports
the per-sample-index mean (the paper's FVD) beside the pooled value.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from mcvd_jax.metrics.image_quality import video_mse, video_ssim
from mcvd_jax.metrics.stats import best_of_n, summarize

METRICS = ("mse", "psnr", "ssim", "lpips", "fvd")
HIGHER_IS_BETTER = {"mse": False, "psnr": True, "ssim": True, "lpips": False}


def _check_sets(real: np.ndarray, fake: np.ndarray, cond_frames: int) -> None:
  if real.ndim != 5:
    raise ValueError(f"real videos must be [N, T, H, W, C], got shape {real.shape}")
  if fake.ndim != 6 or fake.shape[0] != real.shape[0] or fake.shape[2:] != real.shape[1:]:
    raise ValueError(f"generated videos must be [N, S, T, H, W, C] matching the real videos "
                     f"{real.shape}, got {fake.shape}")
  if not 0 <= cond_frames < real.shape[1]:
    raise ValueError(f"cond_frames={cond_frames} must leave at least one of the {real.shape[1]} "
                     f"frames to score")


def _per_sample(fn, real01: np.ndarray, fake01: np.ndarray) -> np.ndarray:
  """fn(real [N, T, ...], fake [N, T, ...]) -> [N], applied to every sample: -> [N, S]."""
  return np.stack([np.asarray(fn(real01, fake01[:, s])) for s in range(fake01.shape[1])], axis=1)


def _lpips_per_video(params, real01: np.ndarray, fake01: np.ndarray) -> np.ndarray:
  from mcvd_jax.metrics.lpips import lpips
  n, t = real01.shape[:2]
  frames = lambda v: jnp.asarray(v.reshape(n * t, *v.shape[2:]) * 2.0 - 1.0)  # noqa: E731
  return np.asarray(lpips(params, frames(real01), frames(fake01))).reshape(n, t).mean(axis=1)


def evaluate_video_sets(real: np.ndarray, fake: np.ndarray, *, cond_frames: int = 0,
                        metrics: Sequence[str] = METRICS, binarize: bool = False,
                        lpips_params=None, i3d_params=None, fvd_batch_size: int = 8) -> dict:
  """real: uint8 [N, T, H, W, C]; fake: uint8 [N, S, T, H, W, C] (S samples per real video), both
  including the `cond_frames` conditioning frames first. binarize rounds frames to black/white
  before SSIM (the reference does so for Stochastic Moving MNIST).

  Returns {"num_videos", "samples_per_video", "cond_frames", <metric>: {...}} where frame metrics
  hold the best-of-S summary (mean, std, conf95) and the mean over all samples, and "fvd" holds
  {"mean", "std", "conf95" over sample indices, "pooled"}.
  """
  unknown = sorted(set(metrics) - set(METRICS))
  if unknown:
    raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")
  real, fake = np.asarray(real), np.asarray(fake)
  _check_sets(real, fake, cond_frames)
  report = {"num_videos": int(real.shape[0]), "samples_per_video": int(fake.shape[1]),
            "cond_frames": int(cond_frames)}
  real01 = real[:, cond_frames:].astype(np.float32) / 255.0
  fake01 = fake[:, :, cond_frames:].astype(np.float32) / 255.0
  per_sample = {}
  if "mse" in metrics or "psnr" in metrics:
    mse = _per_sample(video_mse, real01, fake01)
    per_sample["mse"] = mse
    with np.errstate(divide="ignore"):
      per_sample["psnr"] = 10.0 * np.log10(1.0 / mse)
  if "ssim" in metrics:
    per_sample["ssim"] = _per_sample(lambda r, f: video_ssim(r, f, binarize), real01, fake01)
  if "lpips" in metrics:
    if lpips_params is None:
      from mcvd_jax.metrics.lpips import load_lpips_params
      lpips_params = load_lpips_params("alex")
    per_sample["lpips"] = _per_sample(lambda r, f: _lpips_per_video(lpips_params, r, f), real01, fake01)
  for name, values in per_sample.items():
    if name not in metrics:
      continue
    best = summarize(best_of_n(values, HIGHER_IS_BETTER[name]))
    report[name] = {"best_of_samples": best._asdict(), "mean_over_samples": float(np.mean(values))}
  if "fvd" in metrics:
    report["fvd"] = _fvd_report(real, fake, i3d_params, fvd_batch_size)
  return report


def _fvd_report(real: np.ndarray, fake: np.ndarray, i3d_params, batch_size: int) -> dict:
  from mcvd_jax.metrics import fvd
  if real.shape[0] < 2:
    raise ValueError(f"FVD fits a Gaussian to the videos' I3D features: it needs at least 2 real "
                     f"videos (and several hundred for a meaningful value), got {real.shape[0]}; "
                     f"leave fvd out of the metrics")
  params = i3d_params if i3d_params is not None else fvd.load_i3d_params()
  result = fvd.trajectory_mean_fvd(params, real, np.swapaxes(fake, 0, 1), batch_size)
  return {"mean": result.mean, "std": result.std, "conf95": result.conf95, "pooled": result.pooled}


def markdown_table(report: dict) -> str:
  """One-row Markdown table in the column order of the paper's tables."""
  cols, cells = [], []
  if "fvd" in report:
    cols.append("FVD")
    cells.append(f"{report['fvd']['mean']:.1f}")
  for name, label in (("psnr", "PSNR"), ("ssim", "SSIM"), ("lpips", "LPIPS"), ("mse", "MSE")):
    if name in report:
      best = report[name]["best_of_samples"]
      cells.append(f"{best['mean']:.4f} ± {best['conf95']:.4f}")
      cols.append(label)
  header = "| " + " | ".join(cols) + " |"
  return "\n".join([header, "|" + "---|" * len(cols), "| " + " | ".join(cells) + " |"])
