"""The table of model families: `config.family` -> the `core.family.Family` it names.

Families are imported on first use, so a run of one family never imports another's modules.
Code outside the package (a test, a user's own model) can add one with `register`.
"""

from __future__ import annotations

import importlib
from typing import Any

from mcvd_jax.core.family import Family
from mcvd_jax.errors import ProjectError

# name -> "module:attribute" of its Family (or a Family, once registered by code)
FAMILIES: dict[str, str | Family] = {
    "mcvd": "mcvd_jax.video_diffusion.family:FAMILY",
    "image_diffusion": "mcvd_jax.image_diffusion.family:FAMILY",
    "ode_video": "mcvd_jax.ode_video.family:FAMILY",
}
DEFAULT_FAMILY = "mcvd"


class UnknownFamilyError(ValueError, ProjectError):
  """`config.family` names no registered family."""


def register(name: str, family: str | Family) -> None:
  """Adds (or replaces) a family under `name`: a Family, or "module:attribute" naming one."""
  FAMILIES[name] = family


def get_family(name: str) -> Family:
  """The Family registered as `name`; UnknownFamilyError listing the families otherwise."""
  if name not in FAMILIES:
    raise UnknownFamilyError(f"config.family={name!r} is unknown; use one of "
                             f"{', '.join(sorted(FAMILIES))}")
  entry = FAMILIES[name]
  if isinstance(entry, str):
    module, attribute = entry.split(":")
    entry = getattr(importlib.import_module(module), attribute)
  return entry


def family_name(config: Any) -> str:
  """The family a config selects (configs without a `family` field are MCVD's)."""
  return str(config.get("family", DEFAULT_FAMILY))


def family_of(config: Any) -> Family:
  return get_family(family_name(config))
