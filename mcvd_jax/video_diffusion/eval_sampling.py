"""Sampling for MCVD's evaluation protocols: per-video keys, every video its own (vmapped)
rollout, padded batches sharded over the devices, one compiled sampler per setting.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from mcvd_jax.core.compilation import jit
from mcvd_jax.core.keys import EVAL_STREAM, stream_key
from mcvd_jax.core.media import frames_to_unit_range, to_uint8
from mcvd_jax.core.sharding import pad_rows
from mcvd_jax.diffusion.factory import (BuiltSampler, cached_sampler, diffusion_from_config,
                                        initial_scale, network_evals, sampler_from_config)
from mcvd_jax.metrics import protocols
from mcvd_jax.metrics.sharded import map_batches
from mcvd_jax.models import UNetConfig, make_denoise_fn
from mcvd_jax.video.guidance import guidance_settings, guided_denoise
from mcvd_jax.video.rollout import make_rollout
from mcvd_jax.video_diffusion.tasks import task_inputs


def make_video_sampler(rollout: Callable, num_frames: int) -> Callable:
  """sample(params, key_data, past, future) -> uint8 [B, P + num_frames + F, H, W, C].

  key_data: uint32 [B, ...] raw keys, one per video; past [B, P, H, W, C] / future [B, F, ...]:
  uint8 given frames, or None. Every video is its own rollout (vmapped), so its frames depend on
  its key and inputs only, not on the batch it is drawn in.
  """

  def sample(params, key_data, past, future):
    def one(key, p, f):
      p = None if p is None else frames_to_unit_range(p)[None]
      f = None if f is None else frames_to_unit_range(f)[None]
      video = rollout(params, jax.random.wrap_key_data(key), p, f, num_frames=num_frames,
                      batch_size=1)
      return to_uint8(video[0])
    return jax.vmap(one)(key_data, past, future)

  return sample


def _guided_network(network: tuple) -> Callable:
  """The network the sampler calls, from the cache key (UNetConfig, guidance weight, label
  interval)."""
  cfg, weight, interval = network
  return guided_denoise(make_denoise_fn(cfg), cfg, weight, interval)


def sampling_network(cfg: UNetConfig, sampling_section: Any) -> Callable:
  """The network a sampler of `sampling_section` calls: make_denoise_fn(cfg), guided by the
  masked past as sampling.guidance and sampling.guidance_labels say (video.guidance)."""
  return _guided_network((cfg, *guidance_settings(sampling_section)))


def _wrap_rollout(network: tuple, diffusion: Any, sampler: Any, num_frames: int) -> Callable:
  cfg = network[0]
  rollout = make_rollout(sampler.sample, cfg, diffusion.noise_model, initial_scale(diffusion))
  return make_video_sampler(rollout, num_frames)


def video_sampler(cfg: UNetConfig, diffusion_section: Any, sampling_section: Any,
                  num_frames: int) -> BuiltSampler:
  """`make_video_sampler` around the rollout of the config's diffusion and sampler sections, as
  BuiltSampler(fn, tally): cached per setting (diffusion.factory.cached_sampler)."""
  network = (cfg, *guidance_settings(sampling_section))
  return cached_sampler(_wrap_rollout, _guided_network, network, diffusion_section,
                        sampling_section, (num_frames,))


def sampler_network_evals(cfg: UNetConfig, diffusion_section: Any,
                          sampling_section: Any) -> int | None:
  """Network evaluations per rollout block of the config's sampler (None: an adaptive ODE solve,
  whose count depends on the block), for the evaluation report."""
  sampler = sampler_from_config(make_denoise_fn(cfg), diffusion_from_config(diffusion_section),
                                sampling_section)
  return network_evals(sampler, sampling_section)


def protocol_key(seed: int, name: str) -> jax.Array:
  """The root key of a protocol: depends on its name, not on which other protocols run."""
  return stream_key(seed, EVAL_STREAM, name)


def horizon(p: protocols.Protocol, cfg: UNetConfig) -> int:
  """Frames the rollout generates: the model's block between past and future (interpolation),
  every frame of the clip (generation), or the predicted frames."""
  if p.task == "interpolation":
    return cfg.num_frames
  return p.clip_frames if p.task == "generation" else p.pred_frames


def sample_batch(sampler: Callable, params: Any, p: protocols.Protocol, cfg: UNetConfig,
                 clips: np.ndarray, keys: np.ndarray, rows: int, mesh) -> np.ndarray:
  """p.samples_per_video samples of each clip [n, p + n + f, H, W, C] (uint8) -> uint8
  [n, S, p + n + f, H, W, C], drawn as `rows` rollouts (padded) sharded over `mesh`."""
  n, s = clips.shape[0], p.samples_per_video
  given = task_inputs(p.task, clips, cfg, horizon(p, cfg))
  repeat = lambda x: None if x is None else pad_rows(np.repeat(x, s, axis=0), rows)  # noqa: E731
  fake = map_batches(sampler, params, [pad_rows(keys, rows), repeat(given.past),
                                       repeat(given.future)], batch_size=rows, mesh=mesh,
                     jit_fn=jit)
  return fake[:n * s].reshape(n, s, *fake.shape[1:])


