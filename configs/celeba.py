"""CelebA 64x64 RGB image diffusion, the data prepared as score_sde prepares it: the aligned
`img_align_celeba` JPEGs centre-cropped to 140x140 and resized to 64x64 (PIL bilinear,
antialiased; mcvd_jax/data/celeba.py), random horizontal flips. The data is the user's
(`--config.data.path`: the folder holding img_align_celeba/, optionally list_eval_partition.txt);
it is decoded once into a memory-mapped cache (`data.cache_dir`, default
<data.path>/mcvd_jax_cache).

Recipe: score_sde's CelebA defaults (configs/default_celeba_configs.py: batch 128, Adam 2e-4 with
5,000 warm-up steps, gradient clipping 1, dropout 0.1) with DDPM's 1000 linear betas and EMA 0.9999.
The network is the project's UNet at the DDPM CIFAR-10 width (ngf 128, ch_mult 1,2,2,2 over
64 -> 32 -> 16 -> 8, two residual blocks, attention at 16x16), i.e. score_sde's NCSN++ CelebA
channel layout with two residual blocks per level instead of four.

Variants (`--config=configs/celeba.py:VARIANT`, combined with +):
  (none)      isotropic DDPM;
  gff         non-isotropic DDPM with Gaussian-free-field noise (arXiv 2210.12254), the network
              predicting the white noise as the paper;
  smld        SMLD (annealed Langevin) with NCSNv2's CelebA noise levels and sampler (configs/
              celeba.yml: 500 geometric sigmas from 90 to 0.01, step 3.3e-6, 5 steps per level,
              final denoising), on this UNet (NCSNv2's own network is a RefineNet);
  smld+gff    SMLD with GFF noise and the preconditioned Langevin sampler;
  tiny        a very small network on 32x32 images (the same crop, resized to 32) for smoke
              runs and tests on a CPU.
"""

from configs import default, image_default

VARIANTS = ("", "gff", "smld", "smld+gff", "tiny", "gff+tiny", "smld+tiny", "smld+gff+tiny")


def get_config(arg=None):
  parts = default.parse_variant("configs/celeba.py", arg, ("smld", "gff", "tiny"), VARIANTS)
  config = image_default.get_config()
  image_default.ddpm_cifar10_recipe(config, "celeba", image_size=64, num_steps=1_300_000)
  if "gff" in parts:
    config.diffusion.noise = "gff"
  if "smld" in parts:
    image_default.use_smld(config, sigma_begin=90.0, num_levels=500, step_lr=3.3e-6)
  if "tiny" in parts:
    image_default.make_tiny(config, ngf=16)
    config.model.image_size = 32  # make_tiny's two levels (32, 16) then reach its 16x16 attention
  return config
