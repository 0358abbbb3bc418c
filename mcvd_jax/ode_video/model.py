"""Neural-ODE video models ("Simple Video Generation using Neural ODEs", Kanaa, Voleti et al.
2019; thesis ch. 3): encode -> integrate a latent ODE -> decode every frame.

A latent z(t) ∈ R^L follows an autonomous ODE dz/dt = f_θ(z) (an ELU MLP) from z(t_0), and each
frame is decoded from the latent at its own time, x̂(t_k) = D(z(t_k)). Times are t_k = k/19 on a
20-frame video (`time_grid`); training reconstructs the first 10 frames only, and prediction
integrates on to t = 1 to extrapolate the other 10. Two variants differ in how z(t_0) is found:

  A (deterministic) z(t_0) = E(x_0), from the first frame alone. The loss adds to the pixel
    term a latent term that ties the trajectory to the per-frame encodings:
        L_A = Σ_k [-log N(x_k; D(z(t_k)), σ²I)] + Σ_k [-log N(E(x_k); z(t_k), σ²I)]
    (gradients flow into both E(x_k) and z(t_k), as in the reference).
  B (variational) q(z(t_0) | x_{0..T-1}) = N(μ, diag exp(logvar)) from an RNN that reads the
    frames backwards (RnnEncoder); z(t_0) = μ + exp(½ logvar)·ε, ε ~ N(0, I). Negative ELBO:
        L_B = Σ_k [-log N(x_k; D(z(t_k)), σ²I)] + kl_weight · KL(q ‖ N(0, I)),
        KL = ½ Σ_l (exp(logvar_l) + μ_l² - 1 - logvar_l).
Both sum over frames and dimensions and average over the batch. The Gaussian negative
log-likelihood keeps its constant: -log N(x; m, σ²) = (x - m)²/(2σ²) + ½ log(2πσ²) per dimension,
as the reference's `log_normal_pdf` (so logged numbers compare; `include_constants=False` drops
it). σ = 0.3 is the reference code's value; the paper writes σ = 1 (anchor §1).

The ODE is solved with the project's `ode.solve` (Diffrax), the whole batch as one state with one
step size (batch_mode "joint", as torchdiffeq), saving at the given times by dense interpolation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mcvd_jax.errors import ProjectError
from mcvd_jax.ode import OdeSettings, check_settings, solve
from mcvd_jax.ode_video import networks

VARIANTS = ("a", "b")
# The paper's models (anchor §1): variant A from the master branch, variant B from the RNN branch
# (--res_ch 8 16 32 32 --nhidden 128 --latent_dim 64; its one `nhidden` sizes all three MLPs).
VARIANT_DEFAULTS = {
    "a": dict(latent_dim=128, enc_channels=(16, 32, 64, 64), fc_hidden=256, ode_hidden=256),
    "b": dict(latent_dim=64, enc_channels=(8, 16, 32, 32), fc_hidden=128, ode_hidden=128),
}
NUM_BLOCKS = 4  # down (and up) ResBlocks: image_size / 16 at the bottleneck
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class OdeVideoConfigError(ValueError, ProjectError):
  """A model setting of the neural-ODE video model that cannot work (names the field)."""


@dataclasses.dataclass(frozen=True)
class OdeVideoConfig:
  """The network and likelihood of one variant. Sizes left as None take the variant's paper
  defaults (VARIANT_DEFAULTS), so OdeVideoConfig(variant="b") is the paper's variant B.

  image_size: frames are image_size² (divisible by 16, at least 32). channels: of the frames
  (1: MNIST). latent_dim: L. enc_channels: the 4 down-ResBlocks' outputs (each <= 32 or a
  multiple of 32, for GroupNorm(min(32, C))); the decoder mirrors them. fc_hidden: the encoder's
  (A) and the decoder's hidden Linear width. ode_hidden: the ODE MLP's width. rnn_hidden: the
  Elman RNN's state (B only). sigma: the Gaussian likelihood's σ (reference code 0.3; the paper
  says 1). kl_weight: weight of KL(q(z0) ‖ N(0, I)) (B only). compute_dtype: of the encoder and
  decoder ("float32" or "bfloat16"); the ODE is solved in its parameters' dtype (float32, or
  float64 under jax_enable_x64), never bfloat16.
  section: the config path named in errors.
  """

  variant: str = "a"
  image_size: int = 64
  channels: int = 1
  latent_dim: int | None = None
  enc_channels: tuple[int, ...] | None = None
  fc_hidden: int | None = None
  ode_hidden: int | None = None
  rnn_hidden: int = 128
  sigma: float = 0.3
  kl_weight: float = 1.0
  compute_dtype: str = "float32"
  section: str = dataclasses.field(default="model", compare=False)

  def __post_init__(self):
    if self.variant not in VARIANTS:
      self._fail("variant", f"is not one of {VARIANTS}")
    for name, value in VARIANT_DEFAULTS[self.variant].items():
      if getattr(self, name) is None:
        object.__setattr__(self, name, value)
    if not isinstance(self.enc_channels, (tuple, list)):
      self._fail("enc_channels", f"must be a sequence of {NUM_BLOCKS} channel counts")
    object.__setattr__(self, "enc_channels", tuple(self.enc_channels))
    self._validate()

  @classmethod
  def variant_a(cls, **overrides) -> OdeVideoConfig:
    """The paper's deterministic model (§5.1), with `overrides`."""
    return cls(variant="a", **overrides)

  @classmethod
  def variant_b(cls, **overrides) -> OdeVideoConfig:
    """The paper's RNN-encoder VAE (§5.2), with `overrides`."""
    return cls(variant="b", **overrides)

  def _fail(self, field: str, problem: str):
    raise OdeVideoConfigError(f"{self.section}.{field}={getattr(self, field)!r} {problem}")

  def _validate(self):
    for name in ("image_size", "channels", "latent_dim", "fc_hidden", "ode_hidden",
                 "rnn_hidden"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        self._fail(name, "must be a positive integer")
    if self.image_size % 2 ** NUM_BLOCKS:
      self._fail("image_size", f"must be divisible by {2 ** NUM_BLOCKS}: {NUM_BLOCKS} "
                 "stride-2 ResBlocks halve it")
    if self.image_size < 2 ** (NUM_BLOCKS + 1):
      # A 1×1 bottleneck gives GroupNorm one value per group, which it maps to its bias: the
      # decoder's first block would erase its input and decode every latent alike.
      self._fail("image_size", f"must be at least {2 ** (NUM_BLOCKS + 1)} (a 2×2 bottleneck)")
    ch = self.enc_channels
    if len(ch) != NUM_BLOCKS or not all(isinstance(c, (int, np.integer)) and c >= 1 for c in ch):
      self._fail("enc_channels", f"must be {NUM_BLOCKS} positive channel counts, one per "
                 "down-ResBlock")
    if any(c > 32 and c % 32 for c in ch):
      self._fail("enc_channels", "entries must be <= 32 or multiples of 32 (GroupNorm with "
                 "min(32, C) groups)")
    if self.channels > 32 and self.channels % 32:
      self._fail("channels", "must be <= 32 or a multiple of 32 (GroupNorm with min(32, C) "
                 "groups)")
    if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma)
            and self.sigma > 0):
      self._fail("sigma", "must be a finite number > 0 (the likelihood's standard deviation)")
    if not (isinstance(self.kl_weight, (int, float)) and math.isfinite(self.kl_weight)
            and self.kl_weight >= 0):
      self._fail("kl_weight", "must be a finite number >= 0")
    if self.compute_dtype not in COMPUTE_DTYPES:
      self._fail("compute_dtype", f"is not one of {tuple(COMPUTE_DTYPES)}")

  @property
  def bottleneck_size(self) -> int:
    """Spatial size of the encoder's last feature map (and the decoder's first)."""
    return self.image_size // 2 ** NUM_BLOCKS


