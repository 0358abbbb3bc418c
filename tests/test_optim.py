"""core.optim: the optimizer and learning-rate schedule built from the `optim` section.

Fast: tiny pytrees, no network. Schedules are checked against values worked out by hand, adam and
adamw against train_step's optimizer (same numbers, same optimizer-state tree), sgd against a
hand-written momentum update.
"""

from __future__ import annotations

import math
from typing import Any
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mcvd_jax.core import train_step
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.config_base import OPTIM_DEFAULTS, optim_section
from mcvd_jax.core.optim import learning_rate_schedule, make_optimizer, optim_field, validate_optim


# The optimizer and schedule as train_step built them before core.optim (commit 19a5978), kept
# verbatim as the reference the new module must reproduce exactly.
class train_step_before:  # noqa: N801  (a namespace standing in for the old module)
  @staticmethod
  def learning_rate_schedule(lr: float, warmup: int) -> optax.Schedule:
    """lr * min(k / warmup, 1) at update k (0-based), the reference's `warmup_lr`."""
    if warmup <= 0:
      return optax.constant_schedule(lr)
    return optax.linear_schedule(0.0, lr, warmup)

  @staticmethod
  def make_optimizer(optim: Any) -> optax.GradientTransformation:
    """optim: the config's `optim` section. Adam as torch's: gradients clipped to a global norm
    first, then (adam) weight decay added to the gradient, or (adamw) decoupled."""
    if optim.optimizer not in ("adam", "adamw"):
      raise ValueError(f"optim.optimizer={optim.optimizer!r} is unknown; use adam or adamw")
    schedule = train_step_before.learning_rate_schedule(optim.lr, optim.warmup)
    parts = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
    if optim.optimizer == "adam":
      if optim.weight_decay:
        parts.append(optax.add_decayed_weights(optim.weight_decay))
      parts.append(optax.adam(schedule, b1=optim.beta1, b2=optim.beta2, eps=optim.eps))
    else:
      parts.append(optax.adamw(schedule, b1=optim.beta1, b2=optim.beta2, eps=optim.eps,
                               weight_decay=optim.weight_decay))
    return optax.chain(*parts)


# The section as config files wrote it before schedule, decay_steps, min_lr_ratio, momentum,
# nesterov and skip_grad_norm existed.
OLD_FIELDS = dict(optimizer="adam", lr=2e-4, warmup=1000, beta1=0.9, beta2=0.999, eps=1e-8,
                  weight_decay=0.0, grad_clip=1.0)
NEW_FIELDS = ("schedule", "decay_steps", "min_lr_ratio", "momentum", "nesterov", "skip_grad_norm")


def rates(schedule: optax.Schedule, steps) -> np.ndarray:
  """The schedule at each step (int32, as the train step's counter), float64."""
  steps = jnp.asarray(steps, jnp.int32)
  return np.broadcast_to(np.asarray(schedule(steps), np.float64), steps.shape)


def rate(schedule: optax.Schedule, step: int) -> float:
  return float(rates(schedule, [step])[0])


def small_params() -> dict:
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
          "inner": {"s": jnp.asarray(rng.normal(), jnp.float32)}}


def random_grads(params: dict, count: int, seed: int = 1) -> list[dict]:
  """Gradients of norm ~4: above grad_clip 1.0, so clipping takes part."""
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
          for _ in range(count)]


def run_updates(tx: optax.GradientTransformation, params: dict, grads: list[dict]):
  """params and opt_state after one update per gradient."""
  opt_state = tx.init(params)
  for g in grads:
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
  return params, opt_state


def assert_trees_equal(a, b) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- the section -------------------------------------------------------------------------------


def test_defaults_and_section():
  assert OPTIM_DEFAULTS == dict(
      optimizer="adam", lr=2e-4, warmup=1000, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
      grad_clip=1.0, schedule="constant", decay_steps=0, min_lr_ratio=0.0, momentum=0.9,
      nesterov=False, skip_grad_norm=0.0)
  section = optim_section(lr=1e-4, schedule="cosine")
  assert isinstance(section, ml_collections.ConfigDict)
  assert section.to_dict() == {**OPTIM_DEFAULTS, "lr": 1e-4, "schedule": "cosine"}


def test_section_rejects_unknown_overrides():
  with pytest.raises(ValueError, match="sheduel"):
    optim_section(sheduel="cosine")


