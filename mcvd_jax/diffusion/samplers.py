"""Samplers as `jax.lax.scan` loops: DDPM, DDIM (eta) and SMLD annealed Langevin dynamics.

Built by `make_sampler`, which closes over the static choices and returns pure functions:
  sampler.sample(params, x_init, cond, key) -> x      (or (x, trajectory))
  sampler.step(params, x, i, cond, key)     -> x      (one loop step, for teacher-forced checks)

The update rules follow the reference (its label 0 is the noisiest level; the loop visits
range(0, N, N // S), noisiest first). Noise is drawn with `jax.random.fold_in(key, step)`, or taken
from an explicit `noises` array to replay the reference's draws. With a non-isotropic noise model,
fresh noise is Sigma^{1/2} eps, and an ε network's output (the white ε by default, or the
correlated Sigma^{1/2} ε with target="correlated") becomes the estimate of the correlated noise
through noise.correlated_estimate; with it the DDPM/DDIM updates keep their isotropic form and the
Langevin step is preconditioned by Sigma.

DDPM/DDIM read the network through its clean estimate x̂0 and noise estimate ẑ
(parametrisation.py: ε, v or x0 outputs). `update` (config `sampling.update_rule`) picks how a
clipped x̂0 enters the step:
  "robust"     (default) ẑ is re-derived from the clipped x̂0, ẑ = (x_t − √ᾱ x̂0) / √(1 − ᾱ), so the
               DDIM step moves along the trajectory of the x̂0 it uses (as dynamic-thresholding
               samplers do), and the final denoising step returns the clipped x̂0 itself.
  "reference"  the reference's: DDIM combines the clipped x̂0 with the network's raw ẑ, and the final
               step returns x − √(1 − ᾱ) ẑ. Keep it to reproduce a converted checkpoint's samples.
With an ε network at the noisiest labels (ᾱ → 0) the raw ẑ carries the network's error at full
weight into the next state while x̂0 is clipped garbage; the robust step keeps the state and adds the
clipped x̂0 with weight √ᾱ_prev − √ᾱ √((1 − ᾱ_prev)/(1 − ᾱ)) only. Both agree wherever nothing is
clipped. DDPM's posterior mean already combines x̂0 with x_t (consistent either way), and the
update leaves SMLD (which has no x̂0) unchanged. The loop visits the noisiest label first, i.e. the
"trailing" spacing of Lin et al. (2024): it never starts below the schedule's terminal level.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.diffusion.noise import NoiseModel, check_target, correlated_estimate, isotropic
from mcvd_jax.diffusion.parametrisation import check_prediction, clean_and_noise
from mcvd_jax.diffusion.schedules import Schedule, subsampled_steps

KINDS = ("ddpm", "ddim", "smld", "ode", "dpm_solver")
# Built on the continuous form of the schedule by pf_ode.py and dpm_solver.py (through
# factory.sampler_from_config), not by make_sampler.
CONTINUOUS_KINDS = ("ode", "dpm_solver")
DPM_METHODS = ("multistep", "singlestep")
UPDATES = ("robust", "reference")


class Sampler(NamedTuple):
  sample: Callable[..., Any]
  step: Callable[..., jax.Array]
  labels: np.ndarray  # network labels visited by the loop, in order (denoise step excluded)
  denoise_label: int | None  # label of the final denoising step, None when it is off
  # Network evaluations per `sample` call where they are fixed (pf_ode.py, dpm_solver.py); None
  # for the samplers built here (network_evals counts them) and for an adaptive ODE solve.
  num_evals: int | None = None
  # An adaptive ODE solve's host-side record of the evaluations each `sample` call used
  # (pf_ode.EvalTally); None where num_evals or network_evals says it in advance.
  tally: Any = None


def _full_labels(x: jax.Array, label) -> jax.Array:
  return jnp.full((x.shape[0],), label, jnp.int32)


def _scan_loop(update, finish, x_init, num_steps, return_trajectory):
  """x <- update(x, i) for i in [0, num_steps) as one scan, then x <- finish(x) unless finish is
  None. Returns x, or (x, the [num_steps (+1), ...] states after each step)."""

  def body(x, i):
    x = update(x, i)
    return x, (x if return_trajectory else None)

  x, traj = jax.lax.scan(body, x_init, jnp.arange(num_steps))
  if finish is not None:
    x = finish(x)
    if return_trajectory:
      traj = jnp.concatenate([traj, x[None]], axis=0)
  return (x, traj) if return_trajectory else x


def check_sampler_settings(kind: str, *, eta: float = 0.0, n_steps_each: int = 1,
                           subsample: int | None = None, target: str = "white",
                           update: str = "robust", nfe: int = 10,
                           dpm_method: str = "multistep", dpm_order: int = 2,
                           thresholding: bool = False) -> None:
  """ValueError naming the `sampling` field for settings no sampler accepts (what make_sampler
  checks before it builds anything). nfe, dpm_method, dpm_order, thresholding: dpm_solver's."""
  if kind not in KINDS:
    raise ValueError(f"sampling.kind={kind!r} is unknown; use one of {KINDS}")
  if kind == "dpm_solver":
    if dpm_method not in DPM_METHODS:
      raise ValueError(f"sampling.dpm_method={dpm_method!r} is unknown; use 'multistep' "
                       f"(DPM-Solver++(2M)) or 'singlestep' (DPM-Solver-2/3)")
    orders = (1, 2) if dpm_method == "multistep" else (1, 2, 3)
    if dpm_order not in orders:
      raise ValueError(f"sampling.dpm_order={dpm_order!r} does not fit sampling.dpm_method="
                       f"{dpm_method!r}: use one of {orders}")
    if not isinstance(nfe, int) or nfe < dpm_order:
      raise ValueError(f"sampling.nfe={nfe!r} must be an integer >= sampling.dpm_order="
                       f"{dpm_order} (network evaluations of the solver)")
    if thresholding and dpm_method != "multistep":
      raise ValueError("sampling.thresholding clips DPM-Solver++'s data prediction: it needs "
                       "sampling.dpm_method='multistep'; set sampling.thresholding=False")
  if kind != "smld" and eta < 0:
    raise ValueError(f"sampling.eta must be >= 0, got {eta}")
  if kind == "smld" and n_steps_each < 1:
    raise ValueError(f"sampling.n_steps_each must be >= 1, got {n_steps_each}")
  if subsample is not None and subsample < 1:
    raise ValueError(f"sampling.subsample must be >= 1, got {subsample}")
  check_target(target)
  if update not in UPDATES:
    raise ValueError(f"sampling.update_rule={update!r} is unknown; use 'robust' (the default) or "
                     f"'reference' (the reference code's DDIM step, for converted checkpoints)")


