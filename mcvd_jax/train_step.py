"""The training step as pure functions: optimizer, train state, one update, several updates per call.

No TensorFlow, no I/O: `train.py` drives these; the benchmark and the tests call them directly.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mcvd_jax.models import UNetConfig, init_params
from mcvd_jax.video.io import frames_to_unit_range
from mcvd_jax.video.masking import make_training_batch

NONFINITE_POLICIES = ("stop", "skip")


class TrainState(NamedTuple):
  """Everything an update changes: step (int32 scalar, updates done), params, optimizer state, and
  the exponential moving average of the params (what samples and evaluation use)."""

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any


class Masking(NamedTuple):
  """Frame counts of a training clip and the block-masking probabilities (see video.masking)."""

  num_frames_cond: int
  num_frames: int
  num_frames_future: int
  prob_mask_cond: float = 0.0
  prob_mask_future: float = 0.0
  prob_mask_sync: bool = False

  @property
  def clip_frames(self) -> int:
    return self.num_frames_cond + self.num_frames + self.num_frames_future


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


def init_train_state(cfg: UNetConfig, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
  """A fresh state: the reference's initialisers for the params (see models.init_params)."""
  return create_train_state(init_params(cfg, key), tx)


def abstract_train_state(cfg: UNetConfig, tx: optax.GradientTransformation,
                         sharding: jax.sharding.Sharding) -> TrainState:
  """Shapes and dtypes of `init_train_state`'s result, laid out by `sharding` (no compilation):
  the target a checkpoint is restored into."""
  shapes = jax.eval_shape(lambda key: init_train_state(cfg, tx, key), jax.random.key(0))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def task_masks(past_present: jax.Array, future_present: jax.Array, masking: Masking) -> dict:
  """Which task each training sample teaches, from its block masks: name -> bool [B]."""
  has_past, has_future = masking.num_frames_cond > 0, masking.num_frames_future > 0
  past = past_present if has_past else jnp.zeros_like(past_present)
  future = future_present if has_future else jnp.zeros_like(future_present)
  tasks = {"generation": ~past & ~future}
  if has_past:
    tasks["prediction"] = past & ~future
  if has_future:
    tasks["past_reconstruction"] = ~past & future
  if has_past and has_future:
    tasks["interpolation"] = past & future
  return tasks


def enabled_tasks(masking: Masking) -> tuple[str, ...]:
  """The tasks a model trained with these masks learns (those drawn with non-zero probability)."""
  p_past = 1.0 - masking.prob_mask_cond if masking.num_frames_cond else 0.0
  p_future = 1.0 - masking.prob_mask_future if masking.num_frames_future else 0.0
  if masking.prob_mask_sync and masking.num_frames_cond and masking.num_frames_future:
    joint = {"prediction": 0.0, "interpolation": p_past, "generation": 1.0 - p_past,
             "past_reconstruction": 0.0}
  else:
    joint = {"prediction": p_past * (1.0 - p_future), "interpolation": p_past * p_future,
             "generation": (1.0 - p_past) * (1.0 - p_future),
             "past_reconstruction": (1.0 - p_past) * p_future}
  return tuple(name for name in ("prediction", "generation", "interpolation",
                                 "past_reconstruction") if joint[name] > 0)


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, masking: Masking, *,
                    ema_rate: float, train_key: jax.Array, nonfinite_loss: str = "stop",
                    learning_rate: optax.Schedule | None = None):
  """Builds `train_steps(state, videos) -> (state, metrics)`.

  videos: uint8 [K, B, Nc+T+Nf, H, W, C], K consecutive global batches, run as K updates in one
  scan. metrics: name -> [K] float32: loss, grad_norm, lr, finite (1.0 or 0.0), and for each
  task `loss_sum/<task>` and `count/<task>` (per-task means are taken on the host over a window).
  The key of update k is fold_in(train_key, k): a resumed run draws exactly the same keys.
  With nonfinite_loss='skip' an update whose loss or gradient is not finite is dropped (the step
  still advances); with 'stop' it is applied and the caller must stop without saving.
  learning_rate: the optimizer's schedule, only to log the rate of each update.
  """
  if nonfinite_loss not in NONFINITE_POLICIES:
    raise ValueError(f"training.nonfinite_loss={nonfinite_loss!r} is unknown; use one of "
                     f"{NONFINITE_POLICIES}")
  learning_rate = learning_rate or optax.constant_schedule(0.0)

  def one_step(state: TrainState, video: jax.Array):
    key = jax.random.fold_in(train_key, state.step)
    mask_key, loss_key = jax.random.split(key)
    batch = make_training_batch(mask_key, frames_to_unit_range(video),
                                num_frames_cond=masking.num_frames_cond,
                                num_frames=masking.num_frames,
                                num_frames_future=masking.num_frames_future,
                                prob_mask_cond=masking.prob_mask_cond,
                                prob_mask_future=masking.prob_mask_future,
                                prob_mask_sync=masking.prob_mask_sync)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, batch.x0, batch.cond, loss_key,
                                 cond_mask=batch.cond_mask)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_rate * e + (1.0 - ema_rate) * p, state.ema_params, params)
    new = TrainState(state.step + 1, params, opt_state, ema)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if nonfinite_loss == "skip":
      kept = TrainState(state.step + 1, state.params, state.opt_state, state.ema_params)
      new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, kept)
    metrics = {"loss": loss, "grad_norm": grad_norm, "lr": jnp.asarray(learning_rate(state.step), jnp.float32),
               "finite": finite.astype(jnp.float32)}
    for name, selected in task_masks(batch.past_present, batch.future_present, masking).items():
      metrics[f"loss_sum/{name}"] = jnp.sum(jnp.where(selected, aux.loss_per_sample, 0.0))
      metrics[f"count/{name}"] = jnp.sum(selected.astype(jnp.float32))
    return new, metrics

  def train_steps(state: TrainState, videos: jax.Array):
    if videos.shape[0] == 1:  # no loop: XLA optimises a plain step better than a scan body
      state, metrics = one_step(state, videos[0])
      return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(one_step, state, videos)

  return train_steps
