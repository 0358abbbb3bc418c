"""KTH human actions, 64x64 grayscale: the paper's KTH runs.

Reproduces the reference's `configs/kth64_big.yml` with the overrides of the KTH block of
`example_scripts/final/training_scripts.sh` (lines 94-114, experiments `kth64_*`): ngf 96 with 96
channels per attention head (the YAML's values; no KTH line changes n_head_channels), 5 current
frames, batch 64, Adam lr 2e-4 (KTH is the only dataset at 2e-4) with 5000 warm-up steps, gradient
clipping 1.0, EMA 0.999, DDPM with 1000 linear betas (0.02 -> 1e-4), samples of 20 frames
(`num_frames_pred`; the sampling script evaluates 30 and 40), 100 sampling steps.

Variants (`--config=configs/kth.py:VARIANT`):
  (none)     `kth64_big_5c10_unetm_b2` (script line 96): prediction from 10 past frames, concat
             conditioning; the paper's KTH prediction model.
  spatin     `kth64_verybigbig_5c10_unetm_b2_spade` (line 101): SPATIN with spade_dim 192 and a
             wider network, ngf 192 (n_head_channels stays 96 from the YAML, as the sampling script,
             line 117, confirms).
  past_mask  prediction + generation, past masked with probability 0.5. The scripts have no such
             KTH run: this is the main run plus prob_mask_cond 0.5, as on the other datasets.
  general    `kth64_big_5c5f5_futmask50_general_unetm_b2` (line 114): 5 past, 5 current, 5 future
             frames, both blocks masked with probability 0.5, concat conditioning.
  interp     `kth64_interp_big_c10t10f5_SPADE` (line 106): interpolation + prediction, 10 past,
             10 current, 5 future frames, future masked 0.5, past never; SPATIN with spade_dim 128.
  interp_c5  `kth64_interp_big_c5t5f5_SPADE` (line 109): the same with 5 past and 5 current frames.
"""

from configs import default

VARIANTS = ("", "spatin", "past_mask", "general", "interp", "interp_c5")
_PARTS = VARIANTS[1:]  # every variant is a single part: none combine


def get_config(arg=None):
  parts = default.parse_variant("configs/kth.py", arg, _PARTS, VARIANTS)
  config = default.get_config()
  config.data.dataset = "kth"

  model = config.model
  model.num_frames_cond = 10
  model.ngf = 96
  model.n_head_channels = 96

  config.optim.warmup = 5000
  config.sampling.task = "prediction"
  config.sampling.num_frames = 20

  if "spatin" in parts:
    model.spatin = True
    model.spade_dim = 192
    model.ngf = 192
  elif "past_mask" in parts:
    config.training.prob_mask_cond = 0.5
  elif "general" in parts:
    model.num_frames_cond = 5
    model.num_frames_future = 5
    config.training.prob_mask_cond = 0.5
    config.training.prob_mask_future = 0.5
  elif parts & {"interp", "interp_c5"}:
    past = 10 if "interp" in parts else 5
    model.num_frames_cond = past
    model.num_frames = past
    model.num_frames_future = 5
    model.spatin = True
    config.training.prob_mask_future = 0.5
    config.sampling.task = "interpolation"
  return config
