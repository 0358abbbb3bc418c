"""Runs our network, loss or samplers on a reference file's inputs and compares with its outputs.

A reference file is an `.npz` in the fixture format (see the fixture folder's README) with its
description in the sibling `.json`. Three kinds, told apart by their arrays:
  forward  (`x`, `labels`, `out`):      one network call;
  loss     (`x0`, `z`, `labels_loss`):  the training loss with fixed noise and labels;
  sampler  (`xT`, and `ddim_*`/`ddpm_*` outputs): DDPM end to end from the same initial noise and
           per-step noises; DDIM step by step from the stored trajectory (with random weights it is
           chaotic, so end-to-end DDIM differences are reported but not judged).
Arrays in these files are channels-first (B, N*C, H, W), frame-major; ours are (B, H, W, N*C).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.core.compilation import jit
from mcvd_jax.convert.reference import convert_state_dict, load_npz_case, weights_from_case
from mcvd_jax.diffusion.losses import make_loss_fn
from mcvd_jax.diffusion.samplers import make_sampler
from mcvd_jax.diffusion.schedules import Schedule, make_schedule
from mcvd_jax.models import make_denoise_fn, reference_model_config

# float32 tolerance, relative to the largest magnitude of the reference array. A float32
# reimplementation lands around 1e-6..1e-5; a real mistake shows up at 1e-3 or more.
RELATIVE_TOLERANCE = 5e-5


@dataclasses.dataclass
class Comparison:
  name: str
  max_abs: float
  max_rel: float  # max |ours - ref| / max |ref|
  judged: bool = True

  @property
  def ok(self) -> bool:
    return (not self.judged) or self.max_rel <= RELATIVE_TOLERANCE

  def line(self) -> str:
    verdict = ("ok" if self.ok else "FAIL") if self.judged else "info"
    return f"{self.name:40s} max_abs={self.max_abs:.3e} max_rel={self.max_rel:.3e} {verdict}"


def compare(name: str, ours, ref, judged: bool = True) -> Comparison:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  if ours.shape != ref.shape:
    raise ValueError(f"{name}: our output has shape {ours.shape}, the reference {ref.shape}")
  diff = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
  scale = float(np.max(np.abs(ref))) if ref.size else 1.0
  if not np.all(np.isfinite(ours)):
    diff = float("inf")
  return Comparison(name, diff, diff / max(scale, 1e-12), judged)


def to_nhwc(a) -> jnp.ndarray:
  """(B, C, H, W) -> (B, H, W, C); works on any leading axes before the last three."""
  return jnp.asarray(np.moveaxis(np.asarray(a, np.float32), -3, -1))


def to_nchw(a) -> np.ndarray:
  return np.moveaxis(np.asarray(a), -1, -3)


def schedule_from_meta(meta: dict) -> Schedule:
  model = meta["model_fields"]["model"]
  return make_schedule(model.get("sigma_dist", "linear"), int(model.get("num_classes", 1000)),
                       float(model.get("sigma_begin", 0.02)), float(model.get("sigma_end", 1e-4)))


def _check_schedule(arrays: dict, schedule: Schedule) -> list[Comparison]:
  out = []
  for name in ("alphas", "betas"):
    if name in arrays:
      out.append(compare(f"schedule.{name}", getattr(schedule, name), arrays[name]))
  return out


def check_forward(arrays, denoise, params) -> list[Comparison]:
  cond = to_nhwc(arrays["cond"]) if "cond" in arrays and arrays["cond"].size else None
  out = jit(denoise)(params, to_nhwc(arrays["x"]), jnp.asarray(arrays["labels"]), cond)
  return [compare("forward.out", to_nchw(out), arrays["out"])]


def check_loss(arrays, denoise, params, schedule) -> list[Comparison]:
  x0, z = to_nhwc(arrays["x0"]), to_nhwc(arrays["z"])
  cond = to_nhwc(arrays["cond"]) if arrays["cond"].size else None
  labels = jnp.asarray(arrays["labels_loss"])
  results = []
  for l1, key in ((False, "loss"), (True, "loss_L1")):
    if key not in arrays:
      continue
    loss_fn = jit(make_loss_fn(denoise, schedule=schedule, l1=l1, train=False))
    loss, aux = loss_fn(params, x0, cond, jax.random.key(0), labels=labels, noise=z)
    results.append(compare(f"loss.{key}", loss, arrays[key]))
    if not l1:
      for name, ours in (("loss_per_sample", aux.loss_per_sample),
                         ("perturbed_x", to_nchw(aux.perturbed)), ("eps_pred", to_nchw(aux.prediction))):
        if name in arrays:
          results.append(compare(f"loss.{name}", ours, arrays[name]))
  return results


def _sampler_outputs(arrays: dict) -> dict[str, list[str]]:
  """kind -> the stored outputs of that sampler, e.g. {'ddpm': ['ddpm_nodenoise', 'ddpm_out']}."""
  runs: dict[str, list[str]] = {}
  for name in sorted(arrays):
    if name.startswith(("ddim_", "ddpm_")) and not name.endswith(("_traj", "_noises")):
      runs.setdefault(name[:4], []).append(name)
  return runs


def check_sampler(arrays, meta, denoise, params, schedule) -> list[Comparison]:
  """One run per sampler kind, with the final denoising step: the states before that step are
  the denoise=False run (the reference's samplers agree on that prefix)."""
  subsample = int(meta.get("subsample", 0)) or None
  clip_before = bool(meta.get("clip_before", True))
  x_init = to_nhwc(arrays["xT"])
  cond = to_nhwc(arrays["cond"]) if arrays["cond"].size else None
  noises = to_nhwc(arrays["ddpm_noises"]) if "ddpm_noises" in arrays else None
  results = []
  for kind, names in _sampler_outputs(arrays).items():
    if kind == "ddpm" and noises is None:
      raise ValueError("the file has no ddpm_noises, so its DDPM outputs cannot be replayed")
    sampler = make_sampler(denoise, kind=kind, schedule=schedule, subsample=subsample,
                           clip_before=clip_before, denoise=True, reference_denoise_label=True,
                           return_trajectory=True, update="reference")
    kind_noises = noises if kind == "ddpm" else None
    _, traj = jit(sampler.sample)(params, x_init, cond, None, kind_noises)
    num_loop = len(sampler.labels)
    judged = kind == "ddpm"  # DDIM with random weights is chaotic end to end (see module doc)
    for name in names:
      ours = traj[:num_loop] if "nodenoise" in name else traj
      results.append(compare(f"{name} (end to end)", to_nchw(ours[-1]), arrays[name], judged))
      if judged and name + "_traj" in arrays:
        results.append(compare(f"{name}_traj (end to end)", to_nchw(ours), arrays[name + "_traj"]))
    longest = max((n + "_traj" for n in names if n + "_traj" in arrays),
                  key=lambda n: arrays[n].shape[0], default=None)
    if longest:
      results.append(_teacher_forced(f"{kind} trajectory", sampler, params, x_init,
                                     to_nhwc(arrays[longest]), cond, kind_noises))
  return results


def _teacher_forced(name, sampler, params, x_init, ref_traj, cond, noises) -> Comparison:
  """Each step started from the reference's previous state: isolates one step's error."""
  starts = jnp.concatenate([x_init[None], ref_traj[:-1]], axis=0)
  num_loop = len(sampler.labels)
  loop_steps = jit(jax.vmap(lambda x, i: sampler.step(params, x, i, cond, None, noises)))
  ours = loop_steps(starts[:num_loop], jnp.arange(num_loop))
  if ref_traj.shape[0] > num_loop:  # the final denoising step
    last = jit(lambda x: sampler.step(params, x, num_loop, cond))(starts[num_loop])
    ours = jnp.concatenate([ours, last[None]], axis=0)
  return compare(f"{name} (teacher-forced per step)", to_nchw(ours), to_nchw(ref_traj))


def check_file(path: str, log: Callable[[str], None] = print) -> list[Comparison]:
  """Converts the file's weights, runs the matching computation and returns the comparisons."""
  arrays, meta = load_npz_case(path)
  if "model_fields" not in meta:
    raise ValueError(f"{path}: its .json has no model_fields (data/model config sections)")
  cfg = reference_model_config(meta["model_fields"])
  params = convert_state_dict(weights_from_case(path, arrays, meta), cfg)
  denoise = make_denoise_fn(cfg)
  schedule = schedule_from_meta(meta)
  results = _check_schedule(arrays, schedule)
  num_schedule_checks = len(results)
  if "out" in arrays and "x" in arrays:
    results += check_forward(arrays, denoise, params)
  if "labels_loss" in arrays:
    results += check_loss(arrays, denoise, params, schedule)
  if "xT" in arrays:
    results += check_sampler(arrays, meta, denoise, params, schedule)
  if len(results) == num_schedule_checks:
    raise ValueError(f"{path}: no forward, loss or sampler arrays found to check")
  for r in results:
    log(r.line())
  return results
