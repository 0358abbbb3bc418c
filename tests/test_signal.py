"""The learning signal (video_diffusion/signal.py): an oracle that reads the past frames scores 0
with the true past and more with a shuffled past; a tiny network's numbers equal a direct
computation; the loss per noise-level bucket."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcvd_jax.core.media import frames_to_unit_range
from mcvd_jax.diffusion.factory import Diffusion
from mcvd_jax.diffusion.noise import isotropic
from mcvd_jax.diffusion.schedules import linear_schedule
from mcvd_jax.models import UNetConfig, init_params, make_denoise_fn
from mcvd_jax.video.masking import stack_frames, unstack_frames
from mcvd_jax.video_diffusion import signal
from mcvd_jax.video_diffusion.tasks import Masking

DIFFUSION = Diffusion("ddpm", isotropic(), schedule=linear_schedule())
MASKING = Masking(num_frames_cond=2, num_frames=2, num_frames_future=0)


def static_clips(n=4, size=8, seed=0):
  """uint8 [n, 4, size, size, 1]: every clip one random image held for its 4 frames, so the last
  past frame is exactly the current frames."""
  images = np.random.default_rng(seed).integers(0, 256, (n, 1, size, size, 1), dtype=np.uint8)
  return np.repeat(images, 4, axis=1)


def oracle(params, x, labels, cond, key, cond_mask=None):
  """The exact noise if the current frames are the last past frame (read from `cond`)."""
  del params, key, cond_mask
  last = unstack_frames(cond, 1)[:, -1:]
  x0 = stack_frames(jnp.repeat(last, 2, axis=1))
  a = DIFFUSION.schedule.alphas[labels][:, None, None, None]
  return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)


def test_signal_labels_are_the_closest_levels_noisiest_first():
  chosen = signal.signal_labels(DIFFUSION)
  root = np.sqrt(np.asarray(DIFFUSION.schedule.alphas))
  assert [level for _, level in chosen] == sorted(level for _, level in chosen)
  for (label, level), want in zip(chosen, signal.SIGNAL_LEVELS):
    assert level == pytest.approx(root[label])
    assert abs(root[label] - want) == pytest.approx(np.min(np.abs(root - want)))


def test_an_oracle_that_uses_the_past_scores_zero_and_gains_from_it():
  values = signal.make_learning_signal(oracle, DIFFUSION, MASKING, static_clips())({"ema": {}})
  values = {k: float(v) for k, v in values.items()}
  for _, level in signal.signal_labels(DIFFUSION):
    assert values[f"x0_mae/ema_true_past@{level:.2f}"] < 1e-4
    assert values[f"x0_mae/ema_shuffled_past@{level:.2f}"] > 0.1  # another clip's image
  assert values["past_gain/ema"] > 0.1
  assert values["x0_mae/copy_last"] == 0.0  # static clips: copying the last frame is exact
  assert values["x0_mae/blank"] > 0.1


def test_a_tiny_network_gives_what_a_direct_computation_gives():
  cfg = UNetConfig(image_size=8, channels=1, num_frames=2, num_frames_cond=2, ngf=8,
                   ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), n_head_channels=8)
  params = init_params(cfg, jax.random.key(1))
  # Non-zero output layer (the UNet's last convolution starts at zero).
  params = jax.tree.map(lambda p: p + 0.01 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), params)
  denoise = make_denoise_fn(cfg)
  clips = static_clips(seed=3)
  clips[:, 2:] = 255 - clips[:, 2:]  # the current frames differ from the past
  values = signal.make_learning_signal(denoise, DIFFUSION, MASKING, clips, seed=7)({"raw": params})
  video = frames_to_unit_range(clips)
  x0, cond = stack_frames(video[:, 2:]), stack_frames(video[:, :2])
  chosen = signal.signal_labels(DIFFUSION)
  noise = jax.random.normal(jax.random.key(7), (len(chosen),) + x0.shape)
  for index, (label, level) in enumerate(chosen):
    a = DIFFUSION.schedule.alphas[label]
    x_t = jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise[index]
    eps = denoise(params, x_t, jnp.full((4,), label), cond, None, cond_mask=jnp.ones(4, jnp.int32))
    x0_hat = jnp.clip((x_t - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a), -1, 1)
    want = float(jnp.mean(jnp.abs(x0_hat - x0)) / 2)
    assert float(values[f"x0_mae/raw_true_past@{level:.2f}"]) == pytest.approx(want, rel=1e-5)
  copy_last = float(jnp.mean(jnp.abs(stack_frames(jnp.repeat(video[:, 1:2], 2, axis=1)) - x0)) / 2)
  assert float(values["x0_mae/copy_last"]) == pytest.approx(copy_last, rel=1e-6)


def test_loss_by_level_sums_each_bucket():
  labels = jnp.array([0, 249, 250, 999, 500, 10])
  losses = jnp.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
  out = signal.loss_by_level(labels, losses, 1000)
  assert {k: float(v) for k, v in out.items()} == {
      "loss_sum/labels_000-249": 35.0, "count/labels_000-249": 3.0,
      "loss_sum/labels_250-499": 4.0, "count/labels_250-499": 1.0,
      "loss_sum/labels_500-749": 16.0, "count/labels_500-749": 1.0,
      "loss_sum/labels_750-999": 8.0, "count/labels_750-999": 1.0}


def test_too_few_clips_is_an_error():
  with pytest.raises(ValueError, match="at least 2 clips"):
    signal.make_learning_signal(oracle, DIFFUSION, MASKING, static_clips(n=1))
