"""Orbax checkpoints of the train state: asynchronous saves, restore into sharded abstract targets,
and a fall-back to the previous checkpoint when the newest one cannot be read.

Layout: WORKDIR/checkpoints/<step>/{state, meta}; `state` is the TrainState as a dict, `meta` a
JSON dict (data seed, model config, ...). Unreadable checkpoints are moved to
WORKDIR/checkpoints_unreadable/<step> (kept for inspection, never deleted).

WORKDIR is a local path or a URI (core.paths). Orbax writes local paths, gs:// and s3:// itself;
on any other filesystem epath reaches (az://, hf://, ...) a single-process run checkpoints into a
local cache that mirrors the step directories: each save is copied there once written, and the
steps there are copied into the cache before anything is restored.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.core.train_step import TrainState
from mcvd_jax.errors import ProjectError


class NoReadableCheckpointError(RuntimeError, ProjectError):
  """Every checkpoint in the directory failed to restore."""


class CheckpointNotFoundError(FileNotFoundError, ProjectError):
  """A path given as a checkpoint holds none."""


class CheckpointMismatchError(ValueError, ProjectError):
  """A checkpoint's parameters are not the tree the config's model has."""


def state_to_dict(state: TrainState) -> dict:
  """The saved form of a TrainState. An empty `model_state` (a family without mutable state) is
  left out: Orbax cannot restore an empty subtree, and the files stay those of the first format."""
  saved = dict(state._asdict())
  if not has_leaves(saved["model_state"]):
    del saved["model_state"]
  return saved


def state_from_dict(saved: dict, abstract_state: TrainState) -> TrainState:
  """The inverse of `state_to_dict`: an absent model_state is the target's empty one."""
  return TrainState(**{"model_state": abstract_state.model_state, **saved})


def has_leaves(tree: Any) -> bool:
  """Whether a pytree holds any array (an empty model state holds none)."""
  return bool(jax.tree.leaves(tree))


