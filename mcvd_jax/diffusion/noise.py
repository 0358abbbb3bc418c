"""Noise models for diffusion: isotropic Gaussian and Gaussian-free-field (GFF).

The forward (noising) process of a diffusion model draws

    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) Σ^{1/2} ε,    ε ~ N(0, I),

so that x_t | x_0 ~ N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) Σ). Ordinary DDPM/SMLD uses Σ = I. Non-isotropic
diffusion (Voleti et al., arXiv 2210.12254) uses a covariance Σ that correlates neighbouring
pixels; the Gaussian free field used here has a power spectrum falling as 1/|k|², so the noise is
smooth, with most of its energy at low spatial frequencies. The losses and samplers need Σ^{1/2}
(to draw noise), Σ^{-1/2} (to whiten a score or a noise estimate) and Σ (score of the Gaussian),
and this module provides all three behind one interface, so that every piece of the diffusion code
reduces to the isotropic case when `isotropic()` is passed.

Arrays are channels-last images `[..., H, W, C]`: the spatial axes are -3 and -2, any leading axes
are batch axes, and each channel (frames may be stacked on channels) is filtered independently.
The GFF covariance is stationary and circulant, so it is diagonal in the 2-D Fourier basis of
(H, W): Σ^{1/2} multiplies each Fourier coefficient by A[ky, kx] (see `gff_amplitude`).

Choices the paper leaves open, stated here: A is one [H, W] filter applied to every channel and
every frame separately (video frames stacked on channels get independent noise fields of the same
spectrum); it is normalised once per (H, W) so that each pixel's noise variance is 1, as in the
isotropic case; and the constant component (k = 0, where the true GFF's variance is infinite) gets
`mean_amplitude` times the amplitude of the lowest frequency |k| = 1 (config
`diffusion.gff_mean_amplitude`, default 1: the image mean is perturbed as strongly as the
coarsest wave). It must be > 0 so that Σ stays invertible.
"""

from dataclasses import dataclass, field
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

_SPATIAL_AXES = (-3, -2)