class Encoding(NamedTuple):
  """z0: [B, L] the latent at times[0]; mean: [B, L] (A: z0 itself); logvar: [B, L] of the
  posterior (B), None for the deterministic variant A."""

  z0: jax.Array
  mean: jax.Array
  logvar: jax.Array | None


# ------------------------------------------------------------------------------------- settings

def default_ode_settings(precision: str = "float32", section: str = "ode") -> OdeSettings:
  """Adaptive dopri5 with one step size for the batch (torchdiffeq's behaviour) and exact
  gradients through the discretised solve (the reference backpropagates through odeint).

  "float32": rtol 1e-5, atol 1e-6. float32's ε ≈ 1.2e-7, so at the reference's rtol 1e-7 the
    error estimate is partly rounding noise and the step count grows (to max_steps at worst);
    1e-5 is ~80ε, met cleanly, and far below what 8-bit frames show. atol 1e-6 only matters
    for latent coordinates near 0. max_steps 256: a fresh model takes ~4 dopri5 steps over
    [0, 1]; the backward pass's checkpointing grows with each power of 16 of max_steps.
  "float64": the reference's torchdiffeq defaults, rtol 1e-7, atol 1e-9 (the reference ran them
    in float32), max_steps 4096 (the checkpointing depth of 1024). For a float64 solve, call
    `jax.config.update("jax_enable_x64", True)` first and cast params["ode"] to float64 (the
    solve runs in the ODE parameters' dtype; the convolutions keep compute_dtype). Cost:
    ~2.5× the steps (dopri5: steps ∝ tol^(-1/5)) at float64 speed, ≈2× slower on CPUs, far
    slower on GPUs without fast float64 and on TPUs, which emulate it.
  """
  if precision == "float32":
    return check_settings(OdeSettings(solver="dopri5", adaptive=True, rtol=1e-5, atol=1e-6,
                                      max_steps=256, section=section))
  if precision == "float64":
    return check_settings(OdeSettings(solver="dopri5", adaptive=True, rtol=1e-7, atol=1e-9,
                                      max_steps=4096, section=section))
  raise ValueError(f"precision={precision!r} is not 'float32' or 'float64'")


