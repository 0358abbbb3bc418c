"""The weights `--mode=sample` and `--mode=eval` use, for every family: the EMA parameters of a
training checkpoint (the newest in the workdir, or the one --checkpoint names; the raw parameters
with `sampling.weights=raw`), else, in the workdir only, a randomly initialised network with a
loud warning (so a new user sees the pipeline run end to end before training).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
from absl import logging

from mcvd_jax.core.checkpointing import CheckpointNotFoundError, load_ema_params
from mcvd_jax.core.config_base import SAMPLING_WEIGHTS

# sampling.weights -> (the saved TrainState entry, how Weights.source describes it)
_PARTS = {"ema": ("ema_params", "EMA parameters"), "raw": ("params", "raw (non-EMA) parameters")}
assert tuple(_PARTS) == SAMPLING_WEIGHTS  # the config checks accept exactly what is loadable


class Weights(NamedTuple):
  """params: the EMA or raw parameters (or a random init); model_state: the family's mutable
  state ({} for families without); step: the checkpoint's step (None for random weights); source:
  what they are, for logs and reports."""

  params: Any
  model_state: Any
  step: int | None
  source: str


def weights_part(weights: str) -> tuple[str, str]:
  """(the saved TrainState entry, its description) of a `sampling.weights` value; ValueError
  naming the valid ones for any other."""
  if weights not in _PARTS:
    raise ValueError(f"sampling.weights={weights!r} is unknown; use one of {SAMPLING_WEIGHTS}")
  return _PARTS[weights]


def load_weights(workdir: str, checkpoint: str | None, init_params: Callable[[jax.Array], Any],
                 seed: int, init_model_state: Callable[[jax.Array], Any] | None = None,
                 what: str = "training checkpoints", weights: str = "ema") -> Weights:
  """The EMA weights (`weights="raw"`: the raw, non-EMA ones) of `checkpoint` (a workdir, its
  checkpoints/ or one checkpoints/<step>) or, without one, of `workdir`'s newest checkpoint;
  random weights from key(seed) when the workdir has none. CheckpointNotFoundError when
  `checkpoint` is given and holds no checkpoint (`what` names what it could have held);
  ValueError for an unknown `weights`."""
  part, described = weights_part(weights)
  source = checkpoint or workdir
  loaded = load_ema_params(source, init_params, init_model_state, part=part)
  if loaded is not None:
    saved, step = loaded
    params, model_state = saved if init_model_state is not None else (saved, {})
    return Weights(params, model_state, step, f"{described} of step {step} in {source}")
  if checkpoint:
    raise CheckpointNotFoundError(f"--checkpoint={checkpoint!r} holds no {what}")
  logging.warning("no checkpoint in %s: sampling from a RANDOMLY INITIALISED network (noise-like "
                  "output); train first, or pass --checkpoint", workdir)
  key = jax.random.key(seed)
  model_state = {} if init_model_state is None else init_model_state(key)
  return Weights(init_params(key), model_state, None, "random weights")
