"""`main`'s three modes as one plain function, the same for every family."""

from __future__ import annotations

from typing import Any

MODES = ("train", "sample", "eval")


def run_mode(config: Any, workdir: str, mode: str, checkpoint: str | None = None) -> str | None:
  """train: the shared loop; sample: the family's sample writer; eval: the family's evaluation
  through the shared runner. Returns the path sample and eval modes wrote (None for train)."""
  from mcvd_jax import registry
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is unknown; use one of {MODES}")
  family = registry.family_of(config)
  if mode == "train":
    from mcvd_jax.core.loop import train_and_evaluate
    train_and_evaluate(config, workdir)
    return None
  if mode == "sample":
    return family.sample(config, workdir, checkpoint)
  from mcvd_jax.core.eval_runner import run_evaluation
  return run_evaluation(family.evaluation(config, workdir, checkpoint), workdir)