class NoiseModel(Protocol):
  """A zero-mean Gaussian noise model N(0, Σ) over images `[..., H, W, C]`."""

  name: str

  def sample(self, key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Σ^{1/2} ε with ε ~ N(0, I); returns `shape` = `[..., H, W, C]` of `dtype`."""
    ...

  def sample_pair(self, key: jax.Array, shape, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """(ε, Σ^{1/2} ε) from one draw ε ~ N(0, I): the white noise and the noise it becomes;
    the second equals `sample(key, shape, dtype)`."""
    ...

  def sqrt_cov(self, x: jax.Array) -> jax.Array:
    """Σ^{1/2} x for x: `[..., H, W, C]`; same shape and dtype."""
    ...

  def inv_sqrt_cov(self, x: jax.Array) -> jax.Array:
    """Σ^{-1/2} x for x: `[..., H, W, C]`; same shape and dtype."""
    ...

  def cov(self, x: jax.Array) -> jax.Array:
    """Σ x for x: `[..., H, W, C]`; same shape and dtype."""
    ...


@dataclass(frozen=True)
class IsotropicNoise:
  """Σ = I: standard DDPM/SMLD noise; every operator is the identity."""

  name: str = field(default="isotropic", init=False)

  def sample(self, key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """ε ~ N(0, I) of `shape` and `dtype` (exactly `jax.random.normal(key, shape, dtype)`)."""
    return jax.random.normal(key, shape, dtype)

  def sample_pair(self, key: jax.Array, shape, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """(ε, ε): white and correlated noise are the same draw."""
    eps = self.sample(key, shape, dtype)
    return eps, eps

  def sqrt_cov(self, x: jax.Array) -> jax.Array:
    """Identity. x: `[..., H, W, C]`."""
    return x

  def inv_sqrt_cov(self, x: jax.Array) -> jax.Array:
    """Identity. x: `[..., H, W, C]`."""
    return x

  def cov(self, x: jax.Array) -> jax.Array:
    """Identity. x: `[..., H, W, C]`."""
    return x


def gff_amplitude(height: int, width: int, mean_amplitude: float = 1.0) -> np.ndarray:
  """Fourier amplitude A of the GFF square-root covariance, normalised to unit pixel variance.

  A[ky, kx] = 1/|k| with |k| = sqrt(fy² + fx²) in integer cycles per image, in `np.fft.fftfreq`
  order (A[0, 0] is the constant component). Σ^{1/2} = ifft2 ∘ A ∘ fft2 over (H, W).

  Args:
    height: H, the number of rows (axis -3 of the images).
    width: W, the number of columns (axis -2 of the images).
    mean_amplitude: A[0, 0] before normalisation, relative to the |k| = 1 amplitude (> 0).

  Returns:
    A: `[H, W]` float64, positive, finite, with mean(A²) = 1 and A[k] = A[-k].
  """
  if height < 1 or width < 1:
    raise ValueError(f"gff_amplitude needs a positive image size, got height={height}, "
                     f"width={width}.")
  check_mean_amplitude(mean_amplitude)
  fy = np.fft.fftfreq(height) * height
  fx = np.fft.fftfreq(width) * width
  k = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
  # The true GFF has infinite variance at k = 0 (a random global offset of any size). A finite
  # amplitude for the mean (by default that of the lowest non-zero frequency, |k| = 1) keeps Σ
  # finite and invertible while still perturbing the image mean strongly.
  k[0, 0] = 1.0
  amplitude = 1.0 / k
  amplitude[0, 0] = float(mean_amplitude)
  # Per-pixel variance of Σ^{1/2} ε equals mean(A²) (Parseval), so this makes it 1 and the noise
  # level of a schedule means the same thing as in the isotropic case.
  return amplitude / np.sqrt(np.mean(amplitude ** 2))


def check_mean_amplitude(mean_amplitude: float) -> None:
  """ValueError naming `diffusion.gff_mean_amplitude` unless it is a finite number > 0."""
  try:
    ok = np.isfinite(float(mean_amplitude)) and float(mean_amplitude) > 0
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f"diffusion.gff_mean_amplitude={mean_amplitude!r} must be a finite number > 0 "
                     f"(the GFF amplitude of the image mean relative to the |k| = 1 wave; 1 is "
                     f"the default, and 0 would make Σ singular)")


def _image_size(shape: tuple[int, ...], what: str) -> tuple[int, int]:
  """(H, W) of a `[..., H, W, C]` shape, with a clear error for anything of lower rank."""
  if len(shape) < 3:
    raise ValueError(f"{what} expects channels-last images [..., H, W, C] (rank >= 3), got shape "
                     f"{shape}.")
  return int(shape[-3]), int(shape[-2])


def _fourier_filter(x: jax.Array, gain: np.ndarray) -> jax.Array:
  """real(ifft2(gain · fft2(x))) over axes (-3, -2), per channel. x: `[..., H, W, C]`."""
  # Low-precision inputs (bfloat16) have no FFT and would lose the high-frequency bins, so the
  # transform runs in float32 (float64 if x is float64) and only the result is cast back.
  compute_dtype = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
  height, width = x.shape[-3], x.shape[-2]
  # gain is symmetric under k -> -k, so the filtered image is exactly real: the half spectrum of
  # rfft2 carries all the information at half the cost, and irfft2 returns a real array directly
  # (the same result as real(ifft2(gain · fft2(x)))).
  half_gain = gain[:, : width // 2 + 1, None].astype(compute_dtype)  # [H, W//2+1, 1]: per channel
  spectrum = jnp.fft.rfft2(x.astype(compute_dtype), axes=_SPATIAL_AXES)
  filtered = jnp.fft.irfft2(spectrum * half_gain, s=(height, width), axes=_SPATIAL_AXES)
  return filtered.astype(x.dtype)


@dataclass(frozen=True)
class GFFNoise:
  """Gaussian-free-field noise: Σ^{1/2} is the Fourier filter A of
  `gff_amplitude(H, W, mean_amplitude)`.

  The image size is read from the array's static shape at trace time, so one instance serves all
  resolutions.
  """

  name: str = field(default="gff", init=False)
  mean_amplitude: float = 1.0

  def _amplitude(self, shape, what: str) -> np.ndarray:
    return gff_amplitude(*_image_size(shape, what), self.mean_amplitude)

  def sample(self, key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Σ^{1/2} ε with ε ~ N(0, I); `shape` = `[..., H, W, C]`, returned as `dtype`."""
    return self.sample_pair(key, shape, dtype)[1]

  def sample_pair(self, key: jax.Array, shape, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """(ε, Σ^{1/2} ε) from one draw ε ~ N(0, I), both `shape` = `[..., H, W, C]` of `dtype`."""
    shape = tuple(shape)
    _image_size(shape, "GFFNoise.sample_pair")
    # White noise is drawn in float32 whatever `dtype` is: the filter averages many pixels, and a
    # bfloat16 draw would quantise them before the averaging.
    eps = jax.random.normal(key, shape, jnp.float32)
    return eps.astype(dtype), self.sqrt_cov(eps).astype(dtype)

  def sqrt_cov(self, x: jax.Array) -> jax.Array:
    """Σ^{1/2} x, the filter A. x: `[..., H, W, C]`; same shape and dtype."""
    return _fourier_filter(x, self._amplitude(x.shape, "GFFNoise.sqrt_cov"))

  def inv_sqrt_cov(self, x: jax.Array) -> jax.Array:
    """Σ^{-1/2} x, the filter 1/A. x: `[..., H, W, C]`; same shape and dtype."""
    return _fourier_filter(x, 1.0 / self._amplitude(x.shape, "GFFNoise.inv_sqrt_cov"))

  def cov(self, x: jax.Array) -> jax.Array:
    """Σ x, the filter A². x: `[..., H, W, C]`; same shape and dtype."""
    return _fourier_filter(x, self._amplitude(x.shape, "GFFNoise.cov") ** 2)


# What the network regresses (config `diffusion.target`):
#   white       the white draw ε (the paper's parametrisation, arXiv 2210.12254): loss ‖ε − ε_θ‖²,
#               and the samplers use Σ^{1/2} ε_θ as the estimate of the noise in x_t;
#   correlated  the noise itself, z = Σ^{1/2} ε: loss ‖z − z_θ‖², used by the samplers as it is.
# Under GFF noise the correlated loss is dominated by the low frequencies (where Σ is large) and
# the white one weights every frequency of ε alike, so the two train different models; with Σ = I
# they are the same model.
TARGETS = ("white", "correlated")


def check_target(target: str) -> None:
  """ValueError naming `diffusion.target` unless it is one of TARGETS."""
  if target not in TARGETS:
    raise ValueError(f"diffusion.target={target!r} is unknown; use one of {TARGETS} (white: the "
                     f"network predicts the white noise ε, as the paper; correlated: Σ^{{1/2}} ε)")


def correlated_estimate(noise_model: NoiseModel, target: str, prediction: jax.Array) -> jax.Array:
  """The network's estimate of the noise Σ^{1/2} ε in its input, from its output `prediction`
  ([..., H, W, C]) under `target`: Σ^{1/2} prediction for "white", prediction for "correlated"."""
  check_target(target)
  return noise_model.sqrt_cov(prediction) if target == "white" else prediction


def isotropic() -> NoiseModel:
  """Σ = I (standard diffusion)."""
  return IsotropicNoise()


def gff(mean_amplitude: float = 1.0) -> NoiseModel:
  """Gaussian-free-field noise (non-isotropic diffusion, arXiv 2210.12254)."""
  check_mean_amplitude(mean_amplitude)
  return GFFNoise(mean_amplitude=float(mean_amplitude))


_FACTORIES = {"isotropic": isotropic, "gff": gff}


def make_noise_model(name: str, gff_mean_amplitude: float = 1.0) -> NoiseModel:
  """The noise model called `name`: "isotropic" or "gff" (with its mean amplitude)."""
  if name not in _FACTORIES:
    raise ValueError(f"Unknown noise model {name!r}; expected one of {sorted(_FACTORIES)}.")
  return gff(gff_mean_amplitude) if name == "gff" else isotropic()
