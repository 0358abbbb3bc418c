"""BAIR robot pushing, 64x64 RGB: the paper's BAIR runs.

Reproduces the reference's `configs/bair_big.yml` with the overrides of the BAIR block of
`example_scripts/final/training_scripts.sh` (lines 126-161, experiments `bair64_big192_*`): every
run widens the network to ngf 192 with 192 channels per attention head and denoises 5 current
frames; batch 64, Adam lr 1e-4 with 5000 warm-up steps, gradient clipping 1.0, EMA 0.999, DDPM with
1000 linear betas (0.02 -> 1e-4), samples of 28 frames (`num_frames_pred`), 100 sampling steps.

Data: `--config.data.path=DIR` with DIR holding `softmotion30_44k/{train,test}/*.tfrecords` from
the original release (or `--config.data.source=tfds` for a prepared tfds `bair_robot_pushing_small`;
see `mcvd_jax/data/bair.py`). Training windows are flipped at random (`random_flip: true`); the test
set is the release's 256 test videos.

Variants (`--config=configs/bair.py:VARIANT`; parts joined by `+` in any order):
  (none)               `bair64_big192_5c1_unetm` (script line 128): prediction from 1 past frame,
                       concat conditioning. The 1-past-frame protocol of the paper's BAIR table (the
                       sampling script evaluates it on 15 predicted frames).
  c2                   `bair64_big192_5c2_unetm` (line 135): 2 past frames (evaluated on 14 and 28).
  spatin               `..._5c1_unetm_spade` (line 142): SPATIN conditioning, spade_dim 128.
  past_mask            `..._5c1_pmask50_unetm` (line 131): prediction + generation, past masked 0.5.
  spatin+past_mask     line 145.
  c2+spatin            line 149.
  c2+past_mask         line 138.
  c2+spatin+past_mask  line 152.
  general              `..._5c1_prevfutpmask50_unetm_general` (line 157): 1 past + 1 future frame,
                       both masked with probability 0.5 (prediction, generation, interpolation).
                       The sampling script (line 240) reloads this run with 2 future frames; we
                       follow the training line.
  c2+general           `..._5c2_prevfutpmask50_unetm_general` (line 160): 2 past + 2 future frames.
Other combinations were not run by the paper and raise ValueError.
"""

from configs import default

_PARTS = ("c2", "spatin", "past_mask", "general")
VARIANTS = ("", "c2", "spatin", "past_mask", "spatin+past_mask", "c2+spatin", "c2+past_mask",
            "c2+spatin+past_mask", "general", "c2+general")


def get_config(arg=None):
  parts = default.parse_variant("configs/bair.py", arg, _PARTS, VARIANTS)
  config = default.get_config()
  config.data.dataset = "bair"

  model = config.model
  model.channels = 3
  model.num_frames_cond = 1
  model.ngf = 192
  model.n_head_channels = 192

  config.optim.lr = 1e-4
  config.optim.warmup = 5000
  config.sampling.task = "prediction"
  config.sampling.num_frames = 28

  if "c2" in parts:
    model.num_frames_cond = 2
  if "spatin" in parts:
    model.spatin = True
  if "past_mask" in parts:
    config.training.prob_mask_cond = 0.5
  if "general" in parts:
    model.num_frames_future = model.num_frames_cond  # 1 (5c1) or 2 (5c2), as the scripts
    config.training.prob_mask_cond = 0.5
    config.training.prob_mask_future = 0.5
  return config

