"""An offline score for generated MNIST digits, for users without Inception weights: a small CNN
digit classifier trained once on the real MNIST training digits the project already reads
(`data.mnist_digits`), cached as an .npz. This module is the network, its inputs, the scores and
the file; training it (and the command that writes the file) is `digit_classifier_training`.

This is NOT Inception FID. `classifier_fid` is the Fréchet distance between Gaussians fitted to the
classifier's 128-d features (its penultimate dense layer, after ReLU) of real and generated
digits; it depends on this classifier's weights (and so on its training digits, steps and seed)
and is comparable only between runs scored with the same classifier file, never with published
FIDs. `recognisable` is the share of generated digits the classifier assigns to one class with
probability >= RECOGNISABLE_THRESHOLD; it is reported beside the same share of the real digits.

Network: conv 3x3 (32, unpadded) ReLU, max-pool 2x2, conv 3x3 (64, unpadded) ReLU, max-pool 2x2,
dense 128 ReLU (the features), dense 10 (the logits); inputs [B, 28, 28, 1] mapped from [0, 1] to
[-1, 1].

Image sizes: 28 x 28 is used as it is. 32 x 32 is taken to be MNIST padded by 2 pixels on each
side (the usual way of making 32 x 32 MNIST, e.g. torchvision's Pad(2)) and centre-cropped back to
28 x 28, so no resampling blurs the strokes; pass pad32=False when the model's 32 x 32 digits were
resized (Resize(32)) instead, and they are resized like every other size: bilinearly to 28 x 28
(jax.image.resize 'linear', antialiased when shrinking).

Write the classifier once with `python -m mcvd_jax.metrics.digit_classifier_training --out=PATH`
(see that module), or let `digit_classifier_training.load_or_train_classifier(path)` write it the
first time it is asked for.
"""

from __future__ import annotations

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mcvd_jax.core import paths
from mcvd_jax.errors import ProjectError
from mcvd_jax.metrics.fvd import check_pixel_values, frechet_distance
from mcvd_jax.metrics.sharded import map_batches

DIGIT_SIZE = 28
FEATURES = 128
CLASSES = 10
RECOGNISABLE_THRESHOLD = 0.9  # max softmax probability at which a digit counts as recognisable
FORMAT_VERSION = 1
_META_KEY = "__meta_json__"


class ClassifierFileError(ValueError, ProjectError):
  """A digit-classifier file that cannot be read or does not hold this network."""


class ClassifierNotFoundError(FileNotFoundError, ProjectError):
  """No digit-classifier file at the given path."""


def _write_command(path: str) -> str:
  return f"python -m mcvd_jax.metrics.digit_classifier_training --out={path}"

