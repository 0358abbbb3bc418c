"""`evaluate_checkpoint(config, workdir, checkpoint)`: `main --mode=eval`. No maths here: the
protocols are `metrics.protocols`, the sampling `video.rollout`, the scores `metrics.evaluation`.

For every protocol chosen (config `eval` section; by default every protocol of the config's dataset
that the model can run) it takes the dataset's deterministic test clips, draws S samples per test
video with the block-autoregressive rollout, scores them and writes
  WORKDIR/eval_report.json  every number, per protocol;
  WORKDIR/eval_report.md    one table per protocol with the columns of the paper's table.

Batches and resuming: test videos are processed `eval.batch_size` at a time (each sampled S times
in one call, sharded over every device); each finished batch's per-video scores (and I3D features)
go to WORKDIR/eval/<protocol>/batch_<i>.npz. Started again with the same command, an interrupted
evaluation skips the finished batches. Sample s of test video i is drawn with the key
fold_in(fold_in(protocol key, i), s), so a video's samples do not depend on the batching, the
device count or what ran before: a resumed evaluation gives the uninterrupted one's numbers.
WORKDIR/eval/<protocol>/meta.json records what the batches were computed with; a later run with
other settings (checkpoint, sampler, counts) stops with an error instead of mixing them. On several
hosts the workdir must be shared, as for checkpoints: process 0 writes, every process reads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mcvd_jax.compilation import jit
from mcvd_jax.diffusion.factory import diffusion_from_config, initial_scale, sampler_from_config
from mcvd_jax.metrics import evaluation, protocols
from mcvd_jax.metrics.sharded import data_mesh, map_batches
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.sample import load_for_sampling, task_inputs
from mcvd_jax.train_step import Masking, enabled_tasks
from mcvd_jax.video.io import frames_to_unit_range
from mcvd_jax.video.rollout import make_rollout

_EVAL_STREAM = 0x6576  # folded into the seed: evaluation keys never meet training or sample keys
REPORT_JSON, REPORT_MD = "eval_report.json", "eval_report.md"


class EvalError(ValueError):
  """An evaluation setting that cannot work, or results on disk from other settings."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """The config's `eval` section, checked."""

  protocols: tuple[str, ...]
  num_test_videos: int
  samples_per_video: int
  metrics: tuple[str, ...]
  batch_size: int
  metric_batch_size: int
  save_samples: bool
  fid_weights: str


def _names(text: str) -> tuple[str, ...]:
  return tuple(part.strip() for part in str(text).split(",") if part.strip())


def settings_from_config(config: Any) -> Settings:
  e = config.eval
  for field in ("num_test_videos", "samples_per_video"):
    if e[field] < 0:
      raise EvalError(f"eval.{field}={e[field]} must be >= 0 (0: the protocol's)")
  for field in ("batch_size", "metric_batch_size"):
    if e[field] < 1:
      raise EvalError(f"eval.{field}={e[field]} must be >= 1")
  metrics = _names(e.metrics)
  try:
    evaluation.check_metrics(metrics)
  except ValueError as err:
    raise EvalError(f"eval.metrics: {err}") from None
  for name in _names(e.protocols):  # unknown names fail before the model is loaded
    try:
      protocols.get(name)
    except ValueError as err:
      raise EvalError(f"eval.protocols: {err}") from None
  return Settings(_names(e.protocols), int(e.num_test_videos), int(e.samples_per_video), metrics,
                  int(e.batch_size), int(e.metric_batch_size), bool(e.save_samples),
                  str(e.fid_weights))


