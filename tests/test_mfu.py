"""MFU arithmetic, the peak table and peak memory (core/mfu.py), and the bench's BAIR size."""

import math
import types

import jax
import jax.numpy as jnp
import pytest

from mcvd_jax.core import mfu
from mcvd_jax.core.bench import gflop


def test_matmul_flops_from_cost_analysis_and_mfu_arithmetic():
  """XLA counts 2 m k n FLOPs for [m, k] @ [k, n]; MFU = FLOP/s over the peak FLOP/s."""
  m, k, n = 64, 32, 48
  compiled = jax.jit(jnp.matmul).lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
  assert gflop(compiled) * 1e9 == pytest.approx(2 * m * k * n)
  # 196,608 FLOPs in 1 microsecond is 196.6 GFLOP/s: 19.66% of a 1 TFLOP/s peak.
  assert mfu.mfu(2 * m * k * n / 1e9, 1e-6, 1.0) == pytest.approx(0.196608)
  assert mfu.mfu(None, 1.0, 1.0) is None and mfu.mfu(1.0, 1.0, None) is None


@pytest.mark.parametrize("kind,name,bf16,fp32", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.0, 494.5),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.0, 378.0),
    ("NVIDIA H200", "H200", 989.0, 494.5),
    ("NVIDIA A100-SXM4-80GB", "A100", 312.0, 156.0),
    ("TPU v4", "TPU v4", 275.0, 275.0),
    ("TPU v5 lite", "TPU v5e", 197.0, 197.0),
    ("TPU v5e", "TPU v5e", 197.0, 197.0),
    ("TPU v5p", "TPU v5p", 459.0, 459.0),
    ("TPU v6 lite", "TPU v6e", 918.0, 918.0),
])
def test_peak_table_lookup(kind, name, bf16, fp32):
  peak = mfu.lookup_peak(kind)
  assert (peak.name, peak.bfloat16, peak.float32) == (name, bf16, fp32)
  assert peak.source
  device = types.SimpleNamespace(device_kind=kind, platform="gpu")
  assert mfu.device_peak("bfloat16", device=device)["peak_tflops"] == bf16
  assert mfu.device_peak("float32", device=device)["peak_tflops"] == fp32


def test_unknown_kind_override_and_cpu_peak():
  unknown = types.SimpleNamespace(device_kind="Mystery Accelerator 9000", platform="gpu")
  assert mfu.lookup_peak(unknown.device_kind) is None
  assert mfu.device_peak("bfloat16", device=unknown)["peak_tflops"] is None
  assert "--peak_tflops" in mfu.device_peak("bfloat16", device=unknown)["peak_source"]
  assert mfu.device_peak("bfloat16", 123.0, device=unknown)["peak_tflops"] == 123.0
  cpu = mfu.device_peak("float32", device=jax.devices("cpu")[0])
  assert 0 < cpu["peak_tflops"] < 100 and cpu["peak_source"].startswith("measured")


def test_peak_memory_bytes():
  with_stats = types.SimpleNamespace(memory_stats=lambda: {"peak_bytes_in_use": 1234})
  without = types.SimpleNamespace(memory_stats=lambda: None)

  def raising():
    raise RuntimeError("not supported")

  assert mfu.peak_memory_bytes(with_stats) == 1234
  assert mfu.peak_memory_bytes(without) is None
  assert mfu.peak_memory_bytes(types.SimpleNamespace(memory_stats=raising)) is None


def test_bench_bair_size_has_the_papers_251m_parameters():
  from mcvd_jax.models import UNetConfig, init_params
  from mcvd_jax.video_diffusion.bench import MODEL_SIZES
  cfg = UNetConfig(**MODEL_SIZES["bair"])
  shapes = jax.eval_shape(lambda key: init_params(cfg, key), jax.random.key(0))
  assert sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)) == 251_169_807
