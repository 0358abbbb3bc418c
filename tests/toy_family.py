"""A toy family defined outside the package: a small MLP regressing y = sin(3x) + noise. It uses
nothing of MCVD, so the tests that run it through the shared loop, checkpoints, sample mode and
evaluation runner prove the core holds nothing of MCVD.

Run as a script it registers itself and trains (the resume-after-SIGKILL test starts it so):
  python tests/toy_family.py WORKDIR NUM_STEPS
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mcvd_jax import registry
from mcvd_jax.core.checkpointing import CheckpointNotFoundError, load_ema_params
from mcvd_jax.core.config_checks import require
from mcvd_jax.core.eval_runner import EvalJob, Evaluation
from mcvd_jax.core.family import Family, TrainingSetup

NAME = "toy"
TEST_POINTS = 10


def toy_config(**training) -> ml_collections.ConfigDict:
  """A complete config of the toy family: the shared sections and its own `toy` section."""
  config = ml_collections.ConfigDict()
  config.family, config.seed = NAME, 0
  config.toy = ml_collections.ConfigDict({"hidden": 16, "noise": 0.05, "eval_batch": 4})
  config.optim = ml_collections.ConfigDict({
      "optimizer": "adam", "lr": 1e-2, "warmup": 2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
      "weight_decay": 0.0, "grad_clip": 1.0})
  config.training = ml_collections.ConfigDict({
      "batch_size": 8, "num_steps": 6, "steps_per_dispatch": 1, "ema_rate": 0.5,
      "log_every": 2, "sample_every": 3, "sample_batch_size": 1, "checkpoint_every": 2,
      "keep_checkpoints": 3, "nonfinite_loss": "stop", "profile": False})
  config.training.update(training)
  return config


def validate(config, device_count, process_count):
  del device_count, process_count
  require(config.toy.hidden >= 1, f"toy.hidden={config.toy.hidden} must be >= 1")
  require(config.toy.eval_batch >= 1, f"toy.eval_batch={config.toy.eval_batch} must be >= 1")


def init_params(hidden: int, key: jax.Array) -> dict:
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (1, hidden)), "b1": jnp.zeros((hidden,)),
          "w2": jax.random.normal(k2, (hidden, 1)) / jnp.sqrt(hidden), "b2": jnp.zeros((1,))}


def predict(params: dict, x: jax.Array) -> jax.Array:
  """x: [B, 1] in [-1, 1] -> [B, 1]."""
  return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def train_batch(noise: float, seed: int, step: int, batch_size: int, process_index: int,
                process_count: int) -> dict:
  """Global batch `step` as a pure function of (seed, step); this process's rows only."""
  rng = np.random.default_rng([seed, step])
  x = rng.uniform(-1.0, 1.0, (batch_size, 1)).astype(np.float32)
  y = (np.sin(3.0 * x) + noise * rng.standard_normal(x.shape)).astype(np.float32)
  rows = slice(process_index * batch_size // process_count,
               (process_index + 1) * batch_size // process_count)
  return {"x": x[rows], "y": y[rows]}


def loss_fn(params, batch, key):
  del key  # deterministic loss
  error = jnp.square(predict(params, batch["x"]) - batch["y"])[:, 0]
  positive = (batch["x"][:, 0] > 0).astype(jnp.float32)
  return jnp.mean(error), {"sq_error_sum/positive_x": jnp.sum(error * positive),
                           "count/positive_x": jnp.sum(positive),
                           "max_error": jnp.max(error)}


def test_points() -> np.ndarray:
  return np.linspace(-1.0, 1.0, TEST_POINTS, dtype=np.float32)[:, None]


def build(config) -> TrainingSetup:
  hidden, noise = config.toy.hidden, config.toy.noise

  def write_media(step, params, workdir, key):
    del key
    fit = np.asarray(predict(params, jnp.asarray(test_points())))
    path = os.path.join(workdir, "media", f"fit_{step}.npy")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, fit)
    image = np.clip((fit + 1.5) / 3.0, 0.0, 1.0).reshape(1, 1, TEST_POINTS, 1)
    return [path], {"fit": image}

  return TrainingSetup(
      description=f"toy regression, MLP with {hidden} hidden units",
      init_params=lambda key: init_params(hidden, key),
      loss_fn=loss_fn,
      train_batch=lambda *args: train_batch(noise, *args),
      meta={"data_seed": int(config.seed), "hidden": hidden},
      write_media=write_media)


def _ema_params(config, workdir, checkpoint):
  loaded = load_ema_params(checkpoint or workdir, lambda key: init_params(config.toy.hidden, key))
  if loaded is None:
    raise CheckpointNotFoundError(f"no toy checkpoint in {checkpoint or workdir}")
  return loaded


def sample(config, workdir, checkpoint):
  params, _ = _ema_params(config, workdir, checkpoint)
  path = os.path.join(workdir, "toy_predictions.npy")
  np.save(path, np.asarray(predict(params, jnp.asarray(test_points()))))
  return path


def evaluation(config, workdir, checkpoint) -> Evaluation:
  params, step = _ema_params(config, workdir, checkpoint)
  x = test_points()

  def compute_batch(first, count):
    xs = x[first:first + count]
    return {"sq_error": np.asarray(jnp.square(predict(params, xs) - np.sin(3.0 * xs)))[:, 0]}

  job = EvalJob(name="toy_mse", fingerprint={"step": step, "hidden": config.toy.hidden},
                num_items=TEST_POINTS, batch_size=config.toy.eval_batch,
                expected_keys=frozenset({"sq_error"}), compute_batch=compute_batch,
                summarize=lambda arrays: {"mse": float(np.mean(arrays["sq_error"]))},
                markdown=lambda entry: f"## toy_mse\n\nMSE {entry['results']['mse']:.6f}\n")
  return Evaluation(source=f"toy step {step}", jobs=(job,), summary={"test_points": TEST_POINTS})


FAMILY = Family(name=NAME, description="toy MLP regression", validate=validate, build=build,
                sample=sample, evaluation=evaluation)


def register() -> None:
  registry.register(NAME, FAMILY)


if __name__ == "__main__":
  from mcvd_jax.core.loop import train_and_evaluate
  register()
  train_and_evaluate(toy_config(num_steps=int(sys.argv[2]), checkpoint_every=1, sample_every=0),
                     sys.argv[1])
