"""Digit identity of a `--mode=sample` file of SMMNIST predictions (`metrics.digit_identity`'s
score, beside the real frames, other real futures and copy-last), as a command:

  python -m mcvd_jax.metrics.sample_identity --config=configs/smmnist.py:quick \\
      --samples=/tmp/mcvd_demo/samples_prediction.npz [--classifier=PATH] [--config.FIELD=VALUE]

scores the videos `--mode=sample --config.sampling.task=prediction` wrote (conditioning frames
first, then the predicted ones: the dataset's first test clips) and writes the table beside them
as `<samples>_identity.json`, and where digits meet a wall after the given frames a picture of
those clips, `<samples>_walls.png` (real frames above, the sample below). The classifier file is
trained once (a minute or two on a CPU) where none exists (default
`~/.cache/mcvd_jax/digit_classifier.npz`). An evaluation computes the same
shares for the model and copy-last with `--mode=eval --config.eval.metrics=...,identity`.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from mcvd_jax.core.media import write_png
from mcvd_jax.metrics.digit_identity import (DEFAULT_CLASSIFIER, Classify, classifier_classify,
                                             format_table, kept_by_frame, moving_straight)

ALTERNATIVE_DRAWS = 4  # other futures per test clip for the sampling model's ceiling


def sampled_test_clips(config, samples: np.ndarray):
  """(dataset, real uint8 [B, T, H, W, C], DigitTracks) of the first B test clips of T frames that
  samples uint8 [B, T, H, W, C] continue; ValueError when they are not those clips' samples."""
  from mcvd_jax.data.registry import make_dataset
  if config.data.dataset != "smmnist":
    raise ValueError(f"digit identity needs SMMNIST's digit tracks; data.dataset is "
                     f"{config.data.dataset!r}")
  samples = np.asarray(samples)
  if samples.ndim != 5 or samples.dtype != np.uint8:
    raise ValueError(f"samples must be uint8 [B, T, H, W, C] (a --mode=sample file's videos), "
                     f"got {samples.dtype} {samples.shape}")
  b, t = samples.shape[:2]
  past = int(config.model.num_frames_cond)
  dataset = make_dataset(config.data, samples.shape[2], samples.shape[-1])
  real = dataset.test_videos(t, b)
  if not np.array_equal(real[:, :past], samples[:, :past]):
    raise ValueError(f"the samples' first {past} frames are not the first {b} test clips of "
                     f"this config's dataset: pass the --config the samples were made with")
  return dataset, real, dataset.test_tracks(t, b)


def score_samples(config, samples: np.ndarray, classify: Classify) -> dict:
  """Digit identity of sampled predictions uint8 [B, T, H, W, C] (the first
  config.model.num_frames_cond frames the conditioning ones) beside the real frames, other real
  futures (ALTERNATIVE_DRAWS per clip) and copy-last, on the dataset's first B test clips of T
  frames."""
  samples = np.asarray(samples)
  return score_clips(config, samples, classify, *sampled_test_clips(config, samples))


def score_clips(config, samples: np.ndarray, classify: Classify, dataset, real: np.ndarray,
                tracks) -> dict:
  """score_samples' report from the clips sampled_test_clips checked and returned."""
  b, t = samples.shape[:2]
  past = int(config.model.num_frames_cond)
  copy_last = np.repeat(real[:, past - 1:past], t, axis=1)
  copy_last[:, :past] = real[:, :past]
  score = lambda videos: kept_by_frame(videos, tracks, classify, past)
  alternatives = dataset.test_alternatives(t, b, past, ALTERNATIVE_DRAWS)
  return {"frames": list(range(past + 1, t + 1)), "real": score(real),
          "other_future": score(alternatives), "model": score(samples),
          "copy_last": score(copy_last)}


def wall_sheet(real: np.ndarray, samples: np.ndarray, positions: np.ndarray, first_frame: int,
               max_clips: int = 12) -> np.ndarray | None:
  """What happens at the walls, as one picture: for the first `max_clips` clips in which a digit
  meets a wall from `first_frame` on, the real clip's frames side by side with the sample's below
  them and a grey line under each pair; uint8 [n * (2 H + 2), T W, C], None when no digit meets a
  wall. real, samples: uint8 [B, T, H, W, C]; positions: int [B, D, T, 2] (DigitTracks')."""
  past_wall = (~moving_straight(positions, first_frame)[:, :, -1]).any(axis=1)  # [B]
  chosen = np.flatnonzero(past_wall)[:max_clips]
  if not len(chosen):
    return None
  strip = lambda video: np.concatenate(list(video), axis=1)  # [T, H, W, C] -> [H, T W, C]
  rows = []
  for i in chosen:
    rows += [strip(real[i]), strip(samples[i])]
    rows.append(np.full((2,) + rows[-1].shape[1:], 128, np.uint8))
  return np.concatenate(rows, axis=0)


def _flags(argv: list[str]):
  """The command's flags for `argv` (with the program name): --config as `main`'s (a
  file[:variant] and --config.FIELD=VALUE overrides, so samples of an overridden run are scored
  with the same overrides; ml_collections finds the overrides in the argv it is given)."""
  from absl import flags
  from ml_collections import config_flags
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "the config the samples were made with "
                                  "(configs/smmnist.py[:variant]), with the same overrides",
                                  flag_values=flag_values, sys_argv=argv)
  flags.DEFINE_string("samples", None, "samples_prediction.npz of --mode=sample",
                      flag_values=flag_values)
  flags.DEFINE_string("classifier", DEFAULT_CLASSIFIER, "digit classifier file; trained and "
                      "written there when absent", flag_values=flag_values)
  flags.mark_flags_as_required(["config", "samples"], flag_values=flag_values)
  return flag_values


def main(argv: list[str] | None = None) -> int:
  """The command: argv without the program name (sys.argv[1:] when None). Returns the exit
  status (2 for a missing or unreadable file); a bad flag exits with one `error:` line."""
  from mcvd_jax.cli_errors import parse_flags_or_exit
  from mcvd_jax.metrics.digit_classifier_training import load_or_train_classifier
  argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
  flag_values = _flags(argv)
  parse_flags_or_exit(flag_values, argv)
  samples_path, classifier = flag_values.samples, flag_values.classifier
  try:
    config = flag_values.config
    with np.load(samples_path) as files:
      samples = files["videos"]
    params = load_or_train_classifier(classifier, config.data.mnist_source,
                                      config.data.get("mnist_path", ""))
    dataset, real, tracks = sampled_test_clips(config, samples)
    report = score_clips(config, samples, classifier_classify(params), dataset, real, tracks)
  except (FileNotFoundError, KeyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  stem = os.path.splitext(samples_path)[0]
  with open(stem + "_identity.json", "w") as f:
    json.dump({**report, "classifier": classifier, "samples": samples_path}, f, indent=1)
  print(format_table(report))
  print(f"wrote {stem}_identity.json")
  sheet = wall_sheet(real, samples, tracks.positions, int(config.model.num_frames_cond))
  if sheet is not None:
    write_png(stem + "_walls.png", sheet)
    print(f"wrote {stem}_walls.png (clips whose digits meet a wall: real above, sample below)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
