"""Builds the diffusion pieces (schedule or sigmas, noise model, sampler) from config sections.

Only this file reads ConfigDict-like objects; everything it builds is a plain function.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Hashable, NamedTuple

import jax
import ml_collections

from mcvd_jax.diffusion.losses import make_loss_fn
from mcvd_jax.diffusion.noise import NoiseModel, check_target, make_noise_model
from mcvd_jax.diffusion.parametrisation import check_prediction
from mcvd_jax.diffusion.samplers import (CONTINUOUS_KINDS, Sampler, check_sampler_settings,
                                         make_sampler)
from mcvd_jax.diffusion.schedules import Schedule, make_schedule, smld_sigmas
from mcvd_jax.diffusion.weighting import check_weighting_options

DIFFUSION_KINDS = ("ddpm", "smld")


class Diffusion(NamedTuple):
  """kind 'ddpm' carries a schedule, kind 'smld' its sigmas; both a noise model, the target the
  network regresses ("white" | "correlated", noise.TARGETS), what its output is ("eps" | "v" |
  "x0", parametrisation.py) and how the training loss draws labels and weights samples
  (weighting.py; the defaults are the reference's ε output, uniform labels, unit weights)."""

  kind: str
  noise_model: NoiseModel
  schedule: Schedule | None = None
  sigmas: jax.Array | None = None
  target: str = "white"
  label_sampling: str = "uniform"
  label_sampling_power: float = 1.0
  loss_weighting: str = "none"
  min_snr_gamma: float = 5.0
  p2_gamma: float = 1.0
  prediction: str = "eps"


# The loss options' config fields; sections written before they existed get these defaults.
LOSS_OPTION_DEFAULTS = {name: Diffusion._field_defaults[name] for name in (
    "label_sampling", "label_sampling_power", "loss_weighting", "min_snr_gamma", "p2_gamma",
    "prediction")}


def loss_options_from_config(section: Any) -> dict[str, Any]:
  """The loss options of the `diffusion` section, checked (ValueError naming the field)."""
  options = {name: section.get(name, default) for name, default in LOSS_OPTION_DEFAULTS.items()}
  check_weighting_options(**{k: v for k, v in options.items() if k != "prediction"})
  check_prediction(options["prediction"], section.kind, section.target)
  return options


def diffusion_from_config(section: Any) -> Diffusion:
  """section: the config's `diffusion` (kind, schedule, num_steps, beta_start, beta_end, noise,
  target, sigma_begin, sigma_end; optionally label_sampling, label_sampling_power, loss_weighting,
  min_snr_gamma, p2_gamma, prediction)."""
  kind = section.kind
  if kind not in DIFFUSION_KINDS:
    raise ValueError(f"diffusion.kind={kind!r} is unknown; use one of {DIFFUSION_KINDS}")
  noise = make_noise_model(section.noise, section.get("gff_mean_amplitude", 1.0))
  target = section.target
  check_target(target)
  options = loss_options_from_config(section)
  if kind == "ddpm":
    return Diffusion(kind, noise, target=target,
                     schedule=make_schedule(section.schedule, section.num_steps,
                                            section.beta_start, section.beta_end), **options)
  return Diffusion(kind, noise, target=target,
                   sigmas=smld_sigmas(section.sigma_begin, section.sigma_end, section.num_steps),
                   **options)


def diffusion_loss_fn(denoise_fn: Callable, diffusion: Diffusion, l1: bool = False,
                      train: bool = True) -> Callable:
  """losses.make_loss_fn for `diffusion` with every loss option it carries."""
  return make_loss_fn(denoise_fn, schedule=diffusion.schedule, sigmas=diffusion.sigmas,
                      noise_model=diffusion.noise_model, l1=l1, train=train,
                      target=diffusion.target, label_sampling=diffusion.label_sampling,
                      label_sampling_power=diffusion.label_sampling_power,
                      loss_weighting=diffusion.loss_weighting,
                      min_snr_gamma=diffusion.min_snr_gamma, p2_gamma=diffusion.p2_gamma,
                      prediction=diffusion.prediction)


def _dpm_options(section: Any) -> dict[str, Any]:
  """dpm_solver's fields of the `sampling` section (sections written before them: defaults)."""
  return {"nfe": section.get("nfe", 10), "dpm_method": section.get("dpm_method", "multistep"),
          "dpm_order": section.get("dpm_order", 2),
          "thresholding": section.get("thresholding", False)}


def ode_settings(section: Any):
  """The PF-ODE's OdeSettings from `sampling.ode` (OdeConfigError naming sampling.ode.<field>;
  dt0 and num_steps of 0 mean unset)."""
  from mcvd_jax.ode import settings_from_config
  return settings_from_config(section.get("ode", {}), "sampling.ode")


def check_sampling(diffusion: Diffusion, section: Any) -> None:
  """ValueError naming the field when the `sampling` section cannot sample `diffusion`; builds
  nothing (the config checks call it once, before anything is compiled)."""
  kind = section.kind
  check_sampler_settings(kind, eta=section.eta, n_steps_each=section.n_steps_each,
                         subsample=section.subsample or None, target=diffusion.target,
                         update=section.get("update_rule", "robust"), **_dpm_options(section))
  if kind in CONTINUOUS_KINDS:
    if diffusion.kind != "ddpm":
      raise ValueError(f"sampling.kind={kind!r} integrates the probability-flow ODE of a VP "
                       f"(DDPM) model; diffusion.kind={diffusion.kind!r} needs 'smld'")
    if kind == "ode":
      ode_settings(section)
    return
  if (kind == "smld") != (diffusion.kind == "smld"):
    raise ValueError(f"sampling.kind={kind!r} does not fit diffusion.kind={diffusion.kind!r}: "
                     f"use 'ddpm', 'ddim', 'ode' or 'dpm_solver' with ddpm, 'smld' with smld")


def sampler_from_config(denoise_fn: Callable, diffusion: Diffusion, section: Any,
                        return_trajectory: bool = False) -> Sampler:
  """section: the config's `sampling` (kind, subsample, eta, clip_before, denoise,
  reference_denoise_label, step_lr, n_steps_each; optionally update_rule, default "robust";
  for kind "ode" the `ode` subsection (OdeSettings fields), for "dpm_solver" nfe, dpm_method,
  dpm_order, thresholding)."""
  check_sampling(diffusion, section)
  kind = section.kind
  if kind in CONTINUOUS_KINDS:
    return _continuous_sampler(denoise_fn, diffusion, section)
  return make_sampler(denoise_fn, kind=kind, schedule=diffusion.schedule, sigmas=diffusion.sigmas,
                      noise_model=diffusion.noise_model, subsample=section.subsample or None,
                      eta=section.eta, clip_before=section.clip_before, denoise=section.denoise,
                      reference_denoise_label=section.reference_denoise_label,
                      step_lr=section.step_lr, n_steps_each=section.n_steps_each,
                      return_trajectory=return_trajectory, target=diffusion.target,
                      prediction=diffusion.prediction, update=section.get("update_rule", "robust"))


def _continuous_sampler(denoise_fn: Callable, diffusion: Diffusion, section: Any) -> Sampler:
  """The `ode` or `dpm_solver` sampler (pf_ode.py, dpm_solver.py) on the schedule's continuous
  form; `clip_before` clips the final clean estimate (denoise), as the DDPM/DDIM samplers'."""
  from mcvd_jax.diffusion.continuous import network_model, vp_schedule
  vp = vp_schedule(diffusion.schedule)
  model = network_model(denoise_fn, vp, diffusion.noise_model, diffusion.target,
                        diffusion.prediction)
  if section.kind == "ode":
    from mcvd_jax.diffusion.pf_ode import make_ode_sampler
    return make_ode_sampler(model, vp, ode_settings(section), denoise=section.denoise,
                            clip=section.clip_before)
  from mcvd_jax.diffusion.dpm_solver import make_dpm_sampler
  o = _dpm_options(section)
  return make_dpm_sampler(model, vp, nfe=o["nfe"], method=o["dpm_method"], order=o["dpm_order"],
                          thresholding=o["thresholding"], denoise=section.denoise,
                          clip=section.clip_before)


def network_evals(sampler: Sampler, section: Any) -> int | None:
  """Network evaluations of one `sampler.sample` call (one block of a video, one image): the
  sampler's own count, or for DDPM/DDIM/SMLD its loop (SMLD: n_steps_each per level) plus the
  final denoising step; None for an adaptive ODE solve (its count depends on the input)."""
  if sampler.num_evals is not None or section.kind in CONTINUOUS_KINDS:
    return sampler.num_evals
  per_level = section.n_steps_each if section.kind == "smld" else 1
  return len(sampler.labels) * per_level + int(sampler.denoise_label is not None)


def initial_scale(diffusion: Diffusion) -> float:
  """Scale of the sampler's starting noise: 1 for DDPM/DDIM, the largest sigma for SMLD."""
  return 1.0 if diffusion.kind == "ddpm" else float(diffusion.sigmas[0])


class BuiltSampler(NamedTuple):
  """fn: what a family's `wrap` made of a sampler (a video rollout, an image sampler); tally: the
  sampler's EvalTally where it records its network evaluations as it runs (an adaptive ODE
  solve), else None."""

  fn: Callable
  tally: Any = None


def section_json(section: Any) -> str:
  """A config section as canonical JSON: the cache key of cached_sampler."""
  return json.dumps(section.to_dict(), sort_keys=True, default=list)


@functools.lru_cache(maxsize=16)
def _built_sampler(wrap: Callable, make_denoise: Callable, model_cfg: Hashable,
                   diffusion_json: str, sampling_json: str, extra: tuple) -> BuiltSampler:
  diffusion = diffusion_from_config(ml_collections.ConfigDict(json.loads(diffusion_json)))
  sampler = sampler_from_config(make_denoise(model_cfg), diffusion,
                                ml_collections.ConfigDict(json.loads(sampling_json)))
  return BuiltSampler(wrap(model_cfg, diffusion, sampler, *extra), sampler.tally)


def cached_sampler(wrap: Callable, make_denoise: Callable, model_cfg: Hashable,
                   diffusion_section: Any, sampling_section: Any,
                   extra: tuple = ()) -> BuiltSampler:
  """wrap(model_cfg, Diffusion, Sampler, *extra) -> fn around the sampler of the two config
  sections, on the network make_denoise(model_cfg). One BuiltSampler per setting for the life of
  the process (keyed by the sections' contents, not their identity), so evaluating or sampling
  again (a notebook, a resumed run, the next eval batch) reuses the compiled function instead of
  tracing anew. wrap and make_denoise must be module-level functions (they are cache keys)."""
  return _built_sampler(wrap, make_denoise, model_cfg, section_json(diffusion_section),
                        section_json(sampling_section), tuple(extra))
