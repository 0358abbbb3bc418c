"""Stochastic Moving MNIST, 64x64 grayscale, generated on the fly from real MNIST digits (the
embedded dataset: see mcvd_jax/data/smmnist.py).

The paper's SMMNIST runs (reference `configs/smmnist_DDPM_big5.yml` with the overrides of the
SMMNIST block of `example_scripts/final/training_scripts.sh`): ngf 64, ch_mult 1,2,3,4, two res
blocks, attention at 8/16/32 with 64 channels per head; 5 past + 5 current frames; batch 64, Adam
lr 2e-4 with 1000 warm-up steps, gradient clipping 1.0, EMA 0.999; DDPM with 1000 linear betas,
sampled with 100 steps; 20 predicted frames.

Variants (`--config=configs/smmnist.py:VARIANT`):
  (none)     prediction only (concat conditioning);
  spatin     the same with SPATIN conditioning;
  past_mask  prediction + generation (past masked with probability 0.5);
  general    prediction + generation + interpolation (5 past, 5 current, 5 future; both masked 0.5);
  quick      a small model on a 32x32 canvas (16-pixel digits moving up to 2 pixels per frame:
             the paper's geometry at half size) that learns visibly in 30 minutes
             on 2 CPU cores: the README's first command;
  quick1     the same with one digit per clip (with two digits crossing on the small canvas a
             CPU-trained model loses them within a few frames, with one it keeps them while they
             move straight); the second demo model is its network predicting one frame per call
             (model.num_frames=1, from the model directory when sampling);
  tiny       a very small network for smoke runs and tests on a CPU.
"""

from configs import default

VARIANTS = ("", "spatin", "past_mask", "general", "quick", "quick1", "tiny")


def get_config(arg=None):
  default.parse_variant("configs/smmnist.py", arg, VARIANTS[1:], VARIANTS)
  variant = arg or ""
  config = default.get_config()  # the paper's SMMNIST network and recipe are the defaults
  config.training.log_every = 50
  config.sampling.num_frames = 20
  if variant == "spatin":
    config.model.spatin = True
  elif variant == "past_mask":
    config.training.prob_mask_cond = 0.5
  elif variant == "general":
    config.model.num_frames_future = 5
    config.training.prob_mask_cond = 0.5
    config.training.prob_mask_future = 0.5
  elif variant == "quick":
    _quick(config)
  elif variant == "quick1":
    _quick(config)
    config.data.num_digits = 1
  elif variant == "tiny":
    config.model.image_size = 32
    config.model.ngf = 16
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (16,)
    config.model.n_head_channels = 16
    config.model.num_frames = 2
    config.model.num_frames_cond = 2
    config.data.digit_size = 16
    config.sampling.subsample = 10
    config.sampling.num_frames = 6
    config.training.batch_size = 8
    config.training.num_steps = 4
    config.training.log_every = 2
    config.training.sample_every = 4
    config.training.sample_batch_size = 2
    config.training.checkpoint_every = 2
    config.training.eval_every = 0  # tests turn the learning signal on where they need it
  return config


def _quick(config):
  """About 0.8 s per step on 2 CPU cores: ~2,200 steps in 30 minutes."""
  config.model.image_size = 32
  config.data.digit_size = 16
  # The paper's geometry at half size: 32-pixel digits on 64 pixels moving up to 4 pixels per
  # frame become 16 on 32 moving up to 2. At the reference's 4 pixels on this canvas a digit
  # crosses its 16-pixel free space in as few as 4 frames and draws a random new direction at
  # every wall: 1.14 bounces per digit in the 5 predicted frames (0.70 at 2), 20% of digits
  # without one (40% at 2). At 2 the past gain of the learning signal doubled within 650 steps.
  config.data.max_speed = 2
  config.model.ngf = 32
  config.model.ch_mult = (1, 2, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = (8,)
  config.model.n_head_channels = 32
  config.model.dropout = 0.0
  # The network predicts the clean frames: an ε network's clean estimate at the noisiest labels is
  # its error times up to 156 (clipped garbage, worse than a blank frame after 1,400 steps), while
  # an x0 network's is the conditional mean from its first hundred steps (learning signal, issue
  # 27's note: at step 300, x0 MAE 0.092/0.079/0.061 at √ᾱ 0.08/0.28/0.63 vs ε's 0.383/0.214/0.096).
  config.diffusion.prediction = "x0"
  config.optim.warmup = 200
  # The paper's EMA rate 0.999 averages over ~1,000 steps, which here still holds the random
  # initialisation after 1,500 steps (its samples were noise while the raw weights already
  # predicted moving blobs): a short run needs a short average.
  config.training.ema_rate = 0.99
  config.training.batch_size = 16
  config.training.num_steps = 2500
  config.training.log_every = 50
  config.training.sample_every = 500
  config.training.eval_every = 250  # the learning signal: ten readings over the run
  config.training.checkpoint_every = 250
  config.sampling.num_frames = 10
