"""The optimizer and learning-rate schedule of every model family, built from the config's `optim`
section. Pure functions, no I/O.

Fields of the section (`OPTIM_DEFAULTS` has each default):
  optimizer       adam (torch's Adam: weight decay added to the gradient) | adamw (decoupled) | sgd
  lr              the peak rate, > 0
  warmup          linear warm-up from 0 over that many updates: lr * k / warmup at update k
                  (0-based); 0 = none
  beta1, beta2    Adam's moment decays, in [0, 1)
  eps             Adam's denominator epsilon
  weight_decay    >= 0; adam and sgd add weight_decay * params to the gradient, adamw decouples it
  grad_clip       global-norm clipping before anything else; 0 = off
  schedule        constant | cosine | linear: the decay after the warm-up
  decay_steps     updates the decay lasts after the warm-up; 0 = until training.num_steps
  min_lr_ratio    the rate at the end of the decay (and after it), as a fraction of lr, in [0, 1]
  momentum        sgd's momentum, in [0, 1); 0 = plain SGD
  nesterov        sgd: Nesterov momentum (needs momentum > 0)
  skip_grad_norm  > 0: the train step skips updates whose global gradient norm before clipping
                  exceeds it; 0 = off (only validated here)

A section from an older config file may lack the newer fields: `optim_field` reads every field and
falls back to its default, so such a section keeps working unchanged.
"""

from __future__ import annotations

from typing import Any

import optax

from mcvd_jax.core.config_base import OPTIM_DEFAULTS, OPTIMIZERS, SCHEDULES


def optim_field(optim: Any, name: str) -> Any:
  """optim.<name>, or its default when the section lacks it (an older config file)."""
  if name not in OPTIM_DEFAULTS:
    raise ValueError(f"unknown optim field {name!r}; the fields are {sorted(OPTIM_DEFAULTS)}")
  return optim[name] if name in optim else OPTIM_DEFAULTS[name]


def resolved_decay_steps(optim: Any, num_steps: int | None) -> int:
  """The updates the decay lasts: optim.decay_steps, or num_steps - warmup when it is 0."""
  decay_steps = optim_field(optim, "decay_steps")
  if decay_steps > 0:
    return decay_steps
  if num_steps is None:
    raise ValueError(f"optim.schedule={optim_field(optim, 'schedule')!r} with optim.decay_steps=0 "
                     "decays until the end of training: pass num_steps (training.num_steps) or "
                     "set optim.decay_steps > 0")
  return num_steps - optim_field(optim, "warmup")


def warmup_schedule(lr: float, warmup: int) -> optax.Schedule:
  """lr * min(k / warmup, 1) at update k (0-based); lr throughout when warmup <= 0 (optax's
  linear_schedule would silently stay at 0 with no transition steps)."""
  if warmup <= 0:
    return optax.constant_schedule(lr)
  return optax.linear_schedule(0.0, lr, warmup)


def decay_schedule(schedule: str, lr: float, min_lr_ratio: float,
                   decay_steps: int) -> optax.Schedule:
  """From lr at count 0 to lr * min_lr_ratio at count decay_steps (a cosine half-period or a
  straight line), that floor afterwards."""
  if decay_steps < 1:
    raise ValueError(f"optim.schedule={schedule!r} needs a decay of >= 1 update, got "
                     f"{decay_steps}; set optim.decay_steps > 0 or a warmup < training.num_steps")
  if schedule == "cosine":
    # alpha is the final fraction of init_value: lr * ((1 - alpha) * cos_term + alpha).
    return optax.cosine_decay_schedule(lr, decay_steps, alpha=min_lr_ratio)
  return optax.linear_schedule(lr, lr * min_lr_ratio, decay_steps)


def learning_rate_schedule(optim: Any, num_steps: int | None = None) -> optax.Schedule:
  """The rate at update k (0-based): lr * k / warmup during the warm-up, then the schedule's decay
  from lr to lr * min_lr_ratio over the decay steps, then that floor. num_steps
  (training.num_steps) is needed only for a decay with decay_steps 0. The constant schedule is
  exactly train_step.learning_rate_schedule(lr, warmup)."""
  schedule = optim_field(optim, "schedule")
  if schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule={schedule!r} is unknown; use one of {SCHEDULES}")
  lr, warmup = optim_field(optim, "lr"), optim_field(optim, "warmup")
  if schedule == "constant":
    return warmup_schedule(lr, warmup)
  decay = decay_schedule(schedule, lr, optim_field(optim, "min_lr_ratio"),
                         resolved_decay_steps(optim, num_steps))
  if warmup <= 0:
    return decay
  # join_schedules hands the decay `count - warmup`, so the decay starts at lr on update `warmup`.
  return optax.join_schedules([warmup_schedule(lr, warmup), decay], [warmup])