def abstract_like(tree: Any) -> Any:
  """Shape/dtype/sharding stand-ins of a pytree of arrays (or of ShapeDtypeStructs)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{keystr path: shape} of every leaf of a pytree."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


def parameter_differences(saved: Any, expected: Any) -> tuple[list[str], list[str], list[str]]:
  """(missing, unexpected, reshaped): the names (jax keystr paths) of the leaves `expected` has
  and `saved` lacks, of those only `saved` has, and of those whose shapes differ, each sorted.
  The trees hold arrays, ShapeDtypeStructs or checkpoint metadata (anything with .shape)."""
  saved, expected = _leaf_shapes(saved), _leaf_shapes(expected)
  return (sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected)),
          sorted(k for k in set(saved) & set(expected) if saved[k] != expected[k]))


def check_same_parameters(saved: Any, expected: Any, allow_missing: bool = False) -> list[str]:
  """Raises CheckpointMismatchError (a ValueError) naming the differences when two parameter
  trees (see parameter_differences) differ in names or shapes; with `allow_missing`, leaves
  only `expected` has are accepted (a grown network: they keep their initialisation) and their
  names are returned (else [])."""
  missing, unexpected, reshaped = parameter_differences(saved, expected)
  accepted = missing if allow_missing else []
  if allow_missing:
    missing = []
  if not (missing or unexpected or reshaped):
    return accepted
  saved, expected = _leaf_shapes(saved), _leaf_shapes(expected)
  parts = [f"{name} ({len(keys)}): {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
           for name, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
  parts += [f"{k}: saved {saved[k]}, model {expected[k]}" for k in reshaped[:3]]
  raise CheckpointMismatchError("the checkpoint's parameters do not fit the model config ("
                                + "; ".join(parts)
                                + "); use the model config the checkpoint was trained with")


# The TrainState entries that hold a set of parameters (restore_ema's `part`): EMA and raw.
PARAMETER_PARTS = ("ema_params", "params")


def check_parameter_part(part: str) -> None:
  """ValueError unless `part` names a set of parameters of the saved TrainState."""
  if part not in PARAMETER_PARTS:
    raise ValueError(f"part={part!r} is not a parameter entry of the saved TrainState; use one "
                     f"of {PARAMETER_PARTS}")


# URI schemes whose directories Orbax (TensorStore) writes itself; local paths too.
ORBAX_SCHEMES = ("gs://", "s3://")


class MirrorUnsupportedError(ValueError, ProjectError):
  """Checkpoints on a filesystem Orbax does not write, in a run of several processes."""


def written_by_orbax(directory: str) -> bool:
  return not paths.is_uri(directory) or directory.startswith(ORBAX_SCHEMES)


def step_names(directory: str) -> list[str]:
  """The finished step directories (integer names) in `directory`; [] when it does not exist."""
  if not paths.isdir(directory):
    return []
  return [name for name in paths.listdir(directory) if name.isdigit()]


class Checkpointer:
  """A thin wrapper around `ocp.CheckpointManager` for TrainStates. `directory` is where the
  checkpoints live (WORKDIR/checkpoints); `_local` what Orbax opens (the same, or the local
  mirror of a filesystem Orbax does not write: see the module doc)."""

  def __init__(self, workdir: str, keep: int = 3, asynchronous: bool = True):
    root = paths.resolve(workdir)
    self.directory = os.path.join(root, "checkpoints")
    self.unreadable_directory = os.path.join(root, "checkpoints_unreadable")
    self._keep, self._asynchronous = keep, asynchronous
    self._local = self.directory
    if not written_by_orbax(self.directory):
      self._start_mirror()
    self._manager = self._open()

  def _start_mirror(self) -> None:
    if jax.process_count() > 1:
      raise MirrorUnsupportedError(
          f"checkpoints in {self.directory}: with several processes the workdir must be a shared "
          f"local path or on {' or '.join(ORBAX_SCHEMES)}, which Orbax writes from every "
          f"process; this filesystem is mirrored through one process's local disk")
    self._local = tempfile.mkdtemp(prefix="mcvd_jax_checkpoints_")
    self._asynchronous = False  # each save is copied out as soon as it is written
    for name in step_names(self.directory):
      paths.copytree(os.path.join(self.directory, name), os.path.join(self._local, name))

  def _mirrored(self) -> bool:
    return self._local != self.directory

  def _push(self, step: int) -> None:
    """Copies the saved `step` out to the mirrored filesystem and deletes the steps there that
    Orbax deleted here (max_to_keep)."""
    target = os.path.join(self.directory, str(step))
    if paths.exists(target):
      paths.rmtree(target)
    paths.copytree(os.path.join(self._local, str(step)), target)
    kept = set(step_names(self._local))
    for name in step_names(self.directory):
      if name not in kept:
        paths.rmtree(os.path.join(self.directory, name))

  def _open(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                           enable_async_checkpointing=self._asynchronous)
    return ocp.CheckpointManager(self._local, options=options)

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state: TrainState, meta: dict) -> None:
    """Starts an asynchronous save of `state` at its step (returns once the arrays are copied)."""
    step = int(jax.device_get(state.step))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state_to_dict(state)), meta=ocp.args.JsonSave(meta)),
        force=True)
    if self._mirrored():
      self._manager.wait_until_finished()
      self._push(step)

  def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
    """The state and meta saved at `step`, laid out as `abstract_state`'s shardings."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state_to_dict(abstract_like(abstract_state))),
        meta=ocp.args.JsonRestore()))
    return state_from_dict(dict(restored["state"]), abstract_state), dict(restored["meta"])

  def restore_ema(self, step: int, abstract_params: Any, abstract_model_state: Any = None,
                  part: str = "ema_params") -> Any:
    """Only the EMA parameters saved at `step` (or the saved TrainState entry `part` names:
    "params" reads the raw ones), laid out as `abstract_params` (a pytree of ShapeDtypeStructs
    with shardings). A partial read: the other parameters and the optimizer's moments (two thirds
    of the bytes) stay on disk, and the optimizer's structure does not matter.
    CheckpointMismatchError when the saved parameters are not the tree `abstract_params` describes.
    With `abstract_model_state` (a family's mutable state, e.g. batch statistics, non-empty)
    returns (parameters, model_state)."""
    check_parameter_part(part)
    reader = self._reader()
    try:
      check_same_parameters(reader.item_metadata(step)["state"][part], abstract_params)
      target = {part: abstract_like(abstract_params)}
      stateful = abstract_model_state is not None and has_leaves(abstract_model_state)
      if stateful:
        target["model_state"] = abstract_like(abstract_model_state)
      restored = reader.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True)))
    finally:
      reader.close()
    if abstract_model_state is None:
      return restored["state"][part]
    state = restored["state"]["model_state"] if stateful else abstract_model_state
    return restored["state"][part], state

  def _reader(self) -> ocp.CheckpointManager:
    """A read-only manager of its own: partial reads need the PyTree handler for `state`, which
    was written with the Standard one."""
    return ocp.CheckpointManager(
        self._local, options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})

  def saved_layout(self, step: int, part: str, sharding: Any) -> Any:
    """The saved TrainState entry `part` at `step` ("ema_params", "params", "model_state") as
    ShapeDtypeStructs placed with `sharding`: a restore target for weights whose network is not
    the config's (a grown one, `training.init_new_layers`)."""
    reader = self._reader()
    try:
      saved = reader.item_metadata(step)["state"][part]
    finally:
      reader.close()
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype,
                                                       sharding=sharding), saved)

  def restore_newest(self, abstract_state: TrainState,
                     move_unreadable: bool = True) -> tuple[TrainState, dict] | None:
    """Restores the newest readable checkpoint, or returns None when there is none at all.

    A checkpoint that fails to restore is tried no further (with a warning; moved aside when
    `move_unreadable`, so that training can save that step again) and the previous one is tried;
    if every one fails, NoReadableCheckpointError (nothing is started from scratch over a
    directory of checkpoints that might still be rescued).
    """
    return self.newest_readable(lambda step: self.restore(step, abstract_state), move_unreadable)

  def newest_readable(self, restore_step: Callable[[int], Any],
                      move_unreadable: bool = True) -> Any | None:
    """restore_step(step) of the newest step for which it succeeds (see restore_newest)."""
    failures = []
    for step in reversed(self.steps()):
      try:
        result = restore_step(step)
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        logging.warning("checkpoint %d in %s cannot be read (%s: %s); falling back to the "
                        "previous one", step, self.directory, type(e).__name__, e)
        failures.append((step, e))
        continue
      if failures and move_unreadable:
        self._move_aside([s for s, _ in failures])
      return result
    if failures:
      details = "; ".join(f"step {s}: {type(e).__name__}: {e}" for s, e in failures)
      raise NoReadableCheckpointError(
          f"none of the checkpoints in {self.directory} can be restored ({details}). Move the "
          f"directory away to start a new run, or fix the config so it matches the saved state.")
    return None

  def _move_aside(self, steps: list[int]) -> None:
    """Moves unreadable step directories out of the manager's way (a later save of the same step
    would otherwise collide with them)."""
    paths.makedirs(self.unreadable_directory)
    for step in steps:
      source = os.path.join(self.directory, str(step))
      target = os.path.join(self.unreadable_directory, str(step))
      if paths.exists(target):
        paths.rmtree(target)
      if paths.is_uri(source):  # object stores rename files, not directories
        paths.copytree(source, target)
        paths.rmtree(source)
      else:
        shutil.move(source, target)
      if self._mirrored():
        shutil.rmtree(os.path.join(self._local, str(step)))
      logging.warning("moved unreadable checkpoint %s to %s", source, target)
    self._manager.close()
    self._manager = self._open()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
    if self._mirrored():
      shutil.rmtree(self._local, ignore_errors=True)


