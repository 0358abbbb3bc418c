"""`--mode=eval` of the image family: sample quality per sampler step count, through the shared
evaluation runner (resumable batches, fingerprints, reports).

One job per entry of `eval.step_counts` draws `eval.num_samples` images with `sampling.kind` at
that many steps (every image from its own key, so a resumed run gives the same images) and keeps
their features; its summary compares them with the features of the training images:
  fid, precision, recall, is   Inception-v3 (the user's weights file, eval.fid_weights): FID
                               (Heusel et al.), precision / recall (Kynkäänniemi et al. 2019, k =
                               eval.pr_k) against as many training images as samples, and the
                               Inception Score (10 splits);
  classifier_fid, recognisable MNIST only, offline: the project's digit classifier
                               (metrics/digit_classifier.py; not comparable with Inception FIDs).
  bpd                          asked for by name: bits per dimension of test images through the
                               probability-flow ODE (likelihood_eval.py), beside the uniform
                               density's 8.
For sampling.kind="dpm_solver" a step count is the network evaluations (sampling.nfe), for a
fixed-step "ode" its steps; an adaptive "ode" runs one job. Each row states its network
evaluations per image (the last column).
A baseline row scores held-out real images (the test split) the same way: what a perfect model
would get at that sample count. Numbers from fewer than the paper's 50,000 samples, or against a
subset of the training set, are marked as not comparable with published ones.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.core.eval_runner import (MEASURED_EVALS_KEYS, EvalJob, Evaluation,
                                      config_fingerprint, measured_evals,
                                      summarize_measured_evals)
from mcvd_jax.core.keys import EVAL_STREAM, stream_key
from mcvd_jax.image_diffusion.config import (CLASSIFIER_METRICS, INCEPTION_METRICS,
                                             LIKELIHOOD_METRICS, Checked)
from mcvd_jax.image_diffusion.likelihood_eval import bpd_job, bpd_markdown
from mcvd_jax.image_diffusion.sampling import (draw_images, image_sampler, load_params,
                                               network_evals_per_image)
from mcvd_jax.metrics.fvd import feature_stats, frechet_distance_from_stats

PAPER_SAMPLES = 50_000
_LABELS = {"fid": "FID", "precision": "precision", "recall": "recall", "is": "IS",
           "classifier_fid": "classifier FID", "recognisable": "recognisable"}


class Scorer(NamedTuple):
  """name: "inception" | "classifier"; score(uint8 [n, H, W, C]) -> (features float32 [n, D],
  class probabilities float32 [n, K] or None when no metric needs them)."""
  name: str
  score: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
  fingerprint: dict


def inception_scorer(weights: str, with_probs: bool, batch_size: int) -> Scorer:
  from mcvd_jax.metrics import fid, inception_score
  if with_probs:
    variables = inception_score.load_inception_score_params(weights)

    def score(images):
      return inception_score.inception_features_and_probs(variables, images, batch_size)
  else:
    variables = fid.load_inception_params(weights)

    def score(images):
      return fid.inception_features(variables, images, batch_size), None
  return Scorer("inception", score, {"weights": os.path.abspath(weights),
                                     "weights_bytes": os.path.getsize(weights)})


def classifier_scorer(config: Any, workdir: str, batch_size: int) -> Scorer:
  from mcvd_jax.metrics import digit_classifier, digit_classifier_training
  path = config.eval.classifier_path or os.path.join(workdir, "digit_classifier.npz")
  params = digit_classifier_training.load_or_train_classifier(path, config.data.mnist_source,
                                                               config.data.mnist_path)

  def score(images):
    return digit_classifier.classifier_features_and_probs(params, images, batch_size)
  return Scorer("classifier", score, {"classifier": paths.resolve(path),
                                      "classifier_bytes": paths.size(path)})


def make_scorers(config: Any, workdir: str, metrics: tuple[str, ...]) -> tuple[Scorer, ...]:
  """The networks the chosen metrics need, loaded (a missing weights file fails here, before any
  sampling)."""
  scorers, batch = [], config.eval.batch_size
  if set(metrics) & set(INCEPTION_METRICS):
    from mcvd_jax.metrics.fid import missing_weights_error
    weights = config.eval.fid_weights
    if not weights or not os.path.exists(weights):
      raise missing_weights_error(weights or None)
    scorers.append(inception_scorer(weights, "is" in metrics, min(batch, 100)))
  if set(metrics) & set(CLASSIFIER_METRICS):
    scorers.append(classifier_scorer(config, workdir, batch))
  return tuple(scorers)


def score_images(scorers: tuple[Scorer, ...], images: np.ndarray) -> dict[str, np.ndarray]:
  """uint8 [n, H, W, C] -> {"<scorer>_features": [n, D], "<scorer>_probs": [n, K]}."""
  arrays = {}
  for scorer in scorers:
    features, probs = scorer.score(images)
    arrays[f"{scorer.name}_features"] = np.asarray(features, np.float32)
    if probs is not None:
      arrays[f"{scorer.name}_probs"] = np.asarray(probs, np.float32)
  return arrays


def reference_features(scorers: tuple[Scorer, ...], images: np.ndarray, description: str,
                       workdir: str, batch_size: int) -> dict[str, np.ndarray]:
  """The scorers' features of the reference (training) images, computed once and cached in
  WORKDIR/eval/reference_<name>.npz (recomputed when the images or the networks differ)."""
  directory = os.path.join(workdir, "eval")
  paths.makedirs(directory)
  out = {}
  for scorer in scorers:
    tag = zlib.crc32(repr((description, len(images), sorted(scorer.fingerprint.items())))
                     .encode()) & 0xFFFFFFFF
    path = os.path.join(directory, f"reference_{scorer.name}_{tag:08x}.npz")
    if paths.exists(path):
      out[f"{scorer.name}_features"] = paths.load_npz(path)["features"]
      continue
    logging.info("computing %s features of %d reference images (%s); cached in %s", scorer.name,
                 len(images), description, path)
    parts = [scorer.score(np.asarray(images[i:i + batch_size]))[0]
             for i in range(0, len(images), batch_size)]
    features = np.concatenate(parts).astype(np.float32)
    if jax.process_index() == 0:
      paths.save_npz(path, {"features": features})
    out[f"{scorer.name}_features"] = features
  return out


def summarize(arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray],
              metrics: tuple[str, ...], k: int) -> dict:
  """The chosen metrics of one job's arrays (see the module docstring)."""
  from mcvd_jax.metrics.digit_classifier import recognisable_share
  from mcvd_jax.metrics.inception_score import inception_score_from_probs
  from mcvd_jax.metrics.precision_recall import precision_recall
  results: dict[str, Any] = {}
  for scorer, fid_name in (("inception", "fid"), ("classifier", "classifier_fid")):
    if f"{scorer}_features" not in arrays:
      continue
    fake, real = arrays[f"{scorer}_features"], reference[f"{scorer}_features"]
    results["num_samples"] = len(fake)
    if fid_name in metrics:
      results[fid_name] = frechet_distance_from_stats(*feature_stats(fake), *feature_stats(real))
  if "precision" in metrics or "recall" in metrics:
    fake = arrays["inception_features"]
    real = reference["inception_features"][:len(fake)]  # as many real as generated images
    precision, recall = precision_recall(real, fake, k=k)
    results.update({m: v for m, v in (("precision", precision), ("recall", recall))
                    if m in metrics})
  if "is" in metrics:
    mean, std = inception_score_from_probs(arrays["inception_probs"],
                                           splits=min(10, len(arrays["inception_probs"])))
    results["is"], results["is_std"] = mean, std
  if "recognisable" in metrics:
    results["recognisable"] = recognisable_share(arrays["classifier_probs"])
  return results


