"""Model FLOP utilisation for every family's bench: peak dense matmul rates per device kind, the
CPU's measured rate, MFU arithmetic and peak device memory.

MFU = (FLOPs of one call, from XLA's cost analysis) / (median seconds per call) / (peak FLOP/s).
The peak is the vendor's dense (no sparsity) matmul rate of the compute dtype: bfloat16, or for
float32 what XLA runs float32 matmuls as by default (TF32 tensor cores on A100/H100/H200,
single bfloat16 passes on TPUs, whose matrix units have no float32 mode). On CPU there is no
datasheet figure: the rate of a float32 [2048, 2048] @ [2048, 2048] matmul measured in the same
process stands in for it.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple


class Peak(NamedTuple):
  """Dense peak TFLOP/s of one device kind per compute dtype, and where the figures come from."""

  name: str
  bfloat16: float
  float32: float
  source: str


# Matched in order against jax.devices()[0].device_kind, lower-cased: every substring of a row's
# pattern must occur (so "v5 lite" is tried before "v5"). NVIDIA datasheets quote tensor-core rates
# with 2:4 sparsity; the dense figures below are half of those.
PEAKS: tuple[tuple[tuple[str, ...], Peak], ...] = (
    (("tpu", "v4"), Peak("TPU v4", 275.0, 275.0,
                         "Google Cloud TPU v4 documentation: 275 bf16 TFLOPs per chip")),
    (("tpu", "v5 lite"), Peak("TPU v5e", 197.0, 197.0,
                              "Google Cloud TPU v5e documentation: 197 bf16 TFLOPs per chip")),
    (("tpu", "v5e"), Peak("TPU v5e", 197.0, 197.0,
                          "Google Cloud TPU v5e documentation: 197 bf16 TFLOPs per chip")),
    (("tpu", "v5"), Peak("TPU v5p", 459.0, 459.0,
                         "Google Cloud TPU v5p documentation: 459 bf16 TFLOPs per chip")),
    (("tpu", "v6"), Peak("TPU v6e", 918.0, 918.0, "Google Cloud TPU v6e (Trillium) "
                                                  "documentation: 918 bf16 TFLOPs per chip")),
    (("a100",), Peak("A100", 312.0, 156.0,
                     "NVIDIA A100 Tensor Core GPU datasheet: BF16 312, TF32 156 TFLOPS (dense)")),
    (("h100", "pcie"), Peak("H100 PCIe", 756.0, 378.0,
                            "NVIDIA H100 Tensor Core GPU datasheet, PCIe: BF16 1513, TF32 756 "
                            "TFLOPS with sparsity (halved)")),
    (("h100",), Peak("H100 SXM", 989.0, 494.5,
                     "NVIDIA H100 Tensor Core GPU datasheet, SXM: BF16 1979, TF32 989 TFLOPS "
                     "with sparsity (halved)")),
    (("h200",), Peak("H200", 989.0, 494.5,
                     "NVIDIA H200 Tensor Core GPU datasheet, SXM: BF16 1979, TF32 989 TFLOPS "
                     "with sparsity (halved)")),
)


def lookup_peak(device_kind: str) -> Peak | None:
  """The table row of a jax device_kind string (e.g. 'NVIDIA H100 80GB HBM3', 'TPU v5 lite'), or
  None for a kind not in the table."""
  kind = device_kind.lower()
  for pattern, peak in PEAKS:
    if all(part in kind for part in pattern):
      return peak
  return None


def measured_matmul_tflops(n: int = 2048, repeats: int = 3) -> float:
  """TFLOP/s of a float32 [n, n] @ [n, n] matmul on the default device: the fastest of `repeats`
  timed calls after a warm-up call (2 n^3 FLOPs each)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    best = min(best, time.perf_counter() - start)
  return 2.0 * n**3 / best / 1e12


def device_peak(dtype: str, override_tflops: float | None = None, device: Any = None) -> dict:
  """{device_kind, peak_tflops, peak_source} of `device` (default jax.devices()[0]) for compute
  dtype "float32" or "bfloat16": the override when given (> 0), the measured matmul rate on
  CPU, the table's figure otherwise (None for a kind not in the table)."""
  import jax
  device = device or jax.devices()[0]
  kind = device.device_kind
  if override_tflops:
    return {"device_kind": kind, "peak_tflops": float(override_tflops),
            "peak_source": "--peak_tflops"}
  if device.platform == "cpu":
    return {"device_kind": kind, "peak_tflops": measured_matmul_tflops(),
            "peak_source": "measured: float32 2048x2048 @ 2048x2048 matmul, best of 3 after "
                           "warm-up, this process"}
  peak = lookup_peak(kind)
  if peak is None:
    return {"device_kind": kind, "peak_tflops": None,
            "peak_source": f"{kind!r} is not in mcvd_jax.core.mfu.PEAKS; pass --peak_tflops"}
  tflops = peak.bfloat16 if dtype == "bfloat16" else peak.float32
  return {"device_kind": kind, "peak_tflops": tflops, "peak_source": f"{peak.name}: {peak.source}"}


def mfu(gflop_per_call: float | None, seconds: float, peak_tflops: float | None) -> float | None:
  """Achieved FLOP/s over the peak: gflop_per_call * 1e9 / seconds / (peak_tflops * 1e12);
  None when either count is unknown."""
  if not gflop_per_call or not peak_tflops or seconds <= 0:
    return None
  return gflop_per_call * 1e9 / seconds / (peak_tflops * 1e12)


def with_utilisation(entry: dict, model_gflop: float | None, peak: dict) -> dict:
  """A core.bench.timing_report entry plus model_gflop_per_call, mfu (model FLOPs) and hfu (the
  timed program's FLOPs, entry["gflop_per_call"], recomputation included) against
  peak["peak_tflops"] (a device_peak dict)."""
  seconds = entry["seconds_median"]
  return {**entry, "model_gflop_per_call": model_gflop,
          "mfu": mfu(model_gflop, seconds, peak["peak_tflops"]),
          "hfu": mfu(entry["gflop_per_call"], seconds, peak["peak_tflops"])}


def peak_memory_bytes(device: Any = None) -> int | None:
  """Peak bytes in use on `device` (default jax.devices()[0]) since the process started, from
  device.memory_stats()["peak_bytes_in_use"]; None where the backend does not report it (CPU)."""
  import jax
  device = device or jax.devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # some backends raise instead of returning None
    return None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None