def test_default_config_matches_defaults():
  """configs/default.py's section has the defaults' values for every field it sets, and passes."""
  from configs import default
  config = default.get_config()
  for name in config.optim:
    assert config.optim[name] == OPTIM_DEFAULTS[name], name
  validate_optim(config.optim, config.training.num_steps)


def test_missing_new_fields_are_their_defaults():
  old = ml_collections.ConfigDict(OLD_FIELDS)
  for name in NEW_FIELDS:
    assert name not in old
    assert optim_field(old, name) == OPTIM_DEFAULTS[name]
  assert optim_field(optim_section(momentum=0.5), "momentum") == 0.5
  with pytest.raises(ValueError, match="momentun"):
    optim_field(old, "momentun")
  validate_optim(old, num_steps=10)  # no error: the new fields are their (valid) defaults
  assert rates(learning_rate_schedule(old), [0, 500, 1000, 5000]).tolist() == pytest.approx(
      [0.0, 1e-4, 2e-4, 2e-4])


def test_old_section_gives_the_same_optimizer_as_a_full_one():
  params, grads = small_params(), random_grads(small_params(), 3)
  old = ml_collections.ConfigDict({**OLD_FIELDS, "warmup": 1})
  assert_trees_equal(run_updates(make_optimizer(old), params, grads),
                     run_updates(make_optimizer(optim_section(warmup=1)), params, grads))


# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lr,warmup", [(2e-4, 1000), (1e-3, 10), (3e-4, 1), (1e-4, 0)])
def test_constant_schedule_is_todays(lr, warmup):
  steps = np.arange(3 * max(warmup, 4) + 1)
  ours = rates(learning_rate_schedule(optim_section(lr=lr, warmup=warmup)), steps)
  today = rates(train_step_before.learning_rate_schedule(lr, warmup), steps)
  np.testing.assert_array_equal(ours, today)


def test_warmup_is_linear_from_zero():
  schedule = learning_rate_schedule(optim_section(lr=1e-3, warmup=10))
  assert rate(schedule, 0) == 0.0
  assert rate(schedule, 5) == pytest.approx(5e-4, rel=1e-6)  # lr * k / warmup
  assert rate(schedule, 9) == pytest.approx(9e-4, rel=1e-6)
  assert rate(schedule, 10) == pytest.approx(1e-3, rel=1e-6)
  assert rate(schedule, 10_000) == pytest.approx(1e-3, rel=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_keeps_the_warmup(kind):
  schedule = learning_rate_schedule(
      optim_section(lr=1e-3, warmup=10, schedule=kind, decay_steps=100, min_lr_ratio=0.1))
  np.testing.assert_allclose(rates(schedule, range(11)), 1e-3 * np.arange(11) / 10, rtol=1e-6)


def test_cosine_schedule_by_hand():
  lr, r = 1e-3, 0.1
  schedule = learning_rate_schedule(
      optim_section(lr=lr, warmup=10, schedule="cosine", decay_steps=100, min_lr_ratio=r))
  assert rate(schedule, 10) == pytest.approx(lr, rel=1e-6)                 # decay starts at lr
  assert rate(schedule, 60) == pytest.approx((lr + lr * r) / 2, rel=1e-6)  # mid-point
  quarter = lr * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi / 4)))
  assert rate(schedule, 35) == pytest.approx(quarter, rel=1e-6)
  assert rate(schedule, 110) == pytest.approx(lr * r, rel=1e-6)            # the end
  assert rate(schedule, 111) == pytest.approx(lr * r, rel=1e-6)            # stays there
  assert rate(schedule, 100_000) == pytest.approx(lr * r, rel=1e-6)
  assert np.all(np.diff(rates(schedule, range(10, 111))) < 0)


def test_linear_schedule_by_hand():
  lr, r = 1e-3, 0.1
  schedule = learning_rate_schedule(
      optim_section(lr=lr, warmup=10, schedule="linear", decay_steps=100, min_lr_ratio=r))
  assert rate(schedule, 10) == pytest.approx(lr, rel=1e-6)
  assert rate(schedule, 35) == pytest.approx(lr - 0.25 * (lr - lr * r), rel=1e-6)
  assert rate(schedule, 60) == pytest.approx((lr + lr * r) / 2, rel=1e-6)
  assert rate(schedule, 110) == pytest.approx(lr * r, rel=1e-6)
  assert rate(schedule, 5000) == pytest.approx(lr * r, rel=1e-6)


