"""Frame-level video metrics as the reference computes them: per-video MSE and PSNR, and SSIM.

The reference (its `video_gen`) takes generated and real frames in [0, 1] and
  MSE:  the mean squared error of each frame (over C, H, W), averaged over the predicted frames
        of a video; PSNR = 10 log10(1 / MSE) of that per-video MSE (not a mean of per-frame PSNRs;
        capped at 58.9 dB, the PSNR of uint8 rounding, where the reference gives +inf);
  SSIM: on each frame converted to an 8-bit grey image the way PIL does it (x * 255 truncated to
        uint8, then ITU-R 601 luma with PIL's integer rounding), with a Gaussian window
        (sigma 1.5, 11 taps), population covariances, data range 255, averaged over the frames.
        Stochastic Moving MNIST frames are rounded to {0, 1} first (the reference does so because
        SSIM punishes grey against black-and-white).
All functions take [N, T, H, W, C] float arrays in [0, 1] and return [N] values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): scikit-image's truncation of the Gaussian window
_K1, _K2 = 0.01, 0.03


def _check_pair(real: jax.Array, fake: jax.Array) -> None:
  if real.shape != fake.shape:
    raise ValueError(f"real and generated videos must have the same shape, got {real.shape} and "
                     f"{fake.shape}")
  if real.ndim != 5 or real.shape[-1] not in (1, 3):
    raise ValueError(f"videos must be [N, T, H, W, C] with C = 1 or 3, got {real.shape}")


@jax.jit
def video_mse(real: jax.Array, fake: jax.Array) -> jax.Array:
  """[N, T, H, W, C] x2 in [0, 1] -> [N]: per-frame MSE averaged over the frames."""
  _check_pair(real, fake)
  per_frame = jnp.mean(jnp.square(real.astype(jnp.float32) - fake.astype(jnp.float32)), axis=(2, 3, 4))
  return jnp.mean(per_frame, axis=1)


# The MSE of uint8 rounding (a uniform error of up to half a grey level): PSNR is capped at
# 10 log10(1 / this) = 58.9 dB. An exact prediction of a uint8 video (a still digit copied) would
# otherwise score +inf and take the mean over videos with it; an error below the rounding of the
# frames themselves says nothing more. Any video with a visible error is far below the cap.
PSNR_FLOOR_MSE = 1.0 / (12 * 255 ** 2)


def psnr_from_mse(mse):
  """PSNR in dB, 10 log10(1 / MSE) for MSE of frames in [0, 1], capped at 58.9 dB
  (PSNR_FLOOR_MSE); numpy or jax arrays."""
  xp = jnp if isinstance(mse, jax.Array) else np
  return 10.0 * xp.log10(1.0 / xp.maximum(mse, PSNR_FLOOR_MSE))


def video_psnr(real: jax.Array, fake: jax.Array) -> jax.Array:
  """[N] PSNR in dB from each video's MSE (frames in [0, 1]); identical videos score the cap."""
  return psnr_from_mse(video_mse(real, fake))


def to_grey_uint8(frames: jax.Array, binarize: bool = False) -> jax.Array:
  """[..., H, W, C] in [0, 1] -> [..., H, W] grey levels 0..255 (float32 holding integers), as
  torchvision's ToPILImage (x * 255 truncated) followed by PIL's convert('L')."""
  if binarize:
    frames = jnp.round(frames)
  # ToPILImage truncates x * 255 to uint8 (after clipping, which the cast alone would not do).
  levels = jnp.floor(jnp.clip(frames.astype(jnp.float32), 0.0, 1.0) * 255.0)
  if frames.shape[-1] == 1:
    return levels[..., 0]
  r, g, b = levels[..., 0], levels[..., 1], levels[..., 2]
  # PIL's L = (19595 R + 38470 G + 7471 B + 2^15) >> 16, exact in float32 for these ranges.
  return jnp.floor((19595.0 * r + 38470.0 * g + 7471.0 * b + 32768.0) / 65536.0)


def _gaussian_taps() -> np.ndarray:
  x = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
  return (taps / taps.sum()).astype(np.float32)


def _filter_valid(images: jax.Array) -> jax.Array:
  """Separable Gaussian filter of [B, H, W] images keeping only fully covered pixels: the same
  values scikit-image keeps after cropping its filtered map by the window radius."""
  taps = jnp.asarray(_gaussian_taps())
  n = taps.shape[0]
  h, w = images.shape[1], images.shape[2]
  rows = sum(taps[k] * images[:, k:h - n + 1 + k, :] for k in range(n))
  return sum(taps[k] * rows[:, :, k:w - n + 1 + k] for k in range(n))


def ssim_grey(a: jax.Array, b: jax.Array, data_range: float = 255.0) -> jax.Array:
  """Mean SSIM of grey images [B, H, W] (values 0..data_range) -> [B]; H, W >= 11."""
  if a.shape[-1] < 2 * _SSIM_RADIUS + 1 or a.shape[-2] < 2 * _SSIM_RADIUS + 1:
    raise ValueError(f"SSIM needs frames of at least 11x11 pixels, got {a.shape[-2:]}")
  # Work in [0, 1]: SSIM is scale-free once C1, C2 scale too, and float32 keeps more digits of
  # E[x^2] - E[x]^2 there than at 255^2.
  a, b = a.astype(jnp.float32) / data_range, b.astype(jnp.float32) / data_range
  mu_a, mu_b = _filter_valid(a), _filter_valid(b)
  var_a = _filter_valid(a * a) - mu_a * mu_a
  var_b = _filter_valid(b * b) - mu_b * mu_b
  cov = _filter_valid(a * b) - mu_a * mu_b
  c1, c2 = _K1 ** 2, _K2 ** 2
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
      (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
  return jnp.mean(ssim_map, axis=(1, 2))


@functools.partial(jax.jit, static_argnames="binarize")
def video_ssim(real: jax.Array, fake: jax.Array, binarize: bool = False) -> jax.Array:
  """[N, T, H, W, C] x2 in [0, 1] -> [N]: SSIM of each frame pair's grey images, averaged over
  the frames. binarize=True rounds frames to {0, 1} first (Stochastic Moving MNIST)."""
  _check_pair(real, fake)
  n, t, h, w, _ = real.shape
  grey_real = to_grey_uint8(real, binarize).reshape(n * t, h, w)
  grey_fake = to_grey_uint8(fake, binarize).reshape(n * t, h, w)
  return jnp.mean(ssim_grey(grey_fake, grey_real).reshape(n, t), axis=1)