def time_grid(num_frames: int = 20, span: float = 1.0) -> np.ndarray:
  """float32 [num_frames] = linspace(0, span, num_frames): t_k = k·span/(num_frames - 1)."""
  if num_frames < 1 or not span > 0:
    raise ValueError(f"time_grid needs num_frames >= 1 and span > 0, got {num_frames}, {span}")
  return np.linspace(0.0, span, num_frames, dtype=np.float32)


def check_times(times: Any, what: str = "times") -> None:
  """ValueError unless times is 1-D and (when its values are known) strictly increasing."""
  if np.ndim(times) != 1 or np.shape(times)[0] < 1:
    raise ValueError(f"{what} must be a 1-D array of increasing times, got shape "
                     f"{np.shape(times)}")
  try:
    values = np.asarray(times, np.float64)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return  # traced: checked where it was built
  if np.any(np.diff(values) <= 0) or not np.all(np.isfinite(values)):
    raise ValueError(f"{what} must be finite and strictly increasing, got {values}")


# ------------------------------------------------------------------------------------- networks

def _dtype(cfg: OdeVideoConfig):
  return COMPUTE_DTYPES[cfg.compute_dtype]


def encoder_module(cfg: OdeVideoConfig):
  if cfg.variant == "a":
    return networks.FrameEncoder(cfg.enc_channels, cfg.fc_hidden, cfg.latent_dim, _dtype(cfg))
  return networks.RnnEncoder(cfg.enc_channels, cfg.rnn_hidden, cfg.latent_dim, _dtype(cfg))


