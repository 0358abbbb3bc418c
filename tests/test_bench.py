"""The benchmark's train step (bench.paper_train_step, as `--parts=train` runs it) on a tiny network."""

import jax
import numpy as np

from mcvd_jax.video_diffusion import bench
from mcvd_jax.models import UNetConfig, init_params

TINY = UNetConfig(image_size=8, channels=1, num_frames=2, num_frames_cond=1, ngf=8, ch_mult=(1,),
                  num_res_blocks=1, attn_resolutions=(), n_head_channels=8)


def test_bench_train_step_reports_time_flops_and_page_faults():
  params = init_params(TINY, jax.random.key(0))
  result = bench.bench_train_step(TINY, params, batch=2, repeats=2)
  assert len(result["seconds_all"]) == 2 and result["seconds_median"] > 0
  assert result["gflop_per_call"] > 0
  np.testing.assert_allclose(result["frames_per_second"], 2 * 2 / result["seconds_median"])
  assert result["page_faults_per_call"] is None or result["page_faults_per_call"] >= 0
  # The timed state is a copy: donating it leaves the caller's parameters alive.
  assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))
