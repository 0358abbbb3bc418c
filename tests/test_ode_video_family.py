"""The neural-ODE video family end to end on CPU (configs/ode_video_mnist.py:b+tiny): training
through the shared loop with validation errors and GIFs, a SIGKILL and a bit-identical resume,
sample mode (ground truth above prediction, extrapolated frames marked), eval mode against the
copy-last baseline; config errors that name the field; the data's batches."""

import json
import os
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from configs import ode_video_mnist
from resume_check import assert_same_final_state, kill_then_resume
from mcvd_jax.core import loop
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.modes import run_mode
from mcvd_jax.ode_video.data import moving_mnist, train_batch_fn
from mcvd_jax.ode_video.family import FAMILY
from mcvd_jax.ode_video.sampling import MARK, comparison_gif, mark_extrapolated

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "b+tiny"  # 32 x 32, 6 frames of which 3 are given, batch 8


def test_train_batches_are_epochs_of_the_fixed_set_with_the_given_frames_only():
  config = ode_video_mnist.get_config(TINY)
  sets = moving_mnist(config)
  train = sets.train_videos
  assert train.shape == (16, 6, 32, 32, 1) and train.dtype == np.uint8
  batch = train_batch_fn(sets, train_frames=3)
  first_epoch = np.concatenate([batch(0, step, 8) for step in (0, 1)])
  assert first_epoch.shape == (16, 3, 32, 32, 1)  # only the given frames
  # Each epoch is the whole training set in a shuffled order.
  order = [int(np.flatnonzero((train[:, :3] == clip).all(axis=(1, 2, 3, 4)))[0])
           for clip in first_epoch]
  assert sorted(order) == list(range(16)) and order != list(range(16))
  halves = [batch(0, 3, 8, process_index=i, process_count=2) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), batch(0, 3, 8))
  val = sets.val_videos  # held-out digits (data.val_digits="test")
  assert val.shape == (8, 6, 32, 32, 1) and "held-out test digits" in sets.description


def test_marked_frames_are_the_extrapolated_ones():
  real = np.zeros((2, 5, 8, 8, 1), np.uint8)
  marked = mark_extrapolated(real + 100, train_frames=3)
  assert marked.shape == (2, 5, 8, 8, 3)
  assert (marked[:, :3] == 100).all()  # given frames untouched
  assert (marked[:, 3:, 0, :] == MARK).all() and (marked[:, 3:, 4, 4] == 100).all()
  gif = comparison_gif(real, real + 50, train_frames=3)
  assert gif.shape == (5, 2 * 8 + 2, 2 * 8 + 2, 3)  # real row above, prediction row below
  assert (gif[:, :8, :8] == 0).all() and (gif[4, 10:18, 0:8][0] == MARK).all()


def test_irregular_frame_times_are_the_config_s():
  config = ode_video_mnist.get_config(TINY)
  assert FAMILY.validate(config, 1, 1).times == pytest.approx([k / 5 for k in range(6)])
  config.data.times = (0.0, 0.1, 0.15, 0.4, 0.8, 1.3)
  np.testing.assert_allclose(FAMILY.validate(config, 1, 1).times, config.data.times, rtol=1e-6)
  config.data.times = (0.0, 0.1, 0.1, 0.4, 0.8, 1.3)
  with pytest.raises(ConfigError, match="strictly increasing"):
    FAMILY.validate(config, 1, 1)
  config.data.times = (0.0, 1.0)
  with pytest.raises(ConfigError, match=r"data\.times has 2 entries"):
    FAMILY.validate(config, 1, 1)


@pytest.mark.parametrize("field, value, message", [
    ("data.train_frames", 9, r"data\.train_frames=9 must be in \[1, data\.num_frames=6\]"),
    ("model.image_size", 40, r"model\.image_size=40 must be divisible by 16"),
    ("ode.solver", "rk4", r"ode\.solver='rk4' is not one of"),
    ("sampling.split", "test", r"sampling\.split='test'"),
    ("data.num_digits", 3, r"data\.num_digits=3 must be 1 or 2"),
    ("data.val_digits", "val", r"data\.val_digits='val' is not one of")])
def test_bad_config_values_name_the_field(field, value, message):
  config = ode_video_mnist.get_config(TINY)
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=message):
    FAMILY.validate(config, 1, 1)


def test_tiny_run_trains_samples_evaluates_and_resumes_bit_identically(tmp_path):
  steps = 6
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  config = ode_video_mnist.get_config(TINY)
  config.training.num_steps, config.training.checkpoint_every = steps, 1
  state = loop.train_and_evaluate(config, str(straight), FAMILY)
  assert int(state.step) == steps
  gif = Image.open(straight / "samples" / f"step_{steps:08d}.gif")
  assert gif.n_frames == 6 and gif.size == (8 * 32 + 14, 2 * 32 + 2)  # 8 videos, 2 rows

  # SIGKILL after the first checkpoints, then the same command resumes to the same state.
  command = [sys.executable, "-m", "mcvd_jax.main", f"--config=configs/ode_video_mnist.py:{TINY}",
             f"--workdir={killed}", f"--config.training.num_steps={steps}",
             "--config.training.checkpoint_every=1"]
  kill_then_resume(command, killed, ROOT, kill_after=2, steps=steps)
  assert_same_final_state(straight, killed, config, FAMILY, steps)

  path = run_mode(FAMILY, config, str(straight), "sample")
  assert path.endswith("samples_val.gif") and os.path.exists(path.replace(".gif", ".png"))
  saved = np.load(path.replace(".gif", ".npz"))
  assert saved["real"].shape == saved["predicted"].shape == (8, 6, 32, 32, 1)
  meta = json.loads(open(path.replace(".gif", ".json")).read())
  assert meta["given_frames"] == 3 and len(meta["mse_per_frame"]) == 6
  assert meta["times"] == pytest.approx([k / 5 for k in range(6)])

  report = json.load(open(run_mode(FAMILY, config, str(straight), "eval")))
  results = report["protocols"]["moving_mnist_val"]["results"]
  assert results["num_videos"] == 8
  for name in ("model", "baseline_copy_last"):
    assert len(results[name]["mse_per_frame"]) == 6
  # The baseline repeats the given frames exactly: no error on them.
  assert results["baseline_copy_last"]["reconstruction"]["mse"] == 0.0
  assert results["baseline_copy_last"]["extrapolation"]["mse"] > 0.0
  assert "baseline: repeat the last given frame" in open(straight / "eval_report.md").read()
