"""The training update as pure functions, for every family: optimizer, train state, one update,
several updates per call.

No TensorFlow, no I/O: `core.loop` drives these; the benchmarks and the tests call them directly.
A family supplies `loss_fn(params, batch, key) -> (loss, metrics)`, or with mutable model state
(batch statistics) `loss_fn(params, model_state, batch, key) -> (loss, (metrics, model_state))`
(see core.family).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mcvd_jax.core.config_base import NONFINITE_POLICIES  # noqa: F401  (re-exported)


class TrainState(NamedTuple):
  """Everything an update changes: step (int32 scalar, updates done), params, optimizer state, the
  exponential moving average of the params (what samples and evaluation use) and the family's
  mutable model state (e.g. batch statistics; {} for families without)."""

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  model_state: Any = {}


def create_train_state(params: Any, tx: optax.GradientTransformation,
                       model_state: Any = None) -> TrainState:
  """Step 0; the EMA starts as a copy of the params (a separate buffer, so both can be donated)."""
  ema = jax.tree.map(jnp.copy, params)
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), ema,
                    {} if model_state is None else model_state)


def init_train_state(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
                     key: jax.Array, init_model_state: Callable[[jax.Array], Any] | None = None,
                     data_init: Callable | None = None, batch: Any = None) -> TrainState:
  """A fresh state: init_params(key) (the family's initialiser), its mutable state
  init_model_state(key) ({} without one), then, with `data_init`, both refined from a training
  batch (data-dependent initialisation, e.g. ActNorm): data_init(params, model_state, batch, key)
  -> (params, model_state). The EMA and the optimizer start from the result."""
  params = init_params(key)
  model_state = {} if init_model_state is None else init_model_state(key)
  if data_init is not None:
    if batch is None:
      raise ValueError("a family with data_init needs a training batch to initialise from")
    params, model_state = data_init(params, model_state, batch, jax.random.fold_in(key, 1))
  return create_train_state(params, tx, model_state)


def abstract_train_state(init_params: Callable[[jax.Array], Any],
                         tx: optax.GradientTransformation,
                         sharding: jax.sharding.Sharding,
                         init_model_state: Callable[[jax.Array], Any] | None = None) -> TrainState:
  """Shapes and dtypes of `init_train_state`'s result, laid out by `sharding` (no compilation):
  the target a checkpoint is restored into (a data-dependent init changes values, not shapes)."""
  shapes = jax.eval_shape(lambda key: init_train_state(init_params, tx, key, init_model_state),
                          jax.random.key(0))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def global_norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))


def with_model_state(loss_fn: Callable) -> Callable:
  """A stateless loss_fn(params, batch, key) -> (loss, metrics) in the stateful form
  (params, model_state, batch, key) -> (loss, (metrics, model_state)), the state passed through."""

  def stateful(params, model_state, batch, key):
    loss, metrics = loss_fn(params, batch, key)
    return loss, (metrics, model_state)

  return stateful


def ema_rate_of(step: jax.Array, ema_rate: float, warmup: bool) -> float | jax.Array:
  """The EMA rate of the update that starts at `step` (updates done before it): `ema_rate`, or
  with `warmup` min(ema_rate, (1 + step) / (10 + step)), so that the EMA of a short run forgets the
  initialisation. Without warm-up the Python float itself, so the update keeps its exact form."""
  if not warmup:
    return ema_rate
  n = step.astype(jnp.float32)
  return jnp.minimum(jnp.float32(ema_rate), (1.0 + n) / (10.0 + n))


def update_ema(ema_params: Any, params: Any, rate: float | jax.Array) -> Any:
  """rate * ema + (1 - rate) * params, leaf by leaf, in each leaf's dtype."""
  if not isinstance(rate, jax.Array):  # a Python constant: the historical expression, bit for bit
    return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema_params, params)

  def blend(e, p):
    # A float32 rate would promote low-precision leaves (bfloat16) and change the EMA's dtype.
    return rate.astype(e.dtype) * e + (1.0 - rate).astype(e.dtype) * p

  return jax.tree.map(blend, ema_params, params)


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, *, ema_rate: float,
                    train_key: jax.Array, nonfinite_loss: str = "stop",
                    learning_rate: optax.Schedule | None = None, skip_grad_norm: float = 0.0,
                    stateful: bool = False, ema_warmup: bool = False):
  """Builds `train_steps(state, batches) -> (state, metrics)`.

  loss_fn(params, batch, key) -> (loss, metrics dict of float32 scalars): the family's; with
  `stateful`, loss_fn(params, model_state, batch, key) -> (loss, (metrics, new model_state)).
  batches: a pytree whose leaves are [K, B, ...]: K consecutive global batches, run as K updates
  in one scan. metrics: name -> [K] float32: loss, grad_norm, lr, ema_rate, finite and
  large_grad (1.0 or 0.0) and the family's metrics. The key of update k is fold_in(train_key, k):
  a resumed run draws exactly the same keys. With nonfinite_loss='skip' an update whose loss or
  gradient is not finite is dropped (the step still advances); with 'stop' it is applied and the
  caller must stop without saving. skip_grad_norm > 0 drops every finite update whose gradient
  norm (before clipping) exceeds it, counted by large_grad. learning_rate: the optimizer's
  schedule, only to log the rate of each update. ema_warmup: the EMA rate of update n (0-based)
  is min(ema_rate, (1 + n) / (10 + n)) instead of ema_rate (see ema_rate_of); the metric
  ema_rate is the rate each update used.
  """
  if nonfinite_loss not in NONFINITE_POLICIES:
    raise ValueError(f"training.nonfinite_loss={nonfinite_loss!r} is unknown; use one of "
                     f"{NONFINITE_POLICIES}")
  learning_rate = learning_rate or optax.constant_schedule(0.0)
  grad_fn = jax.value_and_grad(loss_fn if stateful else with_model_state(loss_fn), has_aux=True)

  def one_step(state: TrainState, batch: Any):
    key = jax.random.fold_in(train_key, state.step)
    (loss, (family_metrics, model_state)), grads = grad_fn(state.params, state.model_state,
                                                           batch, key)
    grad_norm = global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rate = ema_rate_of(state.step, ema_rate, ema_warmup)
    ema = update_ema(state.ema_params, params, rate)
    new = TrainState(state.step + 1, params, opt_state, ema, model_state)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    large = finite & (grad_norm > skip_grad_norm) if skip_grad_norm > 0 else jnp.zeros((), bool)
    keep = large | ~finite if nonfinite_loss == "skip" else large
    if nonfinite_loss == "skip" or skip_grad_norm > 0:
      kept = state._replace(step=state.step + 1)
      new = jax.tree.map(lambda n, o: jnp.where(keep, o, n), new, kept)
    metrics = {**family_metrics, "loss": loss, "grad_norm": grad_norm,
               "lr": jnp.asarray(learning_rate(state.step), jnp.float32),
               "finite": finite.astype(jnp.float32), "large_grad": large.astype(jnp.float32),
               "ema_rate": jnp.asarray(rate, jnp.float32)}
    return new, metrics

  def train_steps(state: TrainState, batches: Any):
    if jax.tree.leaves(batches)[0].shape[0] == 1:  # no loop: XLA optimises a plain step better
      state, metrics = one_step(state, jax.tree.map(lambda b: b[0], batches))
      return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(one_step, state, batches)

  return train_steps
