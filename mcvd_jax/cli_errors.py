"""One-line errors for mistakes in the command line's config flag, found before jax is imported.

ml_collections reports a mistyped override (`--config.difusion.target=...`,
`--config.diffusion.targte=...`) as a bare AttributeError / KeyError traceback from ConfigDict, an
unknown variant (`--config=FILE:VARIANT`, configs/default.py: UnknownVariantError) as absl's
IllegalFlagValueError holding the whole traceback, a value of the wrong type as
"flag --config.PATH=VALUE: <parser message>", and a config file that does not exist only when the
config is first read. `explain` turns the argv that failed into one line that names the bad field
or variant and lists the valid names, closest first; `parse_flags_or_exit` is the flags parser
main.py gives absl.app.run. Config files import nothing heavy (ml_collections, and jax-free
mcvd_jax.core.config_base), so loading one here to find the valid names does not import jax.
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from absl import flags
from ml_collections.config_flags import config_path


def closest_first(name: str, candidates: Sequence[str]) -> list[str]:
  """`candidates` with difflib's close matches of `name` first (best first), then the rest in
  their own order."""
  close = difflib.get_close_matches(name, list(candidates), n=len(candidates))
  return close + [c for c in candidates if c not in close]


def suggestion(name: str, candidates: Sequence[str], label: str, quote: bool = False) -> str:
  """'; did you mean X? LABEL: X, a, b' (or '. LABEL: a, b' when nothing is close)."""
  show = repr if quote else str
  ordered = closest_first(name, candidates)
  close = difflib.get_close_matches(name, list(candidates), n=1)
  hint = f"; did you mean {show(close[0])}?" if close else "."
  return f"{hint} {label}: {', '.join(show(c) for c in ordered)}"


def config_argument(argv: Sequence[str], flag: str = "config") -> str | None:
  """The value of `--FLAG=...` or `--FLAG ...` in argv (`path[:variant]`; absl takes the last)."""
  value = None
  for i, arg in enumerate(argv):
    match = re.fullmatch(rf"--?{re.escape(flag)}(=(.*))?", arg)
    if match and match.group(1):
      value = match.group(2)
    elif match and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def config_overrides(argv: Sequence[str], flag: str = "config") -> dict[str, str | None]:
  """{field path: value as typed (None for a bare boolean `--FLAG.x` / `--noFLAG.x`)} of every
  `--FLAG.PATH[=VALUE]` in argv, in the order given (the last value of a repeated path)."""
  overrides: dict[str, str | None] = {}
  for i, arg in enumerate(argv):
    match = re.fullmatch(rf"--?(no)?{re.escape(flag)}\.([^=]+)(=(.*))?", arg, flags=re.DOTALL)
    if not match:
      continue
    value = match.group(4)
    if value is None and not match.group(1) and i + 1 < len(argv):
      nxt = argv[i + 1]
      value = None if nxt.startswith("-") else nxt  # `--FLAG.x VALUE`, or a bare boolean
    overrides.pop(match.group(2), None)
    overrides[match.group(2)] = value
  return overrides


def config_file_problem(argument: str, flag: str = "config") -> str | None:
  """The line for a `path[:variant]` whose file cannot be read as ml_collections reads it (a path
  relative to the working directory), or None."""
  path = argument.split(":", 1)[0]
  if not path:
    return f"--{flag}={argument}: no config file given"
  if not os.path.isfile(path):
    return f"--{flag}={argument}: no such config file {path!r} (from {os.getcwd()})"
  return None


def load_config(argument: str) -> Any:
  """`get_config(variant)` of the file of `path[:variant]`, loaded and called as ml_collections
  does (any file name; the variant only when one is given). Not entered in sys.modules: the flag
  loads its own copy."""
  path, *variant = argument.split(":", 1)
  loader = importlib.machinery.SourceFileLoader("_mcvd_jax_cli_config", path)
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
  loader.exec_module(module)
  return module.get_config(*variant)


def is_unknown_variant(error: BaseException) -> bool:
  """Whether `error` is configs/default.py's UnknownVariantError. By class name: the config package
  a user's config file imports may be a copy of this repository's, with its own class object."""
  return any(cls.__name__ == "UnknownVariantError" for cls in type(error).__mro__)


def _field_names(node: Any) -> list[str] | None:
  """The field names of a config section (a ConfigDict or any mapping; a ConfigDict lists them
  sorted); None for a leaf value."""
  if hasattr(node, "keys") and hasattr(node, "__getitem__"):
    return [str(k) for k in node.keys()]
  return None


def _split_path(path: str) -> list[str]:
  """`a.b.c` as ml_collections splits it (which also reads `a["b"]`); plain dots otherwise."""
  try:
    return [str(p) for p in config_path.split(path)]
  except (ValueError, TypeError, SyntaxError):
    return path.split(".")


def unknown_field(config: Any, path: str, flag: str = "config") -> str | None:
  """The line for an override path that leaves the config (a mistyped section or field, or a
  field used as a section), naming the first bad part and its section's fields closest first; None
  when every part exists."""
  node, walked = config, []
  for part in _split_path(path):
    names = _field_names(node)
    owner = repr(".".join(walked)) if walked else "the config"
    if names is None:
      return f"--{flag}.{path}: {owner} is a field ({type(node).__name__}), not a section"
    if part not in names:
      return (f"--{flag}.{path}: {owner} has no field {part!r}"
              f"{suggestion(part, names, 'Fields')}")
    node = node[part]
    walked.append(part)
  return None


def expected_type(config: Any, path: str) -> str:
  """The type an override of `path` must parse as: the type of the config's value there (what
  ml_collections picks the parser by)."""
  parts = _split_path(path)
  holder = config
  for part in parts[:-1]:
    holder = holder[part]
  kind = holder.get_type(parts[-1]) if hasattr(holder, "get_type") else type(holder[parts[-1]])
  if kind is bool:
    return "bool (true or false)"
  return getattr(kind, "__name__", str(kind))


def failed_override(error: BaseException, flag: str = "config") -> str | None:
  """The field path absl's IllegalFlagValueError names ("flag --FLAG.PATH=VALUE: why"), or None
  when the error is not about an override's value."""
  match = re.match(rf"flag --{re.escape(flag)}\.([^=\s]+)=", str(error))
  return match.group(1) if match else None


