"""The shared core with a family that is not MCVD (tests/toy_family.py): training through
train_and_evaluate, checkpoints, sample mode, evaluation through the shared runner; config.family
errors; main's project errors without tracebacks. (Its stops by signal and bit-identical resumes,
in one and two processes, are tests/test_multiprocess.py's.)"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import toy_family
from resume_check import restore_newest
from mcvd_jax import registry
from mcvd_jax.core import eval_runner, loop
from mcvd_jax.core.modes import run_mode
from mcvd_jax.core.config_checks import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
  monkeypatch.setitem(registry.FAMILIES, toy_family.NAME, toy_family.FAMILY)


def _restore(workdir, config):
  return restore_newest(workdir, config, toy_family.FAMILY)


def test_toy_family_trains_checkpoints_samples_and_evaluates(tmp_path):
  config = toy_family.toy_config()
  state = loop.train_and_evaluate(config, str(tmp_path), toy_family.FAMILY)
  assert int(state.step) == 6
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4", "6"]
  assert sorted(os.listdir(tmp_path / "media")) == ["fit_3.npy", "fit_6.npy"]
  restored, meta = _restore(tmp_path, config)
  assert meta == {"family": "toy", "data_seed": 0, "hidden": 16}
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # It learned: the EMA fit of sin(3x) is better than the initial parameters'.
  init = loop.Trainer(config, str(tmp_path), toy_family.FAMILY).init_state()
  x = toy_family.test_points()

  def error(params, model_state):
    return toy_family.test_mse(params, model_state)

  assert error(state.ema_params, state.model_state) < error(init.params, init.model_state)

  # Sample mode through main's dispatcher: the family's writer, on the EMA parameters and the
  # saved model state.
  path = run_mode(toy_family.FAMILY, config, str(tmp_path), "sample")
  np.testing.assert_allclose(np.load(path), toy_family.predict(
      state.ema_params, x, state.model_state["x_mean"]), rtol=1e-6)

  # Eval mode: the shared runner's files and reports, batches of 4, 4, 2 test points.
  report_path = run_mode(toy_family.FAMILY, config, str(tmp_path), "eval")
  report = json.loads(pathlib.Path(report_path).read_text())
  entry = report["protocols"]["toy_mse"]
  assert entry["results"]["mse"] == pytest.approx(error(state.ema_params, state.model_state),
                                                  rel=1e-5)
  assert entry["batches"] == {"total": 3, "computed_now": 3}
  assert report["checkpoint"] == "toy step 6" and report["test_points"] == 10
  assert "MSE" in (tmp_path / eval_runner.REPORT_MD).read_text()
  assert sorted(os.listdir(tmp_path / "eval" / "toy_mse")) == [
      "batch_00000.npz", "batch_00001.npz", "batch_00002.npz", "meta.json"]
  # Evaluated again: nothing is recomputed and the numbers are the same.
  again = json.loads(pathlib.Path(run_mode(toy_family.FAMILY, config, str(tmp_path), "eval")).read_text())
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


def test_unknown_family_lists_the_families():
  config = toy_family.toy_config()
  config.family = "gan"
  with pytest.raises(registry.UnknownFamilyError, match="config.family='gan' is unknown; use "
                     "one of image_diffusion, mcvd, ode_video, toy"):
    registry.family_of(config)


@pytest.mark.parametrize("mode", ["train", "sample", "eval"])
def test_every_mode_checks_the_config_before_anything_is_built(monkeypatch, tmp_path, mode):
  def fail(*args, **kwargs):
    raise AssertionError("built, loaded or compiled before the config was checked")
  monkeypatch.setattr(loop, "jit", fail)
  family = dataclasses.replace(toy_family.FAMILY, build=fail, sample=fail, evaluation=fail)
  config = toy_family.toy_config()
  config.toy.hidden = 0
  with pytest.raises(ConfigError, match=r"toy\.hidden=0 must be >= 1"):
    run_mode(family, config, str(tmp_path), mode)
  config.toy.hidden, config.training.ema_rate = 16, 1.0  # a shared section: checked by the core
  with pytest.raises(ConfigError, match=r"training\.ema_rate=1\.0 must be in \[0, 1\)"):
    run_mode(family, config, str(tmp_path), mode)
  config.training.ema_rate, config.optim.schedule = 0.5, "cosinus"
  with pytest.raises(ConfigError, match=r"optim\.schedule='cosinus'"):
    run_mode(family, config, str(tmp_path), mode)


def _window(trainer, state, first, count):
  """`count` updates from `state`, one dispatch each: (state, metrics of each update)."""
  metrics = []
  for step in range(first, first + count):
    state, m = trainer.train_steps(state, trainer.global_batches(step, 1))
    metrics.append({k: float(np.asarray(v)[0]) for k, v in m.items()})
  return state, metrics


def test_toy_uses_state_data_init_schedule_and_periodic_evaluation(tmp_path, monkeypatch):
  config = toy_family.toy_config()
  trainer = loop.Trainer(config, str(tmp_path), toy_family.FAMILY)
  state = trainer.init_state()
  batches = [toy_family.train_batch(0.05, 0, step, 8, 0, 1) for step in range(6)]
  # Data-dependent init: the output bias is the first batch's mean target (EMA too).
  np.testing.assert_allclose(np.asarray(state.params["b2"]), batches[0]["y"].mean(0), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(state.ema_params["b2"]), np.asarray(state.params["b2"]))
  state, metrics = _window(trainer, state, 0, 6)
  # Mutable state: the running mean of the batches' inputs, updated by every update.
  running = 0.0
  for batch in batches:
    running = toy_family.STAT_RATE * running + (1 - toy_family.STAT_RATE) * batch["x"].mean()
  assert float(state.model_state["x_mean"]) == pytest.approx(running, rel=1e-5)
  # The config's cosine schedule: warm-up over 2 updates, then lr -> 0.1 lr over the other 4.
  lr = config.optim.lr
  assert [m["lr"] for m in metrics] == pytest.approx(
      [0.0, lr / 2, lr, lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4))), lr * 0.55,
       lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(3 * np.pi / 4)))], rel=1e-5)
  # Periodic evaluation through the loop: every 2 steps, the family's scalars as eval/<name>.
  calls = []
  original = loop.Trainer.evaluate

  def record(self, step, state, writer):
    calls.append((step, original(self, step, state, writer)))
    return calls[-1][1]

  monkeypatch.setattr(loop.Trainer, "evaluate", record)
  final = loop.train_and_evaluate(config, str(tmp_path / "run"), toy_family.FAMILY)
  assert [step for step, _ in calls] == [2, 4, 6]
  assert calls[-1][1] == {"eval/test_mse": pytest.approx(
      toy_family.test_mse(final.ema_params, final.model_state), rel=1e-6)}


def test_updates_over_the_gradient_norm_bound_are_skipped_and_counted(tmp_path):
  config = toy_family.toy_config()
  trainer = loop.Trainer(config, str(tmp_path), toy_family.FAMILY)
  _, free = _window(trainer, trainer.init_state(), 0, 6)
  norms = [m["grad_norm"] for m in free]
  assert all(m["large_grad"] == 0.0 for m in free)  # no bound: nothing skipped
  config.optim.skip_grad_norm = float(np.median(norms))  # about half of them exceed it
  bounded = loop.Trainer(config, str(tmp_path), toy_family.FAMILY)
  state = bounded.init_state()
  skipped = 0
  for step in range(6):
    before = jax.tree.map(np.array, state)  # the step donates its input
    state, metrics = _window(bounded, state, step, 1)
    large = metrics[0]["grad_norm"] > config.optim.skip_grad_norm
    assert metrics[0]["large_grad"] == float(large) and int(state.step) == step + 1
    unchanged = [np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                 zip(jax.tree.leaves(state[1:]), jax.tree.leaves(before[1:]))]
    assert all(unchanged) == large  # params, optimizer, EMA and model state all kept
    skipped += large
  assert 0 < skipped < 6
  window = [{k: np.array([v]) for k, v in m.items()} for m in free]
  assert loop.summarize_window(window)["skipped_large_grad"] == 0.0
  window[0]["large_grad"][0] = window[3]["large_grad"][0] = 1.0
  assert loop.summarize_window(window)["skipped_large_grad"] == 2.0


@pytest.mark.parametrize("args, message", [
    (["--config.training.ema_rate=1.0"], "error: training.ema_rate=1.0 must be in [0, 1)"),
    (["--config.data.dataset=bair"], "error: data.dataset='bair' has RGB frames"),
    (["--config.data.dataset=kth", "--config.data.path=/nonexistent/kth"],
     "error: data.dataset='kth': data.path='/nonexistent/kth' is not a directory"),
    (["--mode=sample", "--checkpoint=/nonexistent/run"], "error: --checkpoint='/nonexistent/run'"),
    (["--workdir=/proc/mcvd_jax_run"], "error: workdir '/proc/mcvd_jax_run' is not writable"),
    (["--mode=sample", "--config.sampling.kind=ddpx"], "error: sampling.kind='ddpx' is unknown"),
    (["--mode=eval", "--config.eval.batch_size=0"], "error: eval.batch_size=0 must be >= 1"),
    (["--config.training.init_from=demo/smmnist_quick"],
     "error: --config.training.init_from='demo/smmnist_quick' holds another network "
     "(model.num_frames: the weights' 5, the config's 2"),
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
