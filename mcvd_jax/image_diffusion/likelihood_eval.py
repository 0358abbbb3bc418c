"""The `bpd` metric of the image family's `--mode=eval`: bits per dimension of held-out test images
under the model's probability-flow ODE (diffusion/likelihood.py), isotropic or GFF.

Each test image is dequantised once (uniform noise) and scored with `eval.bpd_probes` Hutchinson
probes (Rademacher, one per solve row); the report gives the mean bpd, its standard error over
images, and the estimator's variance over probes (mean over images of the per-image variance), the
network evaluations per solve, and the baseline every 8-bit model should beat: the uniform
density's 8 bits per dimension. The solve's settings are `eval.bpd_ode` (OdeSettings fields;
default tsit5 with rtol = atol = 1e-5, score_sde's RK45 tolerance).

Settings read with defaults, since configs/image_default.py does not declare them yet:
eval.bpd_images (test images scored, default 100; 0: all), eval.bpd_probes (default 4),
eval.bpd_ode (a section, default {}).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from mcvd_jax.core.compilation import jit
from mcvd_jax.core.eval_runner import EvalJob
from mcvd_jax.core.keys import EVAL_STREAM, stream_key
from mcvd_jax.diffusion.continuous import network_model, vp_schedule
from mcvd_jax.diffusion.likelihood import UNIFORM_BPD, image_bits_per_dim
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.ode import settings_from_config

JOB_NAME = "bpd_test_images"


def bpd_settings(config: Any) -> tuple[int, int, Any]:
  """(images, probes, OdeSettings) from the eval section (errors name eval.bpd_*)."""
  e = config.eval
  images, probes = int(e.get("bpd_images", 100)), int(e.get("bpd_probes", 4))
  if images < 0:
    raise ValueError(f"eval.bpd_images={images} must be >= 0 (0: every test image)")
  if probes < 1:
    raise ValueError(f"eval.bpd_probes={probes} must be >= 1 (Hutchinson probes per image)")
  return images, probes, settings_from_config(e.get("bpd_ode", {}), "eval.bpd_ode")


def summarize_bpd(arrays: dict[str, np.ndarray]) -> dict:
  """arrays: bpd [n, probes], network_evals [n] -> the job's results."""
  bpd = np.asarray(arrays["bpd"], np.float64)
  per_image = bpd.mean(axis=1)
  probe_var = bpd.var(axis=1, ddof=1).mean() if bpd.shape[1] > 1 else float("nan")
  return {"num_images": int(bpd.shape[0]), "probes": int(bpd.shape[1]),
          "bpd": float(per_image.mean()),
          "bpd_stderr": float(per_image.std(ddof=1) / np.sqrt(len(per_image)))
          if len(per_image) > 1 else float("nan"),
          "probe_variance": float(probe_var),
          "network_evals": float(np.mean(arrays["network_evals"])),
          "baseline_uniform_bpd": UNIFORM_BPD}


def bpd_markdown(entry: dict) -> str:
  r = entry["results"]
  return (f"Bits per dimension of {r['num_images']} test images through the probability-flow ODE "
          f"(uniform dequantisation, {r['probes']} Hutchinson probes each): **{r['bpd']:.3f}** "
          f"± {r['bpd_stderr']:.3f} (standard error over images); variance over probes "
          f"{r['probe_variance']:.2e}; {r['network_evals']:.0f} network evaluations per solve. "
          f"Baseline: the uniform density, {r['baseline_uniform_bpd']:.0f} bits per dimension.")


def bpd_job(config: Any, cfg: UNetConfig, params: Any, diffusion: Any, test: np.ndarray,
            fingerprint: dict, batch_size: int) -> EvalJob:
  """The runner's job scoring the first eval.bpd_images test images (uint8 [n, H, W, C])."""
  images, probes, settings = bpd_settings(config)
  count = len(test) if images == 0 else min(images, len(test))
  vp = vp_schedule(diffusion.schedule)
  model = network_model(make_denoise_fn(cfg), vp, diffusion.noise_model, diffusion.target,
                        diffusion.prediction)
  key = stream_key(config.seed, EVAL_STREAM, JOB_NAME)

  @jit
  def score(params, batch, key):
    return image_bits_per_dim(model, vp, diffusion.noise_model, batch, params, settings, key,
                              probes)

  def compute_batch(first: int, n: int) -> dict[str, np.ndarray]:
    bpd, evals = score(params, np.asarray(test[first:first + n]), jax.random.fold_in(key, first))
    return {"bpd": np.asarray(bpd, np.float32),
            "network_evals": np.full((n,), float(evals), np.float32)}

  return EvalJob(name=JOB_NAME, num_items=count, batch_size=batch_size,
                 # the batch size too: each batch draws its own dequantisation and probes
                 fingerprint={**fingerprint, "bpd": {"images": count, "probes": probes,
                                                     "ode": settings._asdict(),
                                                     "batch_size": batch_size}},
                 expected_keys=frozenset({"bpd", "network_evals"}), compute_batch=compute_batch,
                 summarize=summarize_bpd, markdown=bpd_markdown,
                 describe={"label": "bits per dimension", "kind": "bpd"})
