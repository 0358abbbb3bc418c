"""The image family's runs on CPU beyond test_image_family's GFF run: an isotropic tiny MNIST run
that resumes, writes its EMA sample grids as PNG and to TensorBoard, and samples with
DDIM at another step count from a given checkpoint; `--mode=sample` of SMLD with GFF noise; the
CIFAR-10 parameter count; the CelebA config."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import celeba, cifar10, mnist
from mcvd_jax.core import loop
from mcvd_jax.core.modes import run_mode
from mcvd_jax.image_diffusion.config import image_model_config
from mcvd_jax.image_diffusion.family import FAMILY
from mcvd_jax.models import init_params

CIFAR10_PARAMETERS = 51_835_779  # Ho et al.'s DDPM CIFAR-10 network: 35.7M


def parameter_count(config) -> int:
  """Parameters of a config's UNet, from shapes only (jax.eval_shape: nothing is computed)."""
  cfg = image_model_config(config)
  shapes = jax.eval_shape(lambda key: init_params(cfg, key), jax.random.key(0))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))


def test_cifar10_parameter_count_is_the_one_its_docstring_reports():
  assert parameter_count(cifar10.get_config()) == CIFAR10_PARAMETERS
  doc = " ".join(cifar10.__doc__.split())
  assert f"ours {CIFAR10_PARAMETERS:,}" in doc and "35.7M" in doc


def test_celeba_config_is_score_sde_data_on_the_ddpm_recipe():
  for variant in celeba.VARIANTS:
    config = celeba.get_config(variant)
    config.data.path = "/data/celeba"  # validation reads no file, but CelebA needs the field
    FAMILY.validate(config, 8, 1)
  config = celeba.get_config()
  assert (config.data.dataset, config.model.image_size, config.model.channels,
          config.data.random_flip) == ("celeba", 64, 3, True)
  assert (config.optim.lr, config.optim.warmup, config.optim.grad_clip,
          config.training.batch_size, config.model.dropout) == (2e-4, 5000, 1.0, 128, 0.1)
  smld = celeba.get_config("smld+gff")
  assert (smld.diffusion.kind, smld.diffusion.noise, smld.diffusion.sigma_begin,
          smld.diffusion.num_steps, smld.sampling.step_lr) == ("smld", "gff", 90.0, 500, 3.3e-6)
  with pytest.raises(ValueError, match="unknown variant"):
    celeba.get_config("quick")


def tensorboard_image_tags(workdir) -> set[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tags = set()
  for path in (workdir / "tensorboard").iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags |= {value.tag for value in event.summary.value if value.HasField("image")
               or value.metadata.plugin_data.plugin_name == "images"}
  return tags


@pytest.mark.slow  # ~100 s on two busy CPU cores: two runs compile the train step
def test_isotropic_run_resumes_and_samples_from_a_given_checkpoint(tmp_path):
  # (Bit-exact resume is the core loop's, tests/test_train.py; batches are pure functions of the
  # step, tests/test_image_data.py.)
  config = mnist.get_config("tiny")  # isotropic DDPM, 32x32 digits
  config.training.num_steps, config.training.sample_every = 2, 2
  first = loop.train_and_evaluate(config, str(tmp_path), FAMILY)
  assert int(first.step) == 2 and os.listdir(tmp_path / "checkpoints") == ["2"]
  config.training.num_steps = 4
  resumed = loop.train_and_evaluate(config, str(tmp_path), FAMILY)  # from checkpoints/2
  assert int(resumed.step) == 4 and sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]

  # An EMA sample grid every sample_every steps, as PNG and in TensorBoard.
  for step in (2, 4):
    grid = np.asarray(Image.open(tmp_path / "samples" / f"step_{step:08d}.png"))
    assert grid.shape == (2 * 32 + 2, 2 * 32 + 2)
  assert "samples" in tensorboard_image_tags(tmp_path)

  # DDIM at a step count of our choosing, from the older checkpoint.
  config.sampling.kind, config.sampling.subsample = "ddim", 3
  older = str(tmp_path / "checkpoints" / "2")
  png = run_mode(FAMILY, config, str(tmp_path), "sample", checkpoint=older)
  assert os.path.basename(png) == "samples_ddim_3.png"
  images = np.load(png.replace(".png", ".npz"))["images"]
  assert images.shape == (4, 32, 32, 1) and images.dtype == np.uint8
  meta = json.load(open(png.replace(".png", ".json")))
  assert "of step 2" in meta["source"] and (meta["sampler"], meta["steps"]) == ("ddim", 3)


@pytest.mark.slow  # ~20 s: compiles the tiny SMLD sampler
def test_smld_gff_sample_mode_writes_a_grid_and_an_npz(tmp_path):
  config = cifar10.get_config("smld+gff+tiny")
  config.sampling.subsample, config.sampling.n_steps_each = 4, 2
  png = run_mode(FAMILY, config, str(tmp_path), "sample")  # no checkpoint: random weights
  assert os.path.basename(png) == "samples_smld_4.png"
  assert np.asarray(Image.open(png)).shape == (2 * 32 + 2, 2 * 32 + 2, 3)
  images = np.load(png.replace(".png", ".npz"))["images"]
  assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
  meta = json.load(open(png.replace(".png", ".json")))
  assert (meta["sampler"], meta["noise"], meta["target"]) == ("smld", "gff", "white")
