"""Cityscapes, 128x128 RGB: the paper's Cityscapes runs.

Reproduces the reference's `configs/cityscapes_big.yml` with the overrides of the Cityscapes block
of `example_scripts/final/training_scripts.sh` (lines 171-186, experiments `city*`): a five-level
network (ch_mult 1,1,2,3,4) without dropout, 5 current frames after 2 past frames, Adam lr 1e-4
with 5000 warm-up steps, gradient clipping 1.0, EMA 0.999, DDPM with 1000 linear betas
(0.02 -> 1e-4), samples of 28 frames (`num_frames_pred`), 100 sampling steps.

Variants (`--config=configs/cityscapes.py:VARIANT`):
  (none)           `city32_big192_5c2_unetm_long` (script line 173): prediction, concat
                   conditioning, ngf 192, 192 channels per head, batch 32; the paper's Cityscapes
                   prediction model.
  spatin           `city16_big128_256_5c2_unetm_long_spade` (line 176): SPATIN, spade_dim 128,
                   ngf 256, 256 channels per head, batch 16.
  past_mask        prediction + generation, past masked 0.5. The scripts have no such Cityscapes
                   run: this is the main (concat) run plus prob_mask_cond 0.5.
  general          `city16_big128_256_5c2f2_unetm_long_spade_future_maskcondfut` (line 186): as
                   spatin, plus 2 future frames; past and future each masked with probability 0.5.
                   The paper's only general Cityscapes run uses SPATIN, so this variant does too.
  interp_maskcond  `city16_big128_256_5c2f2_unetm_long_spade_future_maskcond` (line 181): as
                   general, but the future block is never masked (prob_mask_future 0): trains
                   interpolation and past reconstruction only.

The reference also ships `configs/cityscapes_big_spade.yml` (ngf 192, spade_dim 256, batch 32,
used in its README); the scripts' SPATIN runs override it back to ngf 256 / spade_dim 128 / batch
16 on top of `cityscapes_big.yml`, and we follow the scripts.
"""

from configs import default

VARIANTS = ("", "spatin", "past_mask", "general", "interp_maskcond")
_PARTS = VARIANTS[1:]  # every variant is a single part: none combine


def get_config(arg=None):
  parts = default.parse_variant("configs/cityscapes.py", arg, _PARTS, VARIANTS)
  config = default.get_config()
  config.data.dataset = "cityscapes"

  model = config.model
  model.image_size = 128
  model.channels = 3
  model.num_frames_cond = 2
  model.ngf = 192
  model.ch_mult = (1, 1, 2, 3, 4)
  model.n_head_channels = 192
  model.dropout = 0.0

  config.optim.lr = 1e-4
  config.optim.warmup = 5000
  config.training.batch_size = 32
  config.sampling.task = "prediction"
  config.sampling.num_frames = 28

  if parts & {"spatin", "general", "interp_maskcond"}:  # the scripts' 256-wide SPATIN network
    model.spatin = True
    model.ngf = 256
    model.n_head_channels = 256
    config.training.batch_size = 16
  if "past_mask" in parts:
    config.training.prob_mask_cond = 0.5
  elif "general" in parts:
    model.num_frames_future = 2
    config.training.prob_mask_cond = 0.5
    config.training.prob_mask_future = 0.5
  elif "interp_maskcond" in parts:
    model.num_frames_future = 2
    config.training.prob_mask_cond = 0.5
    config.sampling.task = "interpolation"
  return config
