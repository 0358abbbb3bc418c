"""The bench harness every family's benchmarks use: timing after a warm-up call, page faults,
GFLOP from XLA's cost analysis, and the report header. Prints nothing; `mcvd_jax.bench` is the CLI.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def minor_page_faults() -> int | None:
  """Minor page faults of this process so far (None where `resource` does not exist)."""
  try:
    import resource
  except ImportError:
    return None
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], float | None]:
  """(median seconds, all seconds, minor page faults per call or None) of `repeats` timed calls
  of fn, after one untimed warm-up call (compilation happened before)."""
  import jax
  jax.block_until_ready(fn())
  times = []
  faults_before = minor_page_faults()
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  faults_after = minor_page_faults()
  faults = None if faults_before is None else (faults_after - faults_before) / repeats
  return statistics.median(times), times, faults


def gflop(compiled: Any) -> float | None:
  """GFLOP of one call of a compiled (or lowered) program, from XLA's cost analysis (None if
  unreported)."""
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0))
  except Exception:  # some backends do not report costs
    return None
  return flops / 1e9 or None


def timing_report(median: float, times: list[float], faults: float | None,
                  compile_seconds: float, gflop_per_call: float | None, items: int,
                  unit: str = "frames") -> dict:
  """The fields every timed entry reports: seconds, compile time, throughput, GFLOP/s."""
  return {"seconds_median": median, "seconds_all": times, "compile_seconds": compile_seconds,
          "page_faults_per_call": faults, f"{unit}_per_second": items / median,
          "gflop_per_call": gflop_per_call,
          "gflop_per_second": gflop_per_call / median if gflop_per_call else None}


def time_train_step(train_steps: Callable, state: Any, batches: Any, repeats: int, items: int,
                    unit: str = "frames") -> dict:
  """The timing report of one update: `train_steps` (jitted with the state donated, as the loop
  builds it) compiled for (state, batches), then called `repeats` times on the same batches, each
  call on the state the previous one returned. `items`: frames or images per update."""
  start = time.perf_counter()
  compiled = train_steps.lower(state, batches).compile()
  compile_seconds = time.perf_counter() - start
  holder = [state]

  def one_update():
    holder[0], metrics = compiled(holder[0], batches)
    return metrics["loss"]

  return timing_report(*timed(one_update, repeats), compile_seconds, gflop(compiled), items,
                       unit=unit)


def header(kept_host_memory: bool) -> dict:
  """Backend, devices, jax version and the compiler options in force."""
  import jax

  from mcvd_jax.core.compilation import compiler_options
  return {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
          "jax": jax.__version__, "compiler_options": dict(compiler_options()),
          "keep_freed_host_memory": kept_host_memory}
