"""Stochastic Moving MNIST, 64x64 grayscale: the paper's model (ngf 64, ch_mult 1,2,3,4, two res
blocks, attention at 8/16/32; 5 past + 5 current frames).

Variants (`--config=configs/smmnist.py:VARIANT`):
  (none)     prediction only (concat conditioning);
  spatin     the same with SPATIN conditioning;
  past_mask  prediction + generation (past masked with probability 0.5);
  general    prediction + generation + interpolation (5 past, 5 current, 5 future; both masked 0.5);
  tiny       a very small network for smoke runs on a CPU.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model.image_size = 64
  config.model.channels = 1
  config.model.num_frames = 5
  config.model.num_frames_cond = 5
  variant = arg or ""
  if variant == "spatin":
    config.model.spatin = True
  elif variant == "past_mask":
    config.training.prob_mask_cond = 0.5
  elif variant == "general":
    config.model.num_frames_future = 5
    config.training.prob_mask_cond = 0.5
    config.training.prob_mask_future = 0.5
  elif variant == "tiny":
    config.model.image_size = 32
    config.model.ngf = 16
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (16,)
    config.model.n_head_channels = 16
    config.model.num_frames = 2
    config.model.num_frames_cond = 2
    config.sampling.subsample = 10
    config.sampling.num_frames = 6
  elif variant:
    raise ValueError(f"configs/smmnist.py: unknown variant {variant!r}; use spatin, past_mask, "
                     f"general or tiny")
  return config
