"""Frames <-> network layout, and the random masking of conditioning blocks used in training.

Videos are [B, N, H, W, C] in [-1, 1]; the network sees frames stacked on channels, frame-major:
[B, H, W, N*C] with channel index frame * C + c (the reference's order, so checkpoints convert).
A masked conditioning block is all zeros, and a whole block is masked at once: one Bernoulli draw
per sample for the past block and one for the future block.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def stack_frames(frames: jax.Array) -> jax.Array:
  """[B, N, H, W, C] -> [B, H, W, N*C], frame-major."""
  b, n, h, w, c = frames.shape
  return jnp.transpose(frames, (0, 2, 3, 1, 4)).reshape(b, h, w, n * c)


def unstack_frames(x: jax.Array, channels: int) -> jax.Array:
  """[B, H, W, N*C] -> [B, N, H, W, C]; the inverse of stack_frames."""
  b, h, w, nc = x.shape
  if nc % channels:
    raise ValueError(f"{nc} stacked channels are not a multiple of {channels} channels per frame")
  return jnp.transpose(x.reshape(b, h, w, nc // channels, channels), (0, 3, 1, 2, 4))


class TrainingBatch(NamedTuple):
  """What one training step feeds the loss.

  x0:   [B, H, W, T*C] the current frames to denoise;
  cond: [B, H, W, (Nc+Nf)*C] past then future frames, masked blocks zeroed (None without any);
  past_present, future_present: [B] bool, False where that block was masked.
  """

  x0: jax.Array
  cond: jax.Array | None
  past_present: jax.Array
  future_present: jax.Array

  @property
  def cond_mask(self) -> jax.Array:
    """[B] int32, 1 where the past block is present: the reference's `cond_mask`."""
    return self.past_present.astype(jnp.int32)


def block_keep_mask(key: jax.Array, batch: int, prob_mask: float) -> jax.Array:
  """[B] bool: True keeps the block; each sample's block is dropped with probability prob_mask."""
  return jax.random.uniform(key, (batch,)) >= prob_mask


def make_training_batch(key: jax.Array, video: jax.Array, *, num_frames_cond: int, num_frames: int,
                        num_frames_future: int = 0, prob_mask_cond: float = 0.0,
                        prob_mask_future: float = 0.0, prob_mask_sync: bool = False) -> TrainingBatch:
  """Splits a clip [B, Nc+T+Nf, H, W, C] into past | current | future and masks whole blocks.

  prob_mask_sync uses the past block's draw for the future block too (both present or both gone),
  as the reference's option of that name.
  """
  b, n = video.shape[:2]
  if n < num_frames_cond + num_frames + num_frames_future:
    raise ValueError(f"the clip has {n} frames but the model needs {num_frames_cond} past + "
                     f"{num_frames} current + {num_frames_future} future")
  for name, p in (("prob_mask_cond", prob_mask_cond), ("prob_mask_future", prob_mask_future)):
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"{name} must be in [0, 1], got {p}")
  past_key, future_key = jax.random.split(key)
  past = video[:, :num_frames_cond]
  current = video[:, num_frames_cond:num_frames_cond + num_frames]
  future = video[:, num_frames_cond + num_frames:num_frames_cond + num_frames + num_frames_future]
  past_present = block_keep_mask(past_key, b, prob_mask_cond)
  future_present = past_present if prob_mask_sync else block_keep_mask(future_key, b, prob_mask_future)
  blocks = []
  if num_frames_cond:
    blocks.append(past * past_present[:, None, None, None, None].astype(past.dtype))
  if num_frames_future:
    blocks.append(future * future_present[:, None, None, None, None].astype(future.dtype))
  cond = stack_frames(jnp.concatenate(blocks, axis=1)) if blocks else None
  return TrainingBatch(stack_frames(current), cond, past_present, future_present)
