"""UCF-101, 64x64 RGB: the paper's UCF-101 runs.

Reproduces the reference's `configs/ucf101.yml` with the overrides of the UCF-101 block of
`example_scripts/final/training_scripts.sh` (lines 198-219, experiments `ucf10132_*`): every run
uses ngf 288 with 288 channels per attention head (the YAML says 192 / 96), 4 current frames after
4 past frames, batch 32, Adam lr 1e-4 with 5000 warm-up steps, gradient clipping 1.0, EMA 0.999,
DDPM with 1000 linear betas (0.02 -> 1e-4), samples of 16 frames (`num_frames_pred`), 100 sampling
steps.

Variants (`--config=configs/ucf101.py:VARIANT`; parts joined by `+` in any order):
  (none)            `ucf10132_big288_4c4_unetm` (script line 200): prediction, concat
                    conditioning; the paper's UCF-101 prediction model.
  spatin            `ucf10132_big192_288_4c4_unetm_spade` (line 203): SPATIN, spade_dim 192.
  past_mask         `ucf10132_big288_4c4_pmask50_unetm` (line 208): prediction + generation,
                    past masked with probability 0.5.
  spatin+past_mask  `ucf10132_big192_288_4c4_pmask50_unetm_spade` (line 211).
  general           `ucf10132_big192_288_4c4f4_pmask50condfut_unetm_spade` (line 219): 4 future
                    frames, past and future each masked 0.5. The paper's general UCF-101 run uses
                    SPATIN (spade_dim 192), so this variant does too.
  interp            `ucf10132_big192_288_4c4f4_unetm_spade_pmask50cond_spade` (line 216): SPATIN,
                    4 future frames masked 0.5, past never masked (interpolation + prediction;
                    despite "pmask50cond" in its name the line sets only prob_mask_future).
Other combinations were not run by the paper and raise ValueError.
"""

from configs import default

_PARTS = ("spatin", "past_mask", "general", "interp")
VARIANTS = ("", "spatin", "past_mask", "spatin+past_mask", "general", "interp")


def get_config(arg=None):
  parts = default.parse_variant("configs/ucf101.py", arg, _PARTS, VARIANTS)
  config = default.get_config()
  config.data.dataset = "ucf101"

  model = config.model
  model.channels = 3
  model.num_frames = 4
  model.num_frames_cond = 4
  model.ngf = 288
  model.n_head_channels = 288

  config.optim.lr = 1e-4
  config.optim.warmup = 5000
  config.training.batch_size = 32
  config.sampling.task = "prediction"
  config.sampling.num_frames = 16

  if parts & {"spatin", "general", "interp"}:  # all of the scripts' UCF-101 SPATIN runs
    model.spatin = True
    model.spade_dim = 192
  if "past_mask" in parts:
    config.training.prob_mask_cond = 0.5
  if "general" in parts:
    model.num_frames_future = 4
    config.training.prob_mask_cond = 0.5
    config.training.prob_mask_future = 0.5
  if "interp" in parts:
    model.num_frames_future = 4
    config.training.prob_mask_future = 0.5
    config.sampling.task = "interpolation"
  return config

