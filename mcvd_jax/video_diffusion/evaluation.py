"""MCVD's evaluation protocols for `main --mode=eval`: `evaluation(config, workdir, checkpoint)`
describes them as core.eval_runner jobs. No maths here: the protocols are `metrics.protocols`, the
sampling `video.rollout`, the scores `metrics.evaluation`; the runner keeps the batches and writes
the reports.

For every protocol chosen (config `eval` section; by default every protocol of the config's dataset
that the model can run) it takes the dataset's deterministic test clips, draws S samples per test
video with the block-autoregressive rollout and scores them. Test videos are processed
`eval.batch_size` at a time (each sampled S times in one call, sharded over every device); each
finished batch holds per-video scores (and I3D features). Sample s of test video i is drawn with
the key fold_in(fold_in(protocol key, i), s), so a video's samples do not depend on the batching,
the device count or what ran before: a resumed evaluation gives the uninterrupted one's numbers.
The fingerprint records the checkpoint, sampler, model, data and counts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.eval_runner import (MEASURED_EVALS_KEYS, REPORT_JSON, EvalJob, Evaluation,
                                      config_fingerprint, measured_evals,
                                      summarize_measured_evals)
from mcvd_jax.core.keys import item_keys
from mcvd_jax.core.sharding import make_mesh
from mcvd_jax.metrics import baselines, evaluation, protocols
from mcvd_jax.models import UNetConfig
from mcvd_jax.video.guidance import guidance_settings
from mcvd_jax.video_diffusion.config import IDENTITY, Checked, EvalSettings, shared_metrics
from mcvd_jax.video_diffusion.eval_sampling import (horizon, protocol_key, sample_batch,
                                                    sampler_network_evals, video_sampler)
from mcvd_jax.video_diffusion.sampling import load_for_sampling
from mcvd_jax.video_diffusion.tasks import Masking, enabled_tasks

def select_protocols(config: Any, cfg: UNetConfig, settings: EvalSettings) -> list[protocols.Protocol]:
  """The protocols to run, with the `eval` overrides applied; ConfigError naming the config field
  when a named protocol is unknown or does not fit the model, or when none fits."""
  t = config.training
  tasks = enabled_tasks(Masking(cfg.num_frames_cond, cfg.num_frames, cfg.num_frames_future,
                                t.prob_mask_cond, t.prob_mask_future, bool(t.prob_mask_sync)))
  dataset = config.data.dataset

  def why_not(p):
    return protocols.mismatch(p, cfg.num_frames_cond, cfg.num_frames, cfg.num_frames_future, tasks)

  if settings.protocols:
    chosen = []
    for name in settings.protocols:
      protocol = protocols.get(name)
      reason = why_not(protocol)
      if reason:
        raise ConfigError(f"eval.protocols: {name} does not fit this model: {reason}")
      chosen.append(protocol)
  else:
    candidates = protocols.for_dataset(dataset)
    chosen = [p for p in candidates if why_not(p) is None]
    if not chosen:
      reasons = "; ".join(f"{p.name}: {why_not(p)}" for p in candidates) or "none are defined"
      raise ConfigError(f"no evaluation protocol of data.dataset={dataset!r} fits this model "
                      f"({reasons}). Name one with --config.eval.protocols=...")
  runs = []
  for p in chosen:
    metrics = _metrics_for(p, settings.metrics)
    if not metrics:
      message = (f"eval.metrics={','.join(settings.metrics)} leaves protocol {p.name} nothing to "
                 f"compute (it computes {', '.join(p.metrics)})")
      if settings.protocols:
        raise ConfigError(message)
      logging.info("skipping %s: %s", p.name, message)
      continue
    runs.append(p.with_overrides(settings.num_test_videos, settings.samples_per_video, metrics))
  if not runs:
    raise ConfigError(f"eval.metrics={','.join(settings.metrics)} leaves no protocol anything to "
                    f"compute")
  for p in runs:
    _check_protocol(p, cfg)
  return runs


def _metrics_for(p: protocols.Protocol, wanted: tuple[str, ...]) -> tuple[str, ...]:
  """eval.metrics narrows a protocol's metrics (generation stays FVD-only: its frames have no
  ground truth to compare with); fid, which no protocol computes by default, can be added, and
  identity to a prediction protocol."""
  if not wanted:
    return p.metrics
  return tuple(m for m in wanted if m in p.metrics or m == "fid" or
               (m == IDENTITY and p.task == "prediction"))


def _check_protocol(p: protocols.Protocol, cfg: UNetConfig) -> None:
  """evaluation.check_shapes on the protocol's sizes, before anything is compiled."""
  real = (p.num_test_videos, p.clip_frames, cfg.image_size, cfg.image_size, cfg.channels)
  metrics = shared_metrics(p.metrics)  # identity is checked in the config
  try:
    evaluation.check_shapes(real, real[:1] + (p.samples_per_video,) + real[1:],
                            cond_frames=p.scored_cond_frames, future_frames=p.future_frames,
                            metrics=metrics)
    evaluation.check_set_size(p.num_test_videos, p.clip_frames - p.scored_cond_frames -
                              p.future_frames, metrics)
  except ValueError as err:
    raise ConfigError(f"protocol {p.name} ({p.num_test_videos} test videos, {p.samples_per_video} "
                    f"samples, metrics {', '.join(p.metrics)}): {err}. Adjust --config.eval."
                    f"num_test_videos / samples_per_video / metrics") from None


