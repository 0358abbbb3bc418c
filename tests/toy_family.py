"""A toy family defined outside the package: a small MLP regressing y = sin(3x) + noise. It uses
nothing of MCVD, so the tests that run it through the shared loop, checkpoints, sample mode and
evaluation runner prove the core holds nothing of MCVD. It also uses every optional capability
of the core a flow or an IK regressor needs:
  - mutable model state: a running mean of the inputs (batch statistics, as BatchNorm keeps),
    updated by every training batch and used, frozen, at test time;
  - a data-dependent initialisation: the output bias starts at the first batch's mean target;
  - its config's optimizer: the shared optim section (cosine decay in `toy_config`), with
    `skip_grad_norm` available;
  - periodic evaluation: the test MSE every `training.eval_every` steps.

tests/toy_main.py runs main's command line with it registered (the multi-process and signal
tests). Its evaluation runs through the shared sharded map (metrics.sharded.map_batches), so that
the multi-process tests evaluate over the devices of several processes. For the signal tests, the
environment variable TOY_SIGNAL_AT=SIGNAL:PROCESS:PLACE:INDEX makes process PROCESS send itself
SIGNAL (e.g. SIGTERM, SIGKILL) when it makes the training batch of step INDEX (PLACE "train")
or computes the evaluation batch starting at item INDEX (PLACE "eval"): a real signal, at a
moment the test knows.
"""

from __future__ import annotations

import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mcvd_jax.core import paths
from mcvd_jax import registry
from mcvd_jax.core.config_base import optim_section, training_section
from mcvd_jax.core.config_checks import require
from mcvd_jax.core.eval_runner import EvalJob, Evaluation
from mcvd_jax.core.family import Family, TrainingSetup
from mcvd_jax.core.weights import load_weights
from mcvd_jax.metrics.sharded import map_batches

NAME = "toy"
TEST_POINTS = 10
STAT_RATE = 0.9  # the running mean's decay


def toy_config(**training) -> ml_collections.ConfigDict:
  """A complete config of the toy family: the shared sections and its own `toy` section."""
  config = ml_collections.ConfigDict()
  config.family, config.seed = NAME, 0
  # extra_bias: one more parameter, "b3" (0 at initialisation): a grown network
  config.toy = ml_collections.ConfigDict({"hidden": 16, "noise": 0.05, "eval_batch": 4,
                                          "extra_bias": False})
  config.optim = optim_section(lr=1e-2, warmup=2, schedule="cosine", min_lr_ratio=0.1)
  config.training = training_section(
      batch_size=8, num_steps=6, ema_rate=0.5, log_every=2, sample_every=3, sample_batch_size=1,
      eval_every=2, checkpoint_every=2)
  config.training.update(training)
  return config


def validate(config, device_count, process_count):
  """Returns the toy's checked config: its section's numbers."""
  del device_count, process_count
  require(config.toy.hidden >= 1, f"toy.hidden={config.toy.hidden} must be >= 1")
  require(config.toy.eval_batch >= 1, f"toy.eval_batch={config.toy.eval_batch} must be >= 1")
  return {"hidden": int(config.toy.hidden), "noise": float(config.toy.noise),
          "extra_bias": bool(config.toy.get("extra_bias", False))}


def init_params(hidden: int, key: jax.Array, extra_bias: bool = False) -> dict:
  k1, k2 = jax.random.split(key)
  params = {"w1": jax.random.normal(k1, (1, hidden)), "b1": jnp.zeros((hidden,)),
            "w2": jax.random.normal(k2, (hidden, 1)) / jnp.sqrt(hidden), "b2": jnp.zeros((1,))}
  return {**params, "b3": jnp.zeros((1,))} if extra_bias else params


def init_model_state(key: jax.Array) -> dict:
  del key
  return {"x_mean": jnp.zeros(())}


def data_init(params, model_state, batch, key):
  """The output bias at the first batch's mean target (a data-dependent init, as ActNorm)."""
  del key
  return {**params, "b2": jnp.mean(batch["y"], axis=0)}, model_state


