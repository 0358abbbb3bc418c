"""Keys for evaluation and sampling that depend only on what is drawn, never on how it is batched.

A stream is the root key folded with a tag (a name's CRC or a number), so evaluation keys never meet
training or sample keys, and a protocol's keys do not depend on which others run. Item i (an image,
a test video, a Hutchinson probe ...) of a stream gets fold_in(stream, i), and its sample s
fold_in(fold_in(stream, i), s): a resumed or re-batched run draws exactly the same numbers.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

EVAL_STREAM = 0x6576  # "ev": evaluation
SAMPLE_STREAM = 0x696D  # "im": --mode=sample


def stream_key(seed: int, stream: int, name: str | None = None) -> jax.Array:
  """fold_in(key(seed), stream), then folded with the CRC-32 of `name` when one is given."""
  key = jax.random.fold_in(jax.random.key(seed), stream)
  if name is not None:
    key = jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
  return key


def item_keys(key: jax.Array, first: int, count: int, samples: int | None = None) -> np.ndarray:
  """Raw key data (uint32) of items first .. first + count - 1 of stream `key`: [count, ...] of
  fold_in(key, i); with `samples`, [count * samples, ...] of fold_in(fold_in(key, i), s),
  item-major (sample s of item i at row (i - first) * samples + s). Wrap a row back with
  jax.random.wrap_key_data."""
  items = jnp.arange(first, first + count)
  if samples is None:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(items)
  else:
    keys = jax.vmap(lambda i: jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(key, i), s))(
        jnp.arange(samples)))(items).reshape(-1)
  return np.asarray(jax.random.key_data(keys))
