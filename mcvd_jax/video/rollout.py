"""One rollout for every MCVD task, chosen by which conditioning frames are given.

  past only      -> future prediction, any horizon: blocks of T frames, each conditioned on the
                    last Nc frames of what came before (block-autoregressive);
  nothing        -> unconditional generation: blocks are generated with the past masked until Nc
                    frames exist, then continue as prediction;
  past + future  -> interpolation of the T frames between them;
  future only    -> past reconstruction, any horizon: blocks of T frames backwards in time, each
                    conditioned on the first Nf frames of what comes after.
The blocks are a `jax.lax.scan`; the result is truncated to the requested number of frames.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from mcvd_jax.diffusion.noise import NoiseModel, isotropic
from mcvd_jax.models.config import UNetConfig
from mcvd_jax.video.masking import stack_frames, unstack_frames


def make_rollout(sample_block: Callable, cfg: UNetConfig, noise_model: NoiseModel | None = None,
                 init_scale: float = 1.0) -> Callable:
  """Builds `rollout(params, key, past=None, future=None, *, num_frames, batch_size=None)`.

  sample_block(params, x_init, cond, key, cond_mask=...) -> [B, H, W, T*C] is a sampler's
  `sample` (see diffusion.samplers.make_sampler). past: [B, >=Nc, H, W, C] (the last Nc frames are
  used), future: [B, >=Nf, H, W, C] (the first Nf are used), values in [-1, 1]. num_frames and
  batch_size (needed when neither is given) are static under jit.

  Returns the whole video [B, P + num_frames + F, H, W, C]: the given past (P frames), the
  generated frames, then the given future (F frames); given frames are returned unchanged.
  """
  noise_model = noise_model or isotropic()
  t, nc, nf, c, size = (cfg.num_frames, cfg.num_frames_cond, cfg.num_frames_future, cfg.channels,
                        cfg.image_size)

  def frames_shape(b, n):
    return (b, n, size, size, c)

  def check(name, frames, need):
    if frames.ndim != 5 or tuple(frames.shape[2:]) != (size, size, c):
      raise ValueError(f"{name} must be [B, N, {size}, {size}, {c}], got {tuple(frames.shape)}")
    if frames.shape[1] < need:
      raise ValueError(f"{name} has {frames.shape[1]} frames; this model conditions on {need}")

  def run_blocks(params, key, b, num_blocks, make_cond, context, available0, advance):
    """Scans over blocks; `context` holds the conditioning frames carried between blocks."""
    init_key, sample_key = jax.random.split(key)

    def body(context, i):
      available = available0 + i * t
      cond, present = make_cond(context, available)
      x_init = init_scale * noise_model.sample(jax.random.fold_in(init_key, i), (b, size, size, t * c))
      cond_mask = jnp.full((b,), present, jnp.int32)
      x = sample_block(params, x_init, cond, jax.random.fold_in(sample_key, i), cond_mask=cond_mask)
      block = unstack_frames(x, c)
      return advance(context, block), block

    _, blocks = jax.lax.scan(body, context, jnp.arange(num_blocks))
    return blocks  # [num_blocks, B, T, H, W, C]

  def zeros(b, n, dtype):
    return jnp.zeros(frames_shape(b, n), dtype)

  def rollout(params, key, past=None, future=None, *, num_frames: int, batch_size: int | None = None):
    if num_frames < 1:
      raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if past is not None and nc == 0:
      raise ValueError("this model has no past conditioning frames (num_frames_cond=0): pass past=None")
    if future is not None and nf == 0:
      raise ValueError("this model has no future conditioning frames (num_frames_future=0): it "
                       "cannot interpolate or reconstruct the past; pass future=None")
    given = past if past is not None else future
    b = given.shape[0] if given is not None else batch_size
    if b is None:
      raise ValueError("unconditional generation needs batch_size")
    dtype = given.dtype if given is not None else jnp.float32
    if past is not None:
      check("past", past, nc)
    if future is not None:
      check("future", future, nf)

    if future is None:  # prediction or generation, forwards in time
      num_blocks = math.ceil(num_frames / t)
      context = past[:, past.shape[1] - nc:] if past is not None else zeros(b, nc, dtype)
      available0 = nc if past is not None else 0
      future_block = zeros(b, nf, dtype)

      def make_cond(context, available):
        present = available >= nc
        parts = [jnp.where(present, context, 0)] if nc else []
        parts += [future_block] if nf else []
        return (stack_frames(jnp.concatenate(parts, axis=1)) if parts else None), present

      def advance(context, block):
        # Keep the newest Nc frames of context + block.
        return jnp.concatenate([context, block], axis=1)[:, t:] if nc else context

      blocks = run_blocks(params, key, b, num_blocks, make_cond, context, available0, advance)
      generated = jnp.moveaxis(blocks, 0, 1).reshape(frames_shape(b, num_blocks * t))[:, :num_frames]
      return jnp.concatenate([past, generated], axis=1) if past is not None else generated

    if past is not None:  # interpolation: exactly the T frames between past and future
      if num_frames != t:
        raise ValueError(f"interpolation fills the {t} frames between past and future that the "
                         f"model was trained on: num_frames must be {t}, got {num_frames}")
      cond = stack_frames(jnp.concatenate([past[:, past.shape[1] - nc:], future[:, :nf]], axis=1))
      blocks = run_blocks(params, key, b, 1, lambda ctx, a: (cond, True), jnp.zeros(()), 0,
                          lambda ctx, blk: ctx)
      return jnp.concatenate([past, blocks[0], future], axis=1)

    # Past reconstruction: blocks backwards in time, each before the frames generated last.
    num_blocks = math.ceil(num_frames / t)
    past_block = zeros(b, nc, dtype)

    def make_cond_back(context, available):
      del available
      parts = ([past_block] if nc else []) + [context]
      return stack_frames(jnp.concatenate(parts, axis=1)), False

    def advance_back(context, block):
      return jnp.concatenate([block, context], axis=1)[:, :nf]

    blocks = run_blocks(params, key, b, num_blocks, make_cond_back, future[:, :nf], 0, advance_back)
    # blocks[i] precedes blocks[i-1]: reverse to time order, keep the frames nearest the future.
    generated = jnp.moveaxis(blocks[::-1], 0, 1).reshape(frames_shape(b, num_blocks * t))
    return jnp.concatenate([generated[:, num_blocks * t - num_frames:], future], axis=1)

  return rollout
