"""How an ODE is solved, as a typed value: `OdeSettings`, built and checked from a config section.

Only this file reads config sections; `solve` and the CNF functions receive the checked settings.
Every error names the field as `<section>.<field>` and what works, before anything is compiled.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mcvd_jax.errors import ProjectError

# Solvers by config name. Euler has no embedded error estimate, so it runs with fixed steps only.
SOLVER_NAMES = ("tsit5", "dopri5", "bosh3", "heun", "euler")
ADAPTIVE_SOLVERS = ("tsit5", "dopri5", "bosh3", "heun")
ADJOINTS = ("recursive_checkpoint", "backsolve")
BATCH_MODES = ("joint", "vmap")


class OdeConfigError(ValueError, ProjectError):
  """An ODE setting that cannot work."""


class OdeSettings(NamedTuple):
  """How to solve an ODE.

  solver: one of SOLVER_NAMES.
  adaptive: True: a PID step-size controller with `rtol`/`atol` (error scaled as
    atol + rtol·max(|y0|, |y1|), as torchdiffeq); False: fixed steps, `num_steps` equal steps
    over [t0, t1] or steps of size `dt0`.
  dt0: adaptive: the first step's size (None: diffrax chooses); fixed: the step size. A
    magnitude: its sign follows t1 - t0, so reverse-time solves take the same value.
  num_steps: fixed steps only: how many equal steps (exactly one of num_steps, dt0).
  max_steps: the most steps one solve may take; a solve that needs more is an error. It also
    sizes the checkpointing of the default adjoint, so keep it tight.
  adjoint: "recursive_checkpoint" (exact gradients of the discretised solve, diffrax's
    recommendation) or "backsolve" (the continuous adjoint of FFJORD/RNODE/MRCNF: low memory,
    approximate gradients; parameters must reach the field through `args`).
  batch_mode: "joint": the batch is one state with one step size (the PyTorch references);
    "vmap": each sample is solved on its own with its own steps.
  section: the config section these came from, named in errors.
  """

  solver: str = "tsit5"
  adaptive: bool = True
  rtol: float = 1e-5
  atol: float = 1e-5
  dt0: float | None = None
  num_steps: int | None = None
  max_steps: int = 4096
  adjoint: str = "recursive_checkpoint"
  batch_mode: str = "joint"
  section: str = "ode"


FIELDS = tuple(f for f in OdeSettings._fields if f != "section")


def _fail(settings: OdeSettings, field: str, problem: str) -> None:
  value = getattr(settings, field)
  raise OdeConfigError(f"{settings.section}.{field}={value!r} {problem}")


def _choice(settings: OdeSettings, field: str, choices: tuple[str, ...]) -> None:
  if getattr(settings, field) not in choices:
    _fail(settings, field, f"is not one of {', '.join(map(repr, choices))}")


def check_settings(settings: OdeSettings) -> OdeSettings:
  """The settings unchanged, or OdeConfigError naming `<section>.<field>` and what works."""
  _choice(settings, "solver", SOLVER_NAMES)
  _choice(settings, "adjoint", ADJOINTS)
  _choice(settings, "batch_mode", BATCH_MODES)
  if not isinstance(settings.adaptive, bool):
    _fail(settings, "adaptive", "must be True (PID step-size control) or False (fixed steps)")
  if not isinstance(settings.max_steps, int) or settings.max_steps < 1:
    _fail(settings, "max_steps", "must be an integer >= 1")
  if settings.dt0 is not None and not settings.dt0 > 0:
    _fail(settings, "dt0", "must be > 0 (a magnitude; its sign follows t1 - t0) or None")
  if settings.adaptive:
    if settings.solver not in ADAPTIVE_SOLVERS:
      _fail(settings, "solver", f"has no error estimate: use one of {ADAPTIVE_SOLVERS} or set "
            f"{settings.section}.adaptive=False with {settings.section}.num_steps")
    for name in ("rtol", "atol"):
      if not getattr(settings, name) > 0:
        _fail(settings, name, "must be > 0 for adaptive steps")
    if settings.num_steps is not None:
      _fail(settings, "num_steps", f"applies to fixed steps only: set it to None, or set "
            f"{settings.section}.adaptive=False")
    return settings
  if (settings.num_steps is None) == (settings.dt0 is None):
    _fail(settings, "num_steps", f"with {settings.section}.dt0={settings.dt0!r}: fixed steps "
          "need exactly one of num_steps (how many steps) and dt0 (their size)")
  if settings.num_steps is not None:
    if not isinstance(settings.num_steps, int) or settings.num_steps < 1:
      _fail(settings, "num_steps", "must be an integer >= 1")
    if settings.max_steps < settings.num_steps:
      _fail(settings, "max_steps", f"is below {settings.section}.num_steps="
            f"{settings.num_steps}: raise max_steps to at least num_steps")
  return settings


def settings_from_config(section: Any, name: str = "ode") -> OdeSettings:
  """section: an ml_collections ConfigDict or a mapping with any of OdeSettings' fields (the
  others keep their defaults); name: its path in the config (e.g. "mrcnf.ode"), used in errors.
  Unknown fields are errors, so a misspelt setting never silently falls back to a default.
  dt0 and num_steps of 0 mean unset (None): a config field holding None cannot be set from a
  command-line flag, so configs write 0."""
  if not hasattr(section, "items"):
    raise OdeConfigError(f"{name} must be a config section (ConfigDict or mapping), "
                         f"not {type(section).__name__}")
  values = dict(section.items())
  unknown = sorted(set(values) - set(FIELDS))
  if unknown:
    raise OdeConfigError(f"{name}.{unknown[0]} is not an ODE setting; the settings are "
                         f"{', '.join(FIELDS)}")
  for unset_by_zero in ("dt0", "num_steps"):
    if values.get(unset_by_zero) == 0:
      values[unset_by_zero] = None
  settings = OdeSettings(**values, section=name)
  if isinstance(settings.solver, str):
    settings = settings._replace(solver=settings.solver.lower())
  return check_settings(settings)