def select_protocols(config: Any, cfg: UNetConfig, settings: Settings) -> list[protocols.Protocol]:
  """The protocols to run, with the `eval` overrides applied; EvalError naming the config field
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
        raise EvalError(f"eval.protocols: {name} does not fit this model: {reason}")
      chosen.append(protocol)
  else:
    candidates = protocols.for_dataset(dataset)
    chosen = [p for p in candidates if why_not(p) is None]
    if not chosen:
      reasons = "; ".join(f"{p.name}: {why_not(p)}" for p in candidates) or "none are defined"
      raise EvalError(f"no evaluation protocol of data.dataset={dataset!r} fits this model "
                      f"({reasons}). Name one with --config.eval.protocols=...")
  runs = []
  for p in chosen:
    metrics = _metrics_for(p, settings.metrics)
    if not metrics:
      message = (f"eval.metrics={','.join(settings.metrics)} leaves protocol {p.name} nothing to "
                 f"compute (it computes {', '.join(p.metrics)})")
      if settings.protocols:
        raise EvalError(message)
      logging.info("skipping %s: %s", p.name, message)
      continue
    runs.append(p.with_overrides(settings.num_test_videos, settings.samples_per_video, metrics))
  if not runs:
    raise EvalError(f"eval.metrics={','.join(settings.metrics)} leaves no protocol anything to "
                    f"compute")
  for p in runs:
    _check_protocol(p, cfg)
  return runs


def _metrics_for(p: protocols.Protocol, wanted: tuple[str, ...]) -> tuple[str, ...]:
  """eval.metrics narrows a protocol's metrics (generation stays FVD-only: its frames have no
  ground truth to compare with); fid, which no protocol computes by default, can be added."""
  if not wanted:
    return p.metrics
  return tuple(m for m in wanted if m in p.metrics or m == "fid")


def _check_protocol(p: protocols.Protocol, cfg: UNetConfig) -> None:
  """evaluation.check_shapes on the protocol's sizes, before anything is compiled."""
  real = (p.num_test_videos, p.clip_frames, cfg.image_size, cfg.image_size, cfg.channels)
  try:
    evaluation.check_shapes(real, real[:1] + (p.samples_per_video,) + real[1:],
                            cond_frames=p.scored_cond_frames, future_frames=p.future_frames,
                            metrics=p.metrics)
    evaluation.check_set_size(p.num_test_videos, p.clip_frames - p.scored_cond_frames -
                              p.future_frames, p.metrics)
  except ValueError as err:
    raise EvalError(f"protocol {p.name} ({p.num_test_videos} test videos, {p.samples_per_video} "
                    f"samples, metrics {', '.join(p.metrics)}): {err}. Adjust --config.eval."
                    f"num_test_videos / samples_per_video / metrics") from None


# ------------------------------------------------------------------------------------------------
# Sampling


