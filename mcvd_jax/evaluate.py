"""Score any model's samples: every metric for two sets of videos on disk.

  python -m mcvd_jax.evaluate --real=real.npy --fake=fake.npz [--cond_frames=K]
      [--samples_per_video=S] [--metrics=psnr,ssim,lpips,fvd] [--binarize] [--out=report.json]

Files are .npy / .npz arrays (uint8 [N, T, H, W, C], or float in [0, 1]) or folders of GIF/MP4
videos. With S samples per real video, the generated set holds N*S videos, the S samples of real
video i at positions i*S .. i*S+S-1 (the reference's order). The first K frames of every video are
the conditioning frames: excluded from the frame metrics, kept for FVD.
"""

from __future__ import annotations

import json

from absl import app, flags

flags.DEFINE_string("real", None, "Real videos: .npy/.npz or a folder of GIF/MP4 files.")
flags.DEFINE_string("fake", None, "Generated videos, same formats.")
flags.DEFINE_integer("cond_frames", 0, "Conditioning frames at the start of every video.")
flags.DEFINE_integer("samples_per_video", 1, "Generated samples per real video (best-of-N).")
flags.DEFINE_list("metrics", ["mse", "psnr", "ssim", "lpips", "fvd"], "Metrics to compute.")
flags.DEFINE_bool("binarize", False, "Round frames to black/white before SSIM (SMMNIST).")
flags.DEFINE_string("out", None, "Also write the JSON report here (and a .md table beside it).")
flags.mark_flags_as_required(["real", "fake"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from mcvd_jax.metrics.evaluation import evaluate_video_sets, markdown_table
  from mcvd_jax.metrics.video_files import load_videos
  real, fake = load_videos(FLAGS.real), load_videos(FLAGS.fake)
  s = FLAGS.samples_per_video
  if s < 1 or fake.shape[0] != real.shape[0] * s:
    raise app.UsageError(f"{FLAGS.fake} holds {fake.shape[0]} videos; with {real.shape[0]} real "
                         f"videos and --samples_per_video={s} it should hold {real.shape[0] * s}")
  fake = fake.reshape(real.shape[0], s, *fake.shape[1:])
  report = evaluate_video_sets(real, fake, cond_frames=FLAGS.cond_frames, metrics=FLAGS.metrics,
                               binarize=FLAGS.binarize)
  text = json.dumps(report, indent=2)
  print(text)
  print(markdown_table(report))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(text + "\n")
    with open(FLAGS.out.rsplit(".", 1)[0] + ".md", "w") as f:
      f.write(markdown_table(report) + "\n")


if __name__ == "__main__":
  app.run(main)
