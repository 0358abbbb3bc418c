"""MCVD's benchmarks for `python -m mcvd_jax.bench` (the default family; prints one JSON object).

  python -m mcvd_jax.bench                         # forward + DDPM-100 sampler, smmnist and small
  python -m mcvd_jax.bench --models=smmnist --parts=forward --repeats=10
  python -m mcvd_jax.bench --models=smmnist --parts=train --repeats=5   # the paper's SMMNIST step
  python -m mcvd_jax.bench --parts=data    # input pipeline vs the BAIR train step's consumption
  python -m mcvd_jax.bench --parts=fvd --batch=4 --repeats=2   # I3D features/s for FVD
  python -m mcvd_jax.bench --models=bair --batch=64 --parts=train --dtype=bfloat16 --remat=blocks
                                           # the paper's BAIR step (accelerator-sized)

For each named model size: the jitted forward pass, one training update (forward + backward +
clipping + Adam + EMA, donated state, as the training loop runs it) and a full DDPM sampler call
(median seconds over repeats after a warm-up call, frames/s, and GFLOP/s from XLA's cost analysis
of the compiled program). Parameters are random: speed does not depend on their values.

Each entry also reports model FLOP utilisation (core/mfu.py): `mfu` = model FLOPs / median
seconds / the device's peak for --dtype (table per device kind; on CPU a float32 matmul measured
in the same run; --peak_tflops overrides). Model FLOPs (`model_gflop_per_call`) are XLA's cost
analysis of the same program lowered without remat and before XLA's optimisations, so neither
recomputation nor backend rewrites count and MFU compares across --remat, --kernels and backends.
`hfu` divides the compiled program's FLOPs (`gflop_per_call`: recomputation included; about 6%
above the lowered count on CPU even without remat) instead. The report ends with the device's
peak memory (None where the backend does not report it, e.g. CPU). --dtype, --remat and
--kernels go into the network's UNetConfig.

`--parts=data` times the input pipeline instead: `ClipDataset.train_batch` on a synthetic frame
cache of BAIR's size (`--data_videos` videos of 30 frames of 64x64x3, built once in a temporary
directory), at the paper's BAIR batch (64 clips of 1 or 2 past + 5 current frames). It sets that
against the most an accelerator of `--accelerator_tflops` could consume: the FLOPs of one BAIR
train step (XLA's cost analysis of the lowered step; nothing is compiled or run) at that peak rate.
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags

from mcvd_jax.core.bench import gflop, time_train_step, timed, timing_report
from mcvd_jax.core.mfu import device_peak, peak_memory_bytes, with_utilisation

flags.DEFINE_list("models", ["smmnist", "small"], "Named model sizes to time.")
flags.DEFINE_list("parts", ["forward", "train", "sampler"],
                  "What to time: forward, train, sampler (per model), samplers (seconds per video "
                  "block of each --sampler_settings entry), data (input pipeline), fvd "
                  "(I3D features of 16-frame 224x224 clips).")
flags.DEFINE_integer("data_videos", 43_264, "data: videos in the synthetic cache (BAIR's train).")
flags.DEFINE_integer("data_batches", 100, "data: timed train_batch calls per clip length.")
flags.DEFINE_float("accelerator_tflops", 989.0,
                   "data: peak TFLOP/s fed by one host (default one H100 SXM, bf16 dense).")
flags.DEFINE_integer("sampler_steps", 100, "DDPM steps of the sampler call.")
flags.DEFINE_integer("sampler_repeats", 1, "Timed repeats of the sampler call.")
flags.DEFINE_string("dtype", "float32", "Compute dtype (float32 or bfloat16): model.dtype.")
flags.DEFINE_string("remat", "none", "model.remat: none, blocks or a jax.checkpoint_policies name.")
flags.DEFINE_string("kernels", "auto", "model.kernels: auto, custom, library[,NAME=CHOICE...].")
flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s for MFU (0: the device table, or the "
                   "measured matmul rate on CPU).")
flags.DEFINE_list("sampler_settings", ["ddpm:100", "ddim:50", "ode:adaptive", "ode:heun10",
                                       "dpm_solver:10", "dpm_solver:20", "dpm_singlestep3:12"],
                  "samplers: KIND:SETTING pairs timed per video (ddpm/ddim: loop steps; ode: "
                  "adaptive or heunN fixed steps; dpm_solver: NFE of DPM-Solver++(2M); "
                  "dpm_singlestep3: NFE of DPM-Solver-3).")

# The paper's SMMNIST and BAIR networks and a small one for quick checks.
MODEL_SIZES = {
    "smmnist": dict(image_size=64, channels=1, num_frames=5, num_frames_cond=5, ngf=64,
                    ch_mult=(1, 2, 3, 4), num_res_blocks=2, attn_resolutions=(8, 16, 32),
                    n_head_channels=64),
    "small": dict(image_size=32, channels=1, num_frames=3, num_frames_cond=2, ngf=32,
                  ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8, 16), n_head_channels=32),
    # configs/bair.py: 1 past + 5 current 64x64x3 frames (the paper trains it at batch 64).
    "bair": dict(image_size=64, channels=3, num_frames=5, num_frames_cond=1, ngf=192,
                 ch_mult=(1, 2, 3, 4), num_res_blocks=2, attn_resolutions=(8, 16, 32),
                 n_head_channels=192),
}


def bench_model(name: str, batch: int, parts, repeats: int, sampler_steps: int,
                sampler_repeats: int, dtype: str, sampler_settings=(), remat: str = "none",
                kernels: str = "auto", peak: dict | None = None) -> dict:
  import jax
  import jax.numpy as jnp

  from mcvd_jax.core.compilation import jit
  from mcvd_jax.diffusion.samplers import make_sampler
  from mcvd_jax.diffusion.schedules import linear_schedule
  from mcvd_jax.models import UNetConfig, init_params, make_denoise_fn
  if name not in MODEL_SIZES:
    raise app.UsageError(f"unknown model size {name!r}; choose from {sorted(MODEL_SIZES)}")
  try:
    cfg = UNetConfig(**MODEL_SIZES[name], dtype=dtype, remat=remat, kernels=kernels)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  peak = peak or device_peak(dtype)
  params = init_params(cfg, jax.random.key(0))
  n_params = sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
  keys = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(keys[0], (batch, cfg.image_size, cfg.image_size, cfg.num_frames * cfg.channels))
  cond = jax.random.uniform(keys[1], (batch, cfg.image_size, cfg.image_size,
                                      cfg.cond_frames * cfg.channels), minval=-1, maxval=1)
  labels = jnp.full((batch,), 500, jnp.int32)
  denoise = make_denoise_fn(cfg)
  result = {"model": name, "batch": batch, "dtype": dtype, "remat": remat, "kernels": kernels,
            "parameters": n_params, "frames_per_call": batch * cfg.num_frames, **peak}
  start = time.perf_counter()
  forward_lowered = jit(denoise).lower(params, x, labels, cond)
  forward = forward_lowered.compile()
  forward_compile_s = time.perf_counter() - start
  forward_gflop = gflop(forward)
  if "forward" in parts:
    # Remat changes nothing without a backward pass: the lowered program's FLOPs are the model's.
    result["forward"] = with_utilisation(
        timing_report(*timed(lambda: forward(params, x, labels, cond), repeats),
                      forward_compile_s, forward_gflop, batch * cfg.num_frames),
        gflop(forward_lowered), peak)
  if "train" in parts:
    result["train"] = with_utilisation(bench_train_step(cfg, params, batch, repeats),
                                       train_step_gflop(cfg, batch), peak)
  if "sampler" in parts:
    sampler = make_sampler(denoise, kind="ddpm", schedule=linear_schedule(), subsample=sampler_steps)
    start = time.perf_counter()
    compiled = jit(sampler.sample).lower(params, x, cond, keys[2]).compile()
    compile_s = time.perf_counter() - start
    median, times, _ = timed(lambda: compiled(params, x, cond, keys[2]), sampler_repeats)
    # XLA's cost analysis counts a scan body once: count the network calls instead.
    network_calls = len(sampler.labels) + 1
    sampler_gflop = forward_gflop * network_calls if forward_gflop else None
    result["sampler"] = {"kind": "ddpm", "steps": network_calls,
                         **timing_report(median, times, None, compile_s, sampler_gflop,
                                         batch * cfg.num_frames)}
  if "samplers" in parts:
    result["samplers"] = bench_samplers(cfg, params, x, cond, keys[2], sampler_settings,
                                        sampler_repeats)
  result["peak_memory_bytes"] = peak_memory_bytes()
  if result["peak_memory_bytes"] is None:
    result["peak_memory_note"] = (f"{jax.default_backend()} does not report "
                                  "memory_stats()['peak_bytes_in_use']")
  return result


def sampling_section(setting: str):
  """The `sampling` config section of one --sampler_settings entry (KIND:SETTING)."""
  import ml_collections

  from configs import default
  kind, _, value = setting.partition(":")
  section = ml_collections.ConfigDict(default.get_config().sampling.to_dict())
  if kind in ("ddpm", "ddim"):
    section.kind, section.subsample = kind, int(value)
  elif kind == "ode":
    section.kind = "ode"
    if value.startswith("heun"):
      section.ode.adaptive, section.ode.solver, section.ode.num_steps = False, "heun", int(value[4:])
  elif kind in ("dpm_solver", "dpm_singlestep3"):
    section.kind, section.nfe = "dpm_solver", int(value)
    if kind == "dpm_singlestep3":
      section.dpm_method, section.dpm_order = "singlestep", 3
  else:
    raise app.UsageError(f"--sampler_settings: unknown {setting!r}; kinds are ddpm, ddim, ode, "
                         f"dpm_solver, dpm_singlestep3")
  return section


def bench_samplers(cfg, params, x, cond, key, settings, repeats: int) -> list[dict]:
  """Seconds per video block (one sample call on the batch, divided by its size) and network
  evaluations of each sampler setting; an adaptive ODE's evaluations are counted by one solve of
  the same input."""
  import numpy as np

  from mcvd_jax.core.compilation import jit
  from mcvd_jax.diffusion.continuous import network_model, vp_schedule
  from mcvd_jax.diffusion.factory import (Diffusion, network_evals, ode_settings,
                                          sampler_from_config)
  from mcvd_jax.diffusion.noise import isotropic
  from mcvd_jax.diffusion.pf_ode import solve_pf_ode
  from mcvd_jax.diffusion.schedules import linear_schedule
  from mcvd_jax.models import make_denoise_fn
  diffusion = Diffusion("ddpm", isotropic(), schedule=linear_schedule())
  denoise, rows = make_denoise_fn(cfg), []
  vp = vp_schedule(diffusion.schedule)
  for setting in settings:
    section = sampling_section(setting)
    sampler = sampler_from_config(denoise, diffusion, section)
    start = time.perf_counter()
    compiled = jit(sampler.sample).lower(params, x, cond, key).compile()
    compile_s = time.perf_counter() - start
    median, times, _ = timed(lambda: compiled(params, x, cond, key), repeats)
    evals = network_evals(sampler, section)
    if evals is None:  # adaptive
      model, ode = network_model(denoise, vp, diffusion.noise_model), ode_settings(section)
      sol = jit(lambda p, y, c: solve_pf_ode(model, vp, y, p, ode, c))(params, x, cond)
      evals = int(np.asarray(sol.num_evals)) + int(section.denoise)
    rows.append({"setting": setting, "network_evals": evals,
                 "seconds_per_video": median / x.shape[0], "compile_s": compile_s,
                 "times_s": times})
  return rows


def paper_train_step(cfg, lr: float, warmup: int, jit_fn):
  """(jit_fn(train step, donated state), optimizer, masking) with the paper's training settings:
  DSM loss on the linear schedule, Adam(lr, linear warm-up over `warmup` steps), gradient
  clipping 1.0, EMA 0.999 (core.train_step.make_train_step around the masked loss, as the
  training loop builds it)."""

  import jax

  from mcvd_jax.core.config_base import optim_section
  from mcvd_jax.core.optim import make_optimizer
  from mcvd_jax.core.train_step import make_train_step
  from mcvd_jax.diffusion.losses import make_loss_fn
  from mcvd_jax.diffusion.schedules import linear_schedule
  from mcvd_jax.models import make_denoise_fn
  from mcvd_jax.video_diffusion.tasks import Masking
  from mcvd_jax.video_diffusion.training import make_masked_loss
  tx = make_optimizer(optim_section(lr=lr, warmup=warmup))  # Adam, clip 1
  masking = Masking(cfg.num_frames_cond, cfg.num_frames, cfg.num_frames_future)
  loss_fn = make_masked_loss(make_loss_fn(make_denoise_fn(cfg), schedule=linear_schedule()),
                             masking)
  step = make_train_step(loss_fn, tx, ema_rate=0.999, train_key=jax.random.key(2))
  return jit_fn(step, donate_argnums=0), tx, masking


def bench_train_step(cfg, params, batch: int, repeats: int) -> dict:
  """One update of the paper's SMMNIST training step (paper_train_step: Adam lr 2e-4, 1000 warm-up
  steps) on uint8 clips of Nc + T frames, state donated as in training."""
  import jax
  import numpy as np

  from mcvd_jax.core.compilation import jit
  from mcvd_jax.core.train_step import create_train_state
  steps, tx, masking = paper_train_step(cfg, lr=2e-4, warmup=1000, jit_fn=jit)
  videos = np.random.default_rng(0).integers(
      0, 256, (1, batch, masking.clip_frames, cfg.image_size, cfg.image_size, cfg.channels),
      dtype=np.uint8)
  state = create_train_state(jax.tree.map(lambda p: p.copy(), params), tx)
  return time_train_step(steps, state, videos, repeats, batch * cfg.num_frames)


def bench_data(num_videos: int, num_batches: int, accelerator_tflops: float) -> dict:
  """Frames/s of ClipDataset.train_batch from a synthetic BAIR-sized cache at the paper's BAIR
  batch, against the most a `accelerator_tflops` accelerator could consume (see module doc)."""
  import shutil
  import tempfile

  from mcvd_jax.data.throughput import synthetic_dataset, time_train_batches
  directory = tempfile.mkdtemp(prefix="mcvd_jax_bench_data_")
  try:
    dataset, build_s = synthetic_dataset(directory, num_videos)
    frames = dataset.split("train").frames
    result = {"videos": num_videos, "cache_gb": frames.nbytes / 1e9, "build_seconds": build_s,
              "accelerator_tflops": accelerator_tflops, "runs": []}
    for past in (1, 2):  # configs/bair.py: 1 past frame, or 2 with the c2 variant
      run = time_train_batches(dataset, 64, past + 5, num_batches)
      tflop = bair_step_tflop(past) / 1e12
      run["train_step_tflop"] = tflop
      run["consumed_frames_per_second_at_peak"] = 64 * (past + 5) * accelerator_tflops / tflop
      run["margin"] = run["frames_per_second"] / run["consumed_frames_per_second_at_peak"]
      result["runs"].append(run)
  finally:
    shutil.rmtree(directory, ignore_errors=True)
  return result


def train_step_gflop(cfg, batch: int) -> float | None:
  """GFLOP of one paper train step of `cfg` without remat (model FLOPs: recomputation left out),
  from XLA's cost analysis of the lowered program; nothing is compiled or run."""
  import dataclasses

  import jax
  import numpy as np

  from mcvd_jax.core.train_step import abstract_train_state
  from mcvd_jax.models import init_params
  cfg = dataclasses.replace(cfg, remat="none")
  step, tx, masking = paper_train_step(cfg, lr=1e-4, warmup=5000, jit_fn=jax.jit)
  state = abstract_train_state(lambda key: init_params(cfg, key), tx,
                               jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  videos = jax.ShapeDtypeStruct(
      (1, batch, masking.clip_frames, cfg.image_size, cfg.image_size, cfg.channels), np.uint8)
  return gflop(step.lower(state, videos))


def bair_step_tflop(past_frames: int) -> float:
  """FLOPs of one paper BAIR train step (batch 64, ngf 192), from the lowered program."""
  from mcvd_jax.models import UNetConfig
  cfg = UNetConfig(**{**MODEL_SIZES["bair"], "num_frames_cond": past_frames})
  return train_step_gflop(cfg, 64) * 1e9


def bench_fvd(batch: int, repeats: int) -> dict:
  """FVD features per second: uint8 16-frame 224x224 RGB clips through fvd.i3d_features (resize,
  I3D logits), `batch` clips per call sharded over every device."""
  import numpy as np

  from mcvd_jax.metrics import fvd
  params = fvd.load_i3d_params()
  clips = np.random.default_rng(0).integers(0, 256, (batch, 16, 224, 224, 3), np.uint8)
  start = time.perf_counter()
  fvd.i3d_features(params, clips, batch)  # compiles; returns host arrays, so nothing is pending
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fvd.i3d_features(params, clips, batch)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {"clip": [16, 224, 224, 3], "batch": batch, "seconds_median": median,
          "seconds_all": times, "first_call_seconds": compile_s, "clips_per_second": batch / median,
          "seconds_per_clip": median / batch}


def run(flags_values) -> dict:
  """What `python -m mcvd_jax.bench` reports for MCVD (flags_values: the parsed flags)."""
  f = flags_values
  report = {"results": []}
  if "data" in f.parts:
    report["data"] = bench_data(f.data_videos, f.data_batches, f.accelerator_tflops)
  if "fvd" in f.parts:
    report["fvd"] = bench_fvd(f.batch, f.repeats)
  model_parts = [p for p in f.parts if p not in ("data", "fvd")]
  peak = device_peak(f.dtype, getattr(f, "peak_tflops", 0.0)) if model_parts else None
  for name in f.models if model_parts else []:
    report["results"].append(bench_model(name, f.batch, model_parts, f.repeats, f.sampler_steps,
                                         f.sampler_repeats, f.dtype,
                                         getattr(f, "sampler_settings", ()),
                                         getattr(f, "remat", "none"),
                                         getattr(f, "kernels", "auto"), peak))
  return report