def make_optimizer(optim: Any, num_steps: int | None = None) -> optax.GradientTransformation:
  """Gradients clipped to a global norm first (grad_clip > 0), then adam (weight decay added to the
  gradient, as torch's Adam), adamw (decoupled decay) or sgd (decay added to the gradient, then
  momentum), all following `learning_rate_schedule(optim, num_steps)`. For adam and adamw the
  chain is the same as train_step.make_optimizer's, so saved optimizer states keep their tree."""
  optimizer = optim_field(optim, "optimizer")
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"optim.optimizer={optimizer!r} is unknown; use one of {OPTIMIZERS}")
  schedule = learning_rate_schedule(optim, num_steps)
  grad_clip, weight_decay = optim_field(optim, "grad_clip"), optim_field(optim, "weight_decay")
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  if optimizer == "adamw":
    parts.append(optax.adamw(schedule, b1=optim_field(optim, "beta1"),
                             b2=optim_field(optim, "beta2"), eps=optim_field(optim, "eps"),
                             weight_decay=weight_decay))
    return optax.chain(*parts)
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  if optimizer == "adam":
    parts.append(optax.adam(schedule, b1=optim_field(optim, "beta1"),
                            b2=optim_field(optim, "beta2"), eps=optim_field(optim, "eps")))
  else:
    # momentum None (not 0.0) leaves out the trace, so plain SGD keeps no momentum buffer.
    parts.append(optax.sgd(schedule, momentum=optim_field(optim, "momentum") or None,
                           nesterov=optim_field(optim, "nesterov")))
  return optax.chain(*parts)


def _shown(name: str, value: Any) -> str:
  """`optim.<name>=<value>`, strings quoted, as the errors name a field."""
  return f"optim.{name}={value!r}" if isinstance(value, str) else f"optim.{name}={value}"


def validate_optim(optim: Any, num_steps: int) -> None:
  """Raises ConfigError naming the first field of the `optim` section that cannot work and what
  does. num_steps: training.num_steps (the end of a decay with decay_steps 0). Missing fields are
  their defaults."""
  # Imported here: config_checks imports train_step, which may come to import this module.
  from mcvd_jax.core.config_checks import require

  f = {name: optim_field(optim, name) for name in OPTIM_DEFAULTS}
  require(f["optimizer"] in OPTIMIZERS,
          f"{_shown('optimizer', f['optimizer'])} is unknown; use one of {OPTIMIZERS}")
  require(f["schedule"] in SCHEDULES,
          f"{_shown('schedule', f['schedule'])} is unknown; use one of {SCHEDULES}")
  require(f["lr"] > 0, f"{_shown('lr', f['lr'])} must be > 0")
  require(f["warmup"] >= 0, f"{_shown('warmup', f['warmup'])} must be >= 0 (0: no warm-up)")
  require(f["grad_clip"] >= 0,
          f"{_shown('grad_clip', f['grad_clip'])} must be >= 0 (0: no clipping)")
  for beta in ("beta1", "beta2"):
    require(0.0 <= f[beta] < 1.0, f"{_shown(beta, f[beta])} must be in [0, 1)")
  require(f["weight_decay"] >= 0, f"{_shown('weight_decay', f['weight_decay'])} must be >= 0")
  require(f["decay_steps"] >= 0,
          f"{_shown('decay_steps', f['decay_steps'])} must be >= 0 (0: until training.num_steps)")
  require(0.0 <= f["min_lr_ratio"] <= 1.0,
          f"{_shown('min_lr_ratio', f['min_lr_ratio'])} must be in [0, 1]")
  require(0.0 <= f["momentum"] < 1.0,
          f"{_shown('momentum', f['momentum'])} must be in [0, 1) (0: plain SGD)")
  require(not (f["optimizer"] == "sgd" and f["nesterov"] and not f["momentum"]),
          f"{_shown('nesterov', f['nesterov'])} needs optim.momentum > 0; set a momentum or "
          "nesterov=False")
  require(f["skip_grad_norm"] >= 0,
          f"{_shown('skip_grad_norm', f['skip_grad_norm'])} must be >= 0 (0: never skip)")
  if f["schedule"] != "constant" and f["decay_steps"] == 0:
    require(num_steps - f["warmup"] >= 1,
            f"{_shown('warmup', f['warmup'])} leaves no update for "
            f"{_shown('schedule', f['schedule'])} to decay over before "
            f"training.num_steps={num_steps}; use a warmup < num_steps or set "
            "optim.decay_steps > 0")
