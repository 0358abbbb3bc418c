"""`main`'s three modes as one plain function, the same for every family, and the one config
check every mode makes first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # main imports MODES from here before jax may start
  from mcvd_jax.core.family import Family

MODES = ("train", "sample", "eval")


def check_config(config: Any, family: Family, device_count: int | None = None,
                 process_count: int | None = None) -> Any:
  """The shared sections (training, optim), then the family's; returns the family's checked
  config. Raises ConfigError naming the field, before anything is built or compiled. The device
  and process counts default to this run's."""
  from mcvd_jax.core.config_checks import validate_training
  if device_count is None or process_count is None:
    import jax
    device_count, process_count = jax.device_count(), jax.process_count()
  validate_training(config, device_count, process_count)
  return family.validate(config, device_count, process_count)


def run_mode(family: Family, config: Any, workdir: str, mode: str,
             checkpoint: str | None = None) -> str | None:
  """Checks the config, then train: the shared loop; sample: the family's sample writer; eval:
  the family's evaluation through the shared runner. Returns the path sample and eval modes wrote
  (None for train)."""
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is unknown; use one of {MODES}")
  checked = check_config(config, family)
  if mode == "train":
    from mcvd_jax.core.loop import train_and_evaluate
    train_and_evaluate(config, workdir, family, checked)
    return None
  if mode == "sample":
    return family.sample(config, checked, workdir, checkpoint)
  from mcvd_jax.core.eval_runner import run_evaluation
  return run_evaluation(family.evaluation(config, checked, workdir, checkpoint), workdir)
