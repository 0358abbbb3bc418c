"""Training losses as pure functions: noise prediction for DDPM and denoising score matching for SMLD,
isotropic or with a non-isotropic noise covariance Σ (diffusion/noise.py).

DDPM (Ho et al. 2020; non-isotropic as arXiv 2210.12254): x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) z
with z = Σ^{1/2} ε, ε ~ N(0, I).

SMLD (Song & Ermon 2019) with the same Σ. Perturb x̃ = x + σ z, z = Σ^{1/2} ε, so that
x̃ | x ~ N(x, σ² Σ) and its score is

    ∇ log p(x̃ | x) = −Σ^{-1} (x̃ − x) / σ² = −Σ^{-1/2} ε / σ.

Denoising score matching with NCSN's weight σ², (σ²/2) ‖s_θ(x̃, σ) + Σ^{-1/2} ε / σ‖², becomes, with
the parametrisation s_θ = −Σ^{-1/2} ε_θ / σ, the plain ½ ‖ε_θ − ε‖²: the network predicts the white
ε exactly as in the DDPM loss. The sampler (samplers.py) needs Σ s_θ = −Σ^{1/2} ε_θ / σ, the
preconditioned score, whose Langevin update x ← x + (α/2) Σ s + sqrt(α) Σ^{1/2} z' keeps the same
stationary density as the plain update while drawing its noise from Σ.

`target` picks what the network regresses (noise.TARGETS): "white" ε (the paper's, default) or
"correlated" z = Σ^{1/2} ε (this project's earlier parametrisation; the score is then
−Σ^{-1} z_θ / σ). With Σ = I both are the isotropic loss, bit for bit.

Reduction as the MCVD reference: 0.5 * squared error (or |error| with l1) summed over every pixel,
channel and frame of the current frames, then averaged over the batch. Optionally (weighting.py)
labels favour the noisy end and each sample's error is weighted by its level's SNR before that
average; the defaults are the reference's uniform labels and unit weights.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mcvd_jax.diffusion.noise import NoiseModel, check_target, isotropic
from mcvd_jax.diffusion.parametrisation import check_prediction, regression_target
from mcvd_jax.diffusion.schedules import Schedule
from mcvd_jax.diffusion.weighting import (check_weighting_options, make_label_sampler,
                                          make_loss_reduction)

# denoise_fn(params, x, labels, cond, dropout_key, cond_mask=None) -> predicted noise, x's shape;
# dropout_key None means evaluation mode (see models.make_denoise_fn).
DenoiseFn = Callable[..., jax.Array]


class LossAux(NamedTuple):
  """Per-sample values behind a loss: labels [B], loss_per_sample [B] (unweighted, whatever the
  loss weighting, so per-task logs stay comparable), the network input and output."""

  labels: jax.Array
  loss_per_sample: jax.Array
  perturbed: jax.Array
  prediction: jax.Array


def per_sample_error(noise: jax.Array, prediction: jax.Array, l1: bool = False) -> jax.Array:
  """[B, ...] x2 -> [B]: sum over all non-batch axes of 0.5 (z - pred)^2, or |z - pred| with l1."""
  diff = (noise - prediction).astype(jnp.float32)
  err = jnp.abs(diff) if l1 else 0.5 * jnp.square(diff)
  return jnp.sum(err.reshape(err.shape[0], -1), axis=-1)


def perturb_ddpm(x0: jax.Array, noise: jax.Array, labels: jax.Array, schedule: Schedule) -> jax.Array:
  """x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) z, with alpha_bar = alphas[labels]; x0 [B, ...]."""
  a = schedule.alphas[labels].reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise


def perturb_smld(x0: jax.Array, noise: jax.Array, labels: jax.Array, sigmas: jax.Array) -> jax.Array:
  """x = x0 + sigma z, with sigma = sigmas[labels]."""
  return x0 + sigmas[labels].reshape((-1,) + (1,) * (x0.ndim - 1)) * noise


def make_loss_fn(denoise_fn: DenoiseFn, *, schedule: Schedule | None = None,
                 sigmas: jax.Array | None = None, noise_model: NoiseModel | None = None,
                 l1: bool = False, train: bool = True, target: str = "white",
                 label_sampling: str = "uniform", label_sampling_power: float = 1.0,
                 loss_weighting: str = "none", min_snr_gamma: float = 5.0,
                 p2_gamma: float = 1.0,
                 prediction: str = "eps") -> Callable[..., tuple[jax.Array, LossAux]]:
  """Builds `loss_fn(params, x0, cond, key, labels=None, noise=None, cond_mask=None)
  -> (loss, LossAux)`.

  Give `schedule` for the DDPM epsilon loss or `sigmas` for the SMLD denoising score matching loss.
  x0: [B, H, W, T*C] clean current frames in [-1, 1]; cond: conditioning frames or None.
  labels default to draws by `label_sampling`, noise (the white ε, x0's shape) to a fresh
  draw; passing them fixes the draws (used to reproduce the reference exactly). The input is
  perturbed with Σ^{1/2} ε; `target` ("white" | "correlated") is what the network regresses. `key` also feeds dropout when
  `train`; with train=False the network runs in evaluation mode. cond_mask [B] in {0, 1} marks
  samples whose past frames are present (only read by models with cond_emb).

  label_sampling ("uniform" | "high_noise", exponent label_sampling_power) picks how labels are
  drawn when not given; loss_weighting ("none" | "min_snr" with min_snr_gamma | "p2" with p2_gamma)
  weights each sample's error by its level's SNR, ᾱ / (1 − ᾱ) for DDPM and 1 / σ² for SMLD
  (weighting.py has the formulas). The returned loss is the weighted batch mean (exactly
  jnp.mean(loss_per_sample) with "none"); LossAux.loss_per_sample stays unweighted.

  prediction ("eps" | "v" | "x0", DDPM only; parametrisation.py): what the network's output
  regresses. "eps" is the noise named by `target`, the reference's loss bit for bit.
  """
  if (schedule is None) == (sigmas is None):
    raise ValueError("make_loss_fn needs exactly one of schedule (DDPM) or sigmas (SMLD)")
  noise_model = noise_model or isotropic()
  check_target(target)
  check_prediction(prediction, "ddpm" if schedule is not None else "smld", target)
  num_levels = schedule.num_steps if schedule is not None else int(sigmas.shape[0])
  check_weighting_options(label_sampling, label_sampling_power, loss_weighting, min_snr_gamma,
                          p2_gamma)
  draw_labels = make_label_sampler(label_sampling, label_sampling_power, num_levels, schedule,
                                   sigmas)
  reduce_loss = make_loss_reduction(loss_weighting, min_snr_gamma, p2_gamma, schedule, sigmas,
                                    prediction)

  def loss_fn(params: Any, x0: jax.Array, cond: jax.Array | None, key: jax.Array,
              labels: jax.Array | None = None, noise: jax.Array | None = None,
              cond_mask: jax.Array | None = None):
    label_key, noise_key, dropout_key = jax.random.split(key, 3)
    if labels is None:
      labels = draw_labels(label_key, x0.shape[0])
    if noise is None:
      white, correlated = noise_model.sample_pair(noise_key, x0.shape, x0.dtype)
    else:
      white, correlated = noise, noise_model.sqrt_cov(noise)
    if schedule is not None:
      perturbed = perturb_ddpm(x0, correlated, labels, schedule)
    else:
      perturbed = perturb_smld(x0, correlated, labels, sigmas)
    output = denoise_fn(params, perturbed, labels, cond, dropout_key if train else None,
                        cond_mask=cond_mask)
    if prediction == "eps":
      wanted = white if target == "white" else correlated
    else:
      wanted = regression_target(prediction, x0, correlated, schedule.alphas[labels])
    per_sample = per_sample_error(wanted, output, l1)
    return reduce_loss(per_sample, labels), LossAux(labels, per_sample, perturbed, output)

  return loss_fn
