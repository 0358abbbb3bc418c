"""The evaluation machinery of every family (`main --mode=eval`): protocols computed batch by
batch, finished batches kept on disk and reused, settings fingerprinted, the time left logged, and
the reports written.

A family describes what to evaluate as an `Evaluation` of `EvalJob`s (one per protocol); the
runner owns the files:
  WORKDIR/eval/<job>/meta.json       the job's fingerprint (what its batches depend on); a later
                                     run with other settings stops with an error instead of mixing
  WORKDIR/eval/<job>/batch_<i>.npz   the per-item arrays of batch i (written atomically)
  WORKDIR/eval_report.json           every number, per job
  WORKDIR/eval_report.md             the families' tables
Started again with the same command, an interrupted evaluation skips the finished batches; a
family whose batch results depend only on the items (per-item keys) then gives the uninterrupted
run's numbers. On several hosts the workdir must be shared: process 0 writes, every process reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.errors import ProjectError

REPORT_JSON, REPORT_MD = "eval_report.json", "eval_report.md"


class EvalError(ValueError, ProjectError):
  """An evaluation setting that cannot work, or results on disk from other settings."""


@dataclasses.dataclass(frozen=True)
class EvalJob:
  """One protocol of an evaluation.

  compute_batch(first, count) -> arrays with `count` rows each (at least `expected_keys`): the
    results of items first .. first+count-1 (e.g. per-video scores of their samples).
  summarize(arrays) -> the job's results (JSON-able), from every batch's arrays concatenated.
  markdown(entry) -> the job's section of eval_report.md; entry is its report entry:
    {**describe, "results": ..., "batches": ..., "seconds": ...}.
  """

  name: str
  fingerprint: Mapping[str, Any]
  num_items: int
  batch_size: int
  expected_keys: frozenset[str]
  compute_batch: Callable[[int, int], dict[str, np.ndarray]]
  summarize: Callable[[dict[str, np.ndarray]], dict]
  markdown: Callable[[dict], str]
  describe: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """What `--mode=eval` runs: `source` names what is evaluated (the report's title), `summary`
  holds the report's other top-level fields (dataset, sampler, ...). `markdown(entries)`, given,
  writes the body of eval_report.md from every job's report entry (job name -> entry) at once,
  e.g. one table whose rows are the jobs; otherwise each job's own markdown is used in turn."""

  source: str
  jobs: tuple[EvalJob, ...]
  summary: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  to_json: Callable[[Any], str] = lambda report: json.dumps(report, indent=2)
  markdown: Callable[[Mapping[str, dict]], str] | None = None


def fingerprint_json(fields: Mapping[str, Any]) -> dict:
  """`fields` as it reads back from meta.json (tuples as lists, keys sorted)."""
  return json.loads(json.dumps(fields, sort_keys=True, default=list))


def config_fingerprint(config: Any, source: str, sections: Mapping[str, tuple[str, ...]],
                       **fields: Any) -> dict:
  """What a job's batch files depend on, for its fingerprint: the weights' `source`, the seed, each
  named config section without the listed fields (those that say where, not what, or that the
  job does not use) and any other `fields` (a section given there replaces the config's)."""
  out = {"checkpoint": source, "seed": config.seed}
  for name, dropped in sections.items():
    section = fields.pop(name) if name in fields else config[name]
    out[name] = {k: v for k, v in section.to_dict().items() if k not in dropped}
  return {**out, **fields}


def check_or_write_meta(directory: str, fingerprint: Mapping[str, Any], write: bool) -> None:
  """EvalError when `directory` holds batches of other settings; else records them (on `write`)."""
  fingerprint = fingerprint_json(fingerprint)
  path = os.path.join(directory, "meta.json")
  if paths.exists(path):
    saved = paths.read_json(path)
    if saved != fingerprint:
      differ = sorted(k for k in set(saved) | set(fingerprint)
                      if saved.get(k) != fingerprint.get(k))
      raise EvalError(f"{directory} holds batches of an evaluation with other settings (they "
                      f"differ in: {', '.join(differ)}). Remove that directory to evaluate again, "
                      f"or use another --workdir")
    return
  if write:  # whole or not at all: the other processes read it
    paths.makedirs(directory)
    paths.write_json(path, fingerprint, indent=2, sort_keys=True)


def batch_path(directory: str, index: int) -> str:
  return os.path.join(directory, f"batch_{index:05d}.npz")


def load_batch(path: str, num_items: int, keys: frozenset[str]) -> dict[str, np.ndarray] | None:
  """A finished batch's arrays, or None when absent or unusable (then it is computed again)."""
  if not paths.exists(path):
    return None
  try:
    arrays = paths.load_npz(path)
  except Exception as e:  # a file cut short by a kill mid-write (writes are atomic, but disks fail)
    logging.warning("%s cannot be read (%s); computing that batch again", path, e)
    return None
  if not keys <= set(arrays) or any(a.shape[0] != num_items for a in arrays.values()):
    logging.warning("%s does not hold the expected arrays; computing that batch again", path)
    return None
  return arrays


def save_batch(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Written to a temporary name and renamed: a kill leaves the old state or the new file."""
  paths.save_npz(path, arrays)


def clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def same_choice_everywhere(arrays: dict | None, path: str) -> dict | None:
  """A finished batch's arrays where process 0 found them too, else None. A batch's computation
  is a collective: every process must compute the same batches, so they follow process 0 (a
  process that cannot read what process 0 read has another view of the workdir: an error, not a
  hang)."""
  if jax.process_count() == 1:
    return arrays
  from jax.experimental import multihost_utils
  found_by_first = bool(multihost_utils.broadcast_one_to_all(np.int32(arrays is not None)))
  if found_by_first and arrays is None:
    raise EvalError(f"process {jax.process_index()} cannot read {path}, which process 0 read: "
                    f"every process of an evaluation must see the same workdir (a shared "
                    f"path or a bucket)")
  return arrays if found_by_first else None


def run_job(job: EvalJob, workdir: str) -> dict:
  """Computes (batch by batch, resuming) and summarises one job -> its report entry."""
  writer = jax.process_index() == 0
  directory = os.path.join(workdir, "eval", job.name)
  check_or_write_meta(directory, job.fingerprint, writer)
  starts = list(range(0, job.num_items, job.batch_size))
  # Listed once: on a bucket every existence check is a request, and the time-left estimate
  # below would otherwise check every later batch after each batch.
  on_disk = set(paths.listdir(directory)) if paths.isdir(directory) else set()
  parts, computed, first_batch, start_time = [], 0, 0.0, time.time()
  for index, first in enumerate(starts):
    count = min(job.batch_size, job.num_items - first)
    path = batch_path(directory, index)
    arrays = same_choice_everywhere(load_batch(path, count, job.expected_keys), path)
    if arrays is not None:
      logging.info("%s: batch %d/%d was finished earlier (%s)", job.name, index + 1, len(starts),
                   path)
      parts.append(arrays)
      continue
    arrays = job.compute_batch(first, count)
    if writer:
      save_batch(path, arrays)
    computed += 1
    elapsed = time.time() - start_time
    first_batch = first_batch or elapsed  # includes the compilation: left out of the rate
    rate = elapsed / computed if computed == 1 else (elapsed - first_batch) / (computed - 1)
    to_do = sum(os.path.basename(batch_path(directory, i)) not in on_disk
                for i in range(index + 1, len(starts)))
    logging.info("%s: batch %d/%d done (%d/%d items), %s elapsed, ~%s left", job.name, index + 1,
                 len(starts), first + count, job.num_items, clock(elapsed), clock(rate * to_do))
    parts.append(arrays)
  arrays = {k: np.concatenate([part[k] for part in parts]) for k in job.expected_keys}
  return {**job.describe, "results": job.summarize(arrays),
          "batches": {"total": len(starts), "computed_now": computed},
          "seconds": time.time() - start_time}


def run_evaluation(evaluation: Evaluation, workdir: str) -> str:
  """Runs every job and writes WORKDIR/eval_report.json and .md; returns the JSON path."""
  workdir = paths.resolve(workdir)
  paths.makedirs(workdir)
  logging.info("evaluating %s on %s (%d devices)", evaluation.source,
               ", ".join(job.name for job in evaluation.jobs), jax.device_count())
  entries = {job.name: run_job(job, workdir) for job in evaluation.jobs}
  report = {"checkpoint": evaluation.source, **evaluation.summary,
            "devices": jax.device_count(), "protocols": entries}
  lines = [f"# Evaluation of {evaluation.source}", ""]
  if evaluation.markdown is not None:
    lines.append(evaluation.markdown(entries))
  for job in evaluation.jobs if evaluation.markdown is None else ():
    lines.append(job.markdown(entries[job.name]))
  json_path = os.path.join(workdir, REPORT_JSON)
  if jax.process_index() == 0:
    paths.write_text(json_path, evaluation.to_json(report))
    paths.write_text(os.path.join(workdir, REPORT_MD), "\n".join(lines))
  logging.info("wrote %s and %s", json_path, os.path.join(workdir, REPORT_MD))
  return json_path


# Per-batch arrays of what a sampler that counts as it runs (an adaptive ODE solve,
# diffusion.pf_ode.EvalTally) used: the counts cannot be told apart by item, so a batch's totals
# sit on its first row (min and max on every row), which concatenates and resumes like scores.
MEASURED_EVALS_KEYS = ("evals/sum", "evals/solves", "evals/min", "evals/max")


def measured_evals(counts: np.ndarray, rows: int) -> dict[str, np.ndarray]:
  """counts: the network evaluations of every solve one batch ran (a video's blocks, an image;
  padding rows included) -> MEASURED_EVALS_KEYS arrays of `rows` rows."""
  if counts.size == 0:
    raise RuntimeError("the sampler recorded no network evaluations for this batch")
  first = lambda value: np.asarray([value] + [0] * (rows - 1), np.int64)  # noqa: E731
  same = lambda value: np.full(rows, value, np.int64)  # noqa: E731
  return {"evals/sum": first(counts.sum()), "evals/solves": first(counts.size),
          "evals/min": same(counts.min()), "evals/max": same(counts.max())}


def summarize_measured_evals(scores: dict[str, np.ndarray]) -> dict:
  """The batches' measured_evals arrays -> {mean, min, max, solves}: network evaluations per
  solve over every solve of the job."""
  solves = int(scores["evals/solves"].sum())
  return {"mean": float(scores["evals/sum"].sum() / solves), "min": int(scores["evals/min"].min()),
          "max": int(scores["evals/max"].max()), "solves": solves}