def ode_module(cfg: OdeVideoConfig) -> networks.OdeMLP:
  return networks.OdeMLP(cfg.ode_hidden, cfg.latent_dim)


def decoder_module(cfg: OdeVideoConfig) -> networks.Decoder:
  return networks.Decoder(cfg.enc_channels, cfg.fc_hidden, cfg.image_size, cfg.channels,
                          _dtype(cfg))


@functools.partial(jax.jit, static_argnums=0)
def init_params(cfg: OdeVideoConfig, key: jax.Array) -> dict[str, Any]:
  """{"encoder", "ode", "decoder"}: each module's flax "params" collection, float32, with the
  modules' PyTorch-default initialisers (networks.torch_default_params). Pure; works under
  jax.eval_shape and jit."""
  frame = jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.channels), jnp.float32)
  enc_input = frame if cfg.variant == "a" else frame[:, None]
  z = jnp.zeros((1, cfg.latent_dim), jnp.float32)
  shapes = jax.eval_shape(lambda k: {
      "encoder": encoder_module(cfg).init(k, enc_input)["params"],
      "ode": ode_module(cfg).init(k, z)["params"],
      "decoder": decoder_module(cfg).init(k, z)["params"]}, key)
  return networks.torch_default_params(shapes, key)


def _check_frames(cfg: OdeVideoConfig, frames: jax.Array, what: str = "frames") -> None:
  want = (cfg.image_size, cfg.image_size, cfg.channels)
  if frames.ndim != 5 or tuple(frames.shape[2:]) != want:
    raise ValueError(f"{what} must be [B, T, {want[0]}, {want[1]}, {want[2]}] for "
                     f"{cfg.section}.image_size={cfg.image_size}, channels={cfg.channels}; got "
                     f"{tuple(frames.shape)}")


@functools.partial(jax.jit, static_argnums=0)
def encode(cfg: OdeVideoConfig, params: dict[str, Any], frames: jax.Array,
           key: jax.Array | None = None) -> Encoding:
  """frames: [B, Tc, H, W, C] in [-1, 1] at times t_0 < ... < t_{Tc-1} -> Encoding at t_0.

  A: z0 = E(frames[:, 0]) (the other frames are not read). B: the RNN reads frames Tc-1 ... 0;
  z0 = mean + exp(½ logvar)·ε with ε = normal(key, [B, L]); key None gives z0 = mean."""
  _check_frames(cfg, frames)
  enc = encoder_module(cfg)
  if cfg.variant == "a":
    z0 = enc.apply({"params": params["encoder"]}, frames[:, 0])
    return Encoding(z0, z0, None)
  mean, logvar = enc.apply({"params": params["encoder"]}, frames)
  if key is None:
    return Encoding(mean, mean, logvar)
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return Encoding(mean + jnp.exp(0.5 * logvar) * eps, mean, logvar)


@functools.partial(jax.jit, static_argnums=0)
def encode_frames(cfg: OdeVideoConfig, params: dict[str, Any], frames: jax.Array) -> jax.Array:
  """Variant A's encoder on every frame: [B, T, H, W, C] -> [B, T, L] (the latent term's
  targets; [:, 0] is encode's z0)."""
  if cfg.variant != "a":
    raise ValueError(f"encode_frames is variant A's per-frame encoder; {cfg.section}.variant="
                     f"{cfg.variant!r} encodes the whole sequence with an RNN (use encode)")
  _check_frames(cfg, frames)
  b, t = frames.shape[:2]
  z = encoder_module(cfg).apply({"params": params["encoder"]},
                                frames.reshape(b * t, *frames.shape[2:]))
  return z.reshape(b, t, -1)


@functools.partial(jax.jit, static_argnums=0)
def decode(cfg: OdeVideoConfig, params: dict[str, Any], z: jax.Array) -> jax.Array:
  """z: [B, T, L] -> frames [B, T, H, W, C] in [-1, 1] (float32)."""
  b, t = z.shape[:2]
  x = decoder_module(cfg).apply({"params": params["decoder"]}, z.reshape(b * t, -1))
  return x.reshape(b, t, *x.shape[1:])


