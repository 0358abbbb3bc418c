"""Shared by the families' kill-and-resume tests: run a training command, SIGKILL it once it has
checkpointed, run it again to the end, and compare the final train state with an uninterrupted
run's bit for bit."""

import os
import signal
import subprocess
import time

import jax
import numpy as np

from mcvd_jax.core import loop
from mcvd_jax.core.checkpointing import Checkpointer


def restore_newest(workdir, config, family):
  """(train state, meta) of the newest checkpoint in workdir."""
  trainer = loop.Trainer(config, str(workdir), family)
  checkpointer = Checkpointer(str(workdir))
  try:
    return checkpointer.restore_newest(trainer.abstract_state(), move_unreadable=False)
  finally:
    checkpointer.close()


def kill_then_resume(command, workdir, cwd, kill_after: int, steps: int) -> None:
  """Starts `command` (training into `workdir` for `steps` steps), SIGKILLs it once
  checkpoints/<kill_after> exists (asserting it was stopped before the end), then runs the same
  command again, which must resume and finish."""
  process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (workdir / "checkpoints" / str(kill_after)).exists() and time.time() < deadline:
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  saved = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert saved and saved[-1] < steps, f"the run was not interrupted: {saved}"
  done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]


def assert_same_final_state(straight, killed, config, family, steps: int) -> None:
  (a, _), (b, _) = restore_newest(straight, config, family), restore_newest(killed, config, family)
  assert int(a.step) == int(b.step) == steps
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
