"""The training loop's reporting (core.writers): the writer without TensorFlow, the progress hook,
and a whole toy training run in a process where TensorFlow cannot be imported."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from mcvd_jax.core import writers

TESTS = pathlib.Path(__file__).resolve().parent


def test_json_lines_writer_records_scalars_and_keeps_them_across_a_resume(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  writer = writers.JsonLinesWriter(path)
  writer.write_scalars(2, {"loss": 1.5, "lr": 1e-3})
  # on disk at once: a run that crashes later keeps it
  assert [json.loads(line) for line in open(path)] == [{"step": 2, "loss": 1.5, "lr": 1e-3}]
  writer.write_images(2, {"samples": [[0]]})  # named in the log, not recorded
  writer.flush()
  assert [json.loads(line) for line in open(path)] == [{"step": 2, "loss": 1.5, "lr": 1e-3}]
  resumed = writers.JsonLinesWriter(path)
  resumed.write_scalars(4, {"loss": 0.5})
  resumed.close()
  assert [json.loads(line)["step"] for line in open(path)] == [2, 4]
  quiet = writers.JsonLinesWriter(None)  # another process: the log only, no file
  quiet.write_scalars(1, {"loss": 1.0})
  quiet.flush()
  assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]


def test_make_writer_falls_back_to_json_lines_without_tensorflow(tmp_path, monkeypatch):
  monkeypatch.setattr(writers, "tensorboard_available", lambda: False)
  writer = writers.make_writer(str(tmp_path))
  assert isinstance(writer, writers.JsonLinesWriter)
  assert writer.path == os.path.join(str(tmp_path), writers.METRICS_FILE)
  monkeypatch.setattr(writers, "tensorboard_available", lambda: True)
  assert not isinstance(writers.make_writer(str(tmp_path / "tb")), writers.JsonLinesWriter)


class _Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class _Recorder:
  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))


def test_progress_reports_rate_and_timed_shares_once_per_interval():
  clock, recorder = _Clock(), _Recorder()
  progress = writers.Progress(num_steps=1000, writer=recorder, every_secs=10, clock=clock)
  assert progress(10) is None  # the first call starts the clock (after compilation)
  clock.now += 4
  assert progress(30) is None  # within the interval
  with progress.timed("checkpoint"):
    clock.now += 2
  clock.now += 14  # 20 s since the first call, 2 of them checkpointing
  report = progress(110)
  assert report == pytest.approx({"steps_per_sec": 5.0, "share_checkpoint": 0.1})
  assert recorder.scalars == [(110, {"steps_per_sec": 5.0})]
  clock.now += 10  # a new interval: its own rate, no checkpoint time left over
  assert progress(130) == pytest.approx({"steps_per_sec": 2.0})


def test_toy_training_runs_where_tensorflow_cannot_be_imported(tmp_path):
  """An accelerator image without TensorFlow: the loop trains, checkpoints and writes its scalars
  to metrics.jsonl; a second run resumes and appends."""
  script = textwrap.dedent(f"""
      import sys
      # As if not installed: find_spec gives None and an import raises ModuleNotFoundError.
      sys.modules.update(tensorflow=None, tensorflow_datasets=None)
      sys.path.insert(0, {str(TESTS)!r})
      import toy_family
      from mcvd_jax.core import loop
      workdir = {str(tmp_path / "run")!r}
      loop.train_and_evaluate(toy_family.toy_config(num_steps=4), workdir, toy_family.FAMILY)
      loop.train_and_evaluate(toy_family.toy_config(num_steps=6), workdir, toy_family.FAMILY)
      assert sys.modules["tensorflow"] is None  # nothing replaced the block
  """)
  run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "tensorflow is not installed" in run.stderr
  lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  losses = [line for line in lines if "loss" in line]
  assert [line["step"] for line in losses] == [2, 4, 6]  # log_every 2; the resume appended
  assert any(key.startswith("eval/") for line in lines for key in line)
  assert not (tmp_path / "run" / "tensorboard").exists()
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2", "4", "6"]


def test_training_profile_writes_a_trace_of_the_steps_after_compilation(tmp_path):
  sys.path.insert(0, str(TESTS))
  import toy_family
  from mcvd_jax.core import loop
  config = toy_family.toy_config(num_steps=4, profile=True, steps_per_dispatch=1)
  loop.train_and_evaluate(config, str(tmp_path), toy_family.FAMILY)
  traces = list((tmp_path / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
