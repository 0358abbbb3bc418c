"""Command line: convert a reference checkpoint, or check our numbers against a reference file.

  python -m mcvd_jax.convert --reference=checkpoint.pt [--reference_config=config.yml] --out=DIR
  python -m mcvd_jax.convert --reference=CASE.npz --out=DIR
  python -m mcvd_jax.convert --reference=CASE.npz --check

The first two write an Orbax checkpoint of our parameters to DIR/params and the network config to
DIR/model_config.json. --check runs our network, loss or samplers on the file's inputs, prints the
largest absolute and relative differences from its stored outputs, and exits 1 above tolerance.
"""

from __future__ import annotations

import sys

from absl import app, flags

flags.DEFINE_string("reference", None, "Reference file: a .pt checkpoint or a fixture-format .npz.")
flags.DEFINE_string("out", None, "Output directory for the converted checkpoint.")
flags.DEFINE_bool("check", False, "Compare our outputs with the reference file's stored outputs.")
flags.DEFINE_string("reference_config", None,
                    "The reference run's config.yml (for .pt files; default: config.yml beside it).")
flags.DEFINE_enum("weights", "ema", ["ema", "model"], "Which weights of a .pt checkpoint to use.")
flags.mark_flag_as_required("reference")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  # Reference numbers were made in full float32: never let a GPU use TF32 here.
  jax.config.update("jax_default_matmul_precision", "highest")
  from mcvd_jax.convert import export
  if FLAGS.check:
    from mcvd_jax.convert.check import check_file
    results = check_file(FLAGS.reference)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} comparisons within tolerance"
          + (f"; FAILED: {', '.join(r.name for r in failed)}" if failed else ""))
    return 1 if failed else 0
  if not FLAGS.out:
    print("convert: give --out=DIR to write the converted checkpoint, or --check", file=sys.stderr)
    return 2
  cfg, params, schedule_fields = export.load_reference(FLAGS.reference, FLAGS.reference_config,
                                                      use_ema=FLAGS.weights == "ema")
  path = export.save_converted(FLAGS.out, cfg, params, schedule_fields)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  app.run(main)