# ------------------------------------------------------------------------------------ the solve

def latent_field(cfg: OdeVideoConfig) -> Callable:
  """field(t, z [B, L], (ode_params, _)) -> dz/dt [B, L], in ode.solve's form."""
  return _field_for(cfg.ode_hidden, cfg.latent_dim)


# Cached so that equal sizes give the same function: diffrax's eager solves compile once per
# function, and variants A and B of the same sizes share one field.
@functools.lru_cache(maxsize=None)
def _field_for(hidden: int, latent_dim: int) -> Callable:
  mlp = networks.OdeMLP(hidden, latent_dim)

  def field(t, z, args):
    del t  # autonomous
    params, _ = args
    return mlp.apply({"params": params}, z).astype(z.dtype)

  return field


def integrate_latent(field_fn: Callable, ode_params: Any, z0: jax.Array, times: jax.Array,
                     settings: OdeSettings) -> tuple[jax.Array, jax.Array]:
  """Solves dz/dt = field_fn(t, z, (ode_params, None)) from z(times[0]) = z0 [B, L] and returns
  (z [B, T, L] at `times` [T] (increasing), num_evals: field evaluations, a scalar in "joint"
  mode, [B] in "vmap" mode)."""
  check_times(times)
  if settings.rtol < 1e-6 and z0.dtype == jnp.float32:
    logging.warning("%s.rtol=%g with float32 latents is at float32's rounding level: expect "
                    "very many steps or max_steps errors; use default_ode_settings('float32') "
                    "or enable jax_enable_x64 and float64 parameters", settings.section,
                    settings.rtol)
  if np.shape(times)[0] == 1:  # nothing to integrate
    return z0[:, None], jnp.zeros((), jnp.int32)
  times = jnp.asarray(times, z0.dtype)
  sol = solve(field_fn, z0, times[0], times[-1], ode_params, settings, save_ts=times)
  return jnp.swapaxes(sol.ys, 0, 1), sol.num_evals


def latent_trajectory(cfg: OdeVideoConfig, params: dict[str, Any], z0: jax.Array,
                      times: jax.Array, settings: OdeSettings) -> tuple[jax.Array, jax.Array]:
  """z0: [B, L] at times[0]; times: [T] increasing (regular or not). Returns (z [B, T, L] with
  z[:, 0] = z0, num_evals of the solve). The solve runs in the ODE parameters' dtype (float64
  parameters under jax_enable_x64 give a float64 solve, whatever the encoder's dtype)."""
  dtype = jnp.result_type(*jax.tree.leaves(params["ode"]))
  return integrate_latent(latent_field(cfg), params["ode"], z0.astype(dtype), times, settings)


# ------------------------------------------------------------------------------------ prediction

def predict(cfg: OdeVideoConfig, params: dict[str, Any], frames_cond: jax.Array,
            times: jax.Array, settings: OdeSettings, key: jax.Array | None = None) -> jax.Array:
  """Reconstruct and extrapolate: frames [B, T, H, W, C] in [-1, 1] at every one of `times`.

  frames_cond: [B, Tc, H, W, C], the given frames at times[:Tc] (A reads frame 0 only);
  times: [T >= Tc] increasing. Output frames 0..Tc-1 reconstruct the given frames, Tc..T-1
  extrapolate past them, in time order. key: B's posterior draw; None decodes from its mean."""
  check_times(times)
  if frames_cond.shape[1] > np.shape(times)[0]:
    raise ValueError(f"frames_cond has {frames_cond.shape[1]} frames but only "
                     f"{np.shape(times)[0]} times were given; times[:Tc] are their times")
  enc = encode(cfg, params, frames_cond.astype(jnp.float32), key)
  z, _ = latent_trajectory(cfg, params, enc.z0, times, settings)
  return decode(cfg, params, z)