def predict(params: dict, x: jax.Array, x_mean: jax.Array = 0.0) -> jax.Array:
  """x: [B, 1] in [-1, 1] -> [B, 1], x centred by `x_mean`."""
  out = jnp.tanh((x - x_mean) @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
  return out + params["b3"] if "b3" in params else out


def signal_self_at(place: str, index: int, process_index: int) -> None:
  """Sends this process the signal TOY_SIGNAL_AT names when it names this place (module doc)."""
  wanted = os.environ.get("TOY_SIGNAL_AT")
  if not wanted:
    return
  name, process, where, at = wanted.split(":")
  if (int(process), where, int(at)) == (process_index, place, index):
    os.kill(os.getpid(), getattr(signal, name))


def train_batch(noise: float, seed: int, step: int, batch_size: int, process_index: int,
                process_count: int) -> dict:
  """Global batch `step` as a pure function of (seed, step); this process's rows only."""
  signal_self_at("train", step, process_index)
  rng = np.random.default_rng([seed, step])
  x = rng.uniform(-1.0, 1.0, (batch_size, 1)).astype(np.float32)
  y = (np.sin(3.0 * x) + noise * rng.standard_normal(x.shape)).astype(np.float32)
  rows = slice(process_index * batch_size // process_count,
               (process_index + 1) * batch_size // process_count)
  return {"x": x[rows], "y": y[rows]}


def loss_fn(params, model_state, batch, key):
  """Training centres x by the batch's mean and moves the running mean towards it."""
  del key  # deterministic loss
  batch_mean = jnp.mean(batch["x"])
  error = jnp.square(predict(params, batch["x"], batch_mean) - batch["y"])[:, 0]
  positive = (batch["x"][:, 0] > 0).astype(jnp.float32)
  new_state = {"x_mean": STAT_RATE * model_state["x_mean"] + (1 - STAT_RATE) * batch_mean}
  metrics = {"sq_error_sum/positive_x": jnp.sum(error * positive),
             "count/positive_x": jnp.sum(positive), "max_error": jnp.max(error)}
  return jnp.mean(error), (metrics, new_state)


def test_points() -> np.ndarray:
  return np.linspace(-1.0, 1.0, TEST_POINTS, dtype=np.float32)[:, None]


def test_mse(params, model_state) -> float:
  x = test_points()
  return float(np.mean((predict(params, x, model_state["x_mean"]) - np.sin(3.0 * x)) ** 2))


def build(config, checked) -> TrainingSetup:
  hidden, noise, extra_bias = checked["hidden"], checked["noise"], checked["extra_bias"]

  def write_media(step, params, model_state, workdir, key):
    del key
    fit = np.asarray(predict(params, jnp.asarray(test_points()), model_state["x_mean"]))
    path = os.path.join(workdir, "media", f"fit_{step}.npy")
    paths.makedirs(os.path.dirname(path))
    paths.save_npy(path, fit)
    image = np.clip((fit + 1.5) / 3.0, 0.0, 1.0).reshape(1, 1, TEST_POINTS, 1)
    return [path], {"fit": image}

  def evaluate(step, state, key):
    del step, key
    return {"test_mse": test_mse(state.ema_params, state.model_state)}

  return TrainingSetup(
      description=f"toy regression, MLP with {hidden} hidden units",
      init_params=lambda key: init_params(hidden, key, extra_bias),
      loss_fn=loss_fn,
      train_batch=lambda *args: train_batch(noise, *args),
      meta={"data_seed": int(config.seed), "hidden": hidden},
      write_media=write_media, evaluate=evaluate, init_model_state=init_model_state,
      data_init=data_init)


def _weights(config, checked, workdir, checkpoint):
  return load_weights(workdir, checkpoint, lambda key: init_params(checked["hidden"], key,
                                                                  checked["extra_bias"]),
                      config.seed, init_model_state=init_model_state, what="toy checkpoints")


def sq_error(consts, x):
  """[B, 1] points -> [B] squared errors of the fit (the evaluation's per-item score)."""
  params, x_mean = consts
  return jnp.square(predict(params, x, x_mean) - jnp.sin(3.0 * x))[:, 0]


def sample(config, checked, workdir, checkpoint):
  weights = _weights(config, checked, workdir, checkpoint)
  path = os.path.join(workdir, "toy_predictions.npy")
  paths.save_npy(path, np.asarray(predict(weights.params, jnp.asarray(test_points()),
                                          weights.model_state["x_mean"])))
  return path


def evaluation(config, checked, workdir, checkpoint) -> Evaluation:
  weights = _weights(config, checked, workdir, checkpoint)
  x = test_points()

  def compute_batch(first, count):
    signal_self_at("eval", first, jax.process_index())
    return {"sq_error": map_batches(sq_error, (weights.params, weights.model_state["x_mean"]),
                                    [x[first:first + count]], batch_size=count)}

  job = EvalJob(name="toy_mse", fingerprint={"step": weights.step, "hidden": checked["hidden"]},
                num_items=TEST_POINTS, batch_size=config.toy.eval_batch,
                expected_keys=frozenset({"sq_error"}), compute_batch=compute_batch,
                summarize=lambda arrays: {"mse": float(np.mean(arrays["sq_error"]))},
                markdown=lambda entry: f"## toy_mse\n\nMSE {entry['results']['mse']:.6f}\n")
  return Evaluation(source=f"toy step {weights.step}", jobs=(job,),
                    summary={"test_points": TEST_POINTS})


FAMILY = Family(name=NAME, description="toy MLP regression", validate=validate, build=build,
                sample=sample, evaluation=evaluation)


def register() -> None:
  registry.register(NAME, FAMILY)

