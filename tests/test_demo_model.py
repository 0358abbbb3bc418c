"""The README's first commands: the `:quick` config trains, and the shipped demo model
(demo/smmnist_quick, EMA weights exported from a longer :quick run) samples every task its
network supports, through the very command the README prints."""

import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import smmnist
from mcvd_jax import data
from mcvd_jax.core import loop
from mcvd_jax.core.modes import run_mode
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.video_diffusion.family import FAMILY as MCVD

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "smmnist_quick"
DEMO_ONE_DIGIT = ROOT / "demo" / "smmnist_quick1"  # :quick1 with model.num_frames=1


def readme_command(marker: str) -> list[str]:
  """The README command line (backslash continuations joined) that contains `marker`."""
  text = (ROOT / "README.md").read_text().replace("\\\n", " ")
  lines = [line for line in text.splitlines() if marker in line and "python -m" in line]
  assert lines, f"no README command contains {marker!r}"
  return shlex.split(lines[0][lines[0].index("python -m"):])


def test_quick_config_trains_a_few_steps(tmp_path):
  config = smmnist.get_config("quick")
  for field, value in {"batch_size": 8, "num_steps": 2, "log_every": 1, "sample_every": 0,
                       "eval_every": 0, "checkpoint_every": 2}.items():
    setattr(config.training, field, value)
  state = loop.train_and_evaluate(config, str(tmp_path), MCVD)
  assert int(state.step) == 2
  assert (tmp_path / "checkpoints" / "2").is_dir()


@pytest.mark.parametrize("demo, digits", [(DEMO, 2), (DEMO_ONE_DIGIT, 1)])
def test_demo_model_directory_is_small_and_describes_itself(demo, digits):
  meta = (demo / "model_config.json").read_text()
  for words in ('"prediction": "x0"', '"provenance"', '"step"', f'"num_digits": {digits}'):
    assert words in meta
  size = sum(p.stat().st_size for p in demo.rglob("*") if p.is_file())
  assert size < 10e6, f"the demo model is {size / 1e6:.1f} MB"


@pytest.mark.parametrize("demo, variant", [(DEMO, "quick"), (DEMO_ONE_DIGIT, "quick1")])
@pytest.mark.parametrize("task", ["prediction", "generation"])
def test_demo_model_samples_each_task_it_supports(tmp_path, task, demo, variant):
  config = smmnist.get_config(variant)  # the one-digit demo's one-frame network: from its dir
  config.sampling.task, config.sampling.batch_size = task, 2
  config.sampling.num_frames, config.sampling.subsample = 5, 10
  path = run_mode(MCVD, config, str(tmp_path), "sample", str(demo))
  meta = (tmp_path / f"samples_{task}.json").read_text()
  assert "model directory" in meta and '"prediction": "x0"' in meta
  video = np.load(tmp_path / f"samples_{task}.npz")["videos"]
  assert video.shape[:2] == (2, 5 + (5 if task == "prediction" else 0)) and video.std() > 0
  assert Image.open(path).n_frames == video.shape[1]


def test_demo_model_refuses_interpolation_with_the_reason(tmp_path):
  config = smmnist.get_config("quick")
  config.sampling.task = "interpolation"
  with pytest.raises(ConfigError, match="needs future frames"):
    run_mode(MCVD, config, str(tmp_path), "sample", str(DEMO))


# (demo, config variant, model MSE bound as a share of copy-last's overall, and on the first
# predicted block): measured 0.036 vs 0.062 and 0.019 vs 0.059 for the two-digit demo on its four
# clips, 0.016 vs 0.032 and 0.011 vs 0.026 for the one-digit demo on its eight.
DEMOS = [("smmnist_quick", "quick", 0.75, 0.5), ("smmnist_quick1", "quick1", 0.65, 0.6)]


@pytest.mark.slow
@pytest.mark.parametrize("name, variant, overall, first", DEMOS)
def test_the_readme_demo_command_predicts_moving_digits(tmp_path, name, variant, overall, first):
  command = readme_command(f"--checkpoint=demo/{name} ")
  command = [sys.executable if part == "python" else part for part in command]
  command = [f"--workdir={tmp_path}" if part.startswith("--workdir=") else part
             for part in command]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  gif = next(tmp_path.glob("samples_*.gif"))
  videos = np.load(gif.with_suffix(".npz"))["videos"]
  # Predicted frames hold digits on a dark background, not grey noise: most pixels are dark and
  # a few are bright (a uniform grey or noise sample has neither).
  predicted = videos[:, 5:].astype(np.float32) / 255
  assert np.mean(predicted < 0.2) > 0.7 and np.mean(predicted > 0.6) > 0.02
  assert re.search(r"samples_\w+\.gif", str(gif))
  # They continue these clips: the sample mode conditions on the quick config's fixed test clips,
  # and the predictions are closer to the clips' real future than repeating the last past frame.
  assert f"--config=configs/smmnist.py:{variant}" in command
  config = smmnist.get_config(variant)
  dataset = data.make_dataset(config.data, config.model.image_size, config.model.channels)
  real = dataset.test_videos(videos.shape[1], videos.shape[0])
  np.testing.assert_array_equal(videos[:, :5], real[:, :5])
  future = real[:, 5:].astype(np.float32) / 255
  model_mse = np.mean((predicted - future) ** 2)
  copy_last_mse = np.mean((real[:, 4:5].astype(np.float32) / 255 - future) ** 2)
  assert model_mse < overall * copy_last_mse, (model_mse, copy_last_mse)
  # and the first predicted block by far
  first_block = np.mean((predicted[:, :5] - future[:, :5]) ** 2)
  assert first_block < first * np.mean((real[:, 4:5] / 255 - future[:, :5]) ** 2), first_block
