"""The typed, frozen description of the MCVD denoiser that modules receive instead of a ConfigDict."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from mcvd_jax.models.kernel_choice import parse_kernels

DTYPES = ("float32", "bfloat16")
# model.remat values beyond "none" and "blocks": jax.checkpoint_policies that take no arguments.
REMAT_POLICIES = ("dots_saveable", "dots_with_no_batch_dims_saveable", "nothing_saveable",
                  "everything_saveable", "checkpoint_dots", "checkpoint_dots_with_no_batch_dims")
REMAT_CHOICES = ("none", "blocks") + REMAT_POLICIES


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Hyperparameters of the `unetmore` denoiser (the reference's `NCSNpp` / `SPADE_NCSNpp`).

  Frame counts: the network denoises `num_frames` current frames and is conditioned on
  `num_frames_cond` past frames followed by `num_frames_future` future frames, all with
  `channels` channels at `image_size` x `image_size` pixels.
  """

  image_size: int = 64
  channels: int = 1
  num_frames: int = 5
  num_frames_cond: int = 5
  num_frames_future: int = 0
  ngf: int = 64
  ch_mult: tuple[int, ...] = (1, 2, 3, 4)
  num_res_blocks: int = 2
  attn_resolutions: tuple[int, ...] = (8, 16, 32)
  n_head_channels: int = 64
  dropout: float = 0.1
  spatin: bool = False  # False: concat conditioning; True: SPATIN (SPADE-modulated norms).
  spade_dim: int = 128
  cond_emb: bool = False  # The reference's optional embedding of the past-mask flag.
  # Compute dtype of convolutions and matmuls: "float32" or "bfloat16" (mixed precision).
  # Parameters, optimizer state and EMA stay float32; GroupNorm statistics, the attention
  # logits and softmax, the network output and the loss are float32 either way.
  dtype: str = "float32"
  # Rematerialisation (gradient checkpointing) of every ResBlock and AttnBlock: "none"; "blocks"
  # (save nothing inside a block, recompute it in the backward pass); or a jax.checkpoint_policies
  # name from REMAT_POLICIES (e.g. "dots_saveable": keep matmul/conv outputs, recompute the rest).
  # Parameter names are the same whatever the choice.
  remat: str = "none"
  # Kernel versions (kernel_choice.py): "auto" (the hand-written kernels.py ones on CPU, the
  # plain/library ones on GPU/TPU), "custom", "library", optionally followed by per-kernel
  # overrides NAME=CHOICE with NAME in bias, dropout, group_norm, fir, attention, e.g.
  # "auto,attention=library" or "custom,fir=library". Same parameters and maths either way
  # (dropout masks differ: hashed vs jax.random.bernoulli).
  kernels: str = "auto"

  def __post_init__(self):
    object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
    object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
    self.validate()

  @property
  def num_resolutions(self) -> int:
    return len(self.ch_mult)

  @property
  def resolutions(self) -> tuple[int, ...]:
    """Feature-map size at each level of the UNet, from the input size down."""
    return tuple(self.image_size // 2**i for i in range(self.num_resolutions))

  @property
  def cond_frames(self) -> int:
    """Number of conditioning frames: past then future."""
    return self.num_frames_cond + self.num_frames_future

  @property
  def compute_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @property
  def remat_policy(self) -> Any:
    """The jax.checkpoint policy of model.remat (None: save nothing); only used when remat !=
    "none"."""
    return None if self.remat in ("none", "blocks") else getattr(jax.checkpoint_policies,
                                                                 self.remat)

  def validate(self) -> None:
    """Raises ValueError naming the field when the network cannot be built from these values."""
    positive = ("image_size", "channels", "num_frames", "ngf", "num_res_blocks", "n_head_channels",
                "spade_dim")
    for name in positive:
      if int(getattr(self, name)) < 1:
        raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
    for name in ("num_frames_cond", "num_frames_future"):
      if int(getattr(self, name)) < 0:
        raise ValueError(f"model.{name} must be >= 0, got {getattr(self, name)}")
    if not self.ch_mult or min(self.ch_mult) < 1:
      raise ValueError(f"model.ch_mult must be a non-empty list of positive ints, got {self.ch_mult}")
    factor = 2 ** (self.num_resolutions - 1)
    if self.image_size % factor:
      raise ValueError(
          f"model.image_size={self.image_size} is not divisible by {factor}, the total "
          f"downsampling of ch_mult={list(self.ch_mult)}; change image_size or ch_mult")
    unused = sorted(set(self.attn_resolutions) - set(self.resolutions))
    if unused:
      raise ValueError(
          f"model.attn_resolutions={list(self.attn_resolutions)} contains {unused}, which never "
          f"occurs; the feature-map sizes are {list(self.resolutions)}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
    if self.spatin and self.cond_frames == 0:
      raise ValueError("model.spatin=True needs conditioning frames (num_frames_cond + "
                       "num_frames_future > 0)")
    if self.dtype not in DTYPES:
      raise ValueError(f"model.dtype={self.dtype!r} is not supported; choose one of {DTYPES} "
                       "(bfloat16 is mixed precision: parameters and statistics stay float32)")
    if self.remat not in REMAT_CHOICES:
      raise ValueError(f"model.remat={self.remat!r} is not one of {REMAT_CHOICES}")
    parse_kernels(self.kernels)
    for level, mult in enumerate(self.ch_mult):
      ch = self.ngf * mult
      if ch >= self.n_head_channels and ch % self.n_head_channels and (
          self.resolutions[level] in self.attn_resolutions or level == self.num_resolutions - 1):
        raise ValueError(
            f"model.n_head_channels={self.n_head_channels} does not divide the {ch} channels "
            f"of the attention at level {level}")

  @classmethod
  def from_mapping(cls, fields: Mapping[str, Any]) -> "UNetConfig":
    """Builds the config from a dict-like (e.g. a ConfigDict section), ignoring unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: (tuple(v) if isinstance(v, (list, tuple)) else v)
                  for k, v in dict(fields).items() if k in names})


def num_groups(channels: int) -> int:
  """The reference's GroupNorm group count: min(channels // 4, 32), lowered until it divides."""
  groups = max(min(channels // 4, 32), 1)
  while channels % groups:
    groups -= 1
  return groups


def num_heads(channels: int, n_head_channels: int) -> int:
  """Attention heads: channels / n_head_channels, or a single head for narrow layers."""
  return 1 if channels < n_head_channels else channels // n_head_channels


def reference_model_config(model_fields: Mapping[str, Any], dtype: str = "float32") -> UNetConfig:
  """Maps the reference's `data` / `model` config sections to a UNetConfig.

  `model_fields` holds the two sections as nested mappings ({"data": {...}, "model": {...}}), as in
  the reference YAML files and the fixture JSON files.
  """
  data, model = model_fields["data"], model_fields["model"]
  arch = model.get("arch", "unetmore")
  if arch != "unetmore":
    raise ValueError(f"model.arch={arch!r} is not supported: only the 2-D 'unetmore' network is")
  for flag in ("noise_in_cond", "output_all_frames", "gamma"):
    if model.get(flag, False):
      raise ValueError(f"model.{flag}=True is not supported by mcvd_jax")
  if not model.get("time_conditional", True):
    raise ValueError("model.time_conditional=False is not supported by mcvd_jax")
  return UNetConfig(
      image_size=int(data["image_size"]),
      channels=int(data["channels"]),
      num_frames=int(data["num_frames"]),
      num_frames_cond=int(data["num_frames_cond"]),
      num_frames_future=int(data.get("num_frames_future", 0)),
      ngf=int(model["ngf"]),
      ch_mult=tuple(int(m) for m in model["ch_mult"]),
      num_res_blocks=int(model["num_res_blocks"]),
      attn_resolutions=tuple(int(r) for r in model["attn_resolutions"]),
      # The reference's -1 means "one head everywhere", which a very wide head width gives.
      n_head_channels=int(model.get("n_head_channels", -1)) if model.get("n_head_channels", -1) != -1
      else 2**30,
      dropout=float(model.get("dropout", 0.0)),
      spatin=bool(model.get("spade", False)),
      spade_dim=int(model.get("spade_dim", 128)),
      cond_emb=bool(model.get("cond_emb", False)),
      dtype=dtype,
  )