def bad_value(config: Any, path: str, value: str | None, flag: str = "config") -> str:
  """The line for an override whose value does not parse as its field's type."""
  got = f", got {value!r}" if value is not None else ""
  return f"--{flag}.{path}: expected {expected_type(config, path)}{got}"


def explain(argv: Sequence[str], error: BaseException | None = None,
            flag: str = "config") -> str | None:
  """The one line (without "error: ") for the config flag's part of argv: a missing file, an
  unknown variant, an override of a field that does not exist, or (when `error` is the absl error
  of a value that did not parse) that value. None when none of these explains it."""
  argument = config_argument(argv, flag)
  if argument is None:
    return None  # absl's own message (a required flag) says it
  problem = config_file_problem(argument, flag)
  if problem:
    return problem
  try:
    config = load_config(argument)
  except Exception as load_error:  # anything but a variant is a bug of the file: keep its traceback
    return str(load_error) if is_unknown_variant(load_error) else None
  overrides = config_overrides(argv, flag)
  for path in overrides:
    line = unknown_field(config, path, flag)
    if line:
      return line
  path = failed_override(error, flag) if error is not None else None
  if path in overrides:
    return bad_value(config, path, overrides[path], flag)
  return None


def expand_flagfiles(flag_values: flags.FlagValues, argv: list[str]) -> list[str]:
  """argv with each `--flagfile=FILE` replaced by the flags in FILE, as ml_collections reads it
  to find the overrides; argv itself when a flag file cannot be read (absl reports that)."""
  try:
    return flag_values.read_flags_from_files(argv, force_gnu=False)
  except flags.Error:
    return argv


def parse_flags_or_exit(flag_values: flags.FlagValues, argv: list[str],
                        flag: str = "config") -> list[str]:
  """`flag_values(argv)` (absl's parsing, as app.run's default parser), but a mistake in the config
  flag exits with status 1 and one line, `error: ...`, on stderr; any other flag error exits the
  same way with absl's own message. Other exceptions keep their traceback."""
  try:
    remaining = flag_values(argv)
  except Exception as error:
    line = explain(expand_flagfiles(flag_values, argv), error, flag)
    if line is None and not isinstance(error, flags.Error):
      raise
    sys.exit(f"error: {line or error}")
  # ml_collections defers a missing file's error until the config is read (in main): say it now.
  argument = config_argument(expand_flagfiles(flag_values, argv), flag)
  problem = config_file_problem(argument, flag) if argument is not None else None
  if problem:
    sys.exit(f"error: {problem}")
  return remaining
