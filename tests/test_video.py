"""Frame layout, conditioning masks and the block-autoregressive rollouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import cached_init
from mcvd_jax.diffusion.samplers import make_sampler
from mcvd_jax.diffusion.schedules import linear_schedule
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.video.masking import make_training_batch, stack_frames, unstack_frames
from mcvd_jax.video.rollout import make_rollout


def test_stack_frames_is_frame_major():
  frames = jnp.arange(2 * 3 * 4 * 4 * 2, dtype=jnp.float32).reshape(2, 3, 4, 4, 2)
  x = stack_frames(frames)
  assert x.shape == (2, 4, 4, 6)
  for n in range(3):
    for c in range(2):
      np.testing.assert_array_equal(x[..., n * 2 + c], frames[:, n, ..., c])
  np.testing.assert_array_equal(unstack_frames(x, 2), frames)


def clip(batch=4000, frames=7, size=2):
  return jnp.ones((batch, frames, size, size, 1)) * jnp.arange(1, frames + 1)[None, :, None, None, None]


def test_training_batch_masks_whole_blocks_at_the_right_rate():
  video = clip()
  b = make_training_batch(jax.random.key(0), video, num_frames_cond=2, num_frames=3,
                          num_frames_future=2, prob_mask_cond=0.3, prob_mask_future=0.6)
  np.testing.assert_array_equal(unstack_frames(b.x0, 1), video[:, 2:5])
  cond = unstack_frames(b.cond, 1)
  past_kept = np.asarray(b.past_present)
  future_kept = np.asarray(b.future_present)
  # A masked block is all zeros; a kept one is the frames themselves.
  np.testing.assert_array_equal(cond[:, :2], video[:, :2] * past_kept[:, None, None, None, None])
  np.testing.assert_array_equal(cond[:, 2:], video[:, 5:] * future_kept[:, None, None, None, None])
  assert abs((1 - past_kept.mean()) - 0.3) < 0.03
  assert abs((1 - future_kept.mean()) - 0.6) < 0.03
  # Independent draws: both masked about 0.3 * 0.6 of the time.
  assert abs(np.mean(~past_kept & ~future_kept) - 0.18) < 0.03
  np.testing.assert_array_equal(b.cond_mask, past_kept.astype(np.int32))


def test_training_batch_sync_and_edge_probabilities():
  video = clip(batch=500)
  sync = make_training_batch(jax.random.key(1), video, num_frames_cond=2, num_frames=3,
                             num_frames_future=2, prob_mask_cond=0.5, prob_mask_future=0.5,
                             prob_mask_sync=True)
  np.testing.assert_array_equal(sync.past_present, sync.future_present)
  never = make_training_batch(jax.random.key(2), video, num_frames_cond=2, num_frames=3,
                              num_frames_future=2, prob_mask_cond=0.0, prob_mask_future=1.0)
  assert bool(jnp.all(never.past_present)) and not bool(jnp.any(never.future_present))
  with pytest.raises(ValueError, match="prob_mask_cond"):
    make_training_batch(jax.random.key(0), video, num_frames_cond=2, num_frames=3,
                        prob_mask_cond=1.5)
  with pytest.raises(ValueError, match="7 frames"):
    make_training_batch(jax.random.key(0), video, num_frames_cond=4, num_frames=4)


CFG = UNetConfig(image_size=8, channels=1, num_frames=2, num_frames_cond=3, num_frames_future=1,
                 ngf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), n_head_channels=8)


def fake_sampler(cfg):
  """A 'sampler' whose block is one more than the mean of its past frames (or -5 when masked),
  so each block reveals what it was conditioned on."""
  def sample(params, x_init, cond, key, cond_mask=None):
    frames = unstack_frames(cond, cfg.channels)
    past = frames[:, :cfg.num_frames_cond]
    value = jnp.where(cond_mask[:, None, None, None] == 1, jnp.mean(past, axis=(1, 2, 3, 4))[:, None, None, None] + 1, -5.0)
    return jnp.zeros_like(x_init) + value
  return sample


def test_prediction_rollout_is_block_autoregressive():
  rollout = jax.jit(make_rollout(fake_sampler(CFG), CFG), static_argnames=("num_frames", "batch_size"))
  past = jnp.ones((2, 4, 8, 8, 1)) * jnp.arange(4)[None, :, None, None, None]  # frames 0,1,2,3
  video = rollout(None, jax.random.key(0), past, num_frames=5)
  assert video.shape == (2, 9, 8, 8, 1)
  np.testing.assert_array_equal(video[:, :4], past)  # the given frames are never altered
  means = np.asarray(video[0, 4:, 0, 0, 0])
  # Block 1 sees frames [1,2,3] -> 3, 3; block 2 the last three [3, 3, 3] -> 4, 4; block 3 sees
  # [3, 4, 4] -> 14/3 (its second frame is cut by the requested length).
  np.testing.assert_allclose(means, [3, 3, 4, 4, 14 / 3], atol=1e-5)


def test_generation_masks_until_enough_frames_exist():
  rollout = make_rollout(fake_sampler(CFG), CFG)
  video = rollout(None, jax.random.key(0), num_frames=6, batch_size=3)
  assert video.shape == (3, 6, 8, 8, 1)
  # Blocks 1-2 (frames 0-3) have fewer than Nc=3 frames before them: unconditional (-5).
  # Block 3 sees frames [-5, -5, -5] -> -4.
  np.testing.assert_allclose(np.asarray(video[0, :, 0, 0, 0]), [-5, -5, -5, -5, -4, -4])


def test_interpolation_and_past_reconstruction():
  rollout = make_rollout(fake_sampler(CFG), CFG)
  past = jnp.ones((1, 3, 8, 8, 1))
  future = jnp.full((1, 4, 8, 8, 1), 7.0)
  video = rollout(None, jax.random.key(0), past, future, num_frames=2)
  assert video.shape == (1, 3 + 2 + 4, 8, 8, 1)
  np.testing.assert_array_equal(video[:, :3], past)
  np.testing.assert_array_equal(video[:, 5:], future)
  with pytest.raises(ValueError, match="num_frames must be 2"):
    rollout(None, jax.random.key(0), past, future, num_frames=4)
  back = rollout(None, jax.random.key(0), None, future, num_frames=3)
  assert back.shape == (1, 3 + 4, 8, 8, 1)
  np.testing.assert_array_equal(back[:, 3:], future)
  np.testing.assert_allclose(np.asarray(back[0, :3, 0, 0, 0]), [-5, -5, -5])


def test_rollout_errors():
  rollout = make_rollout(fake_sampler(CFG), CFG)
  with pytest.raises(ValueError, match="batch_size"):
    rollout(None, jax.random.key(0), num_frames=2)
  with pytest.raises(ValueError, match="conditions on 3"):
    rollout(None, jax.random.key(0), jnp.zeros((1, 2, 8, 8, 1)), num_frames=2)
  no_future = UNetConfig(**{**CFG.__dict__, "num_frames_future": 0})
  with pytest.raises(ValueError, match="no future"):
    make_rollout(fake_sampler(no_future), no_future)(None, jax.random.key(0), None,
                                                     jnp.zeros((1, 1, 8, 8, 1)), num_frames=2)


def test_rollout_with_real_network_and_sampler():
  params = cached_init(CFG)
  sampler = make_sampler(make_denoise_fn(CFG), kind="ddpm", schedule=linear_schedule(), subsample=4)
  rollout = jax.jit(make_rollout(sampler.sample, CFG), static_argnames=("num_frames", "batch_size"))
  past = jax.random.uniform(jax.random.key(1), (2, 3, 8, 8, 1), minval=-1, maxval=1)
  video = rollout(params, jax.random.key(2), past, num_frames=3)
  assert video.shape == (2, 6, 8, 8, 1) and bool(jnp.all(jnp.isfinite(video)))
  np.testing.assert_array_equal(video[:, :3], past)
  again = rollout(params, jax.random.key(2), past, num_frames=3)
  np.testing.assert_array_equal(video, again)
  other = rollout(params, jax.random.key(3), past, num_frames=3)
  assert not np.allclose(video[:, 3:], other[:, 3:])