# ------------------------------------------------------------------------------------------------
# One protocol as a job of the runner


def markdown_section(entry: dict) -> str:
  """A protocol's report entry as its settings and a table with the paper's columns."""
  p, results = entry["protocol"], entry["results"]
  computed = [m for m in ("fvd", "fid", "psnr", "ssim", "lpips", "mse") if m in results]
  columns = [m for m in p["table"] if m in results] or computed
  if p["task"] == "interpolation":
    what = f"{p['cond_frames']} past + {p['future_frames']} future → {p['pred_frames']} frames"
    leading = [("p", p["cond_frames"]), ("f", p["future_frames"]), ("k", p["pred_frames"])]
  elif p["task"] == "generation":
    what = f"{p['cond_frames'] + p['pred_frames']} frames from nothing"
    leading = [("frames", p["cond_frames"] + p["pred_frames"])]
  else:
    what = f"{p['cond_frames']} past → {p['pred_frames']} frames"
    leading = [("p", p["cond_frames"]), ("n", p["pred_frames"])]
  rows = [(results["baseline"]["label"], results["baseline"])] if "baseline" in results else []
  lines = [f"## {p['name']}: {p['task']}, {what}", "",
           f"{results['num_videos']} test videos x {results['samples_per_video']} samples. "
           "FVD: mean over sample indices; frame metrics: best of the samples per video, mean "
           "± 95% interval over videos." + (" The baseline row scores the same clips made "
                                            "from the given frames alone." if rows else ""), "",
           evaluation.markdown_table(results, columns, leading, baselines=rows), ""]
  if "sampler" in entry:
    measured = results.get("network_evals")
    lines += [entry["sampler"] + (f" (measured: {measured['mean']:.1f} on average, "
                                  f"{measured['min']} to {measured['max']}, over "
                                  f"{measured['solves']} blocks)" if measured else "") + ".", ""]
  if "identity" in results:
    lines += [identity_markdown(p, results), ""]
  others = [m for m in computed if m not in columns]
  if others:
    lines += [f"Also computed (see {REPORT_JSON}): {', '.join(others)}.", ""]
  return "\n".join(lines)


def identity_markdown(p: dict, results: dict) -> str:
  """The digit identity of a prediction protocol's report entry as a table per predicted frame."""
  from mcvd_jax.metrics.digit_identity import format_table
  table = {"frames": list(range(p["pred_frames"])), "model": results["identity"]}
  if "identity" in results.get("baseline", {}):
    table["copy_last"] = results["baseline"]["identity"]
  return ("Digits kept: the share of separate digits the digit classifier reads as the right "
          "digit at their true place, per predicted frame, over all samples "
          "(metrics/digit_identity.py); with one digit per clip also \"anywhere\": read wherever the "
          "sample put it, with how far it was found from its last given place "
          "(metrics/digit_search.py).\n\n"
          + format_table(table))


