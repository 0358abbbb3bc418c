"""training.init_from (core.warm_start): a new run starts from trained weights with a fresh
optimizer at step 0, for any family (the toy's training checkpoints) and for MCVD's model
directories (the shipped demo model); a run that already has checkpoints resumes from them; a
path that is missing, empty or holds another network is a ConfigError naming the field."""

import jax
import numpy as np
import pytest

import toy_family
from configs import smmnist
from mcvd_jax import registry
from mcvd_jax.convert.export import load_converted
from mcvd_jax.core import loop
from mcvd_jax.core.checkpointing import Checkpointer
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.modes import check_config
from mcvd_jax.video_diffusion.export import pretrained_params
from mcvd_jax.video_diffusion.family import FAMILY as MCVD
from test_demo_model import DEMO, DEMO_ONE_DIGIT


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
  monkeypatch.setitem(registry.FAMILIES, toy_family.NAME, toy_family.FAMILY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 6-step toy run: (workdir, final state)."""
  workdir = tmp_path_factory.mktemp("source")
  state = loop.train_and_evaluate(toy_family.toy_config(), str(workdir), toy_family.FAMILY)
  return workdir, state


def _first_state(config, workdir, family=toy_family.FAMILY):
  trainer = loop.Trainer(config, str(workdir), family)
  checkpointer = Checkpointer(str(workdir))
  try:
    return loop._restore_or_init(trainer, checkpointer), trainer
  finally:
    checkpointer.close()


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("where", ["workdir", "step"])
def test_a_warm_start_takes_the_ema_weights_and_a_fresh_optimizer(trained, tmp_path, where):
  source, done = trained
  path = source if where == "workdir" else source / "checkpoints" / "4"
  expected = done.ema_params
  if where == "step":
    checkpointer = Checkpointer(str(source))
    expected = checkpointer.restore_ema(4, done.ema_params)
    checkpointer.close()
  state, trainer = _first_state(toy_family.toy_config(init_from=str(path)), tmp_path)
  assert int(state.step) == 0
  _assert_trees_equal(state.params, expected)
  _assert_trees_equal(state.ema_params, expected)
  if where == "workdir":  # the model state of the same checkpoint (a running mean here)
    _assert_trees_equal(state.model_state, done.model_state)
  # The optimizer starts afresh: Adam's moments are those of a new run, not the source's.
  _assert_trees_equal(state.opt_state, trainer.init_state().opt_state)
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(state.opt_state), jax.tree.leaves(done.opt_state)))


def test_a_warm_started_run_trains_and_then_resumes_its_own_checkpoints(trained, tmp_path):
  source, done = trained
  config = toy_family.toy_config(init_from=str(source), num_steps=4)
  state = loop.train_and_evaluate(config, str(tmp_path), toy_family.FAMILY)
  assert int(state.step) == 4
  # Trained from the source's fit, the EMA fits sin(3x) better than a fresh 4-step run does.
  fresh = loop.train_and_evaluate(toy_family.toy_config(num_steps=4), str(tmp_path / "fresh"),
                                  toy_family.FAMILY)
  mse = lambda s: toy_family.test_mse(s.ema_params, s.model_state)  # noqa: E731
  assert mse(state) < mse(fresh)
  # Run again in the same workdir, the run's own step-4 checkpoint wins over init_from.
  again, _ = _first_state(config, tmp_path)
  assert int(again.step) == 4
  _assert_trees_equal(again.params, state.params)


def test_a_warm_start_from_a_missing_empty_or_other_network_path_names_the_field(trained,
                                                                                 tmp_path):
  source, _ = trained
  with pytest.raises(ConfigError, match=r"training.init_from=.*does not exist"):
    _first_state(toy_family.toy_config(init_from=str(tmp_path / "nowhere")), tmp_path / "a")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ConfigError, match=r"training.init_from=.*holds no training checkpoints"):
    _first_state(toy_family.toy_config(init_from=str(tmp_path / "empty")), tmp_path / "b")
  other = toy_family.toy_config(init_from=str(source))
  other.toy.hidden = 8
  with pytest.raises(ConfigError, match=r"training.init_from=.*saved \(1, 16\), model \(1, 8\)"):
    _first_state(other, tmp_path / "c")


def test_a_grown_network_takes_the_weights_it_shares_and_initialises_the_new_layers(trained,
                                                                                    tmp_path):
  source, done = trained
  grown = toy_family.toy_config(init_from=str(source))
  grown.toy.extra_bias = True  # one parameter more than the source's network
  with pytest.raises(ConfigError, match=r"training.init_from=.*missing \(1\): \['b3'\]"):
    _first_state(grown, tmp_path / "strict")
  grown.training.init_new_layers = True
  state, trainer = _first_state(grown, tmp_path / "grown")
  fresh = trainer.init_state()
  for part in (state.params, state.ema_params):
    _assert_trees_equal({k: v for k, v in part.items() if k != "b3"}, done.ema_params)
    np.testing.assert_array_equal(part["b3"], fresh.params["b3"])
  _assert_trees_equal(state.model_state, done.model_state)
  # b3 starts at 0: the grown network computes what the source's did
  assert toy_family.test_mse(state.ema_params, state.model_state) == pytest.approx(
      toy_family.test_mse(done.ema_params, done.model_state), rel=1e-6)
  # a network that reshapes or drops a parameter is still an error
  other = toy_family.toy_config(init_from=str(source), init_new_layers=True)
  other.toy.hidden = 8
  with pytest.raises(ConfigError, match=r"saved \(1, 16\), model \(1, 8\)"):
    _first_state(other, tmp_path / "reshaped")
  grown.training.num_steps = 3
  loop.train_and_evaluate(grown, str(tmp_path / "trained_grown"), toy_family.FAMILY)
  shrunk = toy_family.toy_config(init_from=str(tmp_path / "trained_grown"), init_new_layers=True)
  with pytest.raises(ConfigError, match=r"unexpected \(1\): \['b3'\]"):
    _first_state(shrunk, tmp_path / "shrunk")


def _mcvd_first_state(config, workdir):
  return _first_state(config, workdir, MCVD)


def _one_digit_demo_config():
  """configs/smmnist.py:quick1 with the one-digit demo's network (one frame per block)."""
  config = smmnist.get_config("quick1")
  config.model.num_frames = 1
  return config


def test_mcvd_warm_starts_from_a_model_directory_with_the_same_network():
  config = _one_digit_demo_config()
  checked = check_config(config, MCVD)
  params = pretrained_params(str(DEMO_ONE_DIGIT), checked.model, config.diffusion)
  _assert_trees_equal(params, load_converted(str(DEMO_ONE_DIGIT))[1])
  assert pretrained_params(str(DEMO_ONE_DIGIT / "params"), checked.model, config.diffusion) is None
  config.model.ngf, config.model.num_res_blocks = 16, 2
  checked = check_config(config, MCVD)
  with pytest.raises(ConfigError, match=r"model.ngf: the weights' 32, the config's 16; "
                                        r"model.num_res_blocks: the weights' 1, the config's 2.*"
                                        r"init_new_layers=True"):
    pretrained_params(str(DEMO), checked.model, config.diffusion)
  # with new layers allowed the fields may differ (the core then compares the parameters)
  assert pretrained_params(str(DEMO), checked.model, config.diffusion, new_layers=True) is not None


def test_mcvd_training_starts_from_the_demo_model(tmp_path):
  config = _one_digit_demo_config()
  config.training.init_from = str(DEMO_ONE_DIGIT)
  state, _ = _mcvd_first_state(config, tmp_path)
  demo = load_converted(str(DEMO_ONE_DIGIT))[1]
  _assert_trees_equal(state.params, demo)
  _assert_trees_equal(state.ema_params, demo)


def test_mcvd_grows_the_demo_model_with_attention_at_16(tmp_path):
  config = _one_digit_demo_config()
  config.model.attn_resolutions = (8, 16)
  config.training.init_from = str(DEMO_ONE_DIGIT)
  with pytest.raises(ConfigError, match=r"model.attn_resolutions: the weights' \(8,\)"):
    _mcvd_first_state(config, tmp_path / "a")
  config.training.init_new_layers = True
  state, trainer = _mcvd_first_state(config, tmp_path / "b")
  demo = load_converted(str(DEMO_ONE_DIGIT))[1]
  fresh = trainer.init_state().params
  new = {"down_1_attn_0", "up_1_attn"}  # the attention blocks at 16 x 16
  assert set(state.params) == set(demo) | new
  _assert_trees_equal({k: v for k, v in state.ema_params.items() if k in demo}, demo)
  _assert_trees_equal({k: v for k, v in state.params.items() if k in new},
                      {k: fresh[k] for k in new})


def test_a_cut_network_predicts_what_the_full_one_does_when_the_dropped_frames_are_zero():
  """first_frames_of keeps the kernels of the first noisy frames, every past frame and the first
  outputs: with the dropped noisy frames zero, the full network's first frames are the cut one's."""
  from mcvd_jax.models import UNetConfig, init_params
  from mcvd_jax.models.unet import UNet
  from mcvd_jax.video_diffusion.export import first_frames_of
  config = smmnist.get_config("tiny")
  config.model.num_frames, config.model.num_frames_cond = 3, 2
  full_cfg = UNetConfig.from_mapping(config.model)
  config.model.num_frames = 1
  cut_cfg = UNetConfig.from_mapping(config.model)
  full = init_params(full_cfg, jax.random.key(0))
  # conv_out starts at zero: give it weights so the outputs say something
  full["conv_out"]["kernel"] = jax.random.normal(jax.random.key(1), full["conv_out"]["kernel"].shape)
  cut = first_frames_of(jax.device_get(full), 3, 1, 1)
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), cut,
               jax.eval_shape(lambda: init_params(cut_cfg, jax.random.key(0))))
  x1 = jax.random.normal(jax.random.key(2), (2, 32, 32, 1))
  cond = jax.random.normal(jax.random.key(3), (2, 32, 32, 2))
  labels = jax.numpy.array([0.3, 0.7])
  zeros = jax.numpy.zeros((2, 32, 32, 2))
  want = UNet(full_cfg).apply({"params": full}, jax.numpy.concatenate([x1, zeros], -1), labels,
                              cond)[..., :1]
  got = UNet(cut_cfg).apply({"params": cut}, x1, labels, cond)
  assert float(jax.numpy.abs(want).max()) > 1e-3
  np.testing.assert_allclose(got, want, atol=1e-5)
  # a nonzero dropped frame changes the full network's output: the cut is not the identity
  other = UNet(full_cfg).apply({"params": full}, jax.numpy.concatenate([x1, -cond], -1), labels,
                               cond)[..., :1]
  assert float(jax.numpy.abs(other - want).max()) > 1e-4