def _to_uint8(video: jax.Array) -> jax.Array:
  """[-1, 1] -> uint8, the same rounding as video.io.to_uint8 (on the device)."""
  return jnp.round((jnp.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)


def make_video_sampler(rollout: Callable, num_frames: int) -> Callable:
  """sample(params, key_data, past, future) -> uint8 [B, P + num_frames + F, H, W, C].

  key_data: uint32 [B, ...] raw keys, one per video; past [B, P, H, W, C] / future [B, F, ...]:
  uint8 given frames, or None. Every video is its own rollout (vmapped), so its frames depend on
  its key and inputs only, not on the batch it is drawn in.
  """

  def sample(params, key_data, past, future):
    def one(key, p, f):
      p = None if p is None else frames_to_unit_range(p)[None]
      f = None if f is None else frames_to_unit_range(f)[None]
      video = rollout(params, jax.random.wrap_key_data(key), p, f, num_frames=num_frames,
                      batch_size=1)
      return _to_uint8(video[0])
    return jax.vmap(one)(key_data, past, future)

  return sample


@functools.lru_cache(maxsize=8)
def _cached_video_sampler(cfg: UNetConfig, diffusion_json: str, sampling_json: str,
                          num_frames: int) -> Callable:
  """One sampler function per setting for the life of the process, so evaluating again (a
  notebook, a resumed run in the same process) reuses its compilation instead of tracing anew."""
  diffusion = diffusion_from_config(ml_collections.ConfigDict(json.loads(diffusion_json)))
  sampler = sampler_from_config(make_denoise_fn(cfg), diffusion,
                                ml_collections.ConfigDict(json.loads(sampling_json)))
  rollout = make_rollout(sampler.sample, cfg, diffusion.noise_model, initial_scale(diffusion))
  return make_video_sampler(rollout, num_frames)


def video_sampler(cfg: UNetConfig, diffusion_section: Any, sampling_section: Any,
                  num_frames: int) -> Callable:
  """`make_video_sampler` around the rollout of the config's diffusion and sampler sections."""
  def as_json(section):
    return json.dumps(section.to_dict(), sort_keys=True, default=list)

  return _cached_video_sampler(cfg, as_json(diffusion_section), as_json(sampling_section),
                               num_frames)


def protocol_key(seed: int, name: str) -> jax.Array:
  """The root key of a protocol: depends on its name, not on which other protocols run."""
  key = jax.random.fold_in(jax.random.key(seed), _EVAL_STREAM)
  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def sample_keys(key: jax.Array, first_video: int, num_videos: int, samples: int) -> np.ndarray:
  """Raw key data [num_videos * samples, ...] of fold_in(fold_in(key, video), sample), video-major
  (sample s of video i at row (i - first_video) * samples + s, the reference's order)."""
  videos = jnp.arange(first_video, first_video + num_videos)
  per_video = jax.vmap(lambda i: jax.vmap(
      lambda s: jax.random.fold_in(jax.random.fold_in(key, i), s))(jnp.arange(samples)))(videos)
  return np.asarray(jax.random.key_data(per_video.reshape(-1)))


def _horizon(p: protocols.Protocol, cfg: UNetConfig) -> int:
  """Frames the rollout generates: the model's block between past and future (interpolation),
  every frame of the clip (generation), or the predicted frames."""
  if p.task == "interpolation":
    return cfg.num_frames
  return p.clip_frames if p.task == "generation" else p.pred_frames


def _pad_rows(x: np.ndarray | None, rows: int) -> np.ndarray | None:
  """Repeats the last row up to `rows`: every batch then has one shape (one compilation), and the
  extra rollouts, independent of the others, are dropped."""
  if x is None or x.shape[0] == rows:
    return x
  return np.concatenate([x, np.repeat(x[-1:], rows - x.shape[0], axis=0)])


def sample_batch(sampler: Callable, params: Any, p: protocols.Protocol, cfg: UNetConfig,
                 clips: np.ndarray, keys: np.ndarray, rows: int, mesh) -> np.ndarray:
  """p.samples_per_video samples of each clip [n, p + n + f, H, W, C] (uint8) -> uint8
  [n, S, p + n + f, H, W, C], drawn as `rows` rollouts (padded) sharded over `mesh`."""
  n, s = clips.shape[0], p.samples_per_video
  given = task_inputs(p.task, clips, cfg, _horizon(p, cfg))
  repeat = lambda x: None if x is None else _pad_rows(np.repeat(x, s, axis=0), rows)  # noqa: E731
  fake = map_batches(sampler, params, [_pad_rows(keys, rows), repeat(given.past),
                                       repeat(given.future)], batch_size=rows, mesh=mesh,
                     jit_fn=jit)
  return fake[:n * s].reshape(n, s, *fake.shape[1:])


# ------------------------------------------------------------------------------------------------
# Batches on disk


def _fingerprint(config: Any, p: protocols.Protocol, settings: Settings, source: str,
                 diffusion: Any) -> dict:
  """What a protocol's batch files depend on; compared on resume. diffusion: the section the
  weights use (a converted checkpoint's schedule)."""
  sampling = {k: v for k, v in config.sampling.to_dict().items()
              if k not in ("task", "num_frames", "batch_size")}  # sample mode's, unused here
  fields = {"protocol": dataclasses.asdict(p), "batch_size": settings.batch_size,
            "checkpoint": source, "seed": config.seed, "model": config.model.to_dict(),
            "diffusion": diffusion.to_dict(), "sampling": sampling,
            "data": {k: v for k, v in config.data.to_dict().items()
                     if k not in ("path", "cache_dir", "mnist_path")}}  # where, not what
  return json.loads(json.dumps(fields, sort_keys=True, default=list))


def _check_or_write_meta(directory: str, fingerprint: dict, write: bool) -> None:
  path = os.path.join(directory, "meta.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != fingerprint:
      differ = sorted(k for k in set(saved) | set(fingerprint)
                      if saved.get(k) != fingerprint.get(k))
      raise EvalError(f"{directory} holds batches of an evaluation with other settings (they "
                      f"differ in: {', '.join(differ)}). Remove that directory to evaluate again, "
                      f"or use another --workdir")
    return
  if write:
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
      json.dump(fingerprint, f, indent=2, sort_keys=True)


def batch_path(directory: str, index: int) -> str:
  return os.path.join(directory, f"batch_{index:05d}.npz")


def _load_batch(path: str, num_videos: int, keys: set[str]) -> dict[str, np.ndarray] | None:
  """A finished batch's arrays, or None when absent or unusable (then it is computed again)."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {name: data[name] for name in data.files}
  except Exception as e:  # a file cut short by a kill mid-write (writes are atomic, but disks fail)
    logging.warning("%s cannot be read (%s); computing that batch again", path, e)
    return None
  if not keys <= set(arrays) or any(a.shape[0] != num_videos for a in arrays.values()):
    logging.warning("%s does not hold the expected arrays; computing that batch again", path)
    return None
  return arrays


def _save_batch(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Written to a temporary name and renamed: a kill leaves the old state or the new file."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ------------------------------------------------------------------------------------------------
# One protocol


@dataclasses.dataclass
class Context:
  """What every protocol of one evaluation shares."""

  config: Any
  cfg: UNetConfig
  params: Any
  diffusion: Any  # the diffusion section the weights were trained with
  dataset: Any
  settings: Settings
  source: str
  mesh: Any
  weights: dict  # lpips_params / i3d_params / fid_params for evaluation.score_videos
  workdir: str


def run_protocol(ctx: Context, p: protocols.Protocol) -> dict:
  """Samples, scores (batch by batch, resuming) and summarises one protocol -> its report."""
  writer = jax.process_index() == 0
  directory = os.path.join(ctx.workdir, "eval", p.name)
  fingerprint = _fingerprint(ctx.config, p, ctx.settings, ctx.source, ctx.diffusion)
  _check_or_write_meta(directory, fingerprint, writer)
  clips = np.asarray(ctx.dataset.test_videos(p.clip_frames, p.num_test_videos))
  key = protocol_key(ctx.config.seed, p.name)
  sampler = video_sampler(ctx.cfg, ctx.diffusion, ctx.config.sampling, _horizon(p, ctx.cfg))
  size, s = ctx.settings.batch_size, p.samples_per_video
  starts = list(range(0, p.num_test_videos, size))
  expected = evaluation.score_keys(p.metrics)
  parts, computed, first_batch, start_time = [], 0, 0.0, time.time()
  for index, first in enumerate(starts):
    count = min(size, p.num_test_videos - first)
    path = batch_path(directory, index)
    arrays = _load_batch(path, count, expected)
    if arrays is None:
      real = clips[first:first + count]
      fake = sample_batch(sampler, ctx.params, p, ctx.cfg, real, sample_keys(key, first, count, s),
                          min(size, p.num_test_videos) * s, ctx.mesh)
      arrays = evaluation.score_videos(
          real, fake, cond_frames=p.scored_cond_frames, future_frames=p.future_frames,
          metrics=p.metrics, binarize=p.binarize, batch_size=ctx.settings.metric_batch_size,
          mesh=ctx.mesh, **ctx.weights)
      if ctx.settings.save_samples:
        arrays["samples"] = fake
      if writer:
        _save_batch(path, arrays)
      computed += 1
      elapsed = time.time() - start_time
      first_batch = first_batch or elapsed  # includes the compilation: left out of the rate
      rate = elapsed / computed if computed == 1 else (elapsed - first_batch) / (computed - 1)
      to_do = sum(not os.path.exists(batch_path(directory, i))
                  for i in range(index + 1, len(starts)))
      logging.info("%s: batch %d/%d done (%d/%d test videos), %s elapsed, ~%s left", p.name,
                   index + 1, len(starts), first + count, p.num_test_videos, _clock(elapsed),
                   _clock(rate * to_do))
    else:
      logging.info("%s: batch %d/%d was finished earlier (%s)", p.name, index + 1, len(starts),
                   path)
    parts.append(arrays)
  scores = {k: np.concatenate([part[k] for part in parts]) for k in expected}
  report = evaluation.report_from_scores(scores, metrics=p.metrics,
                                         cond_frames=p.scored_cond_frames,
                                         future_frames=p.future_frames)
  return {"protocol": dataclasses.asdict(p), "results": report,
          "batches": {"total": len(starts), "computed_now": computed},
          "seconds": time.time() - start_time}


# ------------------------------------------------------------------------------------------------
# Reports


def markdown_report(reports: dict[str, dict], source: str) -> str:
  """One section per protocol: its settings and a table with the paper's columns."""
  lines = [f"# Evaluation of {source}", ""]
  for name, entry in reports.items():
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
    lines += [f"## {name}: {p['task']}, {what}", "",
              f"{results['num_videos']} test videos x {results['samples_per_video']} samples. "
              "FVD: mean over sample indices; frame metrics: best of the samples per video, mean "
              "± 95% interval over videos.", "",
              evaluation.markdown_table(results, columns, leading), ""]
    others = [m for m in computed if m not in columns]
    if others:
      lines += [f"Also computed (see {REPORT_JSON}): {', '.join(others)}.", ""]
  return "\n".join(lines)


def _write(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text if text.endswith("\n") else text + "\n")
  os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# Entry point


def _load_weights(metrics: set[str], settings: Settings) -> dict:
  """The metric networks' weights, read once, before any sampling (missing ones fail here)."""
  weights = {}
  if "lpips" in metrics:
    from mcvd_jax.metrics.lpips import load_lpips_params
    weights["lpips_params"] = load_lpips_params("alex")
  if "fvd" in metrics:
    from mcvd_jax.metrics.fvd import load_i3d_params
    weights["i3d_params"] = load_i3d_params()
  if "fid" in metrics:
    from mcvd_jax.metrics.fid import load_inception_params
    try:
      weights["fid_params"] = load_inception_params(settings.fid_weights)
    except FileNotFoundError as err:
      raise FileNotFoundError(f"eval.fid_weights={settings.fid_weights!r}: {err}") from None
  return weights


def evaluate_checkpoint(config: Any, workdir: str, checkpoint: str | None = None) -> str:
  """Evaluates the EMA weights of the newest checkpoint in `workdir` (or `checkpoint`, as sample
  mode) on the protocols of the config's `eval` section; returns the path of the JSON report."""
  settings = settings_from_config(config)
  os.makedirs(workdir, exist_ok=True)
  cfg, params, diffusion_section, source = load_for_sampling(config, workdir, checkpoint)
  chosen = select_protocols(config, cfg, settings)
  weights = _load_weights({m for p in chosen for m in p.metrics}, settings)
  from mcvd_jax.data.registry import make_dataset
  dataset = make_dataset(config.data, cfg.image_size, cfg.channels)
  sampler_from_config(make_denoise_fn(cfg), diffusion_from_config(diffusion_section),
                      config.sampling)  # a bad sampler setting fails here, before any sampling
  mesh = data_mesh()
  logging.info("evaluating %s on %s (%d devices)", source, ", ".join(p.name for p in chosen),
               mesh.size)
  ctx = Context(config, cfg, params, diffusion_section, dataset, settings, source, mesh, weights,
                workdir)
  reports = {p.name: run_protocol(ctx, p) for p in chosen}
  summary = {"checkpoint": source, "dataset": config.data.dataset,
             "sampler": {"kind": config.sampling.kind, "subsample": config.sampling.subsample},
             "devices": mesh.size, "protocols": reports}
  json_path = os.path.join(workdir, REPORT_JSON)
  if jax.process_index() == 0:
    _write(json_path, evaluation.to_json(summary))
    _write(os.path.join(workdir, REPORT_MD), markdown_report(reports, source))
  logging.info("wrote %s and %s", json_path, os.path.join(workdir, REPORT_MD))
  return json_path
