"""main --mode=eval end to end on a tiny SMMNIST model: report files, resuming an interrupted
evaluation (same numbers, finished batches not recomputed), settings changes and the CLI."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import smmnist
from conftest import ROOT
from mcvd_jax.core import eval_runner
from mcvd_jax.video_diffusion import evaluation as mcvd_eval, sampling
from mcvd_jax.data.registry import make_dataset
from mcvd_jax.metrics import evaluation, fvd, protocols

PROTOCOL = "smmnist_pred_5to10"


def tiny_config():
  config = smmnist.get_config("tiny")
  config.model.num_frames_cond = 5  # the SMMNIST protocol conditions on 5 past frames
  # An even smaller network than `tiny`'s: one resolution, no attention (compiles in seconds).
  config.model.ch_mult, config.model.attn_resolutions, config.model.ngf = (1,), (), 8
  config.sampling.subsample = 2
  config.eval.protocols = PROTOCOL
  config.eval.num_test_videos = 3
  config.eval.samples_per_video = 2
  config.eval.batch_size = 2  # batches of 2 and 1 videos: the last one padded
  return config


def _stand_in_features(params, videos, batch_size=8, mesh=None):
  """A cheap stand-in for the I3D (the real one is tested in test_fvd.py): per-frame means and
  spreads, enough to tell videos apart."""
  v = np.asarray(videos, np.float64)
  return np.concatenate([v.mean(axis=(2, 3, 4)), v.std(axis=(2, 3, 4))], axis=1)


@pytest.fixture
def cheap_weights(monkeypatch):
  monkeypatch.setattr(fvd, "i3d_features", _stand_in_features)
  monkeypatch.setattr(fvd, "load_i3d_params", lambda path=None: {})
  # Every run evaluates the same random weights: initialise them once.
  loaded = {}

  def load_once(config, checked, workdir, checkpoint):
    if "value" not in loaded:
      loaded["value"] = sampling.load_for_sampling(config, checked, workdir, checkpoint)
    return loaded["value"]

  monkeypatch.setattr(mcvd_eval, "load_for_sampling", load_once)


def _count_sampling(monkeypatch) -> list:
  calls = []
  original = mcvd_eval.sample_batch

  def counted(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(mcvd_eval, "sample_batch", counted)
  return calls


def _results(workdir) -> dict:
  report = json.loads((workdir / eval_runner.REPORT_JSON).read_text())
  return report["protocols"][PROTOCOL]


@pytest.mark.slow
def test_eval_writes_reports_and_resumes(tmp_path, monkeypatch, cheap_weights):
  config = tiny_config()
  config.eval.save_samples = True
  first = tmp_path / "first"
  mcvd_eval.evaluate_checkpoint(config, str(first))

  entry = _results(first)
  results = entry["results"]
  assert (results["num_videos"], results["samples_per_video"], results["cond_frames"]) == (3, 2, 5)
  assert set(results) >= {"mse", "psnr", "ssim", "lpips", "fvd"}
  assert entry["batches"] == {"total": 2, "computed_now": 2}
  table = (first / eval_runner.REPORT_MD).read_text()
  assert f"## {PROTOCOL}: prediction, 5 past → 10 frames" in table
  assert "| scores | p | n | FVD | SSIM |" in table and "Also computed" in table  # the paper's
  assert "| baseline: copy the last past frame | 5 | 10 |" in table  # beside the model
  assert results["baseline"]["name"] == "copy_last" and "fvd" in results["baseline"]

  # The batch files hold the samples: the given frames are the test clips', and scoring the
  # samples directly gives the report's numbers.
  directory = first / "eval" / PROTOCOL
  samples = np.concatenate([np.load(directory / f"batch_{i:05d}.npz")["samples"] for i in (0, 1)])
  real = make_dataset(config.data, 32, 1).test_videos(15, 3)
  assert samples.shape == (3, 2, 15, 32, 32, 1)
  np.testing.assert_array_equal(samples[:, :, :5], np.repeat(real[:, None, :5], 2, axis=1))
  direct = evaluation.evaluate_video_sets(real, samples, cond_frames=5, binarize=True,
                                          i3d_params={})
  for name in ("psnr", "ssim", "lpips"):
    assert results[name]["best_of_samples"]["mean"] == pytest.approx(
        direct[name]["best_of_samples"]["mean"], rel=1e-6)
  assert results["fvd"]["mean"] == pytest.approx(direct["fvd"]["mean"], rel=1e-6)

  # Interrupted after the first batch: the restart samples only the second and reports the same.
  config.eval.save_samples = False
  second = tmp_path / "second"
  (second / "eval" / PROTOCOL).mkdir(parents=True)
  for name in ("meta.json", "batch_00000.npz"):
    shutil.copy(directory / name, second / "eval" / PROTOCOL / name)
  kept = (second / "eval" / PROTOCOL / "batch_00000.npz").read_bytes()
  calls = _count_sampling(monkeypatch)
  mcvd_eval.evaluate_checkpoint(config, str(second))
  assert len(calls) == 1 and _results(second)["batches"]["computed_now"] == 1
  assert (second / "eval" / PROTOCOL / "batch_00000.npz").read_bytes() == kept
  assert _results(second)["results"] == results

  # A batch file cut short is computed again; a finished evaluation samples nothing.
  (second / "eval" / PROTOCOL / "batch_00001.npz").write_bytes(b"PK\x03\x04 cut short")
  mcvd_eval.evaluate_checkpoint(config, str(second))
  mcvd_eval.evaluate_checkpoint(config, str(second))
  assert len(calls) == 2 and _results(second)["results"] == results

  # Other settings over the same directory: an error, nothing mixed.
  config.sampling.subsample = 3
  with pytest.raises(eval_runner.EvalError, match="other settings.*sampling"):
    mcvd_eval.evaluate_checkpoint(config, str(second))
  assert len(calls) == 2


@pytest.mark.slow
def test_eval_adds_digit_identity_on_request(tmp_path, cheap_weights):
  from mcvd_jax.metrics import digit_classifier, digit_identity
  from mcvd_jax.video_diffusion.config import validate_eval
  config = tiny_config()
  config.eval.metrics = "mse,identity"
  config.data.num_digits = 1  # where the frames are also searched for the digit anywhere
  config.eval.save_samples = True
  config.eval.classifier_path = str(tmp_path / "classifier.npz")  # untrained: the plumbing
  params = digit_classifier.init_params(0)
  digit_classifier.save_classifier(params, config.eval.classifier_path, {"note": "untrained"})
  mcvd_eval.evaluate_checkpoint(config, str(tmp_path / "run"))
  results = _results(tmp_path / "run")["results"]
  assert set(results) >= {"mse", "identity"} and "ssim" not in results
  # the batches' counts add up to what the saved samples score in one go
  directory = tmp_path / "run" / "eval" / PROTOCOL
  samples = np.concatenate([np.load(directory / f"batch_{i:05d}.npz")["samples"] for i in (0, 1)])
  dataset = make_dataset(config.data, 32, 1)
  classify = digit_identity.classifier_classify(params)
  direct = digit_identity.kept_by_frame(samples, dataset.test_tracks(15, 3), classify, 5)
  assert json.dumps(results["identity"]) == json.dumps(direct).replace("NaN", "null")
  assert sum(results["identity"]["digits"]) > 0 and len(results["identity"]["kept"]) == 10
  assert results["identity"]["straight"]["digits"][0] + \
      results["identity"]["after_wall"]["digits"][0] == results["identity"]["digits"][0]
  assert results["baseline"]["identity"]["digits"] == [n // 2 for n in direct["digits"]]
  table = (tmp_path / "run" / eval_runner.REPORT_MD).read_text()
  assert "Digits kept" in table and "| copy the last past frame |" in table
  # and the digits found wherever the samples put them, copy-last's not moved
  assert results["identity"]["anywhere"]["digits"] == direct["anywhere"]["digits"]
  assert "| model: right digit anywhere |" in table
  assert set(results["baseline"]["identity"]["anywhere"]["moved_px"]) <= {0.0, None}
  # only SMMNIST has the tracks; an unknown name lists identity among the choices
  config.data.dataset = "kth"
  with pytest.raises(mcvd_eval.ConfigError, match="identity scores SMMNIST digits"):
    validate_eval(config)
  config.eval.metrics = "mse,identityy"
  with pytest.raises(mcvd_eval.ConfigError, match="or identity"):
    validate_eval(config)


def test_main_eval_mode_reports_bad_settings(tmp_path):
  cmd = [sys.executable, "-m", "mcvd_jax.main", "--config=configs/smmnist.py:tiny",
         f"--workdir={tmp_path}", "--mode=eval", "--config.eval.protocols=smmnist_pred_9to9"]
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert done.returncode != 0
  assert "eval.protocols='smmnist_pred_9to9': unknown evaluation protocol 'smmnist_pred_9to9'" in done.stderr


def test_markdown_report_lists_interpolation_and_generation():
  report = {"num_videos": 2, "samples_per_video": 1,
            "psnr": {"best_of_samples": {"mean": 20.0, "std": 1.0, "conf95": 0.5}},
            "ssim": {"best_of_samples": {"mean": 0.8, "std": 0.1, "conf95": float("inf")}},
            "fvd": {"mean": 123.45}}
  entries = {name: {"protocol": dataclasses.asdict(protocols.get(name)), "results": report}
             for name in ("kth_interp_10+5to10", "bair_gen_1+15")}
  text = "\n".join(mcvd_eval.markdown_section(entry) for entry in entries.values())
  assert "## kth_interp_10+5to10: interpolation, 10 past + 5 future → 10 frames" in text
  assert "| p | f | k | PSNR | SSIM |" in text
  assert "| 10 | 5 | 10 | 20.0000 ± 0.5000 | 0.8000 |" in text  # no interval from one video
  assert "## bair_gen_1+15: generation, 16 frames from nothing" in text
  assert "| frames | FVD |" in text and "| 16 | 123.5 |" in text
