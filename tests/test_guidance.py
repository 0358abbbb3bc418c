"""Guidance by the masked past (sampling.guidance): the combination of the two network outputs,
which channels it masks, and the checks that keep it off networks that never saw a masked past."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smmnist
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.models import UNetConfig
from mcvd_jax.video.guidance import check_guidance, guided_denoise
from mcvd_jax.video_diffusion.config import validate_family
from mcvd_jax.video_diffusion.sampling import load_for_sampling, trained_prob_mask_cond

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_ONE_DIGIT = ROOT / "demo" / "smmnist_quick1"

CFG = UNetConfig(image_size=32, channels=1, num_frames=1, num_frames_cond=2, num_frames_future=1)


def probe_network(params, x, labels, cond, key=None, cond_mask=None):
  """A network whose output shows what it was given: x, each conditioning channel weighted by a
  different power of 10, and cond_mask."""
  del params, key
  weights = 10.0 ** jnp.arange(cond.shape[-1])
  mask = (jnp.ones(x.shape[0]) if cond_mask is None else cond_mask).astype(x.dtype)
  return (x + jnp.sum(cond * weights, axis=-1, keepdims=True)
          + 1000.0 * mask[:, None, None, None] + labels[:, None, None, None])


def inputs(batch=3):
  x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 1))
  cond = jax.random.uniform(jax.random.key(1), (batch, 32, 32, 3), minval=-1, maxval=1)
  return x, jnp.arange(batch) * 7.0, cond


def test_weight_one_is_the_plain_network():
  assert guided_denoise(probe_network, CFG, 1.0) is probe_network


@pytest.mark.parametrize("weight", [0.0, 2.0, 3.5])
def test_output_extrapolates_from_the_masked_past_to_the_given_one(weight):
  x, labels, cond = inputs()
  out = guided_denoise(probe_network, CFG, weight)(None, x, labels, cond)
  given = probe_network(None, x, labels, cond, cond_mask=jnp.ones(3, jnp.int32))
  # The masked call: the two past channels zeroed, the future channel kept, cond_mask 0.
  masked = probe_network(None, x, labels, cond.at[..., :2].set(0),
                         cond_mask=jnp.zeros(3, jnp.int32))
  np.testing.assert_allclose(out, masked + weight * (given - masked), rtol=1e-5, atol=1e-3)
  if weight == 0:  # pure masked-past output: no trace of the past channels
    np.testing.assert_allclose(out, masked, atol=1e-3)


def test_a_label_interval_guides_only_the_steps_inside_it():
  x, _, cond = inputs(batch=4)
  labels = jnp.array([0, 499, 500, 999])  # the interval [0, 500) holds the first two
  out = guided_denoise(probe_network, CFG, 3.0, (0, 500))(None, x, labels, cond)
  everywhere = guided_denoise(probe_network, CFG, 3.0)(None, x, labels, cond)
  plain = probe_network(None, x, labels, cond)
  np.testing.assert_allclose(out[:2], everywhere[:2], rtol=1e-6)
  np.testing.assert_allclose(out[2:], plain[2:], rtol=1e-6)
  assert not np.allclose(everywhere[2:], plain[2:])


@pytest.mark.parametrize("interval", [(5,), (3, 3), (-1, 4), (1, 2, 3)])
def test_bad_label_intervals_are_refused(interval):
  with pytest.raises(ValueError, match="guidance_labels"):
    check_guidance(2.0, CFG, interval)


def test_samples_whose_past_is_already_masked_are_unchanged():
  x, labels, cond = inputs()
  cond = cond.at[..., :2].set(0)
  absent = jnp.zeros(3, jnp.int32)
  out = guided_denoise(probe_network, CFG, 4.0)(None, x, labels, cond, cond_mask=absent)
  np.testing.assert_allclose(out, probe_network(None, x, labels, cond, cond_mask=absent),
                             rtol=1e-6)


@pytest.mark.parametrize("weight, words", [(-0.5, ">= 0"), (float("inf"), "finite"),
                                           (float("nan"), "finite")])
def test_bad_weights_are_refused(weight, words):
  with pytest.raises(ValueError, match=words):
    check_guidance(weight, CFG)


def test_a_network_without_past_frames_cannot_be_guided():
  no_past = UNetConfig(image_size=32, channels=1, num_frames=2, num_frames_cond=0)
  check_guidance(1.0, no_past)
  with pytest.raises(ValueError, match="num_frames_cond=0"):
    check_guidance(2.0, no_past)


def test_config_check_names_the_field():
  config = smmnist.get_config("tiny")
  config.sampling.guidance = -1.0
  with pytest.raises(ConfigError, match="sampling.guidance"):
    validate_family(config)
  config.sampling.guidance, config.sampling.guidance_labels = 2.0, (500, 0)
  with pytest.raises(ConfigError, match="sampling.guidance_labels"):
    validate_family(config)


def test_networks_trained_without_a_masked_past_are_refused(tmp_path):
  assert trained_prob_mask_cond(str(DEMO_ONE_DIGIT)) == 0.0
  config = smmnist.get_config("quick1")
  config.sampling.guidance = 2.0
  checked = validate_family(config)
  with pytest.raises(ConfigError, match="prob_mask_cond=0.0"):
    load_for_sampling(config, checked, str(tmp_path), str(DEMO_ONE_DIGIT))
  with pytest.raises(ConfigError, match="this run"):  # a training run's own config says it
    load_for_sampling(config, checked, str(tmp_path), None)
  # A directory whose provenance says it learned the masked past loads.
  masked_dir = tmp_path / "masked"
  masked_dir.mkdir()
  meta = json.loads((DEMO_ONE_DIGIT / "model_config.json").read_text())
  meta["provenance"]["run_config"]["training"]["prob_mask_cond"] = 0.2
  (masked_dir / "model_config.json").write_text(json.dumps(meta))
  (masked_dir / "params").symlink_to(DEMO_ONE_DIGIT / "params")
  assert trained_prob_mask_cond(str(masked_dir)) == 0.2
  cfg, params, _, _ = load_for_sampling(config, checked, str(tmp_path), str(masked_dir))
  assert cfg.num_frames == 1 and params


def test_sample_mode_guides_a_past_masked_network(tmp_path, monkeypatch):
  """The tiny network, trained with the past masked (so guidance is allowed), sampled from random
  weights with and without guidance: same seed, same clips, different frames; the JSON says.
  (The initialisation's zero output layer ignores the past: every weight is perturbed.)"""
  from mcvd_jax.core.modes import run_mode
  from mcvd_jax.video_diffusion import sampling
  from mcvd_jax.video_diffusion.family import FAMILY as MCVD

  initial = sampling.init_params

  def perturbed_init(cfg, key):
    params = initial(cfg, key)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [
        leaf + 0.1 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)])

  monkeypatch.setattr(sampling, "init_params", perturbed_init)
  videos = {}
  for weight in (1.0, 3.0):
    config = smmnist.get_config("tiny")
    config.training.prob_mask_cond = 0.5
    config.sampling.task, config.sampling.batch_size = "prediction", 2
    config.sampling.num_frames, config.sampling.subsample = 2, 3
    config.sampling.guidance = weight
    workdir = tmp_path / str(weight)
    run_mode(MCVD, config, str(workdir), "sample")
    assert json.loads((workdir / "samples_prediction.json").read_text())["guidance"] == weight
    videos[weight] = np.load(workdir / "samples_prediction.npz")["videos"]
  assert videos[1.0].shape == videos[3.0].shape
  past = smmnist.get_config("tiny").model.num_frames_cond
  np.testing.assert_array_equal(videos[1.0][:, :past], videos[3.0][:, :past])  # the given past
  assert np.abs(videos[1.0][:, past:].astype(int) - videos[3.0][:, past:]).mean() > 1


def test_the_eval_report_names_the_guidance():
  from mcvd_jax.video_diffusion.evaluation import sampler_description
  config = smmnist.get_config("tiny")
  cfg = validate_family(config).model
  assert "guided" not in sampler_description(cfg, config.diffusion, config.sampling)
  config.sampling.guidance = 2.5
  assert "guided by the masked past (weight 2.5" in sampler_description(cfg, config.diffusion,
                                                                        config.sampling)
  config.sampling.guidance_labels = (0, 500)
  assert "(weight 2.5 at labels [0, 500)" in sampler_description(cfg, config.diffusion,
                                                               config.sampling)
