"""Best-of-N selection and the summary statistics the paper reports."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Two-sided 95% quantile of the standard normal: the reference's scipy norm.interval(0.95).
_Z95 = 1.959963984540054


class Summary(NamedTuple):
  """mean and std (population) over test videos, and the half-width of the 95% interval of the
  mean (normal approximation with the standard error, ddof 1), as the reference reports them."""

  mean: float
  std: float
  conf95: float


def best_of_n(values, higher_is_better: bool) -> np.ndarray:
  """[N, S] metric of S samples per test video -> [N] the best sample's value per video (the max
  for PSNR/SSIM, the min for MSE/LPIPS)."""
  values = np.asarray(values, np.float64)
  if values.ndim != 2 or values.shape[1] < 1:
    raise ValueError(f"best_of_n needs [num_videos, samples_per_video], got shape {values.shape}")
  return values.max(axis=1) if higher_is_better else values.min(axis=1)


def summarize(values) -> Summary:
  """[N] per-video values -> Summary. One video has no spread: std 0 and an infinite interval."""
  values = np.asarray(values, np.float64).ravel()
  if values.size == 0:
    raise ValueError("summarize needs at least one value")
  if not np.all(np.isfinite(values)):
    raise ValueError(f"{int(np.sum(~np.isfinite(values)))} of {values.size} values are not finite "
                     f"(a PSNR of identical videos is +inf): check the inputs")
  if values.size == 1:
    return Summary(float(values[0]), 0.0, math.inf)
  sem = values.std(ddof=1) / math.sqrt(values.size)
  return Summary(float(values.mean()), float(values.std()), float(_Z95 * sem))
