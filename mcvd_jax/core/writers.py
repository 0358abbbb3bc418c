"""What the training loop reports: its metric writer and its progress and profiling hooks.

With TensorFlow installed (the default install) the writer is CLU's: the log and TensorBoard
summaries in WORKDIR/tensorboard. Without it (accelerator images such as NVIDIA's JAX containers
ship none, and TensorFlow is too large to add to some), training still runs: the scalars go to the
log and to WORKDIR/metrics.jsonl (one JSON object per write: {"step": ..., name: value, ...}), and
the media files are written as always. The progress and profiling hooks need no TensorFlow either
(CLU's `periodic_actions` imports its TensorFlow writer).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import time
from typing import Callable, Mapping

import jax
import numpy as np
from absl import logging

from mcvd_jax.core import paths

METRICS_FILE = "metrics.jsonl"


def tensorboard_available() -> bool:
  """Whether CLU's TensorBoard writer can be used (it needs TensorFlow)."""
  return importlib.util.find_spec("tensorflow") is not None


class JsonLinesWriter:
  """A metric writer without TensorFlow: scalars to the log and, on process 0, to `path` (JSON
  lines, kept across resumed runs, the file rewritten at every write so that a crash keeps what
  came before; remote paths cannot be appended to); images are named in the log (their files are
  the family's media). The methods the loop and the families call of CLU's MetricWriter."""

  def __init__(self, path: str | None):
    self.path = path
    self._lines: list[str] = []
    if path and paths.exists(path):  # a resumed run appends to its history
      self._lines = [line for line in paths.read_text(path).splitlines() if line.strip()]

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    values = {name: float(value) for name, value in scalars.items()}
    logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
    if self.path:
      self._lines.append(json.dumps({"step": int(step), **values}))
      self.flush()

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    logging.info("[%d] images (TensorBoard needs tensorflow): %s", step,
                 ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in images.items()))

  def flush(self) -> None:
    if self.path:
      paths.write_text(self.path, "".join(line + "\n" for line in self._lines))

  def close(self) -> None:
    self.flush()


def make_writer(workdir: str):
  """The loop's writer: CLU's default one (the log, and TensorBoard in WORKDIR/tensorboard on
  process 0) with TensorFlow installed, else a JsonLinesWriter (WORKDIR/metrics.jsonl on process
  0)."""
  main = jax.process_index() == 0
  if not tensorboard_available():
    if main:
      logging.warning("tensorflow is not installed: no TensorBoard summaries; scalars go to the "
                      "log and %s (pip install tensorflow-cpu for TensorBoard)",
                      os.path.join(workdir, METRICS_FILE))
    return JsonLinesWriter(os.path.join(workdir, METRICS_FILE) if main else None)
  from clu import metric_writers
  if not main:
    return metric_writers.create_default_writer(just_logging=True)
  return metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"))


class Progress:
  """A hook called with the step after every dispatch: every `every_secs` it logs steps/s, the
  share done, the time left and the share of wall time spent in each `timed` section since the
  last report, and writes `steps_per_sec`. `clock`: seconds (time.monotonic; tests pass their
  own)."""

  def __init__(self, num_steps: int, writer, every_secs: float = 60.0,
               clock: Callable[[], float] = time.monotonic):
    self.num_steps, self.writer, self.every_secs, self.clock = num_steps, writer, every_secs, clock
    self._last: tuple[int, float] | None = None  # (step, time) of the last report
    self._sections: dict[str, float] = collections.defaultdict(float)

  def __call__(self, step: int) -> dict[str, float] | None:
    """Reports when `every_secs` have passed since the last report (the first call only starts
    the clock: it comes after compilation); returns what it wrote, or None."""
    now = self.clock()
    if self._last is None:
      self._last = (step, now)
      return None
    last_step, last_time = self._last
    elapsed = now - last_time
    if elapsed < self.every_secs or step <= last_step:
      return None
    rate = (step - last_step) / elapsed
    shares = {name: spent / elapsed for name, spent in self._sections.items()}
    left = (self.num_steps - step) / rate / 60
    logging.info("step %d/%d (%.1f%%): %.3g steps/s, %.1f min left%s", step, self.num_steps,
                 100 * step / self.num_steps, rate, left,
                 "".join(f", {100 * s:.0f}% in {name}" for name, s in sorted(shares.items())))
    self.writer.write_scalars(step, {"steps_per_sec": rate})
    self._last, self._sections = (step, now), collections.defaultdict(float)
    return {"steps_per_sec": rate, **{f"share_{name}": s for name, s in shares.items()}}

  @contextlib.contextmanager
  def timed(self, name: str):
    """Counts the time spent inside towards section `name` of the next report."""
    start = self.clock()
    try:
      yield
    finally:
      self._sections[name] += self.clock() - start


class ProfileSteps:
  """A hook that traces `num_steps` training steps with the JAX profiler into `logdir` (for
  TensorBoard's profile plugin or Perfetto), starting at its first call (after compilation)."""

  def __init__(self, logdir: str, num_steps: int = 5):
    self.logdir, self.num_steps = logdir, num_steps
    self._first: int | None = None
    self.done = False

  def __call__(self, step: int) -> None:
    if self.done:
      return
    if self._first is None:
      self._first = step
      jax.profiler.start_trace(self.logdir)
    elif step - self._first >= self.num_steps:
      jax.profiler.stop_trace()
      self.done = True
      logging.info("profiled steps %d-%d into %s", self._first, step, self.logdir)

  def finish(self) -> None:
    """Ends a trace still running (training ended within the profiled steps)."""
    if self._first is not None and not self.done:
      jax.profiler.stop_trace()
      self.done = True