def test_decay_to_zero_by_default():
  schedule = learning_rate_schedule(optim_section(lr=1e-3, warmup=0, schedule="cosine",
                                                  decay_steps=20))
  assert rate(schedule, 0) == pytest.approx(1e-3, rel=1e-6)  # no warm-up: lr from update 0
  assert rate(schedule, 20) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_steps_zero_runs_until_num_steps(kind):
  steps = np.arange(300)
  until_end = learning_rate_schedule(
      optim_section(lr=1e-3, warmup=10, schedule=kind, min_lr_ratio=0.2), num_steps=110)
  explicit = learning_rate_schedule(
      optim_section(lr=1e-3, warmup=10, schedule=kind, decay_steps=100, min_lr_ratio=0.2))
  np.testing.assert_array_equal(rates(until_end, steps), rates(explicit, steps))
  assert rate(until_end, 109) > 2e-4
  assert rate(until_end, 110) == pytest.approx(2e-4, rel=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_steps_zero_needs_num_steps(kind):
  with pytest.raises(ValueError, match="num_steps"):
    learning_rate_schedule(optim_section(schedule=kind))
  learning_rate_schedule(optim_section(schedule="constant"))  # needs no num_steps


def test_schedule_under_jit_matches_eager():
  schedule = learning_rate_schedule(
      optim_section(lr=1e-3, warmup=10, schedule="cosine", decay_steps=100, min_lr_ratio=0.1))
  steps = jnp.arange(0, 200, 7, dtype=jnp.int32)
  np.testing.assert_allclose(np.asarray(jax.jit(schedule)(steps)), rates(schedule, steps),
                             rtol=1e-6)


# --- optimizers --------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(warmup=2),
    dict(warmup=2, weight_decay=1e-2),
    dict(warmup=0, grad_clip=0.0, weight_decay=1e-2),
    dict(optimizer="adamw", warmup=2, weight_decay=1e-2, grad_clip=0.5),
    dict(optimizer="adamw", warmup=0, grad_clip=0.0),
    # sgd-only and train-step-only fields leave adam as it was
    dict(warmup=3, beta1=0.8, beta2=0.99, eps=1e-6, momentum=0.5, nesterov=True,
         skip_grad_norm=3.0),
])
def test_adam_and_adamw_are_todays(overrides):
  optim = optim_section(**overrides)
  params, grads = small_params(), random_grads(small_params(), 5)
  ours_params, ours_state = run_updates(make_optimizer(optim), params, grads)
  today_params, today_state = run_updates(train_step_before.make_optimizer(optim), params, grads)
  assert_trees_equal(ours_params, today_params)
  assert jax.tree.structure(ours_state) == jax.tree.structure(today_state)
  assert_trees_equal(ours_state, today_state)
  assert not np.allclose(np.asarray(ours_params["w"]), np.asarray(params["w"]))  # it moved


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_by_hand(nesterov):
  lr, mu, wd, r = 0.1, 0.9, 0.01, 0.1
  optim = optim_section(optimizer="sgd", lr=lr, warmup=1, schedule="cosine", decay_steps=4,
                        min_lr_ratio=r, momentum=mu, nesterov=nesterov, weight_decay=wd,
                        grad_clip=0.0)
  params, grads = small_params(), random_grads(small_params(), 3)
  # update k's rate: warm-up 0 at k=0, then the cosine from lr at k=1, one step into it at k=2
  lr_k = [0.0, lr, lr * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi / 4)))]
  p = {k: np.asarray(v, np.float64) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  for k, g_tree in enumerate(grads):
    g = dict(jax.tree_util.tree_flatten_with_path(g_tree)[0])
    for key in p:
      d = np.asarray(g[key], np.float64) + wd * p[key]  # torch-style: decay added to the gradient
      m[key] = mu * m[key] + d
      step = d + mu * m[key] if nesterov else m[key]
      p[key] = p[key] - lr_k[k] * step
  ours, _ = run_updates(make_optimizer(optim), params, grads)
  for key, value in jax.tree_util.tree_flatten_with_path(ours)[0]:
    np.testing.assert_allclose(np.asarray(value), p[key], rtol=1e-5, atol=1e-7)


def test_plain_sgd_keeps_no_momentum():
  optim = optim_section(optimizer="sgd", lr=0.5, warmup=0, momentum=0.0, grad_clip=0.0)
  params, grads = small_params(), random_grads(small_params(), 2)
  ours, opt_state = run_updates(make_optimizer(optim), params, grads)
  expected = jax.tree.map(lambda p, g0, g1: p - 0.5 * g0 - 0.5 * g1, params, *grads)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
  assert all(np.ndim(leaf) == 0 for leaf in jax.tree.leaves(opt_state))  # counters only


def test_sgd_clips_first():
  optim = optim_section(optimizer="sgd", lr=1.0, warmup=0, momentum=0.0, grad_clip=1.0)
  params = small_params()
  grads = random_grads(params, 1)
  norm = float(train_step.global_norm(grads[0]))
  assert norm > 1.0
  ours, _ = run_updates(make_optimizer(optim), params, grads)
  moved = jax.tree.map(lambda a, b: a - b, params, ours)
  assert float(train_step.global_norm(moved)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizers_follow_the_schedule(optimizer):
  """Cosine to 0 in one update: the second update moves nothing (adamw's decay is scaled too)."""
  optim = optim_section(optimizer=optimizer, lr=1e-2, warmup=0, schedule="cosine", decay_steps=1,
                        weight_decay=1e-2)
  params, grads = small_params(), random_grads(small_params(), 2)
  after_one, _ = run_updates(make_optimizer(optim), params, grads[:1])
  after_two, _ = run_updates(make_optimizer(optim), params, grads)
  assert not np.allclose(np.asarray(after_one["w"]), np.asarray(params["w"]))
  assert_trees_equal(after_one, after_two)


def test_make_optimizer_rejects_unknown_names():
  with pytest.raises(ValueError, match="optim.optimizer='rmsprop'"):
    make_optimizer(optim_section(optimizer="rmsprop"))
  with pytest.raises(ValueError, match="optim.schedule='exponential'"):
    make_optimizer(optim_section(schedule="exponential"))


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("optimizer", "rmsprop"), ("schedule", "exponential"), ("lr", 0.0), ("lr", -1e-4),
    ("warmup", -1), ("grad_clip", -1.0), ("beta1", 1.0), ("beta1", -0.1), ("beta2", 1.0),
    ("beta2", -0.5), ("weight_decay", -1e-2), ("decay_steps", -1), ("min_lr_ratio", -0.1),
    ("min_lr_ratio", 1.5), ("momentum", 1.0), ("momentum", -0.1), ("skip_grad_norm", -1.0),
])
def test_validation_names_the_field(field, value):
  shown = f"optim.{field}={value!r}" if isinstance(value, str) else f"optim.{field}={value}"
  with pytest.raises(ConfigError, match=re.escape(shown)):
    validate_optim(optim_section(**{field: value}), num_steps=10_000)


