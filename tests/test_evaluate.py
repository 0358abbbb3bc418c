"""Scoring two sets of videos: best-of-N wiring, FVD by sample index, the readers and the CLI."""

import json
import logging
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from mcvd_jax.metrics import evaluation
from mcvd_jax.metrics.video_files import load_videos


def video_sets(n=3, s=2, t=5, size=16, seed=0):
  rng = np.random.default_rng(seed)
  real = rng.integers(0, 256, size=(n, t, size, size, 1), dtype=np.uint8)
  fake = np.repeat(real[:, None], s, axis=1).astype(np.int32)
  fake[:, 0, 2:] += rng.integers(-40, 40, size=fake[:, 0, 2:].shape)  # sample 0: strong noise
  fake[:, 1, 2:] += rng.integers(-5, 5, size=fake[:, 1, 2:].shape)    # sample 1: weak noise
  return real, np.clip(fake, 0, 255).astype(np.uint8)


def test_best_of_samples_picks_the_better_sample():
  real, fake = video_sets()
  report = evaluation.evaluate_video_sets(real, fake, cond_frames=2, metrics=("mse", "psnr", "ssim"))
  assert report["num_videos"] == 3 and report["samples_per_video"] == 2
  r = real[:, 2:].astype(np.float64) / 255
  mse = [np.mean([np.mean((r[i, t] - fake[i, s, 2 + t] / 255) ** 2) for t in range(3)])
         for i in range(3) for s in range(2)]
  mse = np.array(mse).reshape(3, 2)
  assert np.all(mse[:, 1] < mse[:, 0])
  np.testing.assert_allclose(report["mse"]["best_of_samples"]["mean"], mse[:, 1].mean(), rtol=1e-5)
  np.testing.assert_allclose(report["psnr"]["best_of_samples"]["mean"],
                             np.mean(10 * np.log10(1 / mse[:, 1])), rtol=1e-5)
  np.testing.assert_allclose(report["mse"]["mean_over_samples"], mse.mean(), rtol=1e-5)
  assert report["ssim"]["best_of_samples"]["mean"] > report["ssim"]["mean_over_samples"]
  assert "fvd" not in report and "| PSNR | SSIM | MSE |" in evaluation.markdown_table(report)


def test_fvd_is_computed_per_sample_index(monkeypatch):
  from mcvd_jax.metrics import fvd
  # A stand-in feature extractor (the real I3D is tested in test_fvd.py): mean and spread of
  # every frame, enough to tell the two samples apart.
  monkeypatch.setattr(fvd, "i3d_features", lambda params, v, bs=8, mesh=None: np.concatenate(
      [v.mean(axis=(2, 3, 4)), v.std(axis=(2, 3, 4))], axis=1).astype(np.float64))
  real, fake = video_sets(n=6, t=10)
  report = evaluation.evaluate_video_sets(real, fake, metrics=("fvd",), i3d_params={})
  feats = lambda v: fvd.i3d_features(None, v)  # noqa: E731
  per_sample = [fvd.frechet_distance(feats(fake[:, s]), feats(real)) for s in range(2)]
  np.testing.assert_allclose(report["fvd"]["mean"], np.mean(per_sample), rtol=1e-6)
  pooled = fvd.frechet_distance(feats(np.concatenate([fake[:, 0], fake[:, 1]])), feats(real))
  np.testing.assert_allclose(report["fvd"]["pooled"], pooled, rtol=1e-6)


def test_future_frames_are_not_scored():
  real, fake = video_sets(t=6)
  fake[:, :, 4:] = 255 - real[:, None, 4:]  # the last 2 frames: given future frames, not scored
  with_future = evaluation.evaluate_video_sets(real, fake, cond_frames=2, future_frames=2,
                                               metrics=("mse",))
  middle = evaluation.evaluate_video_sets(real[:, :4], fake[:, :, :4], cond_frames=2,
                                          metrics=("mse",))
  assert with_future["mse"] == middle["mse"] and with_future["future_frames"] == 2


def test_evaluation_input_errors():
  real, fake = video_sets()
  with pytest.raises(ValueError, match="leave at least one"):
    evaluation.evaluate_video_sets(real, fake, cond_frames=5, metrics=("mse",))
  with pytest.raises(ValueError, match="leave at least one"):
    evaluation.evaluate_video_sets(real, fake, cond_frames=3, future_frames=2, metrics=("mse",))
  with pytest.raises(ValueError, match="do not match: videos 3 vs 2"):
    evaluation.evaluate_video_sets(real, fake[:2], metrics=("mse",))
  with pytest.raises(ValueError, match="do not match: frames 5 vs 4"):
    evaluation.evaluate_video_sets(real, fake[:, :, :4], metrics=("mse",))
  with pytest.raises(ValueError, match="unknown metrics"):
    evaluation.evaluate_video_sets(real, fake, metrics=("bleu",))
  with pytest.raises(ValueError, match="uint8"):
    evaluation.evaluate_video_sets(real / 255, fake, metrics=("mse",))
  real10, fake10 = video_sets(t=10)
  with pytest.raises(ValueError, match="at least 2 real videos.*few hundred"):
    evaluation.evaluate_video_sets(real10[:1], fake10[:1], metrics=("fvd",), i3d_params={})
  with pytest.raises(ValueError, match="at least 9 frames"):
    evaluation.evaluate_video_sets(real, fake, metrics=("fvd",), i3d_params={})
  with pytest.raises(FileNotFoundError, match="pt_inception.*--fid_weights"):
    evaluation.evaluate_video_sets(real, fake, metrics=("fid",))


