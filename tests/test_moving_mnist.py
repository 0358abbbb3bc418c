"""mcvd_jax.data.moving_mnist: the deterministic Moving MNIST of the neural-ODE video models, checked
against the process's invariants (digits stay inside, bounces reverse the velocity, digits
combine by max) and the reference's geometry and fixed training set."""

import numpy as np
import pytest

from mcvd_jax.data import moving_mnist, sources


def glyphs(n=3, size=6):
  """Distinct square glyphs whose border pixels are lit, so any clipping shows in the mass."""
  rng = np.random.default_rng(0)
  return rng.integers(40, 256, (n, size, size)).astype(np.uint8)


def test_moving_mnist_is_deterministic_and_digits_stay_inside():
  g = glyphs()
  videos, traj = moving_mnist.generate(g, 6, 30, 1, 20, 3, return_trajectories=True)
  assert videos.shape == (6, 30, 20, 20, 1) and videos.dtype == np.uint8
  np.testing.assert_array_equal(moving_mnist.generate(g, 6, 30, 1, 20, 3), videos)
  assert not np.array_equal(moving_mnist.generate(g, 6, 30, 1, 20, 4), videos)
  assert traj.pixels.min() >= 0 and traj.pixels.max() <= 20 - 6
  np.testing.assert_array_equal(traj.pixels, np.floor(14 * traj.positions))
  # One digit always lies wholly inside the canvas: every frame holds its whole mass.
  mass = videos.reshape(6, 30, -1).sum(axis=-1, dtype=np.int64)
  want = g.reshape(3, -1).sum(-1)[traj.digit_index[:, 0]][:, None]
  np.testing.assert_array_equal(mass, np.broadcast_to(want, mass.shape))


def test_moving_mnist_bounces_reverse_the_velocity():
  _, traj = moving_mnist.generate(glyphs(), 20, 40, 2, 24, 0, return_trajectories=True)
  pos, vel = traj.positions, traj.velocities
  np.testing.assert_allclose(np.linalg.norm(vel, axis=-1), 0.1)  # constant speed 0.1 of free
  moved = np.clip(pos[:, :, :-1] + vel[:, :, :-1], 0.0, 1.0)  # step, then clamp to the walls
  np.testing.assert_allclose(pos[:, :, 1:], moved, atol=1e-12)
  on_wall = (pos[:, :, 1:] == 0.0) | (pos[:, :, 1:] == 1.0)
  assert on_wall.sum() > 20  # plenty of bounces in 40 frames
  np.testing.assert_array_equal(np.where(on_wall, -vel[:, :, :-1], vel[:, :, :-1]),
                                vel[:, :, 1:])


def test_moving_mnist_combines_digits_by_max():
  g = glyphs()
  videos, traj = moving_mnist.generate(g, 8, 20, 2, 24, 1, return_trajectories=True)
  alone = [moving_mnist.render_max(g, traj.pixels[:, k:k + 1], traj.digit_index[:, k:k + 1], 24)
           for k in range(2)]
  np.testing.assert_array_equal(videos, np.maximum(*alone))
  gap = np.abs(traj.pixels[:, 0] - traj.pixels[:, 1]).max(axis=-1)  # [V, T]
  apart = gap >= 6  # the two 6×6 boxes do not overlap: the masses add up
  mass = videos.reshape(8, 20, -1).sum(-1, dtype=np.int64)
  want = sum(g.reshape(3, -1).sum(-1)[traj.digit_index[:, k]][:, None] for k in range(2))
  assert apart.any() and (~apart).any()
  np.testing.assert_array_equal(mass[apart], np.broadcast_to(want, mass.shape)[apart])
  assert np.all(mass[~apart] < np.broadcast_to(want, mass.shape)[~apart])


def test_moving_mnist_reference_geometry_and_errors():
  _, traj = moving_mnist.generate(np.zeros((2, 28, 28), np.uint8), 50, 20, 1, 64, 0,
                                  return_trajectories=True)
  assert traj.pixels.max() <= 36 and traj.pixels.max() >= 30  # free range 64 - 28
  with pytest.raises(sources.DataConfigError, match="model.image_size=28"):
    moving_mnist.generate(np.zeros((2, 28, 28), np.uint8), 1, 2, 1, 28, 0)
  with pytest.raises(sources.DataConfigError, match="data.num_digits"):
    moving_mnist.generate(glyphs(), 1, 2, 0, 28, 0)


def test_moving_mnist_fixed_training_set_and_validation_draw():
  ds = moving_mnist.MovingMNIST(glyphs(), num_videos=10, num_frames=5, image_size=16,
                                num_val_videos=4, seed=7)
  again = moving_mnist.MovingMNIST(glyphs(), num_videos=10, num_frames=5, image_size=16,
                                   num_val_videos=4, seed=7)
  np.testing.assert_array_equal(ds.train_videos, again.train_videos)
  assert ds.val_videos.shape == (4, 5, 16, 16, 1)
  assert not np.array_equal(ds.val_videos, ds.train_videos[:4])
  # An epoch (10 // 3 = 3 batches) visits distinct training videos; steps replay exactly.
  epoch = np.concatenate([ds.train_batch(s, 3) for s in range(3)])
  flat = ds.train_videos.reshape(10, -1)
  rows = [int(np.flatnonzero((flat == v.reshape(-1)).all(1))[0]) for v in epoch]
  assert len(set(rows)) == 9
  np.testing.assert_array_equal(ds.train_batch(4, 3), again.train_batch(4, 3))
  halves = [ds.train_batch(4, 4, i, 2) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), ds.train_batch(4, 4))
