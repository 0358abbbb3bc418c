"""Digit identity where SMMNIST digits turn: one sampled block for test clips whose digit meets a
wall right after the given frames, beside clips whose digit moves straight on.

A rollout loses most digits where they turn at a wall (their new direction is a random draw), and
scoring whole rollouts mixes that with everything else. Here the first `--clips` test clips in which
a digit turns in the first predicted frame (`digit_identity.moving_straight`) get one network block
from the configured sampler, given the true past; so do as many clips moving straight on. Each
group's report is the digit identity score per predicted frame (`digit_identity.kept_shares`: the
right digit at its true place and, with one digit per clip, anywhere in the frame), with the real
frames (the classifier's ceiling) and copy-last beside the turning clips. What separates the two
groups is what the network does with a new direction; 256 turning clips give the share to about
±2.5 points, in minutes on a CPU (one block, not ten frames of rollout).

  python -m mcvd_jax.video_diffusion.turn_identity --config=configs/smmnist.py:quick1 \\
      --checkpoint=demo/smmnist_quick1 [--clips=256] [--seed=0] [--classifier=PATH] \\
      [--config.FIELD=VALUE]

--checkpoint: a model directory, a training workdir or one of its checkpoints/<step>; the sampler
is the config's `sampling` section (e.g. --config.sampling.kind=ddim, --config.sampling.guidance).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import jax
import numpy as np

from mcvd_jax.metrics.digit_identity import identity_counts, kept_shares, moving_straight

SEARCHED_CLIPS = 20  # test clips searched per clip asked for (about one in six turns at once)


def split_by_first_turn(positions: np.ndarray, num_past: int) -> tuple[np.ndarray, np.ndarray]:
  """(turning, straight): indices of the clips in which a digit turns in the first predicted frame
  (frame num_past + 1 is off the line of the last two given frames) and of those whose digits all
  move straight on. positions: int [B, D, T, 2] (DigitTracks'), T > num_past >= 2."""
  if num_past < 2 or positions.shape[2] <= num_past:
    raise ValueError(f"a turn needs two given frames and one predicted frame: num_past={num_past}, "
                     f"{positions.shape[2]} frames")
  straight = moving_straight(positions, num_past)[:, :, 0].all(axis=1)  # [B]
  return np.flatnonzero(~straight), np.flatnonzero(straight)


def block_identity(clips: np.ndarray, tracks, sample: Callable[[np.ndarray], np.ndarray],
                   classify: Callable, num_past: int) -> dict:
  """kept_shares of sample(past) uint8 [B, P + F, H, W, C] (the given frames, then F predicted
  ones) against clips uint8 [B, >= P + F, H, W, C] and their DigitTracks."""
  videos = np.asarray(sample(clips[:, :num_past]))
  frames = videos.shape[1]
  cut = type(tracks)(tracks.positions[:, :, :frames], tracks.labels, tracks.glyphs)
  return kept_shares(identity_counts(videos, cut, classify, num_past))


def _subset(tracks, index: np.ndarray):
  return type(tracks)(tracks.positions[index], tracks.labels[index], tracks.glyphs[index])


def turn_identity(dataset: Any, sample: Callable[[np.ndarray], np.ndarray], classify: Callable,
                  num_past: int, num_frames: int, num_clips: int) -> dict:
  """The report: {"turning": {"clips", "model", "real", "copy_last"}, "straight": {"clips",
  "model"}}, each a kept_shares report over the num_frames predicted frames, on the first
  `num_clips` test clips of each kind (among the first SEARCHED_CLIPS * num_clips). dataset: an
  SMMNIST dataset (test_videos, test_tracks); sample: past uint8 [B, P, ...] -> uint8
  [B, P + num_frames, ...]."""
  total = num_past + num_frames
  searched = SEARCHED_CLIPS * num_clips
  clips, tracks = dataset.test_videos(total, searched), dataset.test_tracks(total, searched)
  turning, straight = (index[:num_clips] for index in split_by_first_turn(tracks.positions,
                                                                          num_past))
  if not len(turning):
    raise ValueError(f"no digit turns at a wall just after the given frames in the first "
                     f"{searched} test clips: raise data.max_speed or --clips")
  copy_last = lambda past: np.concatenate(  # noqa: E731
      [past, np.repeat(past[:, -1:], num_frames, axis=1)], axis=1)
  report = {}
  for name, index in (("turning", turning), ("straight", straight)):
    group_clips, group_tracks = clips[index], _subset(tracks, index)
    sources = {"model": sample}
    if name == "turning":  # the bars: the real frames and copy-last of the same clips
      sources.update(real=lambda past: group_clips, copy_last=copy_last)
    report[name] = {"clips": int(len(index)), **{
        source: block_identity(group_clips, group_tracks, fn, classify, num_past)
        for source, fn in sources.items()}}
  return report


def format_turns(report: dict) -> str:
  """A Markdown table: one row per group and source, kept (%) per predicted frame, at the true
  place and (one digit per clip) anywhere."""
  first = report["turning"]["model"]
  anywhere = "anywhere" in first
  frames = len(first["kept"])
  head = [f"frame {i + 1}: true place" + (" / anywhere" if anywhere else "")
          for i in range(frames)]
  lines = ["| clips | kept (%) " + "".join(f"| {h} " for h in head) + "|",
           "| --- | --- |" + " --- |" * frames]
  rows = [("turning", "model"), ("turning", "real"), ("turning", "copy_last"),
          ("straight", "model")]
  pct = lambda x: "-" if x is None or np.isnan(x) else f"{100 * x:.0f}"  # noqa: E731
  for group, source in rows:
    shares = report[group][source]
    cells = [pct(k) + (f" / {pct(a)}" if anywhere else "")
             for k, a in zip(shares["kept"], shares.get("anywhere", shares)["kept"])]
    name = {"model": "model", "real": "real frames", "copy_last": "copy the last past frame"}
    lines.append(f"| {group} ({report[group]['clips']}) | {name[source]} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines)


def model_sampler(config: Any, cfg: Any, params: Any, diffusion_section: Any, seed: int,
                  batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
  """past uint8 [B, P, H, W, C] -> one sampled block after it, uint8 [B, P + F, ...], with the
  config's sampler; clip i's noise comes from key (seed, i), whatever the batch."""
  from mcvd_jax.video_diffusion.eval_sampling import video_sampler
  fn = jax.jit(video_sampler(cfg, diffusion_section, config.sampling, cfg.num_frames).fn)

  def sample(past: np.ndarray) -> np.ndarray:
    keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(seed), len(past))))
    out = []
    for start in range(0, len(past), batch_size):
      out.append(np.asarray(fn(params, keys[start:start + batch_size],
                               past[start:start + batch_size], None)))
    return np.concatenate(out, axis=0)
  return sample


