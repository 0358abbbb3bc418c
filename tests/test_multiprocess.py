"""Runs of several processes and preemption, through main's command line with the toy family
(tests/toy_main.py): two processes on this machine (a loopback coordinator, 4 CPU devices each,
gloo collectives), each feeding its slice of every batch. A two-process run stopped by SIGTERM
(sent to one process only) and by SIGKILL, then restarted, ends bit for bit where an uninterrupted
two-process run ends, and both agree with the single-process 8-device run to float32 rounding; the
same for a sharded evaluation killed half-way. Signals are real, sent by the toy family to its own
process at a known step (TOY_SIGNAL_AT, tests/toy_family.py)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import toy_family
from resume_check import restore_newest
from mcvd_jax import registry
from mcvd_jax.core import loop
from mcvd_jax.core.distributed import DistributedSetupError, ProcessSettings
from mcvd_jax.core.modes import run_mode
from mcvd_jax.core.preemption import PREEMPTED_EXIT_STATUS

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 12, 4
TIMEOUT = 300


def toy_config():
  """The config the command lines below give (tests/toy_config.py and their overrides)."""
  return toy_family.toy_config(num_steps=STEPS, checkpoint_every=EVERY, sample_every=0)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, logs, mode="train", processes=2, signal_at=None, checkpoint=None):
  """Starts the toy command line as `processes` processes of one run (4 devices each when
  several, else 8); their output goes to logs/<workdir name>_<mode>_<i>.log."""
  port, started = free_port(), []
  for i in range(processes):
    env = {k: v for k, v in os.environ.items() if k != "TOY_SIGNAL_AT"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // processes}"
    if signal_at:
      env["TOY_SIGNAL_AT"] = signal_at
    command = [sys.executable, "tests/toy_main.py", "--config=tests/toy_config.py",
               f"--workdir={workdir}", f"--mode={mode}", f"--config.training.num_steps={STEPS}",
               f"--config.training.checkpoint_every={EVERY}"]
    if processes > 1:
      command += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
                  f"--process_id={i}"]
    if checkpoint:
      command.append(f"--checkpoint={checkpoint}")
    log = logs / f"{pathlib.Path(workdir).name}_{mode}_{i}_{len(list(logs.iterdir()))}.log"
    with open(log, "w") as out:
      started.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                       stderr=subprocess.STDOUT), log))
  return started


def finish(started, kill_rest_after_first=False):
  """Waits for every process -> [(exit status, log text)]. With kill_rest_after_first, the others
  are SIGKILLed once process 0 has ended (they would wait for it in their next collective)."""
  if kill_rest_after_first:
    started[0][0].wait(TIMEOUT)
    for process, _ in started[1:]:
      process.send_signal(signal.SIGKILL)
  results = []
  for process, log in started:
    try:
      process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
      for p, _ in started:
        p.kill()
      raise
    results.append((process.returncode, log.read_text()))
  return results


def assert_succeeded(results):
  for status, text in results:
    assert status == 0, text[-3000:]


def steps_saved(workdir) -> list[int]:
  return sorted(int(s) for s in os.listdir(pathlib.Path(workdir) / "checkpoints") if s.isdigit())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An uninterrupted two-process run and its logs directory."""
  registry.FAMILIES.setdefault(toy_family.NAME, toy_family.FAMILY)
  base = tmp_path_factory.mktemp("multiprocess")
  logs = base / "logs"
  logs.mkdir()
  assert_succeeded(finish(launch(base / "straight", logs)))
  return base, logs


