"""Command line entry point: parses flags and calls into the library.

  python -m mcvd_jax.main --config=configs/smmnist.py:quick --workdir=/tmp/mcvd          # train
  python -m mcvd_jax.main --config=configs/smmnist.py:quick --workdir=/tmp/mcvd --mode=sample
  python -m mcvd_jax.main --config=configs/smmnist.py:quick --workdir=/tmp/mcvd --mode=eval

Every family (`config.family`, default "mcvd"; see mcvd_jax/registry.py) runs the same modes:
train (default; the shared loop, resuming from WORKDIR/checkpoints when there are any), sample
(the family's samples from the newest checkpoint in the workdir, or from --checkpoint; for MCVD
videos of `sampling.task`) and eval (the family's test protocols, `eval` section of the config;
writes WORKDIR/eval_report.json and .md, and resumes an interrupted evaluation).

The project's own errors (a bad config value, missing or corrupt data, an unwritable workdir, a
non-finite loss, an unreadable checkpoint: mcvd_jax.errors.ProjectError) end with their message
alone and exit status 1; anything else keeps its traceback.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mcvd_jax import cli_errors
from mcvd_jax.core.modes import MODES


def _make_configs_importable(argv: list[str]) -> None:
  """Config files import their siblings as `configs.<name>`: put the directory that holds the
  config's folder on sys.path, so the command also works outside the repository root."""
  for arg in argv:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1].split(":", 1)[0]
      root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
      if root not in sys.path:
        sys.path.insert(0, root)


_make_configs_importable(sys.argv)

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for outputs (checkpoints, samples, TensorBoard).")
flags.DEFINE_enum("mode", "train", list(MODES), "What to run (core.modes).")
flags.DEFINE_string("checkpoint", None, "sample and eval modes: a converted reference checkpoint "
                    "(python -m mcvd_jax.convert --out=DIR), or another run's workdir / "
                    "checkpoints/<step> directory; default: the newest checkpoint in --workdir.")
flags.DEFINE_bool("distributed", False, "Join a run of several processes first (one per host of "
                  "a TPU pod or GPU cluster): jax.distributed.initialize, with the three flags "
                  "below where given, the cluster's environment for the rest.")
flags.DEFINE_string("coordinator_address", None, "--distributed: HOST:PORT of process 0's "
                    "coordination service (implies --distributed).")
flags.DEFINE_integer("num_processes", None, "--distributed: how many processes the run has.")
flags.DEFINE_integer("process_id", None, "--distributed: this process's id, 0 .. num_processes-1.")
flags.DEFINE_integer("distributed_timeout", 300, "--distributed: seconds to wait for every "
                     "process to join.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from mcvd_jax.core.host_memory import keep_freed_host_memory
  keep_freed_host_memory()  # before jax's first computation (see host_memory)
  from mcvd_jax import registry
  from mcvd_jax.core.modes import run_mode
  from mcvd_jax.core.preemption import PREEMPTED_EXIT_STATUS, TrainingPreempted
  from mcvd_jax.errors import ProjectError
  try:
    _join_processes()
    family = registry.family_of(FLAGS.config)
    path = run_mode(family, FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.checkpoint)
  except TrainingPreempted as stop:  # saved: rerunning the same command continues
    print(stop, file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_STATUS)
  except ProjectError as error:
    sys.exit(f"error: {error}")
  if path:
    logging.info("done: %s", path)
    print(path)


def _join_processes() -> None:
  """--distributed (or any of its settings given): joins the multi-process run."""
  explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  if not FLAGS.distributed and all(v is None for v in explicit):
    return
  from mcvd_jax.core.distributed import ProcessSettings, initialize
  initialize(ProcessSettings(*explicit, timeout_seconds=FLAGS.distributed_timeout))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, but a mistake in --config (an unknown field, section or variant, a value
  of the wrong type, a missing file) or any other flag is one `error: ...` line and exit status 1,
  before jax is imported (mcvd_jax/cli_errors.py), instead of ml_collections' traceback."""
  return cli_errors.parse_flags_or_exit(FLAGS, argv, "config")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