def test_unknown_names_list_what_works():
  with pytest.raises(ConfigError, match="sgd"):
    validate_optim(optim_section(optimizer="rmsprop"), num_steps=10_000)
  with pytest.raises(ConfigError, match="cosine"):
    validate_optim(optim_section(schedule="exponential"), num_steps=10_000)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_validation_needs_an_update_to_decay_over(kind):
  with pytest.raises(ConfigError, match=re.escape("optim.warmup=100")):
    validate_optim(optim_section(schedule=kind, warmup=100), num_steps=100)
  validate_optim(optim_section(schedule=kind, warmup=99), num_steps=100)  # one update of decay
  validate_optim(optim_section(schedule=kind, warmup=100, decay_steps=10), num_steps=100)
  validate_optim(optim_section(schedule="constant", warmup=100), num_steps=100)


def test_validation_nesterov_needs_momentum():
  with pytest.raises(ConfigError, match=re.escape("optim.nesterov=True")):
    validate_optim(optim_section(optimizer="sgd", momentum=0.0, nesterov=True), num_steps=100)
  validate_optim(optim_section(optimizer="sgd", momentum=0.9, nesterov=True), num_steps=100)


def test_validation_accepts_the_edges():
  validate_optim(optim_section(warmup=0, grad_clip=0.0, beta1=0.0, beta2=0.0, min_lr_ratio=1.0,
                               momentum=0.0, skip_grad_norm=5.0, schedule="linear"),
                 num_steps=1)
  validate_optim(optim_section(optimizer="sgd", schedule="cosine", min_lr_ratio=0.0),
                 num_steps=10_000)
