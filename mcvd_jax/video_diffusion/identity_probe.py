"""Whether the network keeps SMMNIST digits, without sampling: digit identity of its clean estimate
from the true noisy future, per noise level.

The dataset's first test clips have their current frames noised (fixed noise) to each signal
level √ᾱ; the network, given the true past frames, estimates the clean frames x̂0 (as the learning
signal does, video_diffusion/signal.py), and the digit identity score (metrics/digit_identity.py)
reads the digits of x̂0, split into digits moving straight and digits past a wall, with the
one-digit search for the digit anywhere. A sampler's trajectory passes every level with a noisy
frame the network made, not the true one: where the network, handed the true future up to the
noise, does not keep a digit, no sampler can. One network call per level: seconds on a CPU,
against minutes for sampling and scoring 64 clips.

  python -m mcvd_jax.video_diffusion.identity_probe --config=configs/smmnist.py:quick1 \\
      --checkpoint=demo/smmnist_quick1 [--levels=0.1,0.3,0.63,0.9] [--clips=128] \\
      [--classifier=PATH] [--config.FIELD=VALUE]

--checkpoint: a model directory, a training workdir or one of its checkpoints/<step>.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.core.media import frames_to_unit_range, to_uint8
from mcvd_jax.data.registry import make_dataset
from mcvd_jax.metrics.digit_identity import identity_counts, kept_shares
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.video.masking import make_training_batch, unstack_frames
from mcvd_jax.video_diffusion.signal import clean_estimate, perturb, signal_levels

DEFAULT_LEVELS = (0.1, 0.3, 0.5, 0.63, 0.8, 0.9)
DEFAULT_CLIPS = 128


def probe(config: Any, cfg: UNetConfig, params: Any, diffusion: Any,
          classify: Callable[[np.ndarray], np.ndarray], levels: Sequence[float] = DEFAULT_LEVELS,
          num_clips: int = DEFAULT_CLIPS, seed: int = 0,
          denoise_fn: Callable | None = None) -> list[dict]:
  """For each level in `levels` (√ᾱ in (0, 1); the nearest label's is used), the digit identity
  report (`digit_identity.kept_shares`) of the network's clean estimate of the current frames of
  the first `num_clips` SMMNIST test clips, with "level" and "label" added. config: the run's
  config (its data section); cfg, params, diffusion: the network and its schedule; denoise_fn:
  models.make_denoise_fn(cfg) unless given (the same signature)."""
  if config.data.dataset != "smmnist":
    raise ValueError(f"the identity probe reads SMMNIST digits; data.dataset is "
                     f"{config.data.dataset!r}")
  nc, t, nf = cfg.num_frames_cond, cfg.num_frames, cfg.num_frames_future
  if nc < 1:
    raise ValueError("the identity probe needs past frames (model.num_frames_cond >= 1)")
  bad = [level for level in levels if not 0.0 < level < 1.0]
  if bad or not levels:
    raise ValueError(f"levels must be signal levels sqrt(alpha_bar) in (0, 1), got {list(levels)}")
  dataset = make_dataset(config.data, cfg.image_size, cfg.channels)
  clips = dataset.test_videos(nc + t + nf, num_clips)
  tracks = dataset.test_tracks(nc + t + nf, num_clips)
  tracks = type(tracks)(tracks.positions[:, :, :nc + t], tracks.labels, tracks.glyphs)
  batch = make_training_batch(jax.random.key(0), frames_to_unit_range(clips), num_frames_cond=nc,
                              num_frames=t, num_frames_future=nf)
  denoise = jax.jit(denoise_fn or make_denoise_fn(cfg))
  per_label = signal_levels(diffusion)
  noise = diffusion.noise_model.sqrt_cov(
      jax.random.normal(jax.random.key(seed), batch.x0.shape, jnp.float32))
  reports = []
  for level in levels:
    label = int(np.argmin(np.abs(per_label - level)))
    x_t = perturb(diffusion, batch.x0, noise, label)
    labels = jnp.full((num_clips,), label, jnp.int32)
    output = denoise(params, x_t, labels, batch.cond, None, cond_mask=batch.cond_mask)
    estimate = unstack_frames(clean_estimate(diffusion, x_t, output, label), cfg.channels)
    videos = np.concatenate([clips[:, :nc], to_uint8(jax.device_get(estimate))], axis=1)
    report = kept_shares(identity_counts(videos, tracks, classify, nc))
    reports.append({"level": float(per_label[label]), "label": label, **report})
  return reports


def pooled(shares: dict) -> float:
  """A kept_shares entry's share over all its frames (weighted by their digits); nan for none."""
  digits = np.asarray(shares["digits"], np.float64)
  kept = np.nan_to_num(np.asarray(shares["kept"], np.float64)) * digits
  return float(kept.sum() / digits.sum()) if digits.sum() else float("nan")


def format_probe(reports: list[dict]) -> str:
  """One row per level: the kept share over all current frames, of every digit, of those moving
  straight, of those past a wall and (one digit per clip) of the digit read anywhere."""
  columns = [("all", lambda r: r), ("moving straight", lambda r: r.get("straight")),
             ("past a wall", lambda r: r.get("after_wall")),
             ("anywhere", lambda r: r.get("anywhere"))]
  columns = [(name, get) for name, get in columns if get(reports[0]) is not None]
  lines = ["| √ᾱ (label) | " + " | ".join(f"kept (%): {name}" for name, _ in columns) + " |",
           "| --- |" + " --- |" * len(columns)]
  for r in reports:
    cells = [f"{100 * pooled(get(r)):.0f}" for _, get in columns]
    lines.append(f"| {r['level']:.2f} ({r['label']}) | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def define_model_flags(values, argv: list[str]) -> None:
  """The flags of a command that reads a trained network and scores digits with the classifier:
  --config (file[:variant] and --config.FIELD=VALUE overrides), --checkpoint, --classifier."""
  from absl import flags
  from ml_collections import config_flags

  from mcvd_jax.metrics.digit_identity import DEFAULT_CLASSIFIER
  config_flags.DEFINE_config_file("config", None, "the run's config (configs/smmnist.py[:variant])",
                                  flag_values=values, sys_argv=argv)
  flags.DEFINE_string("checkpoint", None, "model directory, training workdir or "
                      "checkpoints/<step>", flag_values=values)
  flags.DEFINE_string("classifier", DEFAULT_CLASSIFIER, "digit classifier file; trained and "
                      "written there when absent", flag_values=values)
  flags.mark_flags_as_required(["config", "checkpoint"], flag_values=values)


def load_model_and_classifier(config: Any, checkpoint: str, classifier: str):
  """(UNetConfig, params, diffusion section, description, classify) for --checkpoint (as the
  sample mode reads it) and the classifier file (trained there when absent). Raises
  FileNotFoundError / ValueError for missing files and bad settings."""
  from mcvd_jax.core.modes import check_config
  from mcvd_jax.metrics.digit_classifier_training import load_or_train_classifier
  from mcvd_jax.metrics.digit_identity import classifier_classify
  from mcvd_jax.video_diffusion.family import FAMILY
  from mcvd_jax.video_diffusion.sampling import load_for_sampling
  if config.data.dataset != "smmnist":
    raise ValueError(f"digit identity reads SMMNIST's digit tracks; data.dataset is "
                     f"{config.data.dataset!r}")
  checked = check_config(config, FAMILY)
  cfg, params, section, source = load_for_sampling(config, checked, checkpoint, checkpoint)
  classify = classifier_classify(load_or_train_classifier(
      classifier, config.data.mnist_source, config.data.get("mnist_path", "")))
  return cfg, params, section, source, classify


def main(argv: list[str] | None = None) -> int:
  """The command (argv without the program name; sys.argv[1:] when None): prints the table.
  Returns 2 for a missing checkpoint or classifier file, or a bad setting."""
  from absl import flags

  from mcvd_jax.cli_errors import parse_flags_or_exit
  from mcvd_jax.diffusion.factory import diffusion_from_config
  argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
  values = flags.FlagValues()
  define_model_flags(values, argv)
  flags.DEFINE_list("levels", [str(x) for x in DEFAULT_LEVELS], "signal levels sqrt(alpha_bar)",
                    flag_values=values)
  flags.DEFINE_integer("clips", DEFAULT_CLIPS, "test clips", flag_values=values)
  parse_flags_or_exit(values, argv)
  config = values.config
  try:
    cfg, params, section, source, classify = load_model_and_classifier(
        config, values.checkpoint, values.classifier)
    reports = probe(config, cfg, params, diffusion_from_config(section), classify,
                    [float(x) for x in values.levels], values.clips)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"clean estimates of {source} from the true noisy future, {values.clips} test clips:")
  print(format_probe(reports))
  return 0


if __name__ == "__main__":
  sys.exit(main())
