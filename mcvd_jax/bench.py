"""Benchmarks of a family on whatever devices are present; prints one JSON object.

  python -m mcvd_jax.bench [--family=mcvd] [--batch=8] [--repeats=5] [family flags ...]

The family's bench module (Family.bench_module) defines its own flags and what it times; the
harness (timing, page faults, GFLOP from XLA's cost analysis) is mcvd_jax/core/bench.py. Entries:

  python -m mcvd_jax.bench --models=smmnist --parts=train     # MCVD: the paper's SMMNIST train step
  python -m mcvd_jax.bench --family=image_diffusion --image_parts=train --batch=128  # CIFAR-10 step
  python -m mcvd_jax.bench --family=image_diffusion --image_models=mnist_quick --image_noise=gff

(MCVD: mcvd_jax/video_diffusion/bench.py; images: mcvd_jax/image_diffusion/bench.py, whose
`cifar10` is configs/cifar10.py's network. `--helpfull` lists every family flag.)
"""

from __future__ import annotations

import importlib
import json
import sys

from absl import app, flags

from mcvd_jax.core.host_memory import keep_freed_host_memory

# First, before anything can start jax (see host_memory); only when run as the CLI.
_KEPT = keep_freed_host_memory() if __name__ == "__main__" else False

from mcvd_jax import registry  # noqa: E402


def _family_from_argv(argv: list[str]) -> str:
  """--family must be known before flags are parsed: it decides which flags exist."""
  for i, arg in enumerate(argv):
    if arg.startswith("--family="):
      return arg.split("=", 1)[1]
    if arg == "--family" and i + 1 < len(argv):
      return argv[i + 1]
  return registry.DEFAULT_FAMILY


flags.DEFINE_string("family", registry.DEFAULT_FAMILY,
                    f"Family to benchmark: {', '.join(sorted(registry.FAMILIES))}.")
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("repeats", 5, "Timed repeats (after one warm-up call).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mcvd_jax.core.bench import header
  family = registry.get_family(FLAGS.family)
  report = {**header(_KEPT), "family": family.name}
  report.update(importlib.import_module(family.bench_module).run(FLAGS))
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  try:
    _FAMILY = registry.get_family(_family_from_argv(sys.argv))
  except registry.UnknownFamilyError as error:
    sys.exit(f"error: {error}")
  if not _FAMILY.bench_module:
    sys.exit(f"error: family {_FAMILY.name!r} has no benchmarks")
  importlib.import_module(_FAMILY.bench_module)  # defines the family's flags
  app.run(main)
