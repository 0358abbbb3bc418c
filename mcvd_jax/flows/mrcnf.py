"""MRCNF: multi-resolution continuous normalizing flows (Voleti et al., arXiv 2106.08462).

An 8-bit image is split into a pyramid (multiscale.py); level 0, the coarsest image, and at each
finer level s the details y_s of the level-s image given the coarser one, get their own flow:

    log p(x) = log p(x_0) + Σ_{s≥1} [log p(y_s | x_{s-1}) + log|det split|]    (det 1 for "mrcnf")
    level 0:  x_0 -> logit -> K CNF blocks -> z -> w = σ_0 z,   w ~ N(0, σ_0² I)
    level s:  y_s -> K CNF blocks conditioned on x_{s-1} -> z -> w = σ_s z,  w ~ N(0, σ_s² I)

Each block is a CNF over t in [0, 1] (ode.cnf_log_density: log p gains ∫ div f dt) with its own
OdeNet; the affine log-det D_s log σ_s cancels the scaled prior. Every level x_s is dequantised
with fresh noise, and the conditioning x_{s-1} of level s is a separately dequantised copy of the
coarser pooled image, as the paper. The loss is mean bits/dim (D the full image's dimensions)
+ λ_K·KE + λ_J·JF, the RNODE regularisers summed over blocks and levels, averaged over the batch.

Sampling runs coarse to fine: w ~ N(0, (T σ_s)²), the blocks backwards (t from 1 to 0 through
ode.solve), then the inverse logit (level 0) or `combine` with the level just generated.

Parameters: {"level_<s>": the OdeNet parameters of the level's K blocks stacked on a leading
axis [K, ...]}; the blocks of a level run as one jax.lax.scan, so a level compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mcvd_jax.errors import ProjectError
from mcvd_jax.flows import multiscale as ms
from mcvd_jax.flows.odenet import OdeNet, init_blocks
from mcvd_jax.ode import (OdeSettings, check_settings, cnf_log_density, make_cnf_dynamics, solve,
                          standard_normal_log_prob)
from mcvd_jax.ode.cnf import DIVERGENCES, PROBES, REGULARISERS

# The paper's solver settings: training Bosh3 at 1e-3 with a first step of 1/6 (the regulariser
# states are outside error control in ode.cnf_log_density), evaluation Bosh3 at 1e-5.
TRAIN_ODE = OdeSettings(solver="bosh3", adaptive=True, rtol=1e-3, atol=1e-3, dt0=0.166667,
                        section="model.train_ode")
EVAL_ODE = OdeSettings(solver="bosh3", adaptive=True, rtol=1e-5, atol=1e-5,
                       section="model.eval_ode")


class MrcnfConfigError(ValueError, ProjectError):
  """An MRCNF setting that cannot work."""


@dataclasses.dataclass(frozen=True)
class MrcnfConfig:
  """An MRCNF for `image_size`² images of `channels` channels (uint8 at the boundary).

  num_levels: pyramid levels L (the coarsest is image_size / 2^(L-1) pixels wide).
  blocks_per_level: CNF blocks per level, one int or one per level (coarse to fine).
  hidden: channels of the OdeNet's hidden layers. transform: "mrcnf" (unimodular, the paper) or
  "haar" (plain Haar with its log-det, the paper's ablation). logit_alpha: α of the logit at
  level 0 (0.05; 1e-6 for MNIST); None: centring x - 0.5 instead. noise_reference_size: the
  "multi-resolution noise" resolution (64), None for σ_s = 1. divergence: "hutchinson" (the
  paper, one probe per solve) or "exact"; probe: the Hutchinson probe's law.
  kinetic_coef, jacobian_coef: λ_K, λ_J of the loss. train_ode, eval_ode: solver settings.
  section: the config section named in errors.
  """

  image_size: int = 32
  channels: int = 3
  num_levels: int = 2
  blocks_per_level: int | tuple[int, ...] = 8
  hidden: int = 64
  transform: str = "mrcnf"
  logit_alpha: float | None = 0.05
  noise_reference_size: int | None = 64
  divergence: str = "hutchinson"
  probe: str = "gaussian"
  kinetic_coef: float = 0.01
  jacobian_coef: float = 0.01
  train_ode: OdeSettings = TRAIN_ODE
  eval_ode: OdeSettings = EVAL_ODE
  section: str = "model"

  def __post_init__(self):
    blocks = self.blocks_per_level
    if isinstance(blocks, int):
      blocks = (blocks,) * self.num_levels if isinstance(self.num_levels, int) else (blocks,)
    object.__setattr__(self, "blocks_per_level", tuple(blocks))
    self.validate()

  def _fail(self, field: str, problem: str) -> None:
    raise MrcnfConfigError(f"{self.section}.{field}={getattr(self, field)!r} {problem}")

  def validate(self) -> None:
    """Raises MrcnfConfigError (a ValueError) naming `<section>.<field>` and what works."""
    for name in ("image_size", "channels", "num_levels", "hidden"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        self._fail(name, "must be an integer >= 1")
    factor = 2 ** (self.num_levels - 1)
    if self.image_size % factor:
      self._fail("image_size", f"is not divisible by 2^(num_levels - 1) = {factor}, the "
                 f"pooling of {self.num_levels} levels; change image_size or num_levels")
    if (len(self.blocks_per_level) != self.num_levels
        or any(not isinstance(k, int) or k < 1 for k in self.blocks_per_level)):
      self._fail("blocks_per_level", f"must be an integer >= 1 or {self.num_levels} of them "
                 "(one per level, coarse to fine)")
    if self.transform not in ms.TRANSFORMS:
      self._fail("transform", f"is not one of {ms.TRANSFORMS}")
    if self.logit_alpha is not None and not 0 < self.logit_alpha < 0.5:
      self._fail("logit_alpha", "must be in (0, 0.5) (0.05; 1e-6 for MNIST) or None")
    if self.noise_reference_size is not None and not (
        isinstance(self.noise_reference_size, int) and self.noise_reference_size >= 1):
      self._fail("noise_reference_size", "must be an integer >= 1 (64) or None")
    if self.divergence not in DIVERGENCES:
      self._fail("divergence", f"is not one of {DIVERGENCES}")
    if self.probe not in PROBES:
      self._fail("probe", f"is not one of {PROBES}")
    for name in ("kinetic_coef", "jacobian_coef"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
        self._fail(name, "must be a finite number >= 0")
    for name in ("train_ode", "eval_ode"):
      if not isinstance(getattr(self, name), OdeSettings):
        self._fail(name, "must be an ode.OdeSettings")
      check_settings(getattr(self, name))

  @property
  def dims(self) -> int:
    """D: the full image's dimensions, the divisor of bits/dim."""
    return self.image_size * self.image_size * self.channels

  def level_width(self, s: int) -> int:
    """The width of level s's image (s = 0 the coarsest)."""
    return self.image_size // 2 ** (self.num_levels - 1 - s)

  def state_shape(self, s: int) -> tuple[int, int, int]:
    """[H, W, C] of level s's flow state: the image at level 0, the 3C details at the coarse
    size elsewhere."""
    if s == 0:
      w = self.level_width(0)
      return (w, w, self.channels)
    w = self.level_width(s) // 2
    return (w, w, 3 * self.channels)

  def noise_std(self, s: int) -> float:
    """σ_s of level s's prior (multiscale.level_noise_std)."""
    return ms.level_noise_std(self.level_width(s), s > 0, self.transform,
                              self.noise_reference_size)


class Likelihood(NamedTuple):
  """log_p: [B] log-density of the dequantised image x in [0, 1)^D (nats; the logit and split
  log-dets included). level_log_p: [L, B], coarse to fine: log p(x_0), then each
  log p(y_s | x_{s-1}) + the split's log-det; they sum to log_p. latents: per level the
  σ-scaled latent w [B, *state_shape(s)] (what `decode` inverts). regularisers: name -> [B]
  integral summed over blocks and levels (empty unless asked for). num_evals: [L] field
  evaluations per level, summed over its blocks ([L, B] with batch_mode "vmap")."""

  log_p: jax.Array
  level_log_p: jax.Array
  latents: tuple[jax.Array, ...]
  regularisers: dict[str, jax.Array]
  num_evals: jax.Array


class Samples(NamedTuple):
  """images: per level, coarse to fine, uint8 [N, w_s, w_s, C] (multiscale.quantise of the
  continuous image). continuous: the same levels as floats, the dequantised x in [0, 1) up to
  solver error (not clipped). num_evals: [L] field evaluations per level."""

  images: tuple[jax.Array, ...]
  continuous: tuple[jax.Array, ...]
  num_evals: jax.Array


@functools.lru_cache(maxsize=None)
def _network(out_channels: int, hidden: int) -> OdeNet:
  return OdeNet(out_channels=out_channels, hidden=hidden)


# Cached so that an eager call reuses one function object (diffrax's jit keys on it).
@functools.lru_cache(maxsize=None)
def _field(out_channels: int, hidden: int) -> Callable:
  """field(t, z, (block params, cond)) -> dz/dt, the form ode.solve and the CNF call."""
  net = _network(out_channels, hidden)

  def field(t, z, args):
    params, cond = args
    return net.apply({"params": params}, t, z, cond).astype(z.dtype)

  return field


@functools.lru_cache(maxsize=None)
def _dynamics(out_channels: int, hidden: int, divergence: str, probe: str,
              regularisers: tuple[str, ...]):
  return make_cnf_dynamics(_field(out_channels, hidden), divergence=divergence, probe=probe,
                           regularisers=regularisers)


def init_params(config: MrcnfConfig, key: jax.Array) -> dict[str, Any]:
  """{"level_<s>": OdeNet params with a leading [K_s] block axis} (odenet.init_blocks: PyTorch's
  Conv2d law, output kernels zero); pure, so jax.eval_shape of it gives the shapes without
  allocating."""
  params = {}
  for s in range(config.num_levels):
    shape = config.state_shape(s)
    net = _network(shape[-1], config.hidden)
    z = jnp.zeros((1,) + shape, jnp.float32)
    cond = None if s == 0 else jnp.zeros((1,) + shape[:2] + (config.channels,), jnp.float32)
    params[f"level_{s}"] = init_blocks(net, jax.random.fold_in(key, s),
                                       config.blocks_per_level[s], z, cond)
  return params


def param_count(config: MrcnfConfig) -> int:
  """Number of parameters, from shapes only (nothing is allocated)."""
  shapes = jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def _flow_level(config, s, level_params, h, cond, keys, settings, divergence, regularisers):
  """h [B, *state] through level s's blocks in order: (z, Σ ∫div [B], regularisers [B, R],
  field evaluations)."""
  dynamics = _dynamics(h.shape[-1], config.hidden, divergence, config.probe, regularisers)

  def block(z, inputs):
    params, key = inputs
    out = cnf_log_density(dynamics, z, params, settings, key=key, cond=cond)
    regs = jnp.stack([out.regularisers[name] for name in regularisers], axis=-1) \
        if regularisers else jnp.zeros(z.shape[:1] + (0,), z.dtype)
    return out.z, (out.log_det, regs, out.num_evals)

  z, (log_det, regs, evals) = jax.lax.scan(block, h, (level_params, keys))
  return z, log_det.sum(0), regs.sum(0), evals.sum(0)


def _to_flow_space(config, s, x, cond_values, key, noisy):
  """The dequantised level image x -> (the flow's input h, its log-det [B] or scalar, cond)."""
  if s == 0:
    if config.logit_alpha is None:  # centring only, volume preserving
      return x - 0.5, 0.0, None
    h, log_det = ms.logit_forward(x, config.logit_alpha)
    return h, log_det, None
  details, _ = ms.split(x, config.transform)
  coarse_dims = math.prod(details.shape[1:]) // 3
  cond = ms.dequantise(cond_values, key, noisy)  # its own noise, not the pool of x's
  return details, ms.transform_log_det(config.transform, coarse_dims), cond


def log_likelihood(config: MrcnfConfig, params: Any, images: jax.Array, key: jax.Array | None,
                   *, settings: OdeSettings | None = None, noisy: bool = True,
                   divergence: str | None = None, regularisers: bool = False) -> Likelihood:
  """log p of images [B, H, W, C] uint8 in 0..255 under the MRCNF.

  key: the dequantisation noise and the Hutchinson probes (may be None with noisy=False and the
  exact divergence). settings: default config.eval_ode. noisy: False dequantises with u = 0.5
  (the paper's evaluation option). divergence: default config.divergence. regularisers: also
  integrate the kinetic energy and Jacobian Frobenius norm (training).
  """
  settings = config.eval_ode if settings is None else settings
  divergence = config.divergence if divergence is None else divergence
  if key is None:
    if noisy or divergence == "hutchinson":
      raise ValueError("log_likelihood needs a key for the dequantisation noise (noisy=True) "
                       "and the Hutchinson probes; only noisy=False with divergence='exact' "
                       "runs without one")
    key = jax.random.key(0)  # unused
  expected = (config.image_size, config.image_size, config.channels)
  if tuple(images.shape[1:]) != expected:
    raise ValueError(f"images of shape {tuple(images.shape)}; this MRCNF models [B, "
                     f"{', '.join(map(str, expected))}] ({config.section}.image_size, channels)")
  names = REGULARISERS if regularisers else ()
  values = ms.pyramid(images, config.num_levels)
  # per level: the level's noise, its conditioning's noise, one probe key per block (one split:
  # each key derivation is a threefry kernel to compile)
  keys = jax.random.split(key, (config.num_levels, 2 + max(config.blocks_per_level)))
  levels, latents, reg_total, evals = [], [], 0.0, []
  for s in range(config.num_levels):
    x = ms.dequantise(values[s], keys[s, 0], noisy)
    h, log_det, cond = _to_flow_space(config, s, x, values[s - 1] if s else None, keys[s, 1],
                                      noisy)
    block_keys = keys[s, 2:2 + config.blocks_per_level[s]]
    z, flow_log_det, regs, nfe = _flow_level(config, s, params[f"level_{s}"], h, cond,
                                             block_keys, settings, divergence, names)
    sigma = config.noise_std(s)
    w = sigma * z
    dims = math.prod(z.shape[1:])
    # log N(w; 0, σ²) + D log σ (the affine z -> σz): σ cancels, it only scales the latents
    log_pw = standard_normal_log_prob(w / sigma) - dims * math.log(sigma)
    levels.append(log_pw + dims * math.log(sigma) + flow_log_det + log_det)
    latents.append(w)
    reg_total = reg_total + regs
    evals.append(nfe)
  level_log_p = jnp.stack(levels)
  reg_dict = {name: reg_total[:, i] for i, name in enumerate(names)}
  return Likelihood(log_p=level_log_p.sum(0), level_log_p=level_log_p, latents=tuple(latents),
                    regularisers=reg_dict, num_evals=jnp.stack(evals))


def bits_per_dim(log_p: jax.Array, dims: int) -> jax.Array:
  """multiscale.bits_per_dim: -(log_p/dims - log 256)/ln 2 (dims the full image's H·W·C)."""
  return ms.bits_per_dim(log_p, dims)


def level_bits_per_dim(config: MrcnfConfig, level_log_p: jax.Array) -> jax.Array:
  """[L, B] -> [L, B]: each level image's own bits/dim, from the log p summed up to that level
  over that level's dimensions (the reference's per-scale BPD)."""
  cumulative = jnp.cumsum(level_log_p, axis=0)
  dims = jnp.asarray([config.level_width(s) ** 2 * config.channels
                      for s in range(config.num_levels)], cumulative.dtype)
  return ms.bits_per_dim(cumulative, dims[:, None])


def loss_fn(config: MrcnfConfig, settings: OdeSettings | None = None, *,
            noisy: bool = True) -> Callable:
  """loss(params, images uint8 [B, H, W, C], key) -> (loss, metrics), the project's loss
  convention: loss = mean bpd + kinetic_coef·mean KE + jacobian_coef·mean JF (KE, JF summed
  over blocks and levels), solved with `settings` (default config.train_ode) and the config's
  divergence. noisy: fresh dequantisation noise (training); False: u = 0.5 (a held-out loss
  that varies only with the probes). metrics (float32 scalars): bpd, bpd_level_<s>, kinetic,
  jacobian_frobenius, nfe (field evaluations of all blocks, one sample's worth)."""
  settings = config.train_ode if settings is None else settings
  check_settings(settings)

  def loss(params: Any, images: jax.Array, key: jax.Array):
    out = log_likelihood(config, params, images, key, settings=settings, noisy=noisy,
                         regularisers=True)
    bpd = bits_per_dim(out.log_p, config.dims).mean()
    kinetic = out.regularisers["kinetic"].mean()
    jacobian = out.regularisers["jacobian_frobenius"].mean()
    total = bpd + config.kinetic_coef * kinetic + config.jacobian_coef * jacobian
    metrics = {"bpd": bpd, "kinetic": kinetic, "jacobian_frobenius": jacobian,
               "nfe": out.num_evals.reshape(config.num_levels, -1).sum(0).mean()}
    per_level = level_bits_per_dim(config, out.level_log_p).mean(axis=1)
    metrics.update({f"bpd_level_{s}": per_level[s] for s in range(config.num_levels)})
    return total, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics)

  return loss