def _cell(results: dict, metric: str) -> str:
  value = results.get(metric)
  if value is None:
    return "–"
  if metric == "is":
    return f"{value:.2f} ± {results.get('is_std', 0.0):.2f}"
  return f"{value:.2f}" if metric.endswith("fid") else f"{value:.3f}"


def sampler_setting(section: Any, steps: int) -> tuple[Any, str, str]:
  """(sampling section, job name, label) of one entry of eval.step_counts: the loop steps of
  DDPM/DDIM/SMLD, the network evaluations of dpm_solver, the fixed steps of a fixed-step ode
  (an adaptive ode has no step count)."""
  sampling = section.copy_and_resolve_references()
  kind = section.kind
  if kind == "dpm_solver":
    sampling.nfe = int(steps)
    return sampling, f"dpm_solver_{steps}_nfe", f"DPM_SOLVER, nfe {steps}"
  if kind == "ode" and section.ode.adaptive:
    return sampling, "ode_adaptive", "ODE, adaptive"
  if kind == "ode":
    sampling.ode.num_steps, sampling.ode.dt0 = int(steps), 0.0  # 0: unset
    return sampling, f"ode_{steps}_steps", f"ODE, {steps} steps"
  sampling.subsample = int(steps)
  return sampling, f"{kind}_{steps}_steps", f"{kind.upper()}, {steps} steps"