def test_report_json_is_strict():
  real, fake = video_sets(n=1)  # one video: no interval (inf) -> null in JSON
  report = evaluation.evaluate_video_sets(real, fake, cond_frames=2, metrics=("psnr",))
  text = evaluation.to_json(report)
  assert json.loads(text)["psnr"]["best_of_samples"]["conf95"] is None
  assert "Infinity" not in text and "NaN" not in text


def test_load_videos_formats_and_errors(tmp_path):
  real, _ = video_sets()
  np.save(tmp_path / "v.npy", real)
  np.testing.assert_array_equal(load_videos(str(tmp_path / "v.npy")), real)
  np.savez(tmp_path / "v.npz", videos=real.astype(np.float32) / 255)
  np.testing.assert_array_equal(load_videos(str(tmp_path / "v.npz")), real)
  folder = tmp_path / "gifs"
  folder.mkdir()
  for i, video in enumerate(real):
    frames = [Image.fromarray(f[..., 0]) for f in video]
    frames[0].save(folder / f"{i}.gif", save_all=True, append_images=frames[1:], duration=100)
  np.testing.assert_array_equal(load_videos(str(folder)), real)
  np.save(tmp_path / "bad.npy", real.astype(np.float32))  # 0..255 floats: out of range
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    load_videos(str(tmp_path / "bad.npy"))
  (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
  with pytest.raises(ValueError, match="broken.npy"):
    load_videos(str(tmp_path / "broken.npy"))
  with pytest.raises(FileNotFoundError, match="missing"):
    load_videos(str(tmp_path / "missing.npy"))


def test_evaluate_cli(tmp_path):
  real, fake = video_sets()
  np.save(tmp_path / "real.npy", real)
  np.save(tmp_path / "fake.npy", fake.reshape(6, *fake.shape[2:]))  # samples of a video adjacent
  out = tmp_path / "report.json"
  cmd = [sys.executable, "-m", "mcvd_jax.evaluate", f"--real={tmp_path / 'real.npy'}",
         f"--fake={tmp_path / 'fake.npy'}", "--cond_frames=2", "--samples_per_video=2",
         "--metrics=mse,psnr,ssim", f"--out={out}"]
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  report = json.loads(out.read_text())
  direct = evaluation.evaluate_video_sets(real, fake, cond_frames=2, metrics=("mse", "psnr", "ssim"))
  assert report["psnr"]["best_of_samples"] == pytest.approx(direct["psnr"]["best_of_samples"])
  assert (tmp_path / "report.md").read_text().startswith("| PSNR")
  wrong = subprocess.run(cmd[:5] + ["--samples_per_video=4", "--metrics=mse"], cwd=ROOT,
                         capture_output=True, text=True)
  assert wrong.returncode != 0 and "should hold 12" in wrong.stderr


def _run_cli_in_process(*args) -> str:
  """The CLI's main in this process (the subprocess test above covers the real entry point):
  returns the one-line error it exits with."""
  from absl import flags

  from mcvd_jax import evaluate
  absl_level = logging.getLogger("absl").level  # unparsing the flags raises it to WARNING
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["evaluate", *args])
  try:
    with pytest.raises(SystemExit) as exit_info:
      evaluate.main(["evaluate"])
  finally:
    flags.FLAGS.unparse_flags()
    logging.getLogger("absl").setLevel(absl_level)
  return str(exit_info.value.code)


def test_cli_bad_input_gets_one_clear_line(tmp_path):
  real, fake = video_sets()
  np.save(tmp_path / "real.npy", real)
  np.save(tmp_path / "fake.npy", fake[:, 0])
  np.save(tmp_path / "short.npy", fake[:, 0, :4])
  np.save(tmp_path / "wide.npy", np.zeros((3, 5, 16, 20, 1), np.uint8))
  np.save(tmp_path / "ints.npy", real.astype(np.int32) * 2)
  (tmp_path / "junk.npz").write_bytes(b"not a zip file")
  r, f = f"--real={tmp_path / 'real.npy'}", f"--fake={tmp_path / 'fake.npy'}"
  cases = [
      ((r, f"--fake={tmp_path / 'short.npy'}", "--metrics=mse"),
       r"shape \(5, 16, 16, 1\).*\(4, 16, 16, 1\).*must match"),
      ((r, f"--fake={tmp_path / 'wide.npy'}", "--metrics=mse"), "must match"),
      ((r, f"--fake={tmp_path / 'junk.npz'}"), "junk.npz: cannot read it as a NumPy file"),
      ((r, f"--fake={tmp_path / 'ints.npy'}"), r"integer videos must be in \[0, 255\]"),
      ((r, f"--fake={tmp_path / 'missing.npy'}"), "missing.npy: no such file"),
      ((r, f, "--metrics=fvd"), "at least 9 frames"),
      ((r, f, "--metrics=psnr,fid"), "pt_inception.*--fid_weights"),
      ((r, f, "--metrics=psnr,fid", f"--fid_weights={tmp_path / 'nope.npz'}"),
       "nope.npz does not exist"),
      ((r, f, "--metrics=psnr", "--cond_frames=5"), "leave at least one"),
  ]
  for args, pattern in cases:
    message = _run_cli_in_process(*args)
    assert message.startswith("error: ") and "\n" not in message, message
    assert re.search(pattern, message), (pattern, message)