def find_checkpoint_dir(path: str) -> tuple[str, int | None]:
  """(workdir whose checkpoints/ to open, a specific step or None) for a path naming a workdir,
  its checkpoints/ directory, or one checkpoints/<step> directory."""
  path = paths.resolve(path)
  if os.path.basename(path).isdigit() and os.path.basename(os.path.dirname(path)) == "checkpoints":
    return os.path.dirname(os.path.dirname(path)), int(os.path.basename(path))
  if os.path.basename(path) == "checkpoints":
    return os.path.dirname(path), None
  return path, None


def load_ema_params(path: str, init_params: Callable[[jax.Array], Any],
                    init_model_state: Callable[[jax.Array], Any] | None = None,
                    part: str = "ema_params") -> tuple[Any, int] | None:
  """The EMA parameters (and their step) of the newest readable training checkpoint under `path`
  (see find_checkpoint_dir), or None when there is no checkpoint. init_params(key): the family's
  initialiser of the model the checkpoint was trained with (only its shapes are used). Reads only
  the EMA parameters (Checkpointer.restore_ema), or the saved entry `part` names ("params": the
  raw ones). With `init_model_state` (a family with mutable state) the first element is
  (parameters, model_state)."""
  check_parameter_part(part)  # before newest_readable, which would take it for a damaged file
  workdir, step = find_checkpoint_dir(path)
  if not paths.isdir(os.path.join(workdir, "checkpoints")):
    return None
  # This process's first device: in a run of several processes each restores its own copy.
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def abstract(init):
    shapes = jax.eval_shape(init, jax.random.key(0))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                        shapes)

  params = abstract(init_params)
  model_state = None if init_model_state is None else abstract(init_model_state)
  checkpointer = Checkpointer(workdir)
  try:
    if step is not None:
      return checkpointer.restore_ema(step, params, model_state, part), step
    return checkpointer.newest_readable(
        lambda s: (checkpointer.restore_ema(s, params, model_state, part), s),
        move_unreadable=False)
  finally:
    checkpointer.close()
