"""Keep freed host memory mapped, so that XLA's CPU temporaries are not page-faulted in every step.

XLA's CPU runtime allocates each execution's temporary buffers with malloc and frees them when
the execution ends: 1.5 GB for the paper's SMMNIST training step at batch 8. glibc serves a block
that large with fresh pages from mmap and unmaps it on free, so every step faulted in ~400,000
pages again: 2-4 s of kernel time in a 7-9 s step on 2 cores, and the fusions that first write
those buffers ran 10-30x slower than alone. With mmap off for large blocks, the heap never trimmed
and one malloc arena, the next step reuses the same pages (faults per step: ~400,000 -> ~0).

The cost: the process keeps its peak heap until it exits (freed memory is reused, not returned to
the system), which suits a training or evaluation process. Set MCVD_JAX_KEEP_HOST_MEMORY=0 to
keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os

from absl import logging

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1

_applied = False


def _glibc() -> ctypes.CDLL | None:
  """The process's C library when it is glibc (mallopt means something only there), else None."""
  try:
    libc = ctypes.CDLL(None)
    version = libc.gnu_get_libc_version
    libc.mallopt
  except (OSError, AttributeError):
    return None
  version.restype = ctypes.c_char_p
  return libc


def keep_freed_host_memory() -> bool:
  """Tune glibc's malloc so that freed large blocks stay mapped for reuse; True when applied.

  Call it first thing in a process, before jax runs its first computation: the threads that
  allocate XLA's buffers choose their malloc arena once, at their first allocation, and only a
  single arena keeps the large blocks out of mmap. Does nothing (False) on a C library other than
  glibc, when MCVD_JAX_KEEP_HOST_MEMORY=0, or when a mallopt call is refused.
  """
  global _applied
  if _applied:
    return True
  if os.environ.get("MCVD_JAX_KEEP_HOST_MEMORY", "1").strip().lower() in ("0", "false", "no"):
    return False
  libc = _glibc()
  if libc is None:
    return False
  # Order matters: with one arena, every thread allocates from the main heap, which can grow
  # with brk; with mmap off, large blocks come from that heap; with trimming off, freeing them
  # keeps their pages.
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX))
  for param, value in settings:
    if libc.mallopt(param, value) != 1:
      logging.warning("glibc refused mallopt(%d, %d); keeping its malloc defaults", param, value)
      return False
  _applied = True
  logging.info("glibc malloc: one arena, no mmap for large blocks, no trimming "
               "(freed host memory is kept for reuse; MCVD_JAX_KEEP_HOST_MEMORY=0 to turn off)")
  return True
