"""The EMA warm-up of core.train_step (`training.ema_warmup`) and the choice of weights that
sample and eval modes load (`sampling.weights = ema | raw`, core.weights.load_weights)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import toy_family
from configs import mnist, smmnist
from mcvd_jax import registry
from mcvd_jax.core import loop
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.train_step import create_train_state, make_train_step
from mcvd_jax.core.weights import load_weights
from mcvd_jax.image_diffusion import config as image_config
from mcvd_jax.video_diffusion import config as video_config

TARGETS = np.array([1.0, -2.0, 3.0, 0.5, 4.0], np.float32)  # update n's batch: one target each


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
  monkeypatch.setitem(registry.FAMILIES, toy_family.NAME, toy_family.FAMILY)


def _scalar_loss(params, batch, key):
  """(w - batch)^2: the gradient moves w towards the batch's targets."""
  del key
  return jnp.mean(jnp.square(params["w"] - batch)), {}


def _run_one_update_at_a_time(ema_rate, ema_warmup, dtype=jnp.float32):
  """The 5 updates of TARGETS, one call each: (the states after each update, the ema_rate
  metric of each, the initial state)."""
  tx = optax.sgd(0.1)
  state = create_train_state({"w": jnp.asarray(0.0, dtype)}, tx)
  step = jax.jit(make_train_step(_scalar_loss, tx, ema_rate=ema_rate,
                                 train_key=jax.random.key(0), ema_warmup=ema_warmup))
  initial, states, rates = state, [], []
  for target in TARGETS:
    state, metrics = step(state, jnp.full((1, 2), target, dtype))
    states.append(state)
    rates.append(float(metrics["ema_rate"][0]))
  return states, rates, initial


def _hand_ema(initial, states, rates):
  """The EMA recursion in float32 numpy over the raw parameters the updates produced."""
  ema = np.float32(initial.ema_params["w"])
  for state, rate in zip(states, rates):
    rate = np.float32(rate)
    ema = rate * ema + (np.float32(1.0) - rate) * np.float32(state.params["w"])
  return ema


@pytest.mark.parametrize("ema_rate", [0.999, 0.15])
def test_ema_warmup_rates_and_average(ema_rate):
  states, rates, initial = _run_one_update_at_a_time(ema_rate, ema_warmup=True)
  expected = [np.float32(min(ema_rate, (1 + n) / (10 + n))) for n in range(5)]
  assert rates == [float(r) for r in expected]
  if ema_rate == 0.15:  # the warm-up's rate passes the configured one after the first update
    assert rates[0] == pytest.approx(0.1) and rates[1:] == [float(np.float32(0.15))] * 4
  np.testing.assert_allclose(np.float32(states[-1].ema_params["w"]),
                             _hand_ema(initial, states, expected), rtol=1e-6)

  # The same five updates in one scan: the same rates and the same average.
  tx = optax.sgd(0.1)
  steps = jax.jit(make_train_step(_scalar_loss, tx, ema_rate=ema_rate,
                                  train_key=jax.random.key(0), ema_warmup=True))
  state, metrics = steps(initial, jnp.asarray(np.repeat(TARGETS[:, None], 2, axis=1)))
  np.testing.assert_array_equal(np.asarray(metrics["ema_rate"]), np.asarray(expected))
  np.testing.assert_allclose(np.float32(state.ema_params["w"]),
                             np.float32(states[-1].ema_params["w"]), rtol=1e-6)


@pytest.mark.parametrize("ema_rate", [0.999, 0.15])
def test_without_warmup_the_rate_is_constant_and_the_formula_unchanged(ema_rate):
  states, rates, initial = _run_one_update_at_a_time(ema_rate, ema_warmup=False)
  assert rates == [float(np.float32(ema_rate))] * 5
  # The historical expression with a Python float rate, compiled as XLA compiles it (numpy's
  # rounding can differ from XLA's fused arithmetic by an ulp).
  old_formula = jax.jit(lambda e, p: ema_rate * e + (1.0 - ema_rate) * p)
  ema = initial.ema_params["w"]
  for state in states:
    ema = old_formula(ema, state.params["w"])
    assert np.float32(state.ema_params["w"]) == np.float32(ema)


