"""The image family's benchmarks for `python -m mcvd_jax.bench --family=image_diffusion`.

  python -m mcvd_jax.bench --family=image_diffusion --batch=128 --repeats=5   # CIFAR-10 step + sampler
  python -m mcvd_jax.bench --family=image_diffusion --image_models=mnist_quick --image_noise=gff

For each named model size: its parameter count, one training update (the family's loss on uint8
images, Adam with warm-up, clipping 1, EMA, donated state: core.train_step as the loop runs it)
and one call of the DDPM sampler at `--image_sampler_steps` (images/s). Parameters are random:
speed does not depend on their values. The train entry reports model FLOP utilisation as MCVD's
bench does (core/mfu.py: `mfu` from the step's FLOPs without remat, `hfu` from the timed
program's; the peak of `--image_dtype` on this device, or `--image_peak_tflops`), and the report
the device's peak memory. `--image_remat` and `--image_kernels` go into the UNetConfig.
"""

from __future__ import annotations

import time

from absl import app, flags

from mcvd_jax.core.bench import gflop, time_train_step, timed, timing_report
from mcvd_jax.core.mfu import device_peak, peak_memory_bytes, with_utilisation

flags.DEFINE_list("image_models", ["cifar10"], "Named model sizes to time: cifar10 (configs/cifar10.py's\n"
                  "network), mnist_quick (configs/mnist.py:quick's).")
flags.DEFINE_list("image_parts", ["train", "sampler"], "What to time: train, sampler.")
flags.DEFINE_enum("image_noise", "isotropic", ["isotropic", "gff"], "Noise model.")
flags.DEFINE_integer("image_sampler_steps", 100, "DDPM steps of the sampler call.")
flags.DEFINE_string("image_dtype", "float32", "Compute dtype (float32 or bfloat16).")
flags.DEFINE_string("image_remat", "none", "model.remat: none, blocks or a jax.checkpoint policy.")
flags.DEFINE_string("image_kernels", "auto", "model.kernels: auto, custom, library[,NAME=CHOICE].")
flags.DEFINE_float("image_peak_tflops", 0.0, "Peak TFLOP/s for MFU (0: the device table, or "
                   "the measured matmul rate on CPU).")

# configs/cifar10.py's network (the DDPM CIFAR-10 size) and configs/mnist.py:quick's.
MODEL_SIZES = {
    "cifar10": dict(image_size=32, channels=3, ngf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                    attn_resolutions=(16,), n_head_channels=128, dropout=0.1),
    "mnist_quick": dict(image_size=32, channels=1, ngf=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                        attn_resolutions=(8,), n_head_channels=32, dropout=0.0),
}


def model_config(name: str, dtype: str, remat: str = "none", kernels: str = "auto"):
  from mcvd_jax.models import UNetConfig
  if name not in MODEL_SIZES:
    raise app.UsageError(f"unknown model size {name!r}; choose from {sorted(MODEL_SIZES)}")
  try:
    return UNetConfig(**MODEL_SIZES[name], num_frames=1, num_frames_cond=0, num_frames_future=0,
                      dtype=dtype, remat=remat, kernels=kernels)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def image_train_step(cfg, noise: str):
  """(train_steps, optimizer): the image loss's update (Adam 2e-4, 5,000 warm-up steps, clipping
  1, EMA 0.9999), not yet jitted."""
  import jax

  from mcvd_jax.core.config_base import optim_section
  from mcvd_jax.core.optim import make_optimizer
  from mcvd_jax.core.train_step import make_train_step
  from mcvd_jax.diffusion.losses import make_loss_fn
  from mcvd_jax.diffusion.noise import make_noise_model
  from mcvd_jax.diffusion.schedules import linear_schedule
  from mcvd_jax.image_diffusion.training import make_image_loss
  from mcvd_jax.models import make_denoise_fn
  tx = make_optimizer(optim_section(lr=2e-4, warmup=5000))  # Adam, clip 1
  loss_fn = make_image_loss(make_loss_fn(make_denoise_fn(cfg), schedule=linear_schedule(),
                                         noise_model=make_noise_model(noise)))
  return make_train_step(loss_fn, tx, ema_rate=0.9999, train_key=jax.random.key(2)), tx


