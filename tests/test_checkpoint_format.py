"""A training checkpoint written before the family refactor (tests/fixtures/checkpoint_v1: one step
of a tiny SMMNIST model, written by commit 060cd1c's train_and_evaluate, with the sum of every
saved leaf) restores with today's code, loads for sampling and training continues from it."""

import json
import pathlib
import shutil

import jax
import numpy as np

from configs import smmnist
from mcvd_jax.video_diffusion.family import FAMILY as MCVD
from mcvd_jax.core import loop
from mcvd_jax.core.checkpointing import Checkpointer, load_ema_params
from mcvd_jax.models import UNetConfig, init_params

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "checkpoint_v1"


def fixture_config():
  """The config the fixture was trained with (its config.json)."""
  config = smmnist.get_config("tiny")
  saved = json.loads((FIXTURE / "config.json").read_text())
  for section in ("model", "data", "training"):
    for name in ("image_size", "digit_size", "ngf", "ch_mult", "attn_resolutions",
                 "n_head_channels", "num_frames", "num_frames_cond", "batch_size", "num_steps",
                 "checkpoint_every", "sample_every", "log_every"):
      if name in saved[section]:
        value = saved[section][name]
        config[section][name] = tuple(value) if isinstance(value, list) else value
  return config


def test_a_checkpoint_of_the_previous_code_restores_and_training_continues(tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(FIXTURE, workdir)
  config = fixture_config()
  # Written on one device with batch 2; restored here replicated over 8 (the batch does not
  # shape the state, but must split over the devices).
  config.training.batch_size = 8
  trainer = loop.Trainer(config, str(workdir), MCVD)
  checkpointer = Checkpointer(str(workdir))
  state, meta = checkpointer.restore_newest(trainer.abstract_state(), move_unreadable=False)
  checkpointer.close()
  assert int(state.step) == 1 and meta["data_seed"] == 0 and meta["dataset"] == "smmnist"
  expected = json.loads((FIXTURE / "expected_sums.json").read_text())
  leaves = jax.tree_util.tree_flatten_with_path(state._asdict())[0]
  sums = {jax.tree_util.keystr(path): float(np.asarray(leaf, np.float64).sum())
          for path, leaf in leaves}
  assert sums.keys() == expected.keys()  # the same tree: names of params, optimizer state, EMA
  for name, value in expected.items():
    assert sums[name] == value, name

  cfg = UNetConfig.from_mapping(config.model)
  ema, step = load_ema_params(str(workdir), lambda key: init_params(cfg, key))
  assert step == 1
  for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  config.training.num_steps = 2
  continued = loop.train_and_evaluate(config, str(workdir), MCVD)
  assert int(continued.step) == 2
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1", "2"]