class DigitClassifier(nn.Module):
  """[B, 28, 28, 1] float32 in [0, 1] -> (features [B, 128] >= 0, logits [B, 10])."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = 2.0 * x - 1.0
    # Unpadded convolutions (28 -> 26 -> 13 -> 11 -> 5): 30% less work on CPU than "SAME".
    x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), padding="VALID", name="conv1")(x)), (2, 2), (2, 2))
    x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3), padding="VALID", name="conv2")(x)), (2, 2), (2, 2))
    features = nn.relu(nn.Dense(FEATURES, name="features")(x.reshape(x.shape[0], -1)))
    return features, nn.Dense(CLASSES, name="head")(features)


def init_params(seed: int = 0) -> dict:
  """Randomly initialised params of `DigitClassifier`."""
  x = jnp.zeros((1, DIGIT_SIZE, DIGIT_SIZE, 1), jnp.float32)
  return DigitClassifier().init(jax.random.key(seed), x)["params"]


@functools.lru_cache(maxsize=1)
def _abstract_params() -> dict:
  return jax.eval_shape(init_params)


# ------------------------------------------------------------------------------------------------
# Input


def to_classifier_input(images: jax.Array, pad32: bool = True) -> jax.Array:
  """[N, H, W, 1] uint8 [0, 255] or float [0, 1] -> [N, 28, 28, 1] float32 in [0, 1]: 28 x 28 as
  is, 32 x 32 centre-cropped when pad32 (2-pixel-padded MNIST), any other size bilinearly
  resized (see the module docstring)."""
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
  n, h, w, c = x.shape
  if (h, w) == (32, 32) and pad32:
    return x[:, 2:30, 2:30, :]
  if (h, w) != (DIGIT_SIZE, DIGIT_SIZE):
    x = jax.image.resize(x, (n, DIGIT_SIZE, DIGIT_SIZE, c), method="linear")
  return x


def _check_images(images: np.ndarray, name: str) -> None:
  if images.ndim != 4 or images.shape[-1] != 1 or not len(images):
    raise ValueError(f"{name}: digit images must be [N, H, W, 1] with N >= 1 (grey, "
                     f"channels-last), got shape {images.shape}")
  check_pixel_values(images, name, "images")


# ------------------------------------------------------------------------------------------------
# Training

# ------------------------------------------------------------------------------------------------
# Inference and scores


@functools.lru_cache(maxsize=None)
def _features_fn(pad32: bool):
  def features_and_probs(params, images):
    with jax.default_matmul_precision("float32"):  # a metric: no TF32/bf16 passes
      features, logits = DigitClassifier().apply({"params": params},
                                                 to_classifier_input(images, pad32))
    return features, jax.nn.softmax(logits, axis=-1)
  return features_and_probs


def classifier_features_and_probs(params: dict, images, batch_size: int = 500,
                                  mesh: Mesh | None = None,
                                  pad32: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """[N, H, W, 1] uint8 (or float [0, 1]) digit images of any size -> (features float32 [N, 128],
  probabilities float32 [N, 10]), `batch_size` images per call sharded over `mesh`. Sizes: see
  `to_classifier_input`."""
  images = np.asarray(images)
  _check_images(images, "classifier_features_and_probs")
  return map_batches(_features_fn(bool(pad32)), params, [images], batch_size=batch_size,
                     mesh=mesh)


def recognisable_share(probs) -> float:
  """Share of [N, 10] probability rows whose largest entry is >= RECOGNISABLE_THRESHOLD."""
  return float(np.mean(np.max(np.asarray(probs), axis=1) >= RECOGNISABLE_THRESHOLD))


def classifier_scores(params: dict, real_images, fake_images, batch_size: int = 500,
                      mesh: Mesh | None = None, pad32: bool = True) -> dict:
  """Scores of generated digits against real ones with the digit classifier (not Inception FID:
  not comparable with published FIDs; see the module docstring).

  Args:
    real_images, fake_images: [N, H, W, 1] and [M, H, W, 1] uint8 or [0, 1] floats, N, M >= 2.
  Returns:
    classifier_fid: Fréchet distance of the 128-d classifier features (fake vs real).
    recognisable: share of fake images with max class probability >= RECOGNISABLE_THRESHOLD.
    recognisable_real: the same share of the real images (the baseline for `recognisable`).
    recognisable_threshold, num_real, num_fake.
  """
  real_images, fake_images = np.asarray(real_images), np.asarray(fake_images)
  for images, name in ((real_images, "real"), (fake_images, "fake")):
    _check_images(images, f"classifier_scores {name}")
    if len(images) < 2:
      raise ValueError(f"classifier_scores: classifier_fid fits a Gaussian to the {name} "
                       f"features and needs at least 2 images, got {len(images)}")
  real_feats, real_probs = classifier_features_and_probs(params, real_images, batch_size, mesh,
                                                         pad32)
  fake_feats, fake_probs = classifier_features_and_probs(params, fake_images, batch_size, mesh,
                                                         pad32)
  return {"classifier_fid": frechet_distance(fake_feats, real_feats),
          "recognisable": recognisable_share(fake_probs),
          "recognisable_real": recognisable_share(real_probs),
          "recognisable_threshold": RECOGNISABLE_THRESHOLD,
          "num_real": len(real_images), "num_fake": len(fake_images)}


def accuracy(params: dict, images, labels, batch_size: int = 500,
             mesh: Mesh | None = None) -> float:
  """Share of uint8 [N, 28, 28] (or [N, H, W, 1]) digits whose most probable class is the label."""
  images = np.asarray(images)
  images = images[..., None] if images.ndim == 3 else images
  _, probs = classifier_features_and_probs(params, images, batch_size, mesh)
  return float(np.mean(np.argmax(probs, axis=1) == np.asarray(labels)))


# ------------------------------------------------------------------------------------------------
# The file


def save_classifier(params: dict, path: str, meta: dict | None = None) -> None:
  """Writes params (names 'conv1/kernel', ...) and `meta` (JSON-serialisable) as an .npz."""
  arrays = {"/".join(k.key for k in key_path): np.asarray(value, np.float32)
            for key_path, value in jax.tree_util.tree_flatten_with_path(params)[0]}
  meta = dict(meta or {}, format_version=FORMAT_VERSION)
  paths.makedirs(os.path.dirname(paths.resolve(path)))
  # Written whole, then renamed: a crash leaves no half file at `path` (local or a URI).
  paths.save_npz(path, {**arrays, _META_KEY: np.array(json.dumps(meta))})


def _read_file(path: str) -> tuple[dict, dict]:
  if not path or not paths.exists(path) or paths.isdir(path):
    raise ClassifierNotFoundError(f"no digit-classifier file at {path!r}: write it with "
                                  f"`{_write_command(path or 'digit_classifier.npz')}`")
  try:
    arrays = paths.load_npz(path)
    meta = json.loads(str(arrays.pop(_META_KEY)))
  except Exception as e:  # a truncated or foreign file raises many kinds of errors
    raise ClassifierFileError(f"{path}: cannot read it as a digit-classifier file ({e}); write "
                              f"it again with `{_write_command(path)}`") from e
  return arrays, meta


def load_classifier(path: str) -> dict:
  """The params `save_classifier` wrote to `path`, checked against the network.
  ClassifierNotFoundError / ClassifierFileError naming the path and the command that writes it."""
  arrays, _ = _read_file(path)
  expected = jax.tree_util.tree_flatten_with_path(_abstract_params())
  leaves = []
  for key_path, spec in expected[0]:
    name = "/".join(k.key for k in key_path)
    value = arrays.get(name)
    if value is None or value.shape != spec.shape:
      got = "missing" if value is None else f"shape {value.shape}"
      raise ClassifierFileError(f"{path} does not hold this digit classifier: {name} is {got} "
                                f"(want {spec.shape}); write it again with "
                                f"`{_write_command(path)}`")
    leaves.append(value)
  return jax.tree_util.tree_unflatten(expected[1], leaves)


def classifier_meta(path: str) -> dict:
  """The metadata `save_classifier` wrote (training source, steps, test accuracy, ...)."""
  return _read_file(path)[1]
