"""Baselines: copy-last-frame and blend videos, their scores equal those of hand-built videos, in
the evaluate CLI and beside the model in --mode=eval reports (prediction and interpolation, not
generation)."""

import json
import logging

import numpy as np
import pytest

from mcvd_jax.metrics import baselines, evaluation, fvd, protocols
from mcvd_jax.models import UNetConfig
from mcvd_jax.video_diffusion import evaluation as mcvd_eval
from mcvd_jax.diffusion.factory import BuiltSampler
from mcvd_jax.diffusion.pf_ode import EvalTally
from mcvd_jax.video_diffusion.config import EvalSettings


def clips(n=3, t=6, size=8, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, t, size, size, 1), dtype=np.uint8)


def test_copy_last_and_blend_are_the_hand_built_videos():
  real = clips()
  made = baselines.copy_last(real, cond_frames=2)
  assert made.shape == (3, 1, 6, 8, 8, 1)
  by_hand = np.concatenate([real[:, :2], np.repeat(real[:, 1:2], 4, axis=1)], axis=1)
  np.testing.assert_array_equal(made[:, 0], by_hand)

  made = baselines.blend(real, cond_frames=2, future_frames=1)  # 3 frames between 1 and 5
  past, future = real[:, 1].astype(float), real[:, 5].astype(float)
  for j, w in enumerate((0.25, 0.5, 0.75)):
    np.testing.assert_array_equal(made[:, 0, 2 + j], np.round((1 - w) * past + w * future))
  np.testing.assert_array_equal(made[:, 0, :2], real[:, :2])
  np.testing.assert_array_equal(made[:, 0, 5:], real[:, 5:])
  with pytest.raises(ValueError, match="past and future"):
    baselines.blend(real, cond_frames=2, future_frames=0)
  with pytest.raises(ValueError, match="unknown baseline 'mean'"):
    baselines.make_baseline("mean", real, 2)


def test_evaluate_cli_scores_the_baseline_as_the_repeated_frame_video(tmp_path):
  from absl import flags

  from mcvd_jax import evaluate
  real = clips(n=4, t=5, size=16)
  repeated = np.concatenate([real[:, :2], np.repeat(real[:, 1:2], 3, axis=1)], axis=1)
  np.save(tmp_path / "real.npy", real)
  out = tmp_path / "report.json"
  absl_level = logging.getLogger("absl").level  # unparsing the flags raises it to WARNING
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["evaluate", f"--real={tmp_path / 'real.npy'}", "--baseline=copy_last",
               "--cond_frames=2", "--metrics=mse,psnr,ssim", f"--out={out}"])
  try:
    evaluate.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()
    logging.getLogger("absl").setLevel(absl_level)
  report = json.loads(out.read_text())
  direct = evaluation.evaluate_video_sets(real, repeated[:, None], cond_frames=2,
                                          metrics=("mse", "psnr", "ssim"))
  assert report["name"] == "copy_last"
  for name in ("psnr", "ssim"):
    assert report[name]["best_of_samples"]["mean"] == pytest.approx(
        direct[name]["best_of_samples"]["mean"], rel=1e-9)


def _stand_in_features(params, videos, batch_size=8, mesh=None):
  v = np.asarray(videos, np.float64)
  return np.concatenate([v.mean(axis=(2, 3, 4)), v.std(axis=(2, 3, 4))], axis=1)


class _Clips:
  def __init__(self, frames):
    self.frames = frames

  def test_videos(self, num_frames, count):
    return self.frames[:count, :num_frames]