def test_mcvd_warm_starts_a_network_predicting_fewer_frames_from_the_demo(tmp_path):
  """The two-digit demo's 5-frame network cut to one frame (the one-digit demo began as the
  previous one-digit demo cut the same way; that directory now holds the cut network)."""
  config = _one_digit_demo_config()
  checked = check_config(config, MCVD)
  with pytest.raises(ConfigError, match=r"model.num_frames: the weights' 5, the config's 1.*"
                                        r"init_fewer_frames=True"):
    pretrained_params(str(DEMO), checked.model, config.diffusion)
  demo = load_converted(str(DEMO))[1]
  config.training.init_from, config.training.init_fewer_frames = str(DEMO), True
  state, _ = _mcvd_first_state(config, tmp_path / "cut")
  np.testing.assert_array_equal(state.ema_params["conv_out"]["kernel"],
                                demo["conv_out"]["kernel"][..., :1])
  np.testing.assert_array_equal(state.params["conv_in"]["kernel"][:, :, 1:],
                                demo["conv_in"]["kernel"][:, :, 5:])
  _assert_trees_equal({k: v for k, v in state.params.items() if k.startswith("down_")},
                      {k: v for k, v in demo.items() if k.startswith("down_")})
  # the flag needs fewer frames than the weights' and a model directory to cut
  config.model.num_frames = 5
  with pytest.raises(ConfigError, match=r"init_fewer_frames=True but model.num_frames=5"):
    _mcvd_first_state(config, tmp_path / "same")
  with pytest.raises(ConfigError, match=r"init_fewer_frames=True needs a model directory"):
    pretrained_params(str(tmp_path / "cut"), checked.model, config.diffusion, fewer_frames=True)
