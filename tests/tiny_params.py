"""Random, well-scaled parameters for tiny UNets in tests: no init compile (seconds on CPU), and
unlike the reference initialisation the zero-initialised output convolutions are active, so
outputs and gradients depend on every layer."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from mcvd_jax.models import UNetConfig, init_params


def random_params(cfg: UNetConfig, seed: int = 0):
  """The parameter tree of init_params(cfg) (shapes by tracing only) filled from numpy: kernels
  N(0, 1 / fan_in), GroupNorm scales 1 + N(0, 0.05^2), everything else N(0, 0.05^2); float32."""
  shapes = jax.eval_shape(lambda key: init_params(cfg, key), jax.random.key(0))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    noise = rng.standard_normal(leaf.shape)
    if name in ("kernel", "embedding"):
      value = noise / math.sqrt(math.prod(leaf.shape[:-1]))
    else:
      value = (1.0 if name == "scale" else 0.0) + 0.05 * noise
    return jnp.asarray(value, jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)
