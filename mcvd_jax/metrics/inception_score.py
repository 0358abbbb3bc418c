"""Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs").

IS = exp(E_x KL(p(y|x) || p(y))), with p(y|x) Inception-v3's class probabilities for image x and
p(y) their mean over the images. As the original code (openai/improved-gan) and the common
re-implementations: the images are cut, in order, into `splits` equal parts (10 is usual, of
50,000 images), the score is computed within each part, and the mean and the (population, ddof 0)
standard deviation over the parts are reported.

The network: FID's Inception-v3 (`inception.py`, preprocessed as `fid.preprocess_for_inception`)
with its 1008-way classifier `fc` from pytorch-fid's weight file. Like the original code, the
logits are pool features @ fc.weight without fc.bias (the TF graph's `softmax/logits/MatMul`,
torch-fidelity's "logits_unbiased"), over all 1008 outputs; `use_fc_bias=True` adds the bias.

  variables = inception_score.load_inception_score_params("inception_fid.npz")
  mean, std = inception_score.inception_score(variables, images)  # uint8 [N, H, W, C]
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh

from mcvd_jax.metrics import fid, inception
from mcvd_jax.metrics.fvd import check_pixel_values
from mcvd_jax.metrics.sharded import map_batches


def inception_score_from_probs(probs, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `splits` parts of exp(mean_x KL(p(y|x) || p(y))).

  Args:
    probs: [N, C] class probabilities, one row per image, each non-negative and summing to 1.
    splits: number of parts (N >= splits); part i is rows [i N // splits, (i + 1) N // splits).
  Returns:
    The mean and the population standard deviation of the parts' scores, in [1, C].
  """
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or p.shape[1] < 1:
    raise ValueError(f"inception score: probabilities must be [N, C], got shape {p.shape}")
  if not isinstance(splits, (int, np.integer)) or isinstance(splits, bool) or splits < 1:
    raise ValueError(f"inception score: splits must be an integer >= 1, got {splits!r}")
  n = p.shape[0]
  if n < splits:
    raise ValueError(f"inception score: {n} images cannot be cut into splits={splits} parts")
  if not np.all(np.isfinite(p)):
    raise ValueError("inception score: probabilities contain NaN or inf")
  if p.min() < 0 or np.max(np.abs(p.sum(axis=1) - 1.0)) > 1e-3:
    raise ValueError("inception score: each row must be a probability distribution (non-negative, "
                     "summing to 1); pass softmax outputs, not logits")
  scores = []
  for i in range(splits):
    part = p[i * n // splits:(i + 1) * n // splits]
    marginal = part.mean(axis=0, keepdims=True)
    # 0 log 0 = 0: a class an image gives no mass adds nothing (the original code gives NaN).
    terms = np.where(part > 0, part * (np.log(np.where(part > 0, part, 1.0)) -
                                       np.log(np.where(part > 0, marginal, 1.0))), 0.0)
    scores.append(np.exp(terms.sum(axis=1).mean()))
  return float(np.mean(scores)), float(np.std(scores))


def load_inception_score_params(path: str | None) -> dict:
  """FID's Inception variables (`fid.load_inception_params`) plus the classifier params/fc from
  the same .npz. ValueError naming the file, and saying how to get one, when it lacks fc.*."""
  variables = fid.load_inception_params(path)
  with np.load(path, allow_pickle=False) as data:
    state = {name: data[name] for name in data.files if name.startswith("fc.")}
  classifier = inception.classifier_variables_from_state_dict(state, path)
  params = dict(variables["params"], **classifier["params"])
  return {**variables, "params": jax.device_put(params)}


def _check_classifier(variables: dict) -> None:
  fc = variables.get("params", {}).get("fc") if hasattr(variables, "get") else None
  if fc is None or "kernel" not in fc:
    raise ValueError("the Inception Score needs Inception-v3's classifier params/fc, which these "
                     "variables lack (fid.load_inception_params drops it): load them with "
                     "inception_score.load_inception_score_params(path)")


@functools.lru_cache(maxsize=None)
def _logits_fn(size: int, use_fc_bias: bool, with_features: bool):
  def logits(variables: dict, images: jax.Array):
    with jax.default_matmul_precision("float32"):  # a metric: no TF32/bf16 passes
      features, with_bias = inception.InceptionV3(logits=True).apply(
          variables, fid.preprocess_for_inception(images, size))
      out = with_bias if use_fc_bias else features @ variables["params"]["fc"]["kernel"]
      return (features, out) if with_features else out
  return logits


def _checked_images(images, caller: str, size: int) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
    raise ValueError(f"{caller}: images must be [N, H, W, C] with N >= 1 and C = 1 or 3 "
                     f"(channels-last), got shape {images.shape}")
  check_pixel_values(images, caller, "images")
  if size < inception.MIN_SIZE:
    raise ValueError(f"size={size}: Inception-v3 needs inputs of at least {inception.MIN_SIZE}")
  return images


def inception_logits(variables: dict, images, batch_size: int = 50, mesh: Mesh | None = None,
                     size: int = fid.RESOLUTION, use_fc_bias: bool = False) -> np.ndarray:
  """[N, H, W, C] images (uint8 or [0, 1] floats, C in {1, 3}) -> [N, 1008] float32 logits,
  `batch_size` images per call sharded over `mesh`. `size` other than 299 is for tests only."""
  _check_classifier(variables)
  images = _checked_images(images, "inception_logits", size)
  return map_batches(_logits_fn(size, bool(use_fc_bias), False), variables, [images],
                     batch_size=batch_size, mesh=mesh)


def inception_features_and_probs(variables: dict, images, batch_size: int = 50,
                                 mesh: Mesh | None = None, size: int = fid.RESOLUTION,
                                 use_fc_bias: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """[N, H, W, C] images -> ([N, 2048] float32 pool features, [N, 1008] float64 probabilities)
  from one pass of the network: FID/precision-recall and the Inception Score share it."""
  _check_classifier(variables)
  images = _checked_images(images, "inception_features_and_probs", size)
  features, logits = map_batches(_logits_fn(size, bool(use_fc_bias), True), variables, [images],
                                 batch_size=batch_size, mesh=mesh)
  return features, softmax(logits)


def softmax(logits) -> np.ndarray:
  """[N, C] logits -> [N, C] float64 probabilities (max-shifted, so large logits are safe)."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(axis=1, keepdims=True))
  return z / z.sum(axis=1, keepdims=True)


def inception_probs(variables: dict, images, batch_size: int = 50, mesh: Mesh | None = None,
                    size: int = fid.RESOLUTION, use_fc_bias: bool = False) -> np.ndarray:
  """[N, H, W, C] images -> [N, 1008] float64 class probabilities p(y|x) (softmax of
  `inception_logits`, taken in float64 on the host)."""
  return softmax(inception_logits(variables, images, batch_size, mesh, size, use_fc_bias))


def inception_score(variables: dict, images, splits: int = 10, batch_size: int = 50,
                    mesh: Mesh | None = None, size: int = fid.RESOLUTION,
                    use_fc_bias: bool = False) -> tuple[float, float]:
  """(mean, std) Inception Score of [N, H, W, C] images (see `inception_score_from_probs`)."""
  return inception_score_from_probs(
      inception_probs(variables, images, batch_size, mesh, size, use_fc_bias), splits)