def _evals_cell(entry: dict) -> str:
  """Network evaluations per image: the sampler's fixed count, or what adaptive solves used."""
  measured = entry["results"].get("network_evals")
  if measured:
    return f"adaptive: {measured['mean']:.1f} ({measured['min']}–{measured['max']})"
  return str(entry.get("network_evals_per_image", "–"))


def markdown_table(entries: dict, metrics: tuple[str, ...], notes: list[str]) -> str:
  """One row per job (sampler step counts, then the baseline), one column per metric; the bpd
  job as its own paragraph."""
  bpd = [entry for entry in entries.values() if entry.get("kind") == "bpd"]
  entries = {k: entry for k, entry in entries.items() if entry.get("kind") != "bpd"}
  metrics = tuple(m for m in metrics if m not in LIKELIHOOD_METRICS)
  if not entries:
    return "\n".join([bpd_markdown(entry) for entry in bpd] + [""] + [f"- {n}" for n in notes])
  header = ["images", "samples"] + [_LABELS[m] for m in metrics] + ["network evals"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  notes = notes + [bpd_markdown(entry) for entry in bpd]
  for entry in entries.values():
    cells = [entry["label"], str(entry["results"].get("num_samples", "–"))]
    cells += [_cell(entry["results"], m) for m in metrics]
    lines.append("| " + " | ".join(cells + [_evals_cell(entry)]) + " |")
  return "\n".join(lines + [""] + [f"- {note}" for note in notes])


def make_evaluation(config: Any, checked: Checked, workdir: str,
                    checkpoint: str | None = None) -> Evaluation:
  """The image family's Evaluation (Family.evaluation): loads the EMA parameters and the scoring
  networks, and caches the reference features before any sampling."""
  from mcvd_jax.data.images import make_image_dataset
  e, s = config.eval, config.sampling
  metrics = checked.metrics
  cfg, params, source = load_params(config, checked, workdir, checkpoint)
  dataset = make_image_dataset(config.data, cfg.image_size, cfg.channels)
  scorers = make_scorers(config, workdir, metrics)
  train = dataset.train_images()
  num_reference = min(e.reference_images or len(train), len(train))
  reference = reference_features(scorers, train[:num_reference], dataset.description, workdir,
                                 e.batch_size)
  base_fingerprint = config_fingerprint(config, source, {"diffusion": ()}, metrics=list(metrics),
                                        scorers=[sc.fingerprint for sc in scorers])

  def job_for(steps: int) -> EvalJob:
    sampling, name, label = sampler_setting(s, steps)
    sampler = image_sampler(cfg, config.diffusion, sampling)
    key = stream_key(config.seed, EVAL_STREAM, name)

    def compute_batch(first: int, count: int) -> dict[str, np.ndarray]:
      if sampler.tally is not None:
        sampler.tally.take()  # drop counts of any earlier, unfinished call
      images = draw_images(sampler.fn, params, key, first, count, e.batch_size)
      arrays = score_images(scorers, images)
      if e.save_samples:
        arrays["images"] = images
      if sampler.tally is not None:
        arrays.update(measured_evals(sampler.tally.take(), count))
      return arrays

    evals = network_evals_per_image(cfg, checked.diffusion, sampling)
    return job(name, label, compute_batch, e.num_samples,
               {**base_fingerprint, "sampling": sampling.to_dict(), "num_samples": e.num_samples},
               "adaptive" if evals is None else evals, measured=sampler.tally is not None)

  def job(name, label, compute_batch, num_items, fingerprint, evals="–",
          measured=False) -> EvalJob:
    keys = {f"{sc.name}_features" for sc in scorers}
    keys |= {"inception_probs"} if "is" in metrics else set()
    keys |= {"classifier_probs"} if any(sc.name == "classifier" for sc in scorers) else set()
    keys |= set(MEASURED_EVALS_KEYS) if measured else set()

    def summarize_job(arrays):
      results = summarize(arrays, reference, metrics, e.pr_k)
      if measured:
        results["network_evals"] = summarize_measured_evals(arrays)
      return results

    return EvalJob(name=name, fingerprint=fingerprint, num_items=num_items,
                   expected_keys=frozenset(keys), compute_batch=compute_batch,
                   batch_size=e.batch_size, summarize=summarize_job,
                   markdown=lambda entry: "",
                   describe={"label": label, "network_evals_per_image": evals})

  test = dataset.test_images()
  num_test = min(e.num_samples, len(test))
  baseline = job("baseline_real_test_images", "baseline: real test images",
                 lambda first, count: score_images(scorers, np.asarray(test[first:first + count])),
                 num_test, {**base_fingerprint, "num_items": num_test, "test": dataset.description})
  notes = [f"{dataset.description}; model: {source}; {config.diffusion.kind} with "
           f"{config.diffusion.noise} noise ({config.diffusion.target} target)",
           f"reference: {num_reference} training images"]
  comparable = e.num_samples == PAPER_SAMPLES and num_reference >= min(PAPER_SAMPLES, len(train))
  if not comparable:
    notes.append(f"NOT COMPARABLE with published numbers: {e.num_samples} samples against "
                 f"{num_reference} training images (the paper's protocol: {PAPER_SAMPLES:,} "
                 f"samples against the training set)")
  if "classifier_fid" in metrics:
    notes.append("classifier FID uses the project's MNIST digit classifier, not Inception: it is "
                 "not comparable with any published FID")
  sample_metrics = [m for m in metrics if m not in LIKELIHOOD_METRICS]
  # An adaptive ODE ignores the step counts: one job.
  counts = (e.step_counts[:1] if s.kind == "ode" and s.ode.adaptive else e.step_counts)
  jobs = (tuple(job_for(int(steps)) for steps in counts) + (baseline,)) if sample_metrics else ()
  if "bpd" in metrics:
    jobs += (bpd_job(config, cfg, params, checked.diffusion, test, base_fingerprint,
                     e.batch_size),)
  return Evaluation(
      source=source, jobs=jobs,
      summary={"dataset": config.data.dataset, "metrics": list(metrics), "sampler": s.kind,
               "noise": config.diffusion.noise, "target": config.diffusion.target,
               "num_reference_images": num_reference, "comparable_with_paper": comparable},
      markdown=lambda entries: markdown_table(entries, metrics, notes))