def main(argv: list[str] | None = None) -> int:
  """The command (argv without the program name; sys.argv[1:] when None): prints the table.
  Returns 2 for a missing checkpoint or classifier file, or a bad setting."""
  from absl import flags

  from mcvd_jax.cli_errors import parse_flags_or_exit
  from mcvd_jax.data.registry import make_dataset
  from mcvd_jax.video_diffusion.identity_probe import (define_model_flags,
                                                       load_model_and_classifier)
  argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
  values = flags.FlagValues()
  define_model_flags(values, argv)
  flags.DEFINE_integer("clips", 256, "turning clips (and as many straight ones)",
                       lower_bound=1, flag_values=values)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=values)
  flags.DEFINE_integer("batch", 128, "clips per sampler call", lower_bound=1, flag_values=values)
  parse_flags_or_exit(values, argv)
  config = values.config
  try:
    cfg, params, section, source, classify = load_model_and_classifier(
        config, values.checkpoint, values.classifier)
    dataset = make_dataset(config.data, cfg.image_size, cfg.channels)
    sample = model_sampler(config, cfg, params, section, values.seed, values.batch)
    report = turn_identity(dataset, sample, classify, cfg.num_frames_cond, cfg.num_frames,
                           values.clips)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"one sampled block of {source} after the true past ({config.sampling.kind}, "
        f"seed {values.seed}):")
  print(format_turns(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
