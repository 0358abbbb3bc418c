"""Warm start (`training.init_from`): a new run whose parameters start from trained weights.

The weights come from a training checkpoint (a workdir, its checkpoints/ or one
checkpoints/<step>; its EMA parameters, and its model state for a family with one) or from a
model directory the family reads (`TrainingSetup.load_pretrained`: for MCVD an exported run or a
converted reference checkpoint). Both the parameters and their EMA start as those weights; the
optimizer state is fresh and the step is 0, so the run has its own warm-up, schedule and
`training.num_steps`. A workdir that already holds a checkpoint resumes from it instead: a
warm-started run that is interrupted continues where it stopped, not from the weights again.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.core.checkpointing import (CheckpointMismatchError, check_same_parameters,
                                         find_checkpoint_dir, load_ema_params, step_names)
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.family import TrainingSetup
from mcvd_jax.core.train_step import TrainState


def read_init_weights(path: str, setup: TrainingSetup) -> tuple[Any, Any]:
  """(params, model_state) of `path` for a warm start: the family's model directory when
  `setup.load_pretrained` reads it, else the EMA weights (and model state) of the training
  checkpoint it names (_read_checkpoint). ConfigError naming `training.init_from` when the path
  is missing, holds neither, or its parameters do not fit the config's model."""
  field = f"--config.training.init_from={path!r}"
  if not paths.exists(path):
    raise ConfigError(f"{field} does not exist; give a training workdir, one of its "
                      f"checkpoints/<step> directories or an exported model directory")
  params = setup.load_pretrained(path) if setup.load_pretrained is not None else None
  if params is None:  # a checkpoint: restore_ema reads it against the model's shapes
    params, model_state, step = _read_checkpoint(path, setup, field)
    logging.info("warm start: the EMA weights of step %d in %s", step, path)
    return params, model_state
  try:  # a model directory's network fields are the family's to check; its shapes are checked here
    check_same_parameters(params, jax.eval_shape(setup.init_params, jax.random.key(0)))
  except CheckpointMismatchError as e:
    raise ConfigError(f"{field}: {e}") from None
  logging.info("warm start: the weights of the model directory %s", path)
  return params, None


def _read_checkpoint(path: str, setup: TrainingSetup, field: str) -> tuple[Any, Any, int]:
  """(EMA params, model state or None, step) of the checkpoint `path` names: one
  checkpoints/<step>, else the newest of the workdir (no fallback to older ones: a warm start
  takes the weights it was pointed at, or says why it cannot)."""
  workdir, step = find_checkpoint_dir(path)
  directory = os.path.join(workdir, "checkpoints")
  names = step_names(directory)
  if step is None and names:
    step = max(int(name) for name in names)
  if step is None or str(step) not in names:
    kinds = "training checkpoints" + (" nor a model directory"
                                      if setup.load_pretrained is not None else "")
    raise ConfigError(f"{field} holds no {kinds}")
  try:
    saved, _ = load_ema_params(os.path.join(directory, str(step)), setup.init_params,
                               setup.init_model_state)
  except CheckpointMismatchError as e:
    raise ConfigError(f"{field}: step {step}: {e}") from None
  except Exception as e:  # orbax/tensorstore raise many types for damaged files
    raise ConfigError(f"{field}: checkpoint {step} cannot be read ({type(e).__name__}: {e}); "
                      f"name an earlier one, {directory}/<step>") from None
  params, model_state = saved if setup.stateful else (saved, None)
  return params, model_state, step


def warm_started(state: TrainState, params: Any, model_state: Any, sharding: Any) -> TrainState:
  """`state` (a fresh step-0 TrainState) with its parameters and EMA replaced by `params` (and its
  model state by `model_state` unless None), placed with `sharding`; dtypes are the fresh ones."""
  def place(fresh, loaded):
    return jax.device_put(jnp.array(loaded, dtype=fresh.dtype, copy=True), sharding)

  new_params = jax.tree.map(place, state.params, params)
  new_ema = jax.tree.map(place, state.ema_params, params)  # separate buffers: both are donated
  new_model_state = (state.model_state if model_state is None
                     else jax.tree.map(place, state.model_state, model_state))
  return state._replace(params=new_params, ema_params=new_ema, model_state=new_model_state)
