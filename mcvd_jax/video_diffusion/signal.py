"""A learning signal for MCVD: how well the network recovers the clean current frames, and
whether it uses the past frames to do so, on fixed test clips with fixed noise.

The training loss (½‖ε − ε_θ‖² summed over every pixel) says little by itself: a denoiser that
knows only the pixel histogram already scores far below its starting value. This signal is read
every `training.eval_every` steps (core's periodic evaluation) and logged as `eval/<name>`:

  x0_mae/<weights>_<past>@<s>   mean |x̂0 − x0| in [0, 1] pixel units over the current frames of
                                the fixed clips, where x̂0 = clip((x_t − √(1−ᾱ) ẑ) / √ᾱ) is the
                                clean frames implied by the predicted noise ẑ (or the v / x0
                                output, diffusion.prediction) at the label whose
                                signal level √ᾱ is closest to s (SMLD: 1/√(1+σ²));
                                weights: ema | raw; past: true_past, or shuffled_past (each clip
                                conditioned on the next clip's past frames);
  x0_mae/copy_last, x0_mae/blank  the same error of repeating the last past frame, and of a
                                constant frame at the clips' median pixel value (no network);
  past_gain/<weights>           the mean over levels of shuffled − true error: > 0 once the
                                network uses the past frames.

Learning is visible when the true-past error falls below both bars and below the shuffled one.
Every number is a pure function of the weights: the clips, labels and noise are fixed.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.core.media import frames_to_unit_range
from mcvd_jax.diffusion.factory import Diffusion
from mcvd_jax.diffusion.noise import correlated_estimate
from mcvd_jax.diffusion.parametrisation import clean_and_noise
from mcvd_jax.video.masking import make_training_batch, stack_frames
from mcvd_jax.video_diffusion.tasks import Masking

SIGNAL_LEVELS = (0.08, 0.28, 0.63)  # √ᾱ: mostly noise, half-way, mostly signal


def signal_levels(diffusion: Diffusion) -> np.ndarray:
  """The signal level of every label: √ᾱ (DDPM), 1/√(1 + σ²) (SMLD, data of unit scale)."""
  if diffusion.kind == "ddpm":
    return np.sqrt(np.asarray(diffusion.schedule.alphas, np.float64))
  return 1.0 / np.sqrt(1.0 + np.asarray(diffusion.sigmas, np.float64) ** 2)


def signal_labels(diffusion: Diffusion, levels=SIGNAL_LEVELS) -> tuple[tuple[int, float], ...]:
  """(label, its signal level) closest to each of `levels`, duplicates dropped, noisiest first."""
  per_label = signal_levels(diffusion)
  chosen = {int(np.argmin(np.abs(per_label - level))) for level in levels}
  return tuple(sorted(((label, float(per_label[label])) for label in chosen),
                      key=lambda pair: pair[1]))


def perturb(diffusion: Diffusion, x0: jax.Array, noise: jax.Array, label: int) -> jax.Array:
  """x_t at `label` from clean x0 and correlated noise (Σ^{1/2} ε), as the loss perturbs."""
  if diffusion.kind == "ddpm":
    a = diffusion.schedule.alphas[label]
    return jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise
  return x0 + diffusion.sigmas[label] * noise


def clean_estimate(diffusion: Diffusion, x_t: jax.Array, output: jax.Array,
                   label: int) -> jax.Array:
  """x̂0 implied by the network's output at `label`, clipped to [-1, 1]: for "eps" the output is
  read as the noise named by diffusion.target, for "v" / "x0" as parametrisation.py says."""
  if diffusion.prediction == "eps":
    output = correlated_estimate(diffusion.noise_model, diffusion.target, output)
  if diffusion.kind == "ddpm":
    x0, _ = clean_and_noise(diffusion.prediction, output, x_t, diffusion.schedule.alphas[label])
  else:
    x0 = x_t - diffusion.sigmas[label] * output
  return jnp.clip(x0, -1.0, 1.0)


def _mae01(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean absolute difference in [0, 1] pixel units of two arrays in [-1, 1]."""
  return jnp.mean(jnp.abs(a - b)) / 2.0