def test_two_processes_stopped_by_sigterm_and_sigkill_resume_bit_for_bit(runs):
  base, logs = runs
  workdir = base / "interrupted"
  # SIGTERM to process 1 alone, as it makes the batch of step 6: both save step 6 and stop.
  results = finish(launch(workdir, logs, signal_at="SIGTERM:1:train:6"))
  assert [status for status, _ in results] == [PREEMPTED_EXIT_STATUS] * 2, results[0][1][-3000:]
  assert "stopped by a signal to another process: saved a checkpoint at step 6" in results[0][1]
  assert "stopped by SIGTERM: saved a checkpoint at step 6" in results[1][1]
  assert steps_saved(workdir) == [4, 6]
  # The same command, and process 0 is SIGKILLed at step 10 (its partner with it).
  results = finish(launch(workdir, logs, signal_at="SIGKILL:0:train:10"),
                   kill_rest_after_first=True)
  assert results[0][0] == -signal.SIGKILL
  assert max(steps_saved(workdir)) < STEPS
  assert_succeeded(finish(launch(workdir, logs)))
  config = toy_config()
  (straight, _), (resumed, _) = (restore_newest(base / name, config, toy_family.FAMILY)
                                 for name in ("straight", "interrupted"))
  assert int(straight.step) == int(resumed.step) == STEPS
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # One process with all 8 devices: the same maths, another reduction order.
  single = loop.train_and_evaluate(config, str(base / "single"), toy_family.FAMILY)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(single)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_one_process_sigterm_saves_and_the_rerun_continues_bit_for_bit(runs):
  base, logs = runs
  workdir = base / "one_process"
  [(status, text)] = finish(launch(workdir, logs, processes=1, signal_at="SIGTERM:0:train:5"))
  assert status == PREEMPTED_EXIT_STATUS, text[-3000:]
  assert "stopped by SIGTERM: saved a checkpoint at step 5" in text
  assert steps_saved(workdir) == [4, 5]
  assert_succeeded(finish(launch(workdir, logs, processes=1)))
  config = toy_config()
  straight = loop.train_and_evaluate(config, str(base / "one_process_straight"),
                                     toy_family.FAMILY)
  resumed, _ = restore_newest(workdir, config, toy_family.FAMILY)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_two_process_sharded_evaluation_resumes_and_matches_one_process(runs):
  base, logs = runs
  straight = base / "straight"
  # Killed while computing the batch that starts at item 4 (batches of 4, 4, 2 test points).
  finish(launch(straight, logs, mode="eval", signal_at="SIGKILL:0:eval:4"),
         kill_rest_after_first=True)
  assert sorted(os.listdir(straight / "eval" / "toy_mse")) == ["batch_00000.npz", "meta.json"]
  assert_succeeded(finish(launch(straight, logs, mode="eval")))
  two = json.loads((straight / "eval_report.json").read_text())["protocols"]["toy_mse"]
  assert two["batches"] == {"total": 3, "computed_now": 2}
  # An uninterrupted two-process evaluation of the same checkpoint: the same number, bit for bit.
  assert_succeeded(finish(launch(base / "eval_two", logs, mode="eval", checkpoint=straight)))
  whole = json.loads((base / "eval_two" / "eval_report.json").read_text())["protocols"]["toy_mse"]
  assert whole["batches"]["computed_now"] == 3 and whole["results"] == two["results"]
  one_path = run_mode(toy_family.FAMILY, toy_config(), str(base / "eval_one"), "eval",
                      str(straight))
  one = json.loads(pathlib.Path(one_path).read_text())["protocols"]["toy_mse"]
  assert one["results"]["mse"] == pytest.approx(two["results"]["mse"], rel=1e-6)


@pytest.mark.parametrize("settings, message", [
    (ProcessSettings("localhost", 2, 0), "is not HOST:PORT"),
    (ProcessSettings("10.0.0.2:99999", 2, 0), "is not HOST:PORT"),
    (ProcessSettings("10.0.0.2:1234", 0, 0), "--num_processes=0 must be >= 1"),
    (ProcessSettings("10.0.0.2:1234", 2, 2), "--process_id=2 must be below --num_processes=2"),
    (ProcessSettings("10.0.0.2:1234", 2, -1), "--process_id=-1 must be >= 0"),
])
def test_process_settings_name_the_bad_flag(settings, message):
  with pytest.raises(DistributedSetupError, match=message):
    settings.check()
