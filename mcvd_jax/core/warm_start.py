"""Warm start (`training.init_from`): a new run whose parameters start from trained weights.

The weights come from a training checkpoint (a workdir, its checkpoints/ or one
checkpoints/<step>; its EMA parameters, and its model state for a family with one) or from a
model directory the family reads (`TrainingSetup.load_pretrained`: for MCVD an exported run or a
converted reference checkpoint). Both the parameters and their EMA start as those weights; the
optimizer state is fresh and the step is 0, so the run has its own warm-up, schedule and
`training.num_steps`. A workdir that already holds a checkpoint resumes from it instead: a
warm-started run that is interrupted continues where it stopped, not from the weights again.

With `training.init_new_layers` the config's network may be a grown one: layers the weights do not
have (e.g. attention blocks at one more resolution) keep their fresh initialisation, every other
parameter is the weights' and must have its shape; a parameter of the weights that the network
lacks is still an error (nothing is dropped silently).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.core.checkpointing import (CheckpointMismatchError, Checkpointer,
                                         check_same_parameters, find_checkpoint_dir,
                                         load_ema_params, step_names)
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.family import TrainingSetup
from mcvd_jax.core.train_step import TrainState


def read_init_weights(path: str, setup: TrainingSetup, new_layers: bool = False) -> tuple[Any, Any]:
  """(params, model_state) of `path` for a warm start: the family's model directory when
  `setup.load_pretrained` reads it, else the EMA weights (and model state) of the training
  checkpoint it names (_read_checkpoint). ConfigError naming `training.init_from` when the path
  is missing, holds neither, or its parameters do not fit the config's model. With `new_layers`
  the trees may lack parameters of the model (a grown network; named in the log)."""
  field = f"--config.training.init_from={path!r}"
  if not paths.exists(path):
    raise ConfigError(f"{field} does not exist; give a training workdir, one of its "
                      f"checkpoints/<step> directories or an exported model directory")
  params = (setup.load_pretrained(path, new_layers) if setup.load_pretrained is not None
            else None)
  model_state, source = None, f"the model directory {path}"
  from_directory = params is not None
  if not from_directory:
    params, model_state, step = _read_checkpoint(path, setup, field, new_layers)
    source = f"the EMA weights of step {step} in {path}"
  # A checkpoint read against the model's own shapes (no new layers) was checked by restore_ema.
  if new_layers or from_directory:
    try:
      missing = check_same_parameters(
          params, jax.eval_shape(setup.init_params, jax.random.key(0)), allow_missing=new_layers)
      if new_layers and setup.stateful and model_state is not None:
        check_same_parameters(model_state, jax.eval_shape(setup.init_model_state,
                                                          jax.random.key(0)), allow_missing=True)
    except CheckpointMismatchError as e:
      raise ConfigError(f"{field}: {e}") from None
  logging.info("warm start: %s", source)
  if new_layers:
    logging.info("warm start: %d parameters the weights lack start from their initialisation "
                 "(training.init_new_layers)%s", len(missing),
                 ": " + ", ".join(missing) if missing else "")
  return params, model_state


def _read_checkpoint(path: str, setup: TrainingSetup, field: str,
                     new_layers: bool) -> tuple[Any, Any, int]:
  """(EMA params, model state or None, step) of the checkpoint `path` names: one
  checkpoints/<step>, else the newest of the workdir (no fallback to older ones: a warm start
  takes the weights it was pointed at, or says why it cannot). Read as saved with `new_layers`,
  else against the model's shapes."""
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
    if new_layers:
      saved = _read_as_saved(workdir, step, setup.stateful)
    else:
      saved, _ = load_ema_params(os.path.join(directory, str(step)), setup.init_params,
                                 setup.init_model_state)
  except CheckpointMismatchError as e:
    raise ConfigError(f"{field}: step {step}: {e}") from None
  except Exception as e:  # orbax/tensorstore raise many types for damaged files
    raise ConfigError(f"{field}: checkpoint {step} cannot be read ({type(e).__name__}: {e}); "
                      f"name an earlier one, {directory}/<step>") from None
  params, model_state = saved if setup.stateful else (saved, None)
  return params, model_state, step


def _read_as_saved(workdir: str, step: int, stateful: bool) -> Any:
  """The EMA parameters (with the model state when `stateful`) of checkpoint `step`, in the
  layout they were saved with."""
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  checkpointer = Checkpointer(workdir)
  try:
    params = checkpointer.saved_layout(step, "ema_params", sharding)
    model_state = checkpointer.saved_layout(step, "model_state", sharding) if stateful else None
    return checkpointer.restore_ema(step, params, model_state)
  finally:
    checkpointer.close()


def warm_started(state: TrainState, params: Any, model_state: Any, sharding: Any) -> TrainState:
  """`state` (a fresh step-0 TrainState) with its parameters and EMA replaced by `params` (and its
  model state by `model_state` unless None), placed with `sharding`; dtypes are the fresh ones.
  A leaf `params` (or `model_state`) lacks keeps the fresh state's value (a grown network)."""
  def merged(fresh_tree, loaded_tree):
    loaded = {jax.tree_util.keystr(path): leaf
              for path, leaf in jax.tree_util.tree_flatten_with_path(loaded_tree)[0]}

    def place(path, fresh):
      value = loaded.get(jax.tree_util.keystr(path), fresh)
      return jax.device_put(jnp.array(value, dtype=fresh.dtype, copy=True), sharding)
    return jax.tree_util.tree_map_with_path(place, fresh_tree)

  new_params = merged(state.params, params)
  new_ema = merged(state.ema_params, params)  # separate buffers: both are donated
  new_model_state = (state.model_state if model_state is None
                     else merged(state.model_state, model_state))
  return state._replace(params=new_params, ema_params=new_ema, model_state=new_model_state)
