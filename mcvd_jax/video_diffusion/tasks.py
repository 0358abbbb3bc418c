"""MCVD's tasks in one place: which frames a clip holds (past | current | future), the block
masks that decide what each training sample teaches, and how a real clip is split into what a
task is given and what it must produce. Training, sampling, config checks and evaluation import
these; this module imports nothing of the family.

  prediction           past frames given, the next frames generated
  generation           nothing given
  interpolation        past and future frames given, the frames between them generated
  past_reconstruction  future frames given, the frames before them generated
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.models import UNetConfig

TASKS = ("prediction", "generation", "interpolation", "past_reconstruction")


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


def masking_from_config(config: Any) -> Masking:
  return Masking(config.model.num_frames_cond, config.model.num_frames,
                 config.model.num_frames_future, config.training.prob_mask_cond,
                 config.training.prob_mask_future, bool(config.training.prob_mask_sync))


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
  return tuple(name for name in TASKS if joint[name] > 0)



class TaskInputs(NamedTuple):
  """What a rollout is given for a task (past / future or None, in [-1, 1]) and the real frames
  spanning the same time as the rollout's output, [B, N, H, W, C]."""

  past: jax.Array | None
  future: jax.Array | None
  num_frames: int
  real: jax.Array


def clip_frames_for_task(task: str, cfg: UNetConfig, horizon: int) -> int:
  """Frames of real clip `task_inputs` needs to produce `horizon` frames (T for interpolation)."""
  if task == "interpolation":
    return cfg.num_frames_cond + cfg.num_frames + cfg.num_frames_future
  if task == "prediction":
    return cfg.num_frames_cond + horizon
  if task == "past_reconstruction":
    return horizon + cfg.num_frames_future
  return horizon


def task_inputs(task: str, clip: jax.Array, cfg: UNetConfig, horizon: int) -> TaskInputs:
  """Splits real clips [B, >= clip_frames_for_task(...), H, W, C] for a task.

  prediction: the first Nc frames are given; generation: nothing; interpolation: Nc past and Nf
  future frames around the T frames to fill; past_reconstruction: the Nf frames after the
  `horizon` frames to produce.
  """
  if task not in TASKS:
    raise ConfigError(f"sampling.task={task!r} is unknown; use one of {TASKS}")
  need = clip_frames_for_task(task, cfg, horizon)
  if clip.shape[1] < need:
    raise ValueError(f"task {task!r} with {horizon} frames needs clips of {need} frames, got "
                     f"{clip.shape[1]}")
  clip = clip[:, :need]
  nc, t = cfg.num_frames_cond, cfg.num_frames
  if task == "prediction":
    return TaskInputs(clip[:, :nc], None, horizon, clip)
  if task == "interpolation":
    return TaskInputs(clip[:, :nc], clip[:, nc + t:], t, clip)
  if task == "past_reconstruction":
    return TaskInputs(None, clip[:, horizon:], horizon, clip)
  return TaskInputs(None, None, horizon, clip)
