"""SIGTERM-safe training: a preemption notice (a TPU VM's, Kubernetes' or Slurm's SIGTERM) makes
the loop save a checkpoint at the current step and stop; rerunning the same command continues
from it exactly as an uninterrupted run would.

The signal may reach one process of a multi-process run only, or each at a different moment, so
the processes agree at every dispatch boundary (a tiny all-gather of each one's flag): they stop
after the same update and save the same step together.
"""

from __future__ import annotations

import signal
import threading
from typing import Sequence

import jax
import numpy as np
from absl import logging

from mcvd_jax.errors import ProjectError

# The status a process ends with when a signal stopped it (128 + SIGTERM, as if killed by it):
# schedulers that restart failed jobs restart it, and the rerun continues from the checkpoint.
PREEMPTED_EXIT_STATUS = 128 + signal.SIGTERM


class TrainingPreempted(RuntimeError, ProjectError):
  """Training stopped early, by a signal, after saving a checkpoint at `step`."""

  def __init__(self, step: int, cause: str, workdir: str):
    super().__init__(f"stopped by {cause}: saved a checkpoint at step {step} in {workdir}; run "
                     f"the same command again to continue from it")
    self.step = step


class PreemptionNotice:
  """A context manager that catches `signals` (default SIGTERM) while training runs.

  `stop_now()` is called by every process at the same points (after each dispatch) and returns
  True once any process has received one of the signals. Outside the main thread (where Python
  cannot install handlers) it watches nothing and says so. The previous handlers come back on exit.
  """

  def __init__(self, signals: Sequence[signal.Signals] = (signal.SIGTERM,)):
    self.signals = tuple(signals)
    self.received: str | None = None  # the name of the first signal caught here
    self._previous: dict = {}

  def _catch(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.received is None:
      logging.warning("%s received: the run saves a checkpoint after this update and stops", name)
    self.received = self.received or name

  def __enter__(self) -> "PreemptionNotice":
    if threading.current_thread() is not threading.main_thread():
      logging.warning("training runs outside the main thread: %s will not save a checkpoint "
                      "before the process ends", ", ".join(s.name for s in self.signals))
      return self
    for sig in self.signals:
      self._previous[sig] = signal.signal(sig, self._catch)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def stop_now(self) -> bool:
    """Whether any process has been told to stop (a collective: every process calls it)."""
    here = self.received is not None
    if jax.process_count() == 1:
      return here
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.asarray(here, np.int32))
    if flags.any() and not here:
      self.received = "a signal to another process"
    return bool(flags.any())