def make_sampler(denoise_fn: Callable[..., jax.Array], *, kind: str,
                 schedule: Schedule | None = None, sigmas: jax.Array | None = None,
                 noise_model: NoiseModel | None = None, subsample: int | None = None,
                 eta: float = 0.0, clip_before: bool = True, denoise: bool = True,
                 reference_denoise_label: bool = False, step_lr: float = 8e-6,
                 n_steps_each: int = 1, return_trajectory: bool = False,
                 target: str = "white", prediction: str = "eps",
                 update: str = "robust") -> Sampler:
  """Builds a sampler around `denoise_fn(params, x, labels, cond, None, cond_mask=...)`.

  kind: 'ddpm' | 'ddim' (need `schedule`) or 'smld' (needs `sigmas`).
  subsample: number of loop steps S (labels range(0, N, N // S)); None visits every label.
  eta: DDIM stochasticity (0 = deterministic, the reference's DDIM).
  clip_before: clip the x0 estimate to [-1, 1] inside each DDPM/DDIM step.
  denoise: a final step x <- x - sqrt(1 - a_last) eps(x) (DDPM/DDIM) or x - sigma_last eps(x).
  reference_denoise_label: the reference labels that final step L-1 (the number of loop steps
    minus one, e.g. 9 for S = 10: a very noisy level). Off, we use the level the loop ended at,
    which is what the coefficient assumes. Keep it on to reproduce a converted checkpoint exactly.
  step_lr, n_steps_each: SMLD Langevin step size (scaled by (sigma / sigma_last)^2) and steps per level.
  target: what the network predicts ("white" ε or "correlated" Σ^{1/2} ε; diffusion.target).
  prediction: what the network's output is ("eps" | "v" | "x0"; diffusion.prediction).
  update: "robust" | "reference", how DDPM/DDIM use a clipped x̂0 (module docstring).
  """
  check_sampler_settings(kind, eta=eta, n_steps_each=n_steps_each, subsample=subsample,
                         target=target, update=update)
  if kind in CONTINUOUS_KINDS:
    raise ValueError(f"sampling.kind={kind!r} is built by diffusion.factory.sampler_from_config "
                     f"(pf_ode.make_ode_sampler / dpm_solver.make_dpm_sampler), not make_sampler")
  check_prediction(prediction, "smld" if kind == "smld" else "ddpm", target)
  noise_model = noise_model or isotropic()
  network = denoise_fn

  def denoise_fn(params, x, labels, cond, key, cond_mask=None):
    """The network's output, as an estimate ẑ of the correlated noise in x for "eps"."""
    output = network(params, x, labels, cond, key, cond_mask=cond_mask)
    return correlated_estimate(noise_model, target, output) if prediction == "eps" else output

  def estimates(params, x, label, c_a, cond, cond_mask):
    """(x̂0, ẑ) at a level with ᾱ = c_a; x̂0 clipped when clip_before, ẑ re-derived from it
    when the update is robust."""
    output = denoise_fn(params, x, _full_labels(x, label), cond, None, cond_mask=cond_mask)
    x0, eps = clean_and_noise(prediction, output, x, c_a)
    if clip_before:
      x0 = jnp.clip(x0, -1, 1)
      if update == "robust":
        eps = (x - jnp.sqrt(c_a) * x0) / jnp.sqrt(1 - c_a)
    return x0, eps

  if kind == "smld":
    if sigmas is None:
      raise ValueError("the SMLD sampler needs sigmas (diffusion.kind='smld')")
    return _make_langevin(denoise_fn, sigmas, noise_model, subsample, denoise,
                          reference_denoise_label, step_lr, n_steps_each, return_trajectory)
  if schedule is None:
    raise ValueError(f"the {kind.upper()} sampler needs a schedule (diffusion.kind='ddpm')")
  if eta < 0:
    raise ValueError(f"sampling.eta must be >= 0, got {eta}")

  steps = subsampled_steps(schedule.num_steps, subsample)
  a = schedule.alphas[steps]
  a_prev = jnp.concatenate([a[1:], jnp.ones((1,), a.dtype)])
  beta = 1.0 - a / a_prev
  num_loop = len(steps)
  denoise_label = (num_loop - 1 if reference_denoise_label else int(steps[-1])) if denoise else None
  stochastic = kind == "ddpm" or eta > 0

  def loop_step(params, x, i, cond, noise, cond_mask):
    c_a, c_a_prev, c_beta = a[i], a_prev[i], beta[i]
    x0, eps = estimates(params, x, jnp.asarray(steps)[i], c_a, cond, cond_mask)
    if kind == "ddpm":
      x = ((jnp.sqrt(c_a_prev) * c_beta / (1 - c_a)) * x0
           + (jnp.sqrt(1 - c_beta) * (1 - c_a_prev) / (1 - c_a)) * x)
      # Zero at the last step, where a_prev = 1: the reference draws no noise there.
      return x + jnp.sqrt((1 - c_a_prev) / (1 - c_a) * c_beta) * noise
    sigma = eta * jnp.sqrt((1 - c_a_prev) / (1 - c_a) * (1 - c_a / c_a_prev))
    x = jnp.sqrt(c_a_prev) * x0 + jnp.sqrt(1 - c_a_prev - sigma**2) * eps
    return x + sigma * noise if stochastic else x

  def final_denoise(params, x, cond, cond_mask):
    x0, eps = estimates(params, x, denoise_label, a[-1], cond, cond_mask)
    return x0 if update == "robust" else x - jnp.sqrt(1 - a[-1]) * eps

  def step_noise(x, i, key, noises):
    if not stochastic:
      return jnp.zeros_like(x)
    if noises is not None:
      # The reference draws L-1 noises (none at the last step, whose coefficient is zero).
      return noises[jnp.minimum(i, noises.shape[0] - 1)].astype(x.dtype)
    return noise_model.sample(jax.random.fold_in(key, i), x.shape, x.dtype)

  def step(params, x, i, cond, key=None, noises=None, cond_mask=None):
    """Loop step i (0 <= i < L, may be traced) from state x; the Python int L is the final
    denoising step."""
    if denoise and isinstance(i, int) and i == num_loop:
      return final_denoise(params, x, cond, cond_mask)
    return loop_step(params, x, i, cond, step_noise(x, i, key, noises), cond_mask)

  def sample(params, x_init, cond, key=None, noises=None, cond_mask=None):
    """x_init: [B, H, W, T*C] initial noise; returns the sample (and the [L(+1), ...] trajectory
    of states after each step when built with return_trajectory)."""
    if stochastic and key is None and noises is None:
      raise ValueError(f"the {kind.upper()} sampler draws noise: pass a key (or noises)")

    return _scan_loop(
        lambda x, i: loop_step(params, x, i, cond, step_noise(x, i, key, noises), cond_mask),
        (lambda x: final_denoise(params, x, cond, cond_mask)) if denoise else None,
        x_init, num_loop, return_trajectory)

  return Sampler(sample, step, np.asarray(steps), denoise_label)


