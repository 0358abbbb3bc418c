"""The training update as pure functions, for every family: optimizer, train state, one update,
several updates per call.

No TensorFlow, no I/O: `core.loop` drives these; the benchmarks and the tests call them directly.
A family supplies only `loss_fn(params, batch, key) -> (loss, metrics)` (see core.family).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

NONFINITE_POLICIES = ("stop", "skip")


class TrainState(NamedTuple):
  """Everything an update changes: step (int32 scalar, updates done), params, optimizer state, and
  the exponential moving average of the params (what samples and evaluation use)."""

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any


def learning_rate_schedule(lr: float, warmup: int) -> optax.Schedule:
  """lr * min(k / warmup, 1) at update k (0-based), the reference's `warmup_lr`."""
  if warmup <= 0:
    return optax.constant_schedule(lr)
  return optax.linear_schedule(0.0, lr, warmup)


def make_optimizer(optim: Any) -> optax.GradientTransformation:
  """optim: the config's `optim` section. Adam as torch's: gradients clipped to a global norm
  first, then (adam) weight decay added to the gradient, or (adamw) decoupled."""
  if optim.optimizer not in ("adam", "adamw"):
    raise ValueError(f"optim.optimizer={optim.optimizer!r} is unknown; use adam or adamw")
  schedule = learning_rate_schedule(optim.lr, optim.warmup)
  parts = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
  if optim.optimizer == "adam":
    if optim.weight_decay:
      parts.append(optax.add_decayed_weights(optim.weight_decay))
    parts.append(optax.adam(schedule, b1=optim.beta1, b2=optim.beta2, eps=optim.eps))
  else:
    parts.append(optax.adamw(schedule, b1=optim.beta1, b2=optim.beta2, eps=optim.eps,
                             weight_decay=optim.weight_decay))
  return optax.chain(*parts)


def create_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """Step 0; the EMA starts as a copy of the params (a separate buffer, so both can be donated)."""
  ema = jax.tree.map(jnp.copy, params)
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), ema)


def init_train_state(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
                     key: jax.Array) -> TrainState:
  """A fresh state: init_params(key) (the family's initialiser) and its optimizer state."""
  return create_train_state(init_params(key), tx)


def abstract_train_state(init_params: Callable[[jax.Array], Any],
                         tx: optax.GradientTransformation,
                         sharding: jax.sharding.Sharding) -> TrainState:
  """Shapes and dtypes of `init_train_state`'s result, laid out by `sharding` (no compilation):
  the target a checkpoint is restored into."""
  shapes = jax.eval_shape(lambda key: init_train_state(init_params, tx, key), jax.random.key(0))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def global_norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, *, ema_rate: float,
                    train_key: jax.Array, nonfinite_loss: str = "stop",
                    learning_rate: optax.Schedule | None = None):
  """Builds `train_steps(state, batches) -> (state, metrics)`.

  loss_fn(params, batch, key) -> (loss, metrics dict of float32 scalars): the family's.
  batches: a pytree whose leaves are [K, B, ...]: K consecutive global batches, run as K updates
  in one scan. metrics: name -> [K] float32: loss, grad_norm, lr, finite (1.0 or 0.0) and the
  family's metrics. The key of update k is fold_in(train_key, k): a resumed run draws exactly the
  same keys. With nonfinite_loss='skip' an update whose loss or gradient is not finite is dropped
  (the step still advances); with 'stop' it is applied and the caller must stop without saving.
  learning_rate: the optimizer's schedule, only to log the rate of each update.
  """
  if nonfinite_loss not in NONFINITE_POLICIES:
    raise ValueError(f"training.nonfinite_loss={nonfinite_loss!r} is unknown; use one of "
                     f"{NONFINITE_POLICIES}")
  learning_rate = learning_rate or optax.constant_schedule(0.0)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def one_step(state: TrainState, batch: Any):
    key = jax.random.fold_in(train_key, state.step)
    (loss, family_metrics), grads = grad_fn(state.params, batch, key)
    grad_norm = global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_rate * e + (1.0 - ema_rate) * p, state.ema_params, params)
    new = TrainState(state.step + 1, params, opt_state, ema)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if nonfinite_loss == "skip":
      kept = TrainState(state.step + 1, state.params, state.opt_state, state.ema_params)
      new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, kept)
    metrics = {**family_metrics, "loss": loss, "grad_norm": grad_norm,
               "lr": jnp.asarray(learning_rate(state.step), jnp.float32),
               "finite": finite.astype(jnp.float32)}
    return new, metrics

  def train_steps(state: TrainState, batches: Any):
    if jax.tree.leaves(batches)[0].shape[0] == 1:  # no loop: XLA optimises a plain step better
      state, metrics = one_step(state, jax.tree.map(lambda b: b[0], batches))
      return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(one_step, state, batches)

  return train_steps
