"""The network, loss, sampler and rollout on 8 fake CPU devices with a batch-sharded input give
the single-device results (conftest.py asks XLA for 8 host devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from conftest import cached_init
from mcvd_jax.diffusion.losses import make_loss_fn
from mcvd_jax.diffusion.noise import gff
from mcvd_jax.diffusion.samplers import make_sampler
from mcvd_jax.diffusion.schedules import linear_schedule
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.video.rollout import make_rollout

CFG = UNetConfig(image_size=8, channels=1, num_frames=2, num_frames_cond=2, ngf=8, ch_mult=(1, 2),
                 num_res_blocks=1, attn_resolutions=(4,), n_head_channels=8, dropout=0.0)


@pytest.fixture(scope="module")
def mesh():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  # Auto axes: XLA propagates the batch sharding (explicit sharding-in-types would demand an
  # out_sharding on every reshape inside the network).
  return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def shard(mesh, x):
  return jax.device_put(x, NamedSharding(mesh, P("data")))


def replicate(mesh, tree):
  return jax.device_put(tree, NamedSharding(mesh, P()))


def test_sharded_forward_loss_and_sampler_match_single_device(mesh):
  params = jax.tree_util.tree_map(lambda p: p + 0.05, cached_init(CFG))
  denoise = make_denoise_fn(CFG)
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (8, 8, 8, 2))
  cond = jax.random.uniform(keys[1], (8, 8, 8, 2), minval=-1, maxval=1)
  labels = jnp.arange(8) * 100
  sharded_params = replicate(mesh, params)

  forward = jax.jit(denoise)
  single = forward(params, x, labels, cond)
  multi = forward(sharded_params, shard(mesh, x), shard(mesh, labels), shard(mesh, cond))
  assert multi.sharding.spec == P("data")
  np.testing.assert_allclose(multi, single, atol=2e-5)

  loss_fn = jax.jit(make_loss_fn(denoise, schedule=linear_schedule(), noise_model=gff()))
  loss_single, aux_single = loss_fn(params, x, cond, keys[2])
  loss_multi, aux_multi = loss_fn(sharded_params, shard(mesh, x), shard(mesh, cond), keys[2])
  np.testing.assert_array_equal(aux_multi.labels, aux_single.labels)  # same draws either way
  np.testing.assert_allclose(loss_multi, loss_single, rtol=1e-5)

  sampler = make_sampler(denoise, kind="ddpm", schedule=linear_schedule(), subsample=3)
  sample = jax.jit(sampler.sample)
  out_single = sample(params, x, cond, keys[2])
  out_multi = sample(sharded_params, shard(mesh, x), shard(mesh, cond), keys[2])
  assert out_multi.sharding.spec == P("data")
  np.testing.assert_allclose(out_multi, out_single, atol=1e-4)


def test_sharded_rollout_matches_single_device(mesh):
  params = cached_init(CFG)
  sampler = make_sampler(make_denoise_fn(CFG), kind="ddim", schedule=linear_schedule(), subsample=2)
  rollout = jax.jit(make_rollout(sampler.sample, CFG), static_argnames=("num_frames", "batch_size"))
  past = jax.random.uniform(jax.random.key(1), (8, 2, 8, 8, 1), minval=-1, maxval=1)
  single = rollout(params, jax.random.key(2), past, num_frames=3)
  multi = rollout(replicate(mesh, params), jax.random.key(2), shard(mesh, past), num_frames=3)
  np.testing.assert_allclose(multi, single, atol=1e-4)
  np.testing.assert_array_equal(multi[:, :2], past)