def _make_langevin(denoise_fn, sigmas, noise_model, subsample, denoise, reference_denoise_label,
                   step_lr, n_steps_each, return_trajectory) -> Sampler:
  """Annealed Langevin dynamics: at each level sigma, n_steps_each updates
  x <- x - (s / sigma) eps(x) + sqrt(2 s) Sigma^{1/2} z with s = step_lr (sigma / sigma_last)^2
  (Sigma eps/sigma is -Sigma times the score: the preconditioned Langevin step)."""
  if n_steps_each < 1:
    raise ValueError(f"sampling.n_steps_each must be >= 1, got {n_steps_each}")
  num_levels = int(sigmas.shape[0])
  levels = subsampled_steps(num_levels, subsample)
  sig = sigmas[levels]
  sigma_last = sigmas[levels[-1]]
  denoise_label = (len(levels) - 1 if reference_denoise_label else int(levels[-1])) if denoise else None

  def level_step(params, x, i, cond, key, cond_mask):
    sigma = sig[i]
    step_size = step_lr * (sigma / sigma_last) ** 2
    labels = _full_labels(x, jnp.asarray(levels)[i])

    def inner(x, s):
      eps = denoise_fn(params, x, labels, cond, None, cond_mask=cond_mask)
      z = noise_model.sample(jax.random.fold_in(jax.random.fold_in(key, i), s), x.shape, x.dtype)
      return x - step_size / sigma * eps + jnp.sqrt(2 * step_size) * z, None

    return jax.lax.scan(inner, x, jnp.arange(n_steps_each))[0]

  def final_denoise(params, x, cond, cond_mask):
    eps = denoise_fn(params, x, _full_labels(x, denoise_label), cond, None, cond_mask=cond_mask)
    return x - sigma_last * eps

  def step(params, x, i, cond, key=None, noises=None, cond_mask=None):
    del noises
    if denoise and isinstance(i, int) and i == len(levels):
      return final_denoise(params, x, cond, cond_mask)
    return level_step(params, x, i, cond, key, cond_mask)

  def sample(params, x_init, cond, key=None, noises=None, cond_mask=None):
    if key is None:
      raise ValueError("the SMLD sampler draws noise: pass a key")
    del noises

    return _scan_loop(
        lambda x, i: level_step(params, x, i, cond, key, cond_mask),
        (lambda x: final_denoise(params, x, cond, cond_mask)) if denoise else None,
        x_init, len(levels), return_trajectory)

  return Sampler(sample, step, np.asarray(levels), denoise_label)