def _identity_scorer(dataset: Any, p: protocols.Protocol, classify: Any) -> Any:
  """score(videos [n, S, T, H, W, C], first) -> identity_counts of test videos first.. (keys
  prefixed "identity/")."""
  from mcvd_jax.metrics.digit_identity import identity_counts
  try:
    tracks = dataset.test_tracks(p.clip_frames, p.num_test_videos)
  except ValueError as err:  # test digits without labels
    raise ConfigError(f"eval.metrics has {IDENTITY}: {err}") from None

  def score(videos, first):
    part = type(tracks)(*(field[first:first + len(videos)] for field in tracks))
    counts = identity_counts(videos, part, classify, p.cond_frames)
    return {f"{IDENTITY}/{k}": v for k, v in counts.items()}
  return score


def protocol_job(config: Any, cfg: UNetConfig, params: Any, diffusion: Any, dataset: Any,
                 settings: EvalSettings, source: str, mesh: Any, weights: dict,
                 p: protocols.Protocol, classify: Any = None) -> EvalJob:
  """The runner's job for protocol `p`: batches of test videos sampled and scored (`classify`,
  the digit classifier, where p.metrics has identity)."""
  clips = np.asarray(dataset.test_videos(p.clip_frames, p.num_test_videos))
  identity = _identity_scorer(dataset, p, classify) if IDENTITY in p.metrics else None
  shared = shared_metrics(p.metrics)
  key = protocol_key(config.seed, p.name)
  sampler = video_sampler(cfg, diffusion, config.sampling, horizon(p, cfg))
  size, s = settings.batch_size, p.samples_per_video
  rows = min(size, p.num_test_videos) * s
  baseline = baselines.BASELINE_FOR_TASK.get(p.task)  # None for generation
  keys = evaluation.score_keys(shared)
  if identity:
    from mcvd_jax.metrics.digit_identity import count_names
    keys |= {f"{IDENTITY}/{name}" for name in count_names(p.cond_frames,
                                                              dataset.num_digits)}
  if baseline:
    keys |= {f"baseline/{k}" for k in keys}
  if sampler.tally is not None:
    keys |= set(MEASURED_EVALS_KEYS)

  def compute_batch(first: int, count: int) -> dict[str, np.ndarray]:
    real = clips[first:first + count]
    if sampler.tally is not None:
      sampler.tally.take()  # drop counts of any earlier, unfinished call
    fake = sample_batch(sampler.fn, params, p, cfg, real, item_keys(key, first, count, s),
                        rows, mesh)
    scored = fake
    if baseline:  # scored as one more sample: the real clips' features are computed once
      made = baselines.make_baseline(baseline, real, p.cond_frames, p.future_frames)
      scored = np.concatenate([fake, made], axis=1)
    arrays = evaluation.score_videos(
        real, scored, cond_frames=p.scored_cond_frames, future_frames=p.future_frames,
        metrics=shared, binarize=p.binarize, batch_size=settings.metric_batch_size,
        mesh=mesh, **weights)
    if baseline:  # per-sample arrays [n, S + 1, ...] -> the model's S and the baseline's 1
      for k in list(arrays):
        real_side = k.endswith("_real")  # i3d_real, inception_real: shared by both
        arrays[f"baseline/{k}"] = arrays[k] if real_side else arrays[k][:, s:]
        arrays[k] = arrays[k] if real_side else arrays[k][:, :s]
    if identity:  # counts per video, summed over its samples
      arrays.update(identity(fake, first))
      if baseline:
        arrays.update({f"baseline/{k}": v for k, v in identity(made, first).items()})
    if settings.save_samples:
      arrays["samples"] = fake
    if sampler.tally is not None:
      arrays.update(measured_evals(sampler.tally.take(), count))
    return arrays

  def summarize(scores: dict[str, np.ndarray]) -> dict:
    def report(prefix):
      results = evaluation.report_from_scores(
          {k[len(prefix):]: v for k, v in scores.items() if k.startswith(prefix) and
           "/" not in k[len(prefix):]}, metrics=shared,
          cond_frames=p.scored_cond_frames, future_frames=p.future_frames)
      if identity:
        from mcvd_jax.metrics.digit_identity import kept_shares
        counted = f"{prefix}{IDENTITY}/"
        results[IDENTITY] = kept_shares({k[len(counted):]: v for k, v in scores.items()
                                         if k.startswith(counted)})
      return results
    results = report("")
    if baseline:
      results["baseline"] = {"name": baseline, "label": baselines.LABELS[baseline],
                             **report("baseline/")}
    if sampler.tally is not None:
      results["network_evals"] = summarize_measured_evals(scores)
    return results

  fingerprint = config_fingerprint(
      config, source, {"model": (), "diffusion": (),
                       "sampling": ("task", "num_frames", "batch_size"),  # sample mode's
                       "data": ("path", "cache_dir", "mnist_path")},  # where, not what
      diffusion=diffusion,  # the section the weights use (a converted checkpoint's schedule)
      protocol=dataclasses.asdict(p), batch_size=settings.batch_size)
  return EvalJob(name=p.name, fingerprint=fingerprint,
                 num_items=p.num_test_videos, batch_size=size,
                 expected_keys=frozenset(keys),
                 compute_batch=compute_batch, summarize=summarize, markdown=markdown_section,
                 describe={"protocol": dataclasses.asdict(p),
                           "sampler": sampler_description(cfg, diffusion, config.sampling)})


