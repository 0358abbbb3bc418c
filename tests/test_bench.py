"""The benchmark's train step (bench.paper_train_step, as `--parts=train` runs it) on a tiny network."""

import jax
import numpy as np
import pytest

from mcvd_jax.video_diffusion import bench
from mcvd_jax.models import UNetConfig, init_params

TINY = UNetConfig(image_size=8, channels=1, num_frames=2, num_frames_cond=1, ngf=8, ch_mult=(1,),
                  num_res_blocks=1, attn_resolutions=(), n_head_channels=8)


def test_bench_train_step_reports_time_flops_and_page_faults():
  params = init_params(TINY, jax.random.key(0))
  result = bench.bench_train_step(TINY, params, batch=2, repeats=2)
  assert len(result["seconds_all"]) == 2 and result["seconds_median"] > 0
  assert result["gflop_per_call"] > 0
  np.testing.assert_allclose(result["frames_per_second"], 2 * 2 / result["seconds_median"])
  assert result["page_faults_per_call"] is None or result["page_faults_per_call"] >= 0
  # The timed state is a copy: donating it leaves the caller's parameters alive.
  assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))


def test_image_bench_offers_the_cifar10_train_step(monkeypatch):
  """`python -m mcvd_jax.bench --family=image_diffusion` times configs/cifar10.py's network by
  default; its train entry builds and runs (here at a tiny size)."""
  import types

  import mcvd_jax.bench
  from configs import cifar10
  from mcvd_jax.image_diffusion import bench as image_bench
  from mcvd_jax.registry import get_family
  assert get_family("image_diffusion").bench_module == image_bench.__name__
  assert "--family=image_diffusion --image_parts=train" in mcvd_jax.bench.__doc__
  assert image_bench.flags.FLAGS["image_models"].default == ["cifar10"]
  m = cifar10.get_config().model
  fields = ("image_size", "channels", "ngf", "ch_mult", "num_res_blocks", "attn_resolutions",
            "n_head_channels", "dropout")
  assert image_bench.MODEL_SIZES["cifar10"] == {f: m[f] for f in fields}

  tiny = dict(image_size=8, channels=3, ngf=8, ch_mult=(1,), num_res_blocks=1,
              attn_resolutions=(), n_head_channels=8, dropout=0.0)
  monkeypatch.setitem(image_bench.MODEL_SIZES, "tiny", tiny)
  values = types.SimpleNamespace(image_models=["tiny"], image_parts=["train"], batch=2, repeats=1,
                                 image_noise="gff", image_dtype="float32", image_sampler_steps=2,
                                 image_remat="blocks", image_kernels="auto",
                                 image_peak_tflops=0.5)
  [entry] = image_bench.run(values)["results"]
  assert entry["model"] == "tiny" and entry["parameters"] > 0 and "sampler" not in entry
  assert (entry["remat"], entry["peak_tflops"], entry["peak_source"]) == ("blocks", 0.5,
                                                                          "--peak_tflops")
  train = entry["train"]
  assert train["seconds_median"] > 0 and train["images_per_second"] > 0
  # MFU: the step's FLOPs without remat over the seconds and the given peak.
  assert train["model_gflop_per_call"] > 0
  assert train["mfu"] == pytest.approx(
      train["model_gflop_per_call"] * 1e9 / train["seconds_median"] / 0.5e12)


def test_bench_model_reports_utilisation_and_passes_dtype_remat_kernels(monkeypatch):
  """A forward entry of the MCVD bench on a tiny network: the config flags reach the UNet and
  mfu = model FLOPs / seconds / peak (here a stated 1 TFLOP/s peak)."""
  tiny = dict(image_size=8, channels=1, num_frames=2, num_frames_cond=1, ngf=8, ch_mult=(1,),
              num_res_blocks=1, attn_resolutions=(), n_head_channels=8)
  monkeypatch.setitem(bench.MODEL_SIZES, "tiny", tiny)
  peak = {"device_kind": "cpu", "peak_tflops": 1.0, "peak_source": "test"}
  result = bench.bench_model("tiny", 2, ["forward"], 1, 2, 1, "bfloat16", remat="blocks",
                             kernels="library", peak=peak)
  assert (result["dtype"], result["remat"], result["kernels"]) == ("bfloat16", "blocks", "library")
  forward = result["forward"]
  np.testing.assert_allclose(
      forward["mfu"], forward["model_gflop_per_call"] / forward["seconds_median"] / 1e3)
  assert forward["model_gflop_per_call"] > 0 and forward["hfu"] > 0
  assert result["peak_memory_bytes"] is None and "peak_bytes_in_use" in result["peak_memory_note"]
  # The train step's model FLOPs come from lowering alone (remat left out).
  assert bench.train_step_gflop(UNetConfig(**tiny, remat="blocks"), 2) > 0
