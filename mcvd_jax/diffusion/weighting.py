"""Where the training loss spends its effort across noise levels: how labels are drawn and how each
sample's error is weighted. Labels follow the reference: 0 is the noisiest level, N-1 the cleanest.

Both act through the signal-to-noise ratio of a level, SNR = ᾱ / (1 − ᾱ) for DDPM and 1 / σ² for
SMLD (x0 + σ z is, rescaled by 1 / sqrt(1 + σ²), the DDPM input with ᾱ = 1 / (1 + σ²)).

Label sampling (`diffusion.label_sampling`, parameter k = `diffusion.label_sampling_power`):
  "uniform"     every label equally likely (jax.random.randint, the reference's draw).
  "high_noise"  p(label) ∝ (1 + SNR)^(-k) = (1 − ᾱ)^k for DDPM, (σ² / (1 + σ²))^k for SMLD: the
                share of the input's variance that is noise, i.e. how much of the answer has to
                come from the conditioning frames rather than the noisy frames themselves. With
                k = 1 it is the P2 weight below with γ = 1 turned into a sampling density: the same
                expected gradient up to a constant, spent on more high-noise samples instead of
                smaller clean-end weights. Levels that are already mostly noise stay roughly
                uniform; the clean end loses its mass (for the linear schedule, N = 1000, the mean
                label falls from 499.5 to about 377 at k = 1 and 335 at k = 2; the cleanest label
                is drawn about 7000 times less often than uniformly at k = 1, practically never at
                k >= 2). k > 0.

Loss weighting (`diffusion.loss_weighting`), per-sample weight w(label) on the ε-prediction error:
  "none"     w = 1, the reference's loss.
  "min_snr"  Min-SNR-γ (Hang et al. 2023), ε-prediction form: w = min(SNR, γ) / SNR with
             γ = `diffusion.min_snr_gamma` (default 5, the paper's): 1 where SNR <= γ, falling as
             γ / SNR towards the clean end.
  "p2"       P2 (Choi et al. 2022) with k = 1, the paper's: w = (1 + SNR)^(-γ) with
             γ = `diffusion.p2_gamma` (default 1; the paper uses 0.5 or 1). Not renormalised: w is
             1 at pure noise and below 1 elsewhere, so like min_snr it only shrinks the clean
             end's share (the loss reads lower than with "none" for the same error).
With `diffusion.prediction` "v" or "x0" the named weighting is the weight on the ε error the loss
amounts to: the per-sample weight on the v or x0 error is w(label) divided by that
parametrisation's implicit ε weight (parametrisation.implicit_eps_weight), which gives Hang et al.'s
min(SNR, γ) / (SNR + 1) for v and min(SNR, γ) for x0. "none" is the plain loss of the target.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.diffusion.parametrisation import implicit_eps_weight
from mcvd_jax.diffusion.schedules import Schedule

LABEL_SAMPLINGS = ("uniform", "high_noise")
LOSS_WEIGHTINGS = ("none", "min_snr", "p2")

# draw_labels(key, batch_size) -> [B] integer labels.
LabelSampler = Callable[[jax.Array, int], jax.Array]
# reduce_loss(per_sample [B], labels [B]) -> scalar loss.
LossReduction = Callable[[jax.Array, jax.Array], jax.Array]


def _check_positive(field: str, value: float, hint: str) -> None:
  try:
    ok = math.isfinite(float(value)) and float(value) > 0
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f"diffusion.{field}={value!r} must be a finite number > 0 ({hint})")


def check_weighting_options(label_sampling: str = "uniform", label_sampling_power: float = 1.0,
                            loss_weighting: str = "none", min_snr_gamma: float = 5.0,
                            p2_gamma: float = 1.0) -> None:
  """ValueError naming `diffusion.<field>=<value>` and what would work. Every parameter is checked,
  also those the chosen names do not read."""
  if label_sampling not in LABEL_SAMPLINGS:
    raise ValueError(f"diffusion.label_sampling={label_sampling!r} is unknown; "
                     f"use one of {LABEL_SAMPLINGS}")
  if loss_weighting not in LOSS_WEIGHTINGS:
    raise ValueError(f"diffusion.loss_weighting={loss_weighting!r} is unknown; "
                     f"use one of {LOSS_WEIGHTINGS}")
  _check_positive("label_sampling_power", label_sampling_power,
                  "the exponent k of p ∝ (1 - alpha_bar)^k; use label_sampling='uniform' for k = 0")
  _check_positive("min_snr_gamma", min_snr_gamma, "the SNR cap of min_snr; the paper uses 5")
  _check_positive("p2_gamma", p2_gamma,
                  "the exponent of p2's (1 + SNR)^-gamma; use loss_weighting='none' for 0")


def snr(schedule: Schedule | None = None, sigmas: jax.Array | None = None) -> np.ndarray:
  """[N] float64 signal-to-noise ratio per label: ᾱ / (1 − ᾱ) (DDPM) or 1 / σ² (SMLD); inf where
  ᾱ = 1. Give exactly one of schedule or sigmas (concrete arrays)."""
  with np.errstate(divide="ignore"):
    if schedule is not None:
      alphas = np.asarray(schedule.alphas, np.float64)
      return alphas / (1.0 - alphas)
    return 1.0 / np.square(np.asarray(sigmas, np.float64))


def high_noise_probabilities(snr_per_label: np.ndarray, power: float) -> np.ndarray:
  """[N] -> [N] float64 label probabilities ∝ (1 + SNR)^(-power), summing to 1."""
  weight = np.power(1.0 + snr_per_label, -float(power))
  return weight / np.sum(weight)


def min_snr_weights(snr_per_label: np.ndarray, gamma: float) -> np.ndarray:
  """[N] -> [N] float64: min(SNR, γ) / SNR, written min(1, γ / SNR) so SNR = 0 or inf is exact."""
  with np.errstate(divide="ignore"):
    return np.minimum(1.0, float(gamma) / snr_per_label)


def p2_weights(snr_per_label: np.ndarray, gamma: float) -> np.ndarray:
  """[N] -> [N] float64: (1 + SNR)^(-γ), P2 with k = 1."""
  return np.power(1.0 + snr_per_label, -float(gamma))


def make_label_sampler(label_sampling: str, power: float, num_levels: int,
                       schedule: Schedule | None = None,
                       sigmas: jax.Array | None = None) -> LabelSampler:
  """draw_labels(key, B) -> [B] labels in [0, num_levels). "uniform" is jax.random.randint, the
  same draw as before these options existed; "high_noise" needs the schedule or the sigmas."""
  if label_sampling == "uniform":
    return lambda key, batch_size: jax.random.randint(key, (batch_size,), 0, num_levels)
  p = jnp.asarray(high_noise_probabilities(snr(schedule, sigmas), power), jnp.float32)
  return lambda key, batch_size: jax.random.choice(key, num_levels, (batch_size,), p=p)


def make_loss_reduction(loss_weighting: str, min_snr_gamma: float = 5.0, p2_gamma: float = 1.0,
                        schedule: Schedule | None = None,
                        sigmas: jax.Array | None = None,
                        prediction: str = "eps") -> LossReduction:
  """reduce_loss(per_sample [B], labels [B]) -> mean over the batch of w(label) * per_sample;
  "none" is exactly jnp.mean(per_sample). per_sample is the error of `prediction`'s target."""
  if loss_weighting == "none":
    return lambda per_sample, labels: jnp.mean(per_sample)
  ratio = snr(schedule, sigmas)
  table = (min_snr_weights(ratio, min_snr_gamma) if loss_weighting == "min_snr"
           else p2_weights(ratio, p2_gamma))
  with np.errstate(divide="ignore", invalid="ignore"):
    table = np.nan_to_num(table / implicit_eps_weight(prediction, ratio), posinf=0.0)
  weights = jnp.asarray(table, jnp.float32)
  return lambda per_sample, labels: jnp.mean(weights[labels] * per_sample)
