"""Command line entry point: parses flags and calls into the library.

  python -m mcvd_jax.main --config=configs/smmnist.py:quick --workdir=/tmp/mcvd          # train
  python -m mcvd_jax.main --config=configs/smmnist.py:quick --workdir=/tmp/mcvd --mode=sample
  python -m mcvd_jax.main --config=configs/smmnist.py:quick --workdir=/tmp/mcvd --mode=eval

Modes: train (default; resumes from WORKDIR/checkpoints when there are any), sample (videos of
`sampling.task` from the newest checkpoint in the workdir, or from --checkpoint) and eval (the
paper's test protocols for the config's dataset, `eval` section of the config; writes
WORKDIR/eval_report.json and .md, and resumes an interrupted evaluation).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags


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
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"], "What to run.")
flags.DEFINE_string("checkpoint", None, "sample and eval modes: a converted reference checkpoint "
                    "(python -m mcvd_jax.convert --out=DIR), or another run's workdir / "
                    "checkpoints/<step> directory; default: the newest checkpoint in --workdir.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host "
                  "TPU pods and GPU clusters; arguments come from the environment).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from mcvd_jax.host_memory import keep_freed_host_memory
  keep_freed_host_memory()  # before jax's first computation (see host_memory)
  if FLAGS.distributed:
    import jax
    jax.distributed.initialize()
  if FLAGS.mode == "train":
    from mcvd_jax import train
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == "sample":
    from mcvd_jax import sample
    path = sample.sample_and_save(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)
    logging.info("done: %s", path)
    print(path)
  elif FLAGS.mode == "eval":
    from mcvd_jax import eval_run
    print(eval_run.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint))


if __name__ == "__main__":
  app.run(main)