def _invert_level(config, s, level_params, z, cond, settings):
  """z [B, *state] back through level s's blocks, last to first, each from t = 1 to t = 0."""
  field = _field(z.shape[-1], config.hidden)

  def block(z, params):
    sol = solve(field, z, 1.0, 0.0, params, settings, batch_args=cond)
    return sol.ys, sol.num_evals

  h, evals = jax.lax.scan(block, z, level_params, reverse=True)
  return h, evals.sum(0)


def decode(config: MrcnfConfig, params: Any, latents: tuple[jax.Array, ...],
           settings: OdeSettings | None = None) -> Samples:
  """The inverse of the flows: per-level σ-scaled latents w (Likelihood.latents, or drawn by
  draw_latents), coarse to fine -> Samples. Each level is conditioned on the one generated just
  before it. settings: default config.eval_ode."""
  settings = config.eval_ode if settings is None else settings
  cond, continuous, evals = None, [], []
  for s in range(config.num_levels):
    z = latents[s] / config.noise_std(s)
    h, nfe = _invert_level(config, s, params[f"level_{s}"], z, cond, settings)
    if s == 0:
      x = (h + 0.5 if config.logit_alpha is None else ms.logit_inverse(h, config.logit_alpha))
    else:
      x = ms.combine(h, cond, config.transform)
    continuous.append(x)
    evals.append(nfe)
    cond = x
  return Samples(images=tuple(ms.quantise(x) for x in continuous),
                 continuous=tuple(continuous), num_evals=jnp.stack(evals))


def draw_latents(config: MrcnfConfig, key: jax.Array, num: int,
                 temperature: float = 1.0) -> tuple[jax.Array, ...]:
  """num samples of each level's prior at a temperature: w_s ~ N(0, (temperature·σ_s)² I)."""
  return tuple(temperature * config.noise_std(s)
               * jax.random.normal(jax.random.fold_in(key, s), (num,) + config.state_shape(s))
               for s in range(config.num_levels))


def sample(config: MrcnfConfig, params: Any, key: jax.Array, num: int,
           temperature: float = 1.0, settings: OdeSettings | None = None) -> Samples:
  """num images drawn coarse to fine at a temperature: Samples with every level's image
  (uint8 and continuous), coarse to fine; the last is the full image."""
  return decode(config, params, draw_latents(config, key, num, temperature), settings)