def test_ema_warmup_keeps_low_precision_parameters_in_their_dtype():
  states, _, _ = _run_one_update_at_a_time(0.999, ema_warmup=True, dtype=jnp.bfloat16)
  assert states[-1].ema_params["w"].dtype == jnp.bfloat16


def test_window_summary_reports_the_last_ema_rate():
  metrics = [{"loss": np.array([1.0, 3.0]), "grad_norm": np.array([2.0, 2.0]),
              "lr": np.array([0.1, 0.2]), "ema_rate": np.array([0.1, 0.18]),
              "finite": np.array([1.0, 1.0])}]
  summary = loop.summarize_window(metrics)
  assert summary["ema_rate"] == pytest.approx(0.18) and summary["loss"] == 2.0
  del metrics[0]["ema_rate"]  # metrics from before the field: no ema_rate, nothing fails
  assert "ema_rate" not in loop.summarize_window(metrics)


def _load(workdir, weights, checkpoint=None):
  return load_weights(str(workdir), checkpoint, lambda key: toy_family.init_params(16, key),
                      seed=0, init_model_state=toy_family.init_model_state, weights=weights)


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sampling_weights_raw_loads_the_raw_parameters(tmp_path):
  config = toy_family.toy_config()  # ema_rate 0.5: the EMA and the raw parameters differ
  state = loop.train_and_evaluate(config, str(tmp_path), toy_family.FAMILY)
  assert not np.array_equal(np.asarray(state.params["w1"]), np.asarray(state.ema_params["w1"]))

  raw, ema = _load(tmp_path, "raw"), _load(tmp_path, "ema")
  _assert_trees_equal(raw.params, state.params)
  _assert_trees_equal(ema.params, state.ema_params)
  _assert_trees_equal(raw.model_state, state.model_state)
  _assert_trees_equal(ema.model_state, state.model_state)
  assert raw.step == ema.step == 6
  assert raw.source == f"raw (non-EMA) parameters of step 6 in {tmp_path}"
  assert ema.source == f"EMA parameters of step 6 in {tmp_path}"
  _assert_trees_equal(load_weights(str(tmp_path), None,
                                   lambda key: toy_family.init_params(16, key), 0,
                                   init_model_state=toy_family.init_model_state).params,
                      state.ema_params)  # the default is the EMA

  # An older checkpoint named by --checkpoint: its own raw parameters.
  older = _load(tmp_path, "raw", checkpoint=str(tmp_path / "checkpoints" / "4"))
  assert older.step == 4 and older.source.startswith("raw (non-EMA) parameters of step 4")
  assert not np.array_equal(np.asarray(older.params["w1"]), np.asarray(state.params["w1"]))

  with pytest.raises(ValueError, match=r"sampling\.weights='bogus'.*'ema', 'raw'"):
    _load(tmp_path, "bogus")
  with pytest.raises(ValueError, match=r"sampling\.weights='bogus'"):
    _load(tmp_path / "empty", "bogus")  # also where random weights would be the fallback


def test_sampling_weights_is_validated_by_both_families():
  config = smmnist.get_config("tiny")
  assert config.sampling.weights == "ema"
  config.sampling.weights = "raw"
  video_config.validate_family(config)
  config.sampling.weights = "bogus"
  with pytest.raises(ConfigError, match=r"sampling\.weights='bogus' is unknown"):
    video_config.validate_family(config)
  del config.sampling["weights"]  # a config from before the field: the EMA parameters
  video_config.validate_family(config)

  config = mnist.get_config("tiny")
  assert config.sampling.weights == "ema"  # inherited from configs/default.py's sampling section
  config.sampling.weights = "bogus"
  with pytest.raises(ConfigError, match=r"sampling\.weights='bogus' is unknown"):
    image_config.validate_family(config)
  del config.sampling["weights"]
  image_config.validate_family(config)
