"""Starting a run of several processes (`main --distributed`): one process per host of a TPU pod
or a GPU cluster, or several on one machine for tests.

The coordinator address, the number of processes and this process's id come from explicit
values, or, for those left out, from the cluster's environment (Cloud TPU, Slurm, Open MPI,
Kubernetes: what `jax.distributed.initialize` detects). Must run before jax starts a backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcvd_jax.errors import ProjectError


class DistributedSetupError(ValueError, ProjectError):
  """Inconsistent process settings, or a coordinator that cannot be reached."""


@dataclass(frozen=True)
class ProcessSettings:
  """Explicit settings of a multi-process run; None: taken from the cluster's environment."""

  coordinator_address: str | None = None  # host:port of process 0's coordination service
  num_processes: int | None = None
  process_id: int | None = None
  timeout_seconds: int = 300  # how long to wait for every process to join

  def check(self) -> None:
    """DistributedSetupError naming the setting that cannot work."""
    if self.coordinator_address is not None:
      host, sep, port = self.coordinator_address.rpartition(":")
      if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedSetupError(
            f"--coordinator_address={self.coordinator_address!r} is not HOST:PORT (e.g. "
            f"10.0.0.2:1234, the address of process 0, reachable by every process)")
    if self.num_processes is not None and self.num_processes < 1:
      raise DistributedSetupError(f"--num_processes={self.num_processes} must be >= 1")
    if self.process_id is not None:
      if self.process_id < 0:
        raise DistributedSetupError(f"--process_id={self.process_id} must be >= 0")
      if self.num_processes is not None and self.process_id >= self.num_processes:
        raise DistributedSetupError(
            f"--process_id={self.process_id} must be below --num_processes="
            f"{self.num_processes} (ids run from 0)")
    if self.timeout_seconds < 1:
      raise DistributedSetupError(f"the join timeout must be >= 1 s, got {self.timeout_seconds}")


def initialize(settings: ProcessSettings) -> None:
  """Joins the run (`jax.distributed.initialize`; settings left None are detected from the
  cluster's environment). On CPU the processes' collectives use gloo (jax's default)."""
  import jax
  settings.check()
  try:
    jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                               num_processes=settings.num_processes,
                               process_id=settings.process_id,
                               initialization_timeout=settings.timeout_seconds)
  except (RuntimeError, ValueError) as e:
    where = settings.coordinator_address or "the address the cluster environment names"
    raise DistributedSetupError(
        f"could not join the multi-process run through the coordinator at {where} ({e}); check "
        f"that process 0 runs and that this host reaches that address and port") from e
