"""The multi-resolution decomposition of MRCNF (Voleti et al. 2021): pyramid, the unimodular
Haar-like transform, dequantisation, the logit transform, the per-level noise scale, bits/dim.

Images are NHWC. Levels run from coarse (s = 0) to fine (s = L-1, the full image); each coarser
image is the 2×2 average pool of the finer one's uint8 values, kept as floats in [0, 255].

Transform of a level image x [B, H, W, C] with a = 2^(2/3) ("mrcnf") or a = 2 ("haar"): the
four pixels of each 2×2 cell, x1 top-left, x2 top-right, x3 bottom-left, x4 bottom-right, map to

    y1 = (x1 + x2 - x3 - x4)/a   (top minus bottom)     x̄ = (x1 + x2 + x3 + x4)/4
    y2 = (x1 - x2 + x3 - x4)/a   (left minus right)
    y3 = (x1 - x2 - x3 + x4)/a   (diagonal)

and back by x_i = x̄ + (a/4) Σ_k s_{k,i} y_k with the same signs s. The matrix is diag(1/a, 1/a,
1/a, 1/4) times a ±1 Hadamard matrix (|det| 16), so |det| = 4/a³ per coarse element: exactly 1
for a = 2^(2/3), and ½ for plain Haar, whose log-det, coarse_dims · log ½, enters log p(x).
With det 1, log p(x) = Σ_s log p(y_s | x_{s-1}) + log p(x_0) needs no correction. The detail
tensor is [B, H/2, W/2, 3C] = concat(y1, y2, y3) over channels: channel k·C + c is y_{k+1} of
image channel c (the reference's order).

Dequantisation: a level's values v in [0, 255] become x = (v + u)/256 with fresh u ~ U[0, 1)
(u = 0.5 with noisy=False), so x ∈ [0, 1). Densities are of x; bits/dim as the paper's appendix:
bpd = -(log p(x)/D - log 256)/ln 2, D the full image's dimensions, which is the discrete model's
-log2 P(image)/D for the 8-bit image (a density uniform on [0, 1]^D scores 8).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

TRANSFORMS = ("mrcnf", "haar")
MRCNF_SCALE = 2.0 ** (2.0 / 3.0)  # c: the rescaling of the details that makes det = 1
# Signs of (x1, x2, x3, x4) in y1, y2, y3.
SIGNS = ((1, 1, -1, -1), (1, -1, 1, -1), (1, -1, -1, 1))
NUM_BINS = 256  # 8-bit pixels


def detail_scale(transform: str) -> float:
  """a: the divisor of the details: 2^(2/3) for "mrcnf" (unimodular), 2 for plain "haar"."""
  if transform == "mrcnf":
    return MRCNF_SCALE
  if transform == "haar":
    return 2.0
  raise ValueError(f"transform={transform!r} is not one of {TRANSFORMS}")


def avg_pool2(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H/2, W/2, C], the mean of each 2×2 cell (H, W even)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def pyramid(images: jax.Array, num_levels: int) -> list[jax.Array]:
  """images: [B, H, W, C] uint8 (or float values in [0, 255]) -> num_levels float32 images,
  coarse to fine, level s of size H/2^(L-1-s); each the 2×2 average pool of the next."""
  levels = [jnp.asarray(images, jnp.float32)]
  for _ in range(num_levels - 1):
    levels.append(avg_pool2(levels[-1]))
  return levels[::-1]


def _quadrants(x: jax.Array) -> tuple[jax.Array, ...]:
  return x[:, ::2, ::2], x[:, ::2, 1::2], x[:, 1::2, ::2], x[:, 1::2, 1::2]


def split(x: jax.Array, transform: str = "mrcnf") -> tuple[jax.Array, jax.Array]:
  """x: [B, H, W, C] -> (details [B, H/2, W/2, 3C] = concat(y1, y2, y3), coarse x̄
  [B, H/2, W/2, C] the 2×2 mean)."""
  a = detail_scale(transform)
  quads = _quadrants(x)
  details = [sum(s * q for s, q in zip(signs, quads)) / a for signs in SIGNS]
  return jnp.concatenate(details, axis=-1), sum(quads) / 4


def combine(details: jax.Array, coarse: jax.Array, transform: str = "mrcnf") -> jax.Array:
  """The inverse of `split`: details [B, h, w, 3C], coarse [B, h, w, C] -> x [B, 2h, 2w, C]."""
  a = detail_scale(transform)
  ys = jnp.split(details, 3, axis=-1)
  quads = [coarse + (a / 4) * sum(signs[i] * y for signs, y in zip(SIGNS, ys))
           for i in range(4)]
  b, h, w, c = coarse.shape
  # [2 rows, 2 cols, B, h, w, C] -> [B, h, row, w, col, C]: the four pixels back in their cells
  cells = jnp.stack([jnp.stack(quads[:2]), jnp.stack(quads[2:])])
  return cells.transpose(2, 3, 0, 4, 1, 5).reshape(b, 2 * h, 2 * w, c)


def transform_log_det(transform: str, coarse_dims: int) -> float:
  """log |det ∂(y, x̄)/∂x| of `split` on an image whose coarse part has coarse_dims elements:
  coarse_dims · log(4/a³), 0 for "mrcnf" (up to rounding of a), coarse_dims · log ½ for "haar".
  log p(x) = log p(y | x̄) + log p(x̄) + this."""
  if transform == "mrcnf":
    return 0.0
  return coarse_dims * math.log(4.0 / detail_scale(transform) ** 3)


def dequantise(values: jax.Array, key: jax.Array | None, noisy: bool = True) -> jax.Array:
  """values: [B, ...] in [0, 255] (pooled uint8) -> (values + u)/256 in [0, 1), u ~ U[0, 1)
  fresh per element from `key`, or u = 0.5 with noisy=False (key unused)."""
  values = jnp.asarray(values, jnp.float32)
  if noisy:
    u = jax.random.uniform(key, values.shape, values.dtype)
  else:
    u = jnp.full(values.shape, 0.5, values.dtype)
  return (values + u) / NUM_BINS


def quantise(x: jax.Array) -> jax.Array:
  """The uint8 image whose dequantisation interval holds x: floor(256 x) clipped to 0..255."""
  return jnp.clip(jnp.floor(x * NUM_BINS), 0, NUM_BINS - 1).astype(jnp.uint8)


def logit_forward(x: jax.Array, alpha: float) -> tuple[jax.Array, jax.Array]:
  """x [B, ...] in [0, 1] -> (h = logit(α + (1 - 2α) x), log|det ∂h/∂x| [B]), RealNVP's
  preprocessing; α keeps h finite at the ends (0.05, or 1e-6 for MNIST)."""
  s = alpha + (1 - 2 * alpha) * x
  h = jnp.log(s) - jnp.log1p(-s)
  log_det = math.log(1 - 2 * alpha) - jnp.log(s) - jnp.log1p(-s)
  return h, log_det.reshape(x.shape[0], -1).sum(axis=1)


def logit_inverse(h: jax.Array, alpha: float) -> jax.Array:
  """The inverse of logit_forward: h -> (sigmoid(h) - α)/(1 - 2α)."""
  return (jax.nn.sigmoid(h) - alpha) / (1 - 2 * alpha)


def level_noise_std(width: int, detail: bool, transform: str = "mrcnf",
                    reference_size: int | None = 64) -> float:
  """σ_s of a level's prior N(0, σ_s²) ("multi-resolution noise"): the standard deviation that
  unit white noise at reference_size pixels keeps after average pooling down to `width` pixels
  (the variance quarters per halving); a detail level multiplies the variance by 4/a², the
  variance of a detail y_k of four such pixels: c = 2^(2/3) for "mrcnf", 1 for "haar".
  width: the level image's width (at a detail level the fine image, twice the details' width).
  reference_size None: σ = 1. The scaled prior and the affine map z -> σ z cancel in log p(x)
  and in sampling (which draws σ T ε and divides σ back out); σ only sets the latents' scale."""
  if reference_size is None:
    return 1.0
  gain = 4.0 / detail_scale(transform) ** 2 if detail else 1.0
  return math.sqrt(gain / 4.0 ** (math.log2(reference_size) - math.log2(width)))


def bits_per_dim(log_p: jax.Array, dims: int) -> jax.Array:
  """log_p: log-density (nats) of dequantised images in [0, 1]^dims -> bits per dimension of the
  8-bit images: -(log_p/dims - log 256)/ln 2. dims: the full image's H·W·C."""
  return -(log_p / dims - math.log(NUM_BINS)) / math.log(2.0)
