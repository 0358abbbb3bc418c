"""The shared core with a family that is not MCVD (tests/toy_family.py): training through
train_and_evaluate, checkpoints, a SIGKILL and a bit-identical resume, sample mode, evaluation
through the shared runner; config.family errors; main's project errors without tracebacks."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import toy_family
from mcvd_jax import registry
from mcvd_jax.core import eval_runner, loop
from mcvd_jax.core.modes import run_mode
from mcvd_jax.core.checkpointing import Checkpointer
from mcvd_jax.core.config_checks import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
  monkeypatch.setitem(registry.FAMILIES, toy_family.NAME, toy_family.FAMILY)


def _restore(workdir, config):
  trainer = loop.Trainer(config, str(workdir))
  checkpointer = Checkpointer(str(workdir))
  try:
    return checkpointer.restore_newest(trainer.abstract_state(), move_unreadable=False)
  finally:
    checkpointer.close()


def test_toy_family_trains_checkpoints_samples_and_evaluates(tmp_path):
  config = toy_family.toy_config()
  state = loop.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 6
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4", "6"]
  assert sorted(os.listdir(tmp_path / "media")) == ["fit_3.npy", "fit_6.npy"]
  restored, meta = _restore(tmp_path, config)
  assert meta == {"family": "toy", "data_seed": 0, "hidden": 16}
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # It learned: the EMA fit of sin(3x) is better than the initial parameters'.
  init = loop.Trainer(config, str(tmp_path)).init_state()
  x = toy_family.test_points()
  error = lambda p: float(np.mean((toy_family.predict(p, x) - np.sin(3 * x)) ** 2))  # noqa: E731
  assert error(state.ema_params) < error(init.params)

  # Sample mode through main's dispatcher: the family's writer, on the EMA parameters.
  path = run_mode(config, str(tmp_path), "sample")
  np.testing.assert_allclose(np.load(path), toy_family.predict(state.ema_params, x), rtol=1e-6)

  # Eval mode: the shared runner's files and reports, batches of 4, 4, 2 test points.
  report_path = run_mode(config, str(tmp_path), "eval")
  report = json.loads(pathlib.Path(report_path).read_text())
  entry = report["protocols"]["toy_mse"]
  assert entry["results"]["mse"] == pytest.approx(error(state.ema_params), rel=1e-5)
  assert entry["batches"] == {"total": 3, "computed_now": 3}
  assert report["checkpoint"] == "toy step 6" and report["test_points"] == 10
  assert "MSE" in (tmp_path / eval_runner.REPORT_MD).read_text()
  assert sorted(os.listdir(tmp_path / "eval" / "toy_mse")) == [
      "batch_00000.npz", "batch_00001.npz", "batch_00002.npz", "meta.json"]
  # Evaluated again: nothing is recomputed and the numbers are the same.
  again = json.loads(pathlib.Path(run_mode(config, str(tmp_path), "eval")).read_text())
  assert again["protocols"]["toy_mse"]["batches"]["computed_now"] == 0
  assert again["protocols"]["toy_mse"]["results"] == entry["results"]


def test_window_summary_follows_the_metric_naming_rules():
  metrics = [{"loss": np.array([1.0, 3.0]), "grad_norm": np.array([2.0, 2.0]),
              "lr": np.array([0.1, 0.2]), "finite": np.array([1.0, 1.0]),
              "sq_error_sum/positive_x": np.array([4.0, 2.0]),
              "count/positive_x": np.array([2.0, 1.0]), "max_error": np.array([5.0, 7.0])},
             {"loss": np.array([np.nan]), "grad_norm": np.array([np.nan]), "lr": np.array([0.3]),
              "finite": np.array([0.0]), "sq_error_sum/positive_x": np.array([np.nan]),
              "count/positive_x": np.array([3.0]), "max_error": np.array([np.nan])}]
  summary = loop.summarize_window(metrics)
  assert summary == {"lr": pytest.approx(0.3), "skipped_updates": 1.0, "loss": 2.0,
                     "grad_norm": 2.0, "sq_error/positive_x": 2.0, "max_error": 6.0}


def test_toy_resume_after_sigkill_is_bit_identical(tmp_path):
  steps = 150
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  config = toy_family.toy_config(num_steps=steps, checkpoint_every=1, sample_every=0)
  loop.train_and_evaluate(config, str(straight))
  command = [sys.executable, str(ROOT / "tests" / "toy_family.py"), str(killed), str(steps)]
  process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (killed / "checkpoints" / "5").exists() and time.time() < deadline:
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  saved = sorted(int(s) for s in os.listdir(killed / "checkpoints") if s.isdigit())
  assert saved and saved[-1] < steps, f"the run was not interrupted: {saved}"
  subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
  (a, _), (b, _) = _restore(straight, config), _restore(killed, config)
  assert int(a.step) == int(b.step) == steps
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_unknown_family_lists_the_families():
  config = toy_family.toy_config()
  config.family = "gan"
  with pytest.raises(registry.UnknownFamilyError, match="config.family='gan' is unknown; use "
                     "one of mcvd, toy"):
    loop.Trainer(config, "/nonexistent")


def test_family_validation_runs_before_anything_is_built_or_compiled(monkeypatch, tmp_path):
  def fail(*args, **kwargs):
    raise AssertionError("compiled or built before the config was checked")
  monkeypatch.setattr(loop, "jit", fail)
  monkeypatch.setitem(registry.FAMILIES, "toy", dataclasses.replace(toy_family.FAMILY, build=fail))
  config = toy_family.toy_config()
  config.toy.hidden = 0
  with pytest.raises(ConfigError, match=r"toy\.hidden=0 must be >= 1"):
    loop.train_and_evaluate(config, str(tmp_path))
  config.toy.hidden, config.training.ema_rate = 16, 1.0  # a shared section: checked by the core
  with pytest.raises(ConfigError, match=r"training\.ema_rate=1\.0 must be in \[0, 1\)"):
    loop.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("args, message", [
    (["--config.training.ema_rate=1.0"], "error: training.ema_rate=1.0 must be in [0, 1)"),
    (["--config.data.dataset=bair"], "error: data.dataset='bair' has RGB frames"),
    (["--config.data.dataset=kth", "--config.data.path=/nonexistent/kth"],
     "error: data.dataset='kth': data.path='/nonexistent/kth' is not a directory"),
    (["--mode=sample", "--checkpoint=/nonexistent/run"], "error: --checkpoint='/nonexistent/run'"),
    (["--workdir=/proc/mcvd_jax_run"], "error: workdir '/proc/mcvd_jax_run' is not writable"),
])
def test_main_reports_project_errors_as_one_message(tmp_path, args, message):
  command = [sys.executable, "-m", "mcvd_jax.main", "--config=configs/smmnist.py:tiny",
             f"--workdir={tmp_path}"] + args
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 1, done.stderr[-2000:]
  assert message in done.stderr and "Traceback" not in done.stderr


def test_the_errors_main_reports_are_project_errors():
  from mcvd_jax.core import checkpointing
  from mcvd_jax.data import sources, video_cache
  from mcvd_jax.errors import ProjectError
  for error in (ConfigError, loop.WorkdirError, loop.NonFiniteLossError,
                checkpointing.NoReadableCheckpointError, checkpointing.CheckpointMismatchError,
                checkpointing.CheckpointNotFoundError, eval_runner.EvalError,
                registry.UnknownFamilyError, sources.DatasetUnavailableError,
                sources.CorruptFileError, video_cache.CacheDirError):
    assert issubclass(error, ProjectError), error
