"""Score any model's samples: every metric for two sets of videos on disk.

  python -m mcvd_jax.evaluate --real=real.npy --fake=fake.npz [--cond_frames=K]
      [--future_frames=F] [--samples_per_video=S] [--metrics=psnr,ssim,lpips,fvd] [--binarize]
      [--fid_weights=inception_fid.npz] [--baseline=copy_last|blend] [--out=report.json]

Files are .npy / .npz arrays (uint8 [N, T, H, W, C], or float in [0, 1]) or folders of GIF/MP4
videos. With S samples per real video, the generated set holds N*S videos, the S samples of real
video i at positions i*S .. i*S+S-1 (the reference's order). The first K frames of every video are
the conditioning frames and the last F the given future frames (interpolation): excluded from the
frame metrics, kept for FVD. `fid` (frame-level FID) is opt-in and needs Inception weights (see
mcvd_jax/metrics/fid.py). `--baseline` also scores what doing nothing gives on the same real videos
(metrics/baselines.py: copy_last repeats the last conditioning frame, blend fades from the last
past to the first future frame), reported under "baseline" beside the generated set's numbers
(or alone when --fake is not given). Bad input ends with one line saying what is wrong, and exit
status 1.
"""

from __future__ import annotations

import sys

from absl import app, flags

flags.DEFINE_string("real", None, "Real videos: .npy/.npz or a folder of GIF/MP4 files.")
flags.DEFINE_string("fake", None, "Generated videos, same formats.")
flags.DEFINE_integer("cond_frames", 0, "Conditioning frames at the start of every video.")
flags.DEFINE_integer("future_frames", 0, "Given future frames at the end of every video.")
flags.DEFINE_integer("samples_per_video", 1, "Generated samples per real video (best-of-N).")
flags.DEFINE_list("metrics", ["mse", "psnr", "ssim", "lpips", "fvd"],
                  "Metrics to compute (also: fid, with --fid_weights).")
flags.DEFINE_bool("binarize", False, "Round frames to black/white before SSIM (SMMNIST).")
flags.DEFINE_string("fid_weights", None, "Inception weights (.npz) for the fid metric.")
flags.DEFINE_integer("batch_size", 8, "Videos per I3D / LPIPS call, sharded over the devices.")
flags.DEFINE_enum("baseline", None, ["copy_last", "blend"], "Also score this baseline made from "
                  "the real videos' given frames (then --fake is optional).")
flags.DEFINE_string("out", None, "Also write the JSON report here (and a .md table beside it).")
flags.mark_flags_as_required(["real"])
FLAGS = flags.FLAGS


def _evaluate() -> dict:
  from mcvd_jax.metrics.evaluation import check_metrics, evaluate_video_sets
  from mcvd_jax.metrics.video_files import load_videos
  metrics = check_metrics(FLAGS.metrics)
  fid_params = None
  if "fid" in metrics:
    from mcvd_jax.metrics.fid import load_inception_params
    fid_params = load_inception_params(FLAGS.fid_weights)
  if not FLAGS.fake and not FLAGS.baseline:
    raise ValueError("give --fake (the generated videos), --baseline, or both")
  real = load_videos(FLAGS.real)

  def score(fake):
    return evaluate_video_sets(real, fake, cond_frames=FLAGS.cond_frames,
                               future_frames=FLAGS.future_frames, metrics=metrics,
                               binarize=FLAGS.binarize, fid_params=fid_params,
                               batch_size=FLAGS.batch_size)

  baseline = None
  if FLAGS.baseline:
    from mcvd_jax.metrics.baselines import LABELS, make_baseline
    baseline = {"name": FLAGS.baseline, "label": LABELS[FLAGS.baseline],
                **score(make_baseline(FLAGS.baseline, real, FLAGS.cond_frames,
                                      FLAGS.future_frames))}
  if not FLAGS.fake:
    return baseline
  fake = load_videos(FLAGS.fake)
  s = FLAGS.samples_per_video
  if s < 1 or fake.shape[0] != real.shape[0] * s:
    raise ValueError(f"{FLAGS.fake} holds {fake.shape[0]} videos; with {real.shape[0]} real "
                     f"videos and --samples_per_video={s} it should hold {real.shape[0] * s}")
  if fake.shape[1:] != real.shape[1:]:
    raise ValueError(f"{FLAGS.real} holds videos of shape {real.shape[1:]} (frames, height, width, "
                     f"channels) but {FLAGS.fake} holds {fake.shape[1:]}: they must match")
  report = score(fake.reshape(real.shape[0], s, *fake.shape[1:]))
  if baseline:
    report["baseline"] = baseline
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from mcvd_jax.core.host_memory import keep_freed_host_memory
  keep_freed_host_memory()  # before jax's first computation (see host_memory)
  from mcvd_jax.metrics.evaluation import markdown_table, to_json
  try:
    report = _evaluate()
  except (ValueError, FileNotFoundError, ImportError) as e:
    sys.exit(f"error: {e}")
  rows = [(report["baseline"]["label"], report["baseline"])] if "baseline" in report else []
  text, table = to_json(report), markdown_table(report, baselines=rows)
  print(text)
  print(table)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(text + "\n")
    with open(FLAGS.out.rsplit(".", 1)[0] + ".md", "w") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  app.run(main)
