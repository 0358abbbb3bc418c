"""GFF video from the command line: an MCVD config with diffusion.noise=gff samples every task
under either target (`python -m mcvd_jax.main --mode=sample`). Training a tiny GFF video model and
sampling every task from it, with the white target, is tests/test_train.py's
test_gff_video_model_trains_and_samples_every_task; here the network is the random one sample mode
falls back to, which is all the sampler's wiring needs."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
# configs/smmnist.py:tiny with past and future conditioning frames, so that every task can run.
FLAGS = ["--config=configs/smmnist.py:tiny", "--config.diffusion.noise=gff",
         "--config.model.num_frames=2", "--config.model.num_frames_cond=2",
         "--config.model.num_frames_future=1", "--config.sampling.subsample=2",
         "--config.sampling.batch_size=2", "--config.sampling.num_frames=2"]


@pytest.mark.slow  # one CLI process per task: ~20-40 s each on two busy CPU cores
@pytest.mark.parametrize("task, target, frames", [
    ("prediction", "correlated", 2 + 2),         # 2 past frames, 2 predicted
    ("generation", "white", 2),
    ("interpolation", "correlated", 2 + 2 + 1),  # past, the 2 frames between, future
])
def test_gff_video_samples_each_task_from_the_cli(tmp_path, task, target, frames):
  command = [sys.executable, "-m", "mcvd_jax.main", *FLAGS, f"--workdir={tmp_path}",
             "--mode=sample", f"--config.sampling.task={task}", f"--config.diffusion.target={target}"]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  meta = json.loads((tmp_path / f"samples_{task}.json").read_text())
  assert (meta["task"], meta["noise"], meta["target"]) == (task, "gff", target)
  video = np.load(tmp_path / f"samples_{task}.npz")["videos"]
  assert video.dtype == np.uint8 and video.shape[:2] == (2, frames) and video.std() > 0
  assert Image.open(tmp_path / f"samples_{task}.gif").n_frames == frames
