"""Sample mode (a GIF from random weights on real test clips) and the SMMNIST configs."""

import json

import numpy as np
import pytest
from PIL import Image

from configs import default, smmnist
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.modes import run_mode
from mcvd_jax.video_diffusion.family import FAMILY as MCVD
from mcvd_jax.models import UNetConfig


@pytest.mark.parametrize("variant", ["", "spatin", "past_mask", "general", "quick", "quick1", "tiny"])
def test_smmnist_configs_build_valid_models(variant):
  config = smmnist.get_config(variant)
  cfg = UNetConfig.from_mapping(config.model)
  assert cfg.image_size == config.model.image_size
  if variant == "general":
    assert cfg.num_frames_future == 5 and config.training.prob_mask_future == 0.5
  if variant == "":  # the paper's SMMNIST network
    assert (cfg.ngf, cfg.ch_mult, cfg.num_res_blocks, cfg.attn_resolutions) == (64, (1, 2, 3, 4), 2, (8, 16, 32))


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="nope"):
    smmnist.get_config("nope")


def test_sample_and_save_writes_a_gif(tmp_path):
  config = smmnist.get_config("tiny")
  config.sampling.subsample = 3
  config.sampling.batch_size = 2
  config.sampling.task = "prediction"
  config.sampling.num_frames = 3
  path = run_mode(MCVD, config, str(tmp_path), "sample")
  gif = Image.open(path)
  assert gif.n_frames == 2 + 3  # the past frames, then the predicted ones
  assert gif.size == (2 * 32 + 2, 2 * 32 + 2)  # real clips on top, samples below
  video = np.load(tmp_path / "samples_prediction.npz")["videos"]
  assert video.shape == (2, 5, 32, 32, 1) and video.dtype == np.uint8
  # The given past frames are the dataset's first test clips, unchanged.
  from mcvd_jax.data.registry import make_dataset
  real = make_dataset(config.data, 32, 1).test_videos(5, 2)
  np.testing.assert_array_equal(video[:, :2], real[:, :2])
  meta = json.loads((tmp_path / "samples_prediction.json").read_text())
  # subsample 3 visits range(0, 1000, 333): four labels, as the reference.
  assert meta["task"] == "prediction" and meta["steps"] == 4


def test_unknown_task_is_an_error(tmp_path):
  config = default.get_config()
  config.sampling.task = "dance"
  with pytest.raises(ConfigError, match="sampling.task='dance' is unknown"):
    run_mode(MCVD, config, str(tmp_path), "sample")
