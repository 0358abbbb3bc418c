"""Command line entry point: parses flags and calls into the library.

  python -m mcvd_jax.main --config=configs/smmnist.py:tiny --workdir=/tmp/mcvd --mode=sample

Modes: sample (write videos from a model into the workdir). Training and evaluation modes come
with the training-loop and evaluation work.
"""

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for outputs (samples, checkpoints, logs).")
flags.DEFINE_enum("mode", "sample", ["sample"], "What to run.")
flags.DEFINE_string("checkpoint", None, "Converted checkpoint directory (python -m "
                    "mcvd_jax.convert --out=DIR) to sample from; default: random weights.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from mcvd_jax import sample
  if FLAGS.mode == "sample":
    path = sample.sample_and_save(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)
    logging.info("done: %s", path)
    print(path)


if __name__ == "__main__":
  app.run(main)