def bench_train_step(cfg, params, noise: str, batch: int, repeats: int, peak: dict) -> dict:
  """One update of the image loss (image_train_step), state donated, with its utilisation: model
  FLOPs are the same step's without remat, lowered (nothing compiled for them)."""
  import dataclasses

  import jax
  import numpy as np

  from mcvd_jax.core.compilation import jit
  from mcvd_jax.core.train_step import create_train_state
  steps, tx = image_train_step(cfg, noise)
  images = np.random.default_rng(0).integers(
      0, 256, (1, batch, cfg.image_size, cfg.image_size, cfg.channels), dtype=np.uint8)
  state = create_train_state(jax.tree.map(lambda p: p.copy(), params), tx)
  plain_steps, _ = image_train_step(dataclasses.replace(cfg, remat="none"), noise)
  model_gflop = gflop(jax.jit(plain_steps).lower(state, images))
  report = time_train_step(jit(steps, donate_argnums=0), state, images, repeats, batch,
                           unit="images")
  return with_utilisation(report, model_gflop, peak)


def bench_sampler(cfg, params, noise: str, batch: int, steps: int, repeats: int) -> dict:
  """One DDPM sampler call drawing `batch` images in `steps` steps (sampling.make_image_sampler,
  as --mode=sample and --mode=eval run it)."""
  import jax
  import ml_collections
  import numpy as np

  from mcvd_jax.core.compilation import jit
  from mcvd_jax.core.keys import item_keys
  from mcvd_jax.image_diffusion.sampling import image_sampler
  diffusion = ml_collections.ConfigDict({
      "kind": "ddpm", "schedule": "linear", "num_steps": 1000, "beta_start": 0.02,
      "beta_end": 1e-4, "noise": noise, "target": "white", "sigma_begin": 1.0,
      "sigma_end": 0.01})
  sampling = ml_collections.ConfigDict({
      "kind": "ddpm", "subsample": steps, "eta": 0.0, "clip_before": True, "denoise": True,
      "reference_denoise_label": False, "step_lr": 8e-6, "n_steps_each": 1})
  sample = jit(image_sampler(cfg, diffusion, sampling).fn)
  keys = item_keys(jax.random.key(3), 0, batch)
  start = time.perf_counter()
  compiled = sample.lower(params, keys).compile()
  compile_s = time.perf_counter() - start
  median, times, faults = timed(lambda: compiled(params, keys), repeats)
  assert np.asarray(compiled(params, keys)).dtype == np.uint8
  return {"kind": "ddpm", "steps": steps,
          **timing_report(median, times, faults, compile_s, None, batch, unit="images")}


def run(flags_values) -> dict:
  """What `python -m mcvd_jax.bench --family=image_diffusion` reports."""
  import jax

  from mcvd_jax.models import init_params
  f = flags_values
  results = []
  peak = device_peak(f.image_dtype, getattr(f, "image_peak_tflops", 0.0))
  for name in f.image_models:
    cfg = model_config(name, f.image_dtype, getattr(f, "image_remat", "none"),
                       getattr(f, "image_kernels", "auto"))
    params = init_params(cfg, jax.random.key(0))
    entry = {"model": name, "batch": f.batch, "dtype": f.image_dtype, "remat": cfg.remat,
             "kernels": cfg.kernels, "noise": f.image_noise,
             "parameters": sum(int(p.size) for p in jax.tree.leaves(params)), **peak}
    if "train" in f.image_parts:
      entry["train"] = bench_train_step(cfg, params, f.image_noise, f.batch, f.repeats, peak)
    if "sampler" in f.image_parts:
      entry["sampler"] = bench_sampler(cfg, params, f.image_noise, f.batch,
                                       f.image_sampler_steps, 1)
    results.append(entry)
  return {"results": results, "peak_memory_bytes": peak_memory_bytes()}
