"""The MCVD denoiser: the reference's `unetmore` 2-D UNet over frames stacked on channels.

Two conditioning modes, chosen by `UNetConfig.spatin`:
  concat: the first conv sees [noisy current frames | past frames | future frames] on channels;
  SPATIN: the first conv sees the noisy frames only and every norm is SPADE-modulated by the
          conditioning frames.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mcvd_jax.models.config import UNetConfig
from mcvd_jax.models.kernels import timestep_embedding
from mcvd_jax.models.layers import AttnBlock, OutNorm, ResBlock, conv3x3, dense


class Module(NamedTuple):
  """One entry of the network's module list: our flax name, the reference's class, channels."""

  name: str
  kind: str  # "dense", "conv", "resblock", "attn", "outnorm", "embed"
  in_ch: int
  out_ch: int
  up: bool = False
  down: bool = False


def module_list(cfg: UNetConfig) -> list[Module]:
  """All modules in the order the reference registers them in `all_modules` (so index i of this
  list is the reference's `unet.all_modules.i`), with the names our network gives them."""
  nf = cfg.ngf
  mods = [Module("temb_dense_0", "dense", nf, 4 * nf), Module("temb_dense_1", "dense", 4 * nf, 4 * nf)]
  if cfg.cond_emb:
    mods.append(Module("cond_mask_embed", "embed", 2, nf // 2))
  in_frames = cfg.num_frames if cfg.spatin else cfg.num_frames + cfg.cond_frames
  mods.append(Module("conv_in", "conv", in_frames * cfg.channels, nf))
  skips = [nf]
  in_ch = nf
  for level, mult in enumerate(cfg.ch_mult):
    for i in range(cfg.num_res_blocks):
      mods.append(Module(f"down_{level}_block_{i}", "resblock", in_ch, nf * mult))
      in_ch = nf * mult
      if cfg.resolutions[level] in cfg.attn_resolutions:
        mods.append(Module(f"down_{level}_attn_{i}", "attn", in_ch, in_ch))
      skips.append(in_ch)
    if level != cfg.num_resolutions - 1:
      mods.append(Module(f"down_{level}_downsample", "resblock", in_ch, in_ch, down=True))
      skips.append(in_ch)
  mods += [Module("mid_block_0", "resblock", in_ch, in_ch), Module("mid_attn", "attn", in_ch, in_ch),
           Module("mid_block_1", "resblock", in_ch, in_ch)]
  for level in reversed(range(cfg.num_resolutions)):
    for i in range(cfg.num_res_blocks + 1):
      out_ch = nf * cfg.ch_mult[level]
      mods.append(Module(f"up_{level}_block_{i}", "resblock", in_ch + skips.pop(), out_ch))
      in_ch = out_ch
    if cfg.resolutions[level] in cfg.attn_resolutions:
      mods.append(Module(f"up_{level}_attn", "attn", in_ch, in_ch))
    if level != 0:
      mods.append(Module(f"up_{level}_upsample", "resblock", in_ch, in_ch, up=True))
  mods += [Module("out_norm", "outnorm", in_ch, in_ch),
           Module("conv_out", "conv", in_ch, cfg.num_frames * cfg.channels)]
  return mods


class UNet(nn.Module):
  """Predicts the noise in the current frames.

  Call: `UNet(cfg).apply({'params': p}, x, labels, cond, cond_mask=None, train=False,
  rngs={'dropout': key})` with
    x:      [B, H, W, T*C] noisy current frames, frame-major channels (frame * C + c);
    labels: [B] int time labels in the reference convention (0 = noisiest);
    cond:   [B, H, W, (Nc+Nf)*C] past then future frames, masked ones all zeros (None when the
            config has no conditioning frames);
    cond_mask: [B] int {0, 1}, used only with cond_emb (1 = past frames present; default all 1).
  Returns [B, H, W, T*C] float32.

  With cfg.remat != "none" every ResBlock and AttnBlock is a flax `nn.remat` (jax.checkpoint) of
  itself, with cfg.remat_policy: the parameter tree is the same as without.
  """

  config: UNetConfig

  @nn.compact
  def __call__(self, x, labels, cond=None, cond_mask=None, train: bool = False):
    cfg = self.config
    dtype, ks = cfg.compute_dtype, cfg.kernels
    self._check_inputs(x, labels, cond)
    mods = {m.name: m for m in module_list(cfg)}
    res_block, attn_block = ResBlock, AttnBlock
    if cfg.remat != "none":
      # Argument 4 of ResBlock.__call__ (counting self) is the Python bool `train`.
      res_block = nn.remat(ResBlock, policy=cfg.remat_policy, static_argnums=(4,))
      attn_block = nn.remat(AttnBlock, policy=cfg.remat_policy)

    temb = dense(4 * cfg.ngf, dtype, name="temb_dense_0", kernels=ks)(
        timestep_embedding(labels, cfg.ngf))
    temb = dense(4 * cfg.ngf, dtype, name="temb_dense_1", kernels=ks)(nn.silu(temb))
    if cfg.cond_emb:
      if cond_mask is None:
        cond_mask = jnp.ones(x.shape[0], jnp.int32)
      embed = nn.Embed(2, cfg.ngf // 2, embedding_init=nn.initializers.normal(1.0),
                       name="cond_mask_embed")
      temb = jnp.concatenate([temb, embed(cond_mask.astype(jnp.int32)).astype(temb.dtype)], axis=1)

    if cond is not None:
      cond = cond.astype(dtype)
    h = x.astype(dtype)
    if not cfg.spatin and cond is not None:
      h = jnp.concatenate([h, cond], axis=-1)

    def block(name, h):
      m = mods[name]
      return res_block(m.out_ch, up=m.up, down=m.down, dropout=cfg.dropout, spatin=cfg.spatin,
                       spade_dim=cfg.spade_dim, dtype=dtype, kernels=ks, name=name)(
                           h, temb, cond, train)

    def attn(name, h):
      return attn_block(cfg.n_head_channels, dtype, ks, name=name)(h)

    hs = [conv3x3(cfg.ngf, dtype, name="conv_in", kernels=ks)(h)]
    for level in range(cfg.num_resolutions):
      for i in range(cfg.num_res_blocks):
        h = block(f"down_{level}_block_{i}", hs[-1])
        if f"down_{level}_attn_{i}" in mods:
          h = attn(f"down_{level}_attn_{i}", h)
        hs.append(h)
      if level != cfg.num_resolutions - 1:
        hs.append(block(f"down_{level}_downsample", hs[-1]))

    h = block("mid_block_0", hs[-1])
    h = attn("mid_attn", h)
    h = block("mid_block_1", h)

    for level in reversed(range(cfg.num_resolutions)):
      for i in range(cfg.num_res_blocks + 1):
        h = block(f"up_{level}_block_{i}", jnp.concatenate([h, hs.pop()], axis=-1))
      if f"up_{level}_attn" in mods:
        h = attn(f"up_{level}_attn", h)
      if level != 0:
        h = block(f"up_{level}_upsample", h)

    h = OutNorm(cfg.spatin, cfg.spade_dim, dtype, ks, name="out_norm")(h, cond)
    h = conv3x3(cfg.num_frames * cfg.channels, dtype, init_scale=0.0, name="conv_out",
                kernels=ks)(h)
    return h.astype(jnp.float32)

  def _check_inputs(self, x, labels, cond):
    cfg = self.config
    want = (cfg.image_size, cfg.image_size, cfg.num_frames * cfg.channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
      raise ValueError(f"UNet: x must be [B, {want[0]}, {want[1]}, {want[2]}] (frames stacked on "
                       f"channels), got {tuple(x.shape)}")
    if labels.shape != (x.shape[0],):
      raise ValueError(f"UNet: labels must be [B]=[{x.shape[0]}], got {tuple(labels.shape)}")
    if cfg.cond_frames:
      want_c = (x.shape[0], cfg.image_size, cfg.image_size, cfg.cond_frames * cfg.channels)
      if cond is None:
        raise ValueError(f"UNet: this model is conditioned on {cfg.cond_frames} frames; pass cond "
                         f"of shape {want_c} (zeros for masked frames)")
      if tuple(cond.shape) != want_c:
        raise ValueError(f"UNet: cond must be {want_c}, got {tuple(cond.shape)}")


def init_params(cfg: UNetConfig, key: jax.Array, batch_size: int = 1):
  """Randomly initialised parameters (the reference's initialisers) for a UNet with this config.

  The draws use a key of the RngBitGenerator family derived from `key` (deterministic in it):
  XLA compiles hundreds of threefry draws about three times slower on CPU, and parameters are
  drawn once, replicated, so threefry's sharding invariance is not needed here.
  """
  x = jnp.zeros((batch_size, cfg.image_size, cfg.image_size, cfg.num_frames * cfg.channels))
  cond = (jnp.zeros((batch_size, cfg.image_size, cfg.image_size, cfg.cond_frames * cfg.channels))
          if cfg.cond_frames else None)
  labels = jnp.zeros((batch_size,), jnp.int32)

  def init(key):
    rbg_key = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="unsafe_rbg")
    return UNet(cfg).init(rbg_key, x, labels, cond)["params"]

  return jax.jit(init)(key)


def dropout_rng(key: jax.Array) -> jax.Array:
  """The key of the network's 'dropout' rng stream: one of the RngBitGenerator family derived
  from `key` (deterministic in it). Each Dropout layer draws only two words from it (the seed of
  its hashed mask), and folding the layer's path into an RBG key is cheaper than into threefry."""
  return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="unsafe_rbg")


def make_denoise_fn(cfg: UNetConfig):
  """`denoise(params, x, labels, cond, dropout_key=None, cond_mask=None) -> eps` around UNet.apply:
  evaluation mode when dropout_key is None, training mode (dropout on) otherwise."""
  net = UNet(cfg)

  def denoise(params, x, labels, cond, dropout_key=None, cond_mask=None):
    if dropout_key is None:
      return net.apply({"params": params}, x, labels, cond, cond_mask, train=False)
    return net.apply({"params": params}, x, labels, cond, cond_mask, train=True,
                     rngs={"dropout": dropout_rng(dropout_key)})

  return denoise