def make_learning_signal(denoise_fn: Callable, diffusion: Diffusion, masking: Masking,
                         clips: np.ndarray, *, seed: int = 0,
                         levels=SIGNAL_LEVELS) -> Callable[[dict], dict]:
  """Builds `signal(weights) -> {name: float32 scalar}` (jitted; see the module docstring).

  denoise_fn(params, x, labels, cond, key, cond_mask=...) -> the network's output (models.
  make_denoise_fn); clips: uint8 [n >= 2, Nc+T+Nf, H, W, C] fixed test clips; weights: a dict
  name -> parameters (e.g. {"ema": ..., "raw": ...}).
  """
  nc, t, nf = masking.num_frames_cond, masking.num_frames, masking.num_frames_future
  video = frames_to_unit_range(np.asarray(clips))
  if video.shape[0] < 2:
    raise ValueError(f"the learning signal needs at least 2 clips, got {video.shape[0]}")

  def batch_of(v):  # nothing masked: every clip keeps its past and future frames
    return make_training_batch(jax.random.key(0), v, num_frames_cond=nc, num_frames=t,
                               num_frames_future=nf)

  pasts = {"true_past": batch_of(video)}
  if nc:
    shuffled = jnp.concatenate([jnp.roll(video[:, :nc], 1, axis=0), video[:, nc:]], axis=1)
    pasts["shuffled_past"] = batch_of(shuffled)
  x0 = pasts["true_past"].x0
  chosen = signal_labels(diffusion, levels)
  white = jax.random.normal(jax.random.key(seed), (len(chosen),) + x0.shape, jnp.float32)
  noises = diffusion.noise_model.sqrt_cov(white)
  bars = {"blank": _mae01(jnp.full_like(x0, jnp.median(video)), x0)}
  if nc:
    bars["copy_last"] = _mae01(stack_frames(jnp.repeat(video[:, nc - 1:nc], t, axis=1)), x0)

  def signal(weights: dict) -> dict:
    out = {f"x0_mae/{name}": value for name, value in bars.items()}
    for name, params in weights.items():
      gains = []
      for (label, level), noise in zip(chosen, noises):
        x_t = perturb(diffusion, x0, noise, label)
        labels = jnp.full((x0.shape[0],), label, jnp.int32)
        errors = {}
        for past, batch in pasts.items():
          output = denoise_fn(params, x_t, labels, batch.cond, None, cond_mask=batch.cond_mask)
          errors[past] = _mae01(clean_estimate(diffusion, x_t, output, label), x0)
          out[f"x0_mae/{name}_{past}@{level:.2f}"] = errors[past]
        if "shuffled_past" in errors:
          gains.append(errors["shuffled_past"] - errors["true_past"])
      if gains:
        out[f"past_gain/{name}"] = jnp.mean(jnp.stack(gains))
    return out

  return jax.jit(signal)


def loss_by_level(labels: jax.Array, per_sample: jax.Array, num_levels: int,
                  buckets: int = 4) -> dict[str, jax.Array]:
  """The loss per bucket of noise labels, as the core's `loss_sum/<group>` and `count/<group>`
  metrics (logged as the windowed mean `loss/<group>`): `buckets` equal ranges of labels, the
  noisiest (label 0) first, named by their label range, e.g. `labels_000-249`."""
  edges = np.linspace(0, num_levels, buckets + 1).round().astype(int)
  width = len(str(num_levels - 1))
  out = {}
  for low, high in zip(edges[:-1], edges[1:]):
    inside = ((labels >= low) & (labels < high)).astype(jnp.float32)
    group = f"labels_{low:0{width}d}-{high - 1:0{width}d}"
    out[f"loss_sum/{group}"] = jnp.sum(inside * per_sample)
    out[f"count/{group}"] = jnp.sum(inside)
  return out