def _job(monkeypatch, name, metrics, frames, tally=None):
  """The protocol job of `name` on 3 clips, with the sampler replaced by one that returns the
  real clips off by one grey level (so the "model" scores far better than the baseline). With a
  tally (an adaptive sampler's), each video's two blocks record 10 + video index evaluations."""
  monkeypatch.setattr(fvd, "i3d_features", _stand_in_features)
  monkeypatch.setattr(mcvd_eval, "video_sampler", lambda *args: BuiltSampler(None, tally))

  def sample_batch(sampler, params, p, cfg, real, *rest):
    if tally is not None:
      for video in real:
        tally.add([10 + int(video[0, 0, 0, 0] == frames[2, 0, 0, 0, 0]) * 2] * 2)
    return np.repeat(real[:, None] ^ 1, p.samples_per_video, axis=1)
  monkeypatch.setattr(mcvd_eval, "sample_batch", sample_batch)
  p = protocols.get(name).with_overrides(3, 2, metrics)
  cfg = UNetConfig(image_size=16, channels=1, num_frames=p.pred_frames, num_frames_cond=2, ngf=8,
                   ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), n_head_channels=8)
  settings = EvalSettings((), 3, 2, metrics, 2, 4, False, "")
  import ml_collections
  from configs import default
  base = default.get_config()  # the report names the sampler and its network evaluations
  config = ml_collections.ConfigDict({"seed": 0, "sampling": base.sampling.to_dict(),
                                      "model": {}, "data": {}})
  job = mcvd_eval.protocol_job(config, cfg, None, base.diffusion, _Clips(frames),
                               settings, "test", None, {"i3d_params": {}}, p)
  arrays = [job.compute_batch(0, 2), job.compute_batch(2, 1)]
  scores = {k: np.concatenate([a[k] for a in arrays]) for k in job.expected_keys}
  return p, job.summarize(scores)


def test_eval_reports_the_baseline_for_prediction_and_interpolation_only(monkeypatch):
  frames = clips(n=3, t=40, size=16, seed=1)
  p, results = _job(monkeypatch, "smmnist_pred_5to10", ("mse", "psnr", "ssim"), frames)
  real = frames[:, :p.clip_frames]
  direct = evaluation.evaluate_video_sets(real, baselines.copy_last(real, 5), cond_frames=5,
                                          metrics=("mse", "psnr", "ssim"), binarize=True)
  assert results["baseline"]["name"] == "copy_last"
  assert results["baseline"]["ssim"] == direct["ssim"]
  model_mse = results["mse"]["best_of_samples"]["mean"]
  assert model_mse < results["baseline"]["mse"]["best_of_samples"]["mean"]
  text = mcvd_eval.markdown_section({"protocol": p.__dict__ | {"table": p.table},
                                     "results": results})
  assert "| model |" in text and "| baseline: copy the last past frame |" in text

  p, results = _job(monkeypatch, "kth_interp_10+5to10", ("mse", "psnr"), frames)
  real = frames[:, :p.clip_frames]
  direct = evaluation.evaluate_video_sets(real, baselines.blend(real, 10, 5), cond_frames=10,
                                          future_frames=5, metrics=("mse", "psnr"))
  assert results["baseline"]["name"] == "blend"
  # The runner scores batches of 2 and 1 clips, the direct call all 3 at once: XLA's float32
  # rounding differs between the two shapes (1e-7 relative with jax 0.10.2 on 2 CPU cores).
  got, want = results["baseline"]["psnr"], direct["psnr"]
  assert got["mean_over_samples"] == pytest.approx(want["mean_over_samples"], rel=1e-6)
  assert got["best_of_samples"] == pytest.approx(want["best_of_samples"], rel=1e-5)

  _, results = _job(monkeypatch, "bair_gen_1+15", ("fvd",), frames)
  assert "fvd" in results and "baseline" not in results


def test_eval_reports_the_evaluations_an_adaptive_sampler_used(monkeypatch):
  frames = clips(n=3, t=40, size=16, seed=1)
  frames[:, 0, 0, 0, 0] = [0, 1, 2]  # tells the stand-in sampler which video it samples
  p, results = _job(monkeypatch, "smmnist_pred_5to10", ("mse",), frames, tally=EvalTally())
  # videos 0 and 1 (first batch): 2 blocks of 10 each; video 2 (second batch): 2 blocks of 12
  assert results["network_evals"] == {"mean": (4 * 10 + 2 * 12) / 6, "min": 10, "max": 12,
                                      "solves": 6}
  text = mcvd_eval.markdown_section({"protocol": p.__dict__ | {"table": p.table},
                                     "results": results, "sampler": "sampler ode: adaptive"})
  assert "sampler ode: adaptive (measured: 10.7 on average, 10 to 12, over 6 blocks)." in text
  _, fixed = _job(monkeypatch, "smmnist_pred_5to10", ("mse",), frames)
  assert "network_evals" not in fixed
