"""Normalizing flows of the thesis: MRCNF, multi-resolution continuous normalizing flows (Voleti
et al., arXiv 2106.08462). Pure JAX/Flax on the project's ODE module; imports no TensorFlow.

    config = MrcnfConfig(image_size=32, channels=3, num_levels=3, blocks_per_level=8)
    params = init_params(config, key)
    loss, metrics = loss_fn(config)(params, images_uint8, key)          # training
    out = log_likelihood(config, params, images_uint8, key)              # evaluation
    bpd = bits_per_dim(out.log_p, config.dims)
    samples = sample(config, params, key, num=16, temperature=1.0)       # coarse to fine
"""

from mcvd_jax.flows.multiscale import (TRANSFORMS, avg_pool2, combine, dequantise,
                                       logit_forward, logit_inverse, pyramid, quantise, split,
                                       transform_log_det)
from mcvd_jax.flows.mrcnf import (EVAL_ODE, TRAIN_ODE, Likelihood, MrcnfConfig,
                                  MrcnfConfigError, Samples, bits_per_dim, decode, draw_latents,
                                  init_params, level_bits_per_dim, log_likelihood, loss_fn,
                                  param_count, sample)
from mcvd_jax.flows.odenet import ConcatConv, OdeNet, block_param_count

__all__ = [
    "EVAL_ODE", "TRAIN_ODE", "TRANSFORMS", "ConcatConv", "Likelihood", "MrcnfConfig",
    "MrcnfConfigError", "OdeNet", "Samples", "avg_pool2", "bits_per_dim", "block_param_count",
    "combine", "decode", "dequantise", "draw_latents", "init_params", "level_bits_per_dim",
    "log_likelihood", "logit_forward", "logit_inverse", "loss_fn", "param_count", "pyramid",
    "quantise", "sample", "split", "transform_log_det",
]
