"""Config validation: every config that cannot train fails before compilation, naming the field."""

import pytest

from configs import bair, smmnist
from mcvd_jax.video_diffusion.family import FAMILY as MCVD
from mcvd_jax.core import loop
from mcvd_jax.video_diffusion import config as experiment
from mcvd_jax.data.registry import DatasetUnavailableError


def _config(**overrides):
  config = smmnist.get_config("tiny")
  for dotted, value in overrides.items():
    section, name = dotted.split(".")
    config[section][name] = value
  return config


def test_the_shipped_configs_are_valid():
  for variant in ("", "spatin", "past_mask", "general", "quick", "quick1", "tiny"):
    experiment.validate_config(smmnist.get_config(variant), device_count=8)
  experiment.validate_config(bair.get_config(""), device_count=8)  # the name is known


@pytest.mark.parametrize("overrides, field", [
    ({"training.batch_size": 12}, "training.batch_size"),  # not divisible by 8 devices
    ({"model.image_size": 33}, "model.image_size"),  # not divisible by the downsampling
    ({"model.attn_resolutions": (5,)}, "model.attn_resolutions"),  # never occurs
    ({"data.dataset": "moving_shapes"}, "data.dataset"),
    ({"training.prob_mask_future": 0.5}, "training.prob_mask_future"),  # no future frames
    ({"model.num_frames_cond": 0, "training.prob_mask_cond": 0.5}, "training.prob_mask_cond"),
    ({"training.prob_mask_cond": 1.5}, "training.prob_mask_cond"),
    ({"sampling.task": "interpolation"}, "sampling.task"),  # the model has no future frames
    ({"sampling.task": "dance"}, "sampling.task"),
    ({"sampling.kind": "smld"}, "sampling.kind"),  # does not fit a ddpm diffusion
    ({"training.nonfinite_loss": "ignore"}, "training.nonfinite_loss"),
    ({"training.ema_rate": 1.0}, "training.ema_rate"),
    ({"training.steps_per_dispatch": 0}, "training.steps_per_dispatch"),
    ({"optim.optimizer": "lion"}, "optim.optimizer"),
    ({"optim.schedule": "cosine", "optim.warmup": 10**7}, "optim.schedule"),  # nothing to decay
    ({"training.eval_every": -1}, "training.eval_every"),
    ({"optim.lr": 0.0}, "optim.lr"),
    ({"optim.grad_clip": -1.0}, "optim.grad_clip"),
])
def test_invalid_configs_name_the_field(overrides, field):
  with pytest.raises(experiment.ConfigError, match=field.replace(".", r"\.")):
    experiment.validate_config(_config(**overrides), device_count=8)


def test_missing_user_dataset_fails_before_compilation(tmp_path):
  config = bair.get_config("")
  config.data.path = "/data/bair"
  with pytest.raises(DatasetUnavailableError, match="/data/bair"):
    loop.Trainer(config, str(tmp_path), MCVD)
