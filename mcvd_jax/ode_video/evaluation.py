"""`--mode=eval` of the neural-ODE video family: frame errors of the validation videos through the
shared evaluation runner (resumable batches, fingerprints, reports).

The paper reports no numbers (its figures only); this scores what its figures show. For each of
`eval.num_videos` validation videos the model is given the first `data.train_frames` frames and
decodes every frame: the report gives the mean squared error ([0, 1] units) and PSNR of the
reconstructed frames and of the extrapolated ones, per frame, beside the baseline that repeats the
last given frame (what a model that learned no motion would score). Scoring on MCVD's protocols
(FVD, SSIM, LPIPS) is a later step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mcvd_jax.core.eval_runner import EvalJob, Evaluation, config_fingerprint
from mcvd_jax.core.weights import load_weights
from mcvd_jax.ode_video.config import Checked
from mcvd_jax.ode_video.model import init_params

JOB = "moving_mnist_val"


def psnr(mse: np.ndarray) -> np.ndarray:
  """Per-frame PSNR in dB of [0, 1] images from their mean squared errors (capped at 100 dB for
  exact frames)."""
  return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))


def summarize(arrays: dict[str, np.ndarray], train_frames: int) -> dict:
  """Per-frame errors [N, T] of the model ("mse") and of the copy-last baseline -> the report."""
  def part(errors, frames):
    chosen = errors[:, frames]
    return {"mse": float(chosen.mean()), "psnr": float(psnr(chosen).mean())} if chosen.size else None

  out = {"num_videos": int(arrays["mse"].shape[0])}
  for name, key in (("model", "mse"), ("baseline_copy_last", "baseline_mse")):
    errors = arrays[key]
    later = slice(train_frames, errors.shape[1])
    out[name] = {"reconstruction": part(errors, slice(0, train_frames)),
                 "extrapolation": part(errors, later),
                 "mse_per_frame": [float(e) for e in errors.mean(axis=0)]}
  return out


def markdown(entry: dict) -> str:
  r, k = entry["results"], entry["given_frames"]
  lines = [f"## {JOB}: {r['num_videos']} validation videos, {k} frames given, "
           f"{entry['num_frames'] - k} extrapolated", "",
           "| | MSE given frames | PSNR given frames | MSE extrapolated | PSNR extrapolated |",
           "|---|---|---|---|---|"]
  for name, label in (("model", "model"), ("baseline_copy_last", "baseline: repeat the last "
                                                                 "given frame")):
    cells = []
    for part in ("reconstruction", "extrapolation"):
      values = r[name][part]
      cells += (["–", "–"] if values is None
                else [f"{values['mse']:.4f}", f"{values['psnr']:.2f}"])
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines + [""])


def make_evaluation(config: Any, checked: Checked, workdir: str,
                    checkpoint: str | None = None) -> Evaluation:
  """The family's Evaluation (Family.evaluation): the checkpoint's `sampling.weights` (EMA by
  default) on the first eval.num_videos validation videos."""
  from mcvd_jax.ode_video.data import moving_mnist
  from mcvd_jax.ode_video.training import frame_errors, make_predictor
  weights = load_weights(workdir, checkpoint, lambda key: init_params(checked.model, key),
                         config.seed, weights=config.sampling.weights)
  sets = moving_mnist(config)
  clips = sets.val_videos[:config.eval.num_videos]
  run, k = make_predictor(checked), checked.train_frames

  def compute_batch(first: int, count: int) -> dict[str, np.ndarray]:
    real = clips[first:first + count]
    fake = np.asarray(run(weights.params, real))
    repeated = np.concatenate([real[:, :k], np.repeat(real[:, k - 1:k], real.shape[1] - k,
                                                      axis=1)], axis=1)
    return {"mse": frame_errors(real, fake), "baseline_mse": frame_errors(real, repeated)}

  fingerprint = config_fingerprint(config, weights.source,
                                   {"model": (), "data": ("mnist_path",), "ode": (), "eval": ()},
                                   weights=config.sampling.weights)
  job = EvalJob(name=JOB, fingerprint=fingerprint, num_items=len(clips),
                batch_size=min(len(clips), config.training.batch_size),
                expected_keys=frozenset({"mse", "baseline_mse"}), compute_batch=compute_batch,
                summarize=lambda arrays: summarize(arrays, k), markdown=markdown,
                describe={"given_frames": k, "num_frames": int(len(checked.times)),
                          "times": [float(t) for t in checked.times]})
  return Evaluation(source=weights.source, jobs=(job,),
                    summary={"dataset": sets.description, "variant": checked.model.variant})
