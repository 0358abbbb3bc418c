"""What a DDPM network's output means (`diffusion.prediction`), and the clean-frame and noise
estimates every sampler and the learning signal derive from it.

With x_t = √ᾱ x0 + √(1 − ᾱ) z (z the noise the loss drew, Σ^{1/2} ε under a non-isotropic model):
  "eps"  the noise (ε or z, as `diffusion.target` says): the reference's and the paper's. Its clean
         estimate x̂0 = (x_t − √(1 − ᾱ) ẑ) / √ᾱ multiplies the network's error by √((1 − ᾱ)/ᾱ),
         which is 2.3e7 at the cosine schedule's noisiest label and 156 at the linear one's: at the
         noisiest labels an ε network's x̂0 is garbage however well it is trained.
  "v"    v = √ᾱ z − √(1 − ᾱ) x0 (Salimans & Ho 2022): x̂0 = √ᾱ x_t − √(1 − ᾱ) v̂ and
         ẑ = √(1 − ᾱ) x_t + √ᾱ v̂, bounded at every level; at zero SNR the network predicts −x0
         directly (the conditional mean of the clean frames, which is what a sampler needs there).
  "x0"   the clean frames themselves: x̂0 = output, ẑ = (x_t − √ᾱ x̂0) / √(1 − ᾱ).

Error bookkeeping (used by the loss weighting): with e_ε, e_v, e_x0 the errors of the three
parametrisations of the same estimate, ‖e_ε‖² = ᾱ ‖e_v‖² = SNR ‖e_x0‖², SNR = ᾱ / (1 − ᾱ). A plain
v loss is therefore an ε loss weighted by (1 + SNR) / SNR, a plain x0 loss one weighted by 1 / SNR.

v and x0 are defined for DDPM only (SMLD's network is a score model) and regress the noise the
input carries (z), so they take `target="white"`; the "correlated" target is an ε option.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

PREDICTIONS = ("eps", "v", "x0")


def check_prediction(prediction: str, kind: str = "ddpm", target: str = "white") -> None:
  """ValueError naming `diffusion.prediction` when it is unknown or does not fit the kind/target."""
  if prediction not in PREDICTIONS:
    raise ValueError(f"diffusion.prediction={prediction!r} is unknown; use one of {PREDICTIONS}")
  if prediction != "eps" and kind != "ddpm":
    raise ValueError(f"diffusion.prediction={prediction!r} needs diffusion.kind='ddpm' (SMLD's "
                     f"network predicts the noise: use prediction='eps')")
  if prediction != "eps" and target != "white":
    raise ValueError(f"diffusion.prediction={prediction!r} regresses the input's own noise; "
                     f"diffusion.target={target!r} is an option of prediction='eps' only: "
                     f"set diffusion.target='white'")


def _broadcast(a: jax.Array, x: jax.Array) -> jax.Array:
  """A scalar or per-sample [B] ᾱ, shaped to broadcast against x [B, ...]."""
  a = jnp.asarray(a, jnp.float32)
  return a if a.ndim == 0 else a.reshape((-1,) + (1,) * (x.ndim - 1))


def regression_target(prediction: str, x0: jax.Array, noise: jax.Array,
                      alpha_bar: jax.Array) -> jax.Array:
  """What the network regresses for "v" and "x0" (x0's shape); noise is the z that perturbed x0,
  alpha_bar a scalar or [B]. The "eps" target (white or correlated) is the loss's own choice."""
  if prediction == "x0":
    return x0
  if prediction == "v":
    a = _broadcast(alpha_bar, x0)
    return jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * x0
  raise ValueError(f"regression_target is for 'v' and 'x0', got {prediction!r}")


def clean_and_noise(prediction: str, output: jax.Array, x_t: jax.Array,
                    alpha_bar: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(x̂0, ẑ), both x_t's shape and unclipped, from the network output at ᾱ (scalar or [B]).
  For "eps", output must already be the estimate of z (noise.correlated_estimate)."""
  a = _broadcast(alpha_bar, x_t)
  if prediction == "eps":
    # Written as the reference computes it, so its samples are reproduced bit for bit.
    return (1 / jnp.sqrt(a)) * (x_t - jnp.sqrt(1 - a) * output), output
  if prediction == "v":
    return jnp.sqrt(a) * x_t - jnp.sqrt(1 - a) * output, jnp.sqrt(1 - a) * x_t + jnp.sqrt(a) * output
  if prediction == "x0":
    return output, (x_t - jnp.sqrt(a) * output) / jnp.sqrt(1 - a)
  raise ValueError(f"diffusion.prediction={prediction!r} is unknown; use one of {PREDICTIONS}")


def implicit_eps_weight(prediction: str, snr_per_label: np.ndarray) -> np.ndarray:
  """[N] float64: the weight on the ε error that a plain loss on `prediction` amounts to
  (1, (1 + SNR) / SNR, 1 / SNR for eps, v, x0; see the module docstring)."""
  snr = np.asarray(snr_per_label, np.float64)
  with np.errstate(divide="ignore"):
    if prediction == "eps":
      return np.ones_like(snr)
    if prediction == "v":
      return (1.0 + snr) / snr
    if prediction == "x0":
      return 1.0 / snr
  raise ValueError(f"diffusion.prediction={prediction!r} is unknown; use one of {PREDICTIONS}")
