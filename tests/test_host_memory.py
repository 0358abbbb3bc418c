"""host_memory: with glibc's malloc tuned, XLA's CPU temporaries stop being page-faulted in on
every call; without it (MCVD_JAX_KEEP_HOST_MEMORY=0) a 64 MB temporary is faulted in each time."""

import os
import statistics
import subprocess
import sys
import textwrap

import pytest

from mcvd_jax.core import host_memory

# A program with one 64 MB temporary (sin(x) materialised as the dot's operand); prints whether
# the tuning applied and the minor page faults of each of the last 20 of 30 calls. (Tuned, the
# heap still grows now and then while it settles: the temporary's aligned allocation does not
# always fit a freed block exactly, so the test looks at the median call.)
_PROBE = textwrap.dedent("""
    import resource
    from mcvd_jax.core.host_memory import keep_freed_host_memory
    applied = keep_freed_host_memory()
    import jax, jax.numpy as jnp
    from mcvd_jax.core.compilation import jit
    x = jnp.ones((4096, 4096), jnp.float32)
    w = jnp.ones((4096, 16), jnp.float32)
    f = jit(lambda x, w: jnp.sum(jnp.dot(jnp.sin(x), w))).lower(x, w).compile()
    faults = []
    for _ in range(30):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      f(x, w).block_until_ready()
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, *faults[-20:])
""")


def _probe(keep: str) -> tuple[bool, list[int]]:
  env = {**os.environ, "MCVD_JAX_KEEP_HOST_MEMORY": keep}
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                       timeout=300, check=True).stdout.split()
  return out[0] == "True", [int(v) for v in out[1:]]


@pytest.mark.skipif(host_memory._glibc() is None, reason="the tuning exists for glibc only")
def test_tuned_malloc_reuses_pages_of_freed_temporaries():
  applied, tuned = _probe("1")
  default_applied, default = _probe("0")
  assert applied and not default_applied
  pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
  # glibc's default mmaps and unmaps the temporary: every call faults all its pages in again.
  assert statistics.median(default) > pages // 2, default
  # Tuned, the heap keeps them: once it has grown, a typical call faults none of them in.
  assert statistics.median(tuned) < pages // 20, tuned


def test_opt_out_keeps_glibc_defaults(monkeypatch):
  monkeypatch.setenv("MCVD_JAX_KEEP_HOST_MEMORY", "0")
  monkeypatch.setattr(host_memory, "_applied", False)
  assert host_memory.keep_freed_host_memory() is False
