"""DPM-Solver++(2M) and DPM-Solver-2/3 (diffusion/dpm_solver.py) on Gaussian data: their error
against the exact probability-flow ODE solution falls with the number of network evaluations at
the stated order, they spend exactly sampling.nfe evaluations, thresholding clips the data
prediction; and every MCVD task (one through the CLI, the rest through main's mode dispatcher in
this process, sparing a process start each) and an image config sample with both new kinds."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smmnist
from mcvd_jax import registry
from mcvd_jax.core.modes import run_mode
from mcvd_jax.diffusion.dpm_solver import make_dpm_sampler, singlestep_orders
from mcvd_jax.diffusion.factory import Diffusion, check_sampling
from mcvd_jax.diffusion.noise import gff, isotropic
from mcvd_jax.diffusion.schedules import linear_schedule
from test_pf_ode import SHAPE, VP, Gaussian, _sampling

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method, order, nfes, min_slope", [
    ("multistep", 2, (20, 40, 80), 1.8),  # below ~20 NFE its first (order-1) step still shows
    ("singlestep", 2, (12, 24, 48), 1.8),
    ("singlestep", 3, (12, 24, 48), 2.6),
])
@pytest.mark.parametrize("noise_model", [isotropic(), gff()], ids=["isotropic", "gff"])
def test_error_against_the_pf_ode_falls_at_the_stated_order(noise_model, method, order, nfes,
                                                             min_slope):
  g = Gaussian(noise_model, commuting=True)
  x1 = np.asarray(noise_model.sample(jax.random.key(0), (8,) + SHAPE))
  exact = g.exact_flow(x1)
  errors = []
  for nfe in nfes:
    sampler = make_dpm_sampler(g.model(), VP, nfe=nfe, method=method, order=order,
                               denoise=False)
    assert sampler.num_evals == nfe and len(sampler.labels) == nfe
    x = jax.jit(sampler.sample)(None, jnp.asarray(x1), None)
    errors.append(float(np.max(np.abs(np.asarray(x, np.float64) - exact))))
  slopes = np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))  # NFE doubles each time
  assert np.all(slopes > min_slope), (errors, slopes)
  assert errors[-1] < 0.03  # of samples of size ~1


def test_singlestep_orders_spend_exactly_the_nfe():
  for nfe in range(3, 30):
    for order in (1, 2, 3):
      assert sum(singlestep_orders(nfe, order)) == nfe
  assert singlestep_orders(10, 3) == [3, 3, 3, 1] and singlestep_orders(12, 3) == [3, 3, 3, 2, 1]
  assert singlestep_orders(7, 2) == [2, 2, 2, 1]


def test_thresholding_clips_the_data_prediction():
  """A model whose clean estimate is 3 everywhere: DPM-Solver++ ends near α·3 without
  thresholding and near α·1 with it."""
  def model(params, x, t, cond, cond_mask=None):
    x0 = 3 * jnp.ones_like(x)
    a2 = VP.alpha_bar(t)
    return x0, (x - jnp.sqrt(a2) * x0) / jnp.sqrt(1 - a2)

  x1 = jax.random.normal(jax.random.key(0), (2,) + SHAPE)
  plain = make_dpm_sampler(model, VP, nfe=8, denoise=False).sample(None, x1, None)
  clipped = make_dpm_sampler(model, VP, nfe=8, thresholding=True, denoise=False).sample(
      None, x1, None)
  np.testing.assert_allclose(plain, 3.0, atol=0.05)
  np.testing.assert_allclose(clipped, 1.0, atol=0.05)
  denoised = make_dpm_sampler(model, VP, nfe=8, denoise=True, clip=True)
  assert denoised.num_evals == 9
  np.testing.assert_allclose(denoised.sample(None, x1, None), 1.0)


def test_dpm_settings_errors_name_the_field():
  diffusion = Diffusion("ddpm", isotropic(), schedule=linear_schedule())
  check_sampling(diffusion, _sampling("dpm_solver", nfe=5, dpm_method="singlestep", dpm_order=3))
  for fields, field in [({"nfe": 1}, "sampling.nfe"), ({"dpm_method": "rk"}, "sampling.dpm_method"),
                        ({"dpm_order": 3}, "sampling.dpm_order"),
                        ({"dpm_method": "singlestep", "thresholding": True},
                         "sampling.thresholding")]:
    with pytest.raises(ValueError, match=field):
      check_sampling(diffusion, _sampling("dpm_solver", **fields))


# ----------------------------------------------------------------------------------------- CLI

# configs/smmnist.py:tiny with past and future frames, so that every task can run.
VIDEO_FLAGS = ["--config=configs/smmnist.py:tiny", "--config.model.num_frames=2",
               "--config.model.num_frames_cond=2", "--config.model.num_frames_future=1",
               "--config.sampling.batch_size=2", "--config.sampling.num_frames=2",
               "--config.sampling.nfe=3", "--config.sampling.ode.adaptive=False",
               "--config.sampling.ode.num_steps=2", "--config.sampling.ode.solver=heun"]
KIND_EVALS = {"dpm_solver": 3 + 1, "ode": 2 * 2 + 1}  # with the final denoising step
TASK_FRAMES = {"prediction": 2 + 2, "generation": 2, "interpolation": 2 + 2 + 1,
               "past_reconstruction": 2 + 1}


def _run(command):
  done = subprocess.run([sys.executable, "-m", "mcvd_jax.main", *command], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]


def _video_config(kind, task):
  """VIDEO_FLAGS (and the kind, task and GFF noise) as a config, for an in-process run."""
  config = smmnist.get_config("tiny")
  for flag in VIDEO_FLAGS[1:]:
    name, value = flag[len("--config."):].split("=")
    section, *rest = name.split(".")
    target = config[section]
    for part in rest[:-1]:
      target = target[part]
    target[rest[-1]] = type(target[rest[-1]])(value) if value != "False" else False
  config.sampling.kind, config.sampling.task, config.diffusion.noise = kind, task, "gff"
  return config


@pytest.mark.slow  # one sampler compile per task and kind (~15 s each through the CLI)
@pytest.mark.parametrize("kind", ["ode", "dpm_solver"])
@pytest.mark.parametrize("task", list(TASK_FRAMES))
def test_every_mcvd_task_samples(tmp_path, kind, task):
  if (kind, task) == ("dpm_solver", "interpolation"):  # the command line itself, once
    _run([*VIDEO_FLAGS, f"--workdir={tmp_path}", "--mode=sample",
          f"--config.sampling.kind={kind}", f"--config.sampling.task={task}",
          "--config.diffusion.noise=gff"])
  else:
    run_mode(registry.get_family("mcvd"), _video_config(kind, task), str(tmp_path), "sample")
  meta = json.loads((tmp_path / f"samples_{task}.json").read_text())
  assert (meta["sampler"], meta["network_evals_per_block"]) == (kind, KIND_EVALS[kind])
  video = np.load(tmp_path / f"samples_{task}.npz")["videos"]
  assert video.dtype == np.uint8 and video.shape[:2] == (2, TASK_FRAMES[task])
  assert video.std() > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ode", "dpm_solver"])
def test_an_image_config_samples_from_the_cli(tmp_path, kind):
  _run(["--config=configs/mnist.py:tiny", f"--workdir={tmp_path}", "--mode=sample",
        f"--config.sampling.kind={kind}", "--config.sampling.nfe=3",
        "--config.sampling.ode.adaptive=False", "--config.sampling.ode.num_steps=2",
        "--config.sampling.num_images=2", "--config.sampling.batch_size=2"])
  (meta_path,) = tmp_path.glob("samples_*.json")
  meta = json.loads(meta_path.read_text())
  assert (meta["sampler"], meta["network_evals"]) == (kind, {"ode": 6 * 2 + 1 + 1,
                                                             "dpm_solver": 3 + 1}[kind])
  images = np.load(meta_path.with_suffix(".npz"))["images"]
  assert images.shape[0] == 2 and images.std() > 0
