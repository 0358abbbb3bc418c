"""Test setup: 8 fake CPU devices (set before jax is imported) and the reference fixture folder."""

import functools
import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
# One persistent compilation cache for the session, shared with the subprocesses tests start:
# the training tests compile the same train step in several processes.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mcvd_jax_test_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "2"

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the configs/ package lives at the repository root
  sys.path.insert(0, str(ROOT))

FIXTURES = pathlib.Path(os.environ.get("MCVD_REFERENCE_FIXTURES",
                                       ROOT.parent / "shared" / "fixtures" / "mcvd_reference"))


def reference_files() -> list[pathlib.Path]:
  """Every fixture-format .npz (with its .json) in the reference folder; empty when absent."""
  if not FIXTURES.is_dir():
    return []
  return sorted(p for p in FIXTURES.glob("*.npz") if p.with_suffix(".json").exists())


@pytest.fixture
def fixture_dir() -> pathlib.Path:
  if not FIXTURES.is_dir():
    pytest.skip(f"reference fixtures not found at {FIXTURES} (set MCVD_REFERENCE_FIXTURES)")
  return FIXTURES


@functools.lru_cache(maxsize=None)
def cached_init(cfg):
  """init_params(cfg, key 0), computed once per config for the whole session (compiles are slow
  on CPU). Callers must not modify the returned tree in place (JAX arrays cannot be)."""
  import jax

  from mcvd_jax.models import init_params
  return init_params(cfg, jax.random.key(0))