def sampler_description(cfg: UNetConfig, diffusion: Any, sampling: Any) -> str:
  """The sampler and its network evaluations per rollout block, for the report."""
  evals = sampler_network_evals(cfg, diffusion, sampling)
  count = ("adaptive (sampling.ode tolerances)" if evals is None else str(evals))
  weight, interval = guidance_settings(sampling)
  where = f" at labels [{interval[0]}, {interval[1]})" if interval else ""
  guided = (f", guided by the masked past (weight {weight:g}{where}, doubled batch)"
            if weight != 1 else "")
  return f"sampler {sampling.kind}: {count} network evaluations per block{guided}"


# ------------------------------------------------------------------------------------------------
# Entry point


def make_evaluation(config: Any, checked: Checked, workdir: str,
                    checkpoint: str | None = None) -> Evaluation:
  """The protocols of the config's `eval` section on the EMA weights of the newest checkpoint in
  `workdir` (or `checkpoint`, as sample mode), checked and loaded before any sampling."""
  settings = checked.eval
  paths.makedirs(workdir)
  cfg, params, diffusion_section, source = load_for_sampling(config, checked, workdir, checkpoint)
  chosen = select_protocols(config, cfg, settings)
  try:
    weights = evaluation.load_metric_networks({m for p in chosen for m in p.metrics},
                                              settings.fid_weights)
  except FileNotFoundError as err:
    raise ConfigError(f"eval.fid_weights={settings.fid_weights!r}: {err}") from None
  from mcvd_jax.data.registry import make_dataset
  dataset = make_dataset(config.data, cfg.image_size, cfg.channels)
  classify = _digit_classifier(config, settings) if any(IDENTITY in p.metrics
                                                        for p in chosen) else None
  mesh = make_mesh()
  jobs = tuple(protocol_job(config, cfg, params, diffusion_section, dataset, settings, source,
                            mesh, weights, p, classify) for p in chosen)
  weight, interval = guidance_settings(config.sampling)
  summary = {"dataset": config.data.dataset,
             "sampler": {"kind": config.sampling.kind, "subsample": config.sampling.subsample,
                         "network_evals_per_block": sampler_network_evals(
                             cfg, diffusion_section, config.sampling),
                         "guidance": weight, "guidance_labels": list(interval)}}
  return Evaluation(source=source, jobs=jobs, summary=summary, to_json=evaluation.to_json)


def _digit_classifier(config: Any, settings: EvalSettings) -> Any:
  """identity's classifier (eval.classifier_path, or the shared default file, trained there
  once), read before any sampling."""
  from mcvd_jax.metrics import digit_identity
  from mcvd_jax.metrics.digit_classifier_training import load_or_train_classifier
  path = settings.classifier_path or digit_identity.DEFAULT_CLASSIFIER
  try:
    params = load_or_train_classifier(path, config.data.mnist_source,
                                      config.data.get("mnist_path", ""))
  except (OSError, ValueError) as err:
    raise ConfigError(f"eval.classifier_path={path!r}: {err}") from None
  return digit_identity.classifier_classify(params)


def evaluate_checkpoint(config: Any, workdir: str, checkpoint: str | None = None) -> str:
  """make_evaluation run by the shared runner after the config checks; returns the path of the
  JSON report."""
  from mcvd_jax.video_diffusion.family import FAMILY
  from mcvd_jax.core.modes import run_mode
  return run_mode(FAMILY, config, workdir, "eval", checkpoint)
