"""CIFAR-10 32x32 RGB image diffusion with the project's UNet at the size of the DDPM CIFAR-10
model (Ho et al. 2020: ngf 128, ch_mult 1,2,2,2, two residual blocks, attention at 16x16, dropout
0.1) and its recipe: Adam 2e-4 with 5,000 warm-up steps, batch 128, EMA 0.9999, gradient clipping
1, random horizontal flips, 1000 linear betas; sampled with DDPM. The data is the user's
(`--config.data.path`: cifar-10-python.tar.gz or cifar-10-batches-py/, or a prepared tfds cifar10).

Parameters: ours 51,835,779 (51.8M; tests/test_image_family.py counts them with jax.eval_shape),
Ho et al.'s 35.7M. The layout is theirs; the difference is the project's UNet (MCVD's `unetmore`,
NCSN++-style): it resamples with residual blocks (9.4M parameters, where DDPM has one convolution
per resampling) and each residual block's two group norms take a scale and a shift from the time
embedding (DDPM adds one time projection per block).

Variants (`--config=configs/cifar10.py:VARIANT`, combined with +):
  (none)      isotropic DDPM;
  gff         non-isotropic DDPM with Gaussian-free-field noise (arXiv 2210.12254), the network
              predicting the white noise as the paper;
  smld        SMLD (annealed Langevin) with NCSNv2's CIFAR-10 noise levels and sampler (232
              geometric sigmas from 50 to 0.01, step 6.2e-6, 5 steps per level, final denoising),
              on this UNet (NCSNv2's own network is a RefineNet);
  smld+gff    SMLD with GFF noise and the preconditioned Langevin sampler;
  tiny        a very small network for smoke runs and tests on a CPU.
"""

from configs import default, image_default


def get_config(arg=None):
  parts = default.parse_variant("configs/cifar10.py", arg, ("smld", "gff", "tiny"),
                                ("", "gff", "smld", "smld+gff", "tiny", "gff+tiny", "smld+tiny",
                                 "smld+gff+tiny"))
  config = image_default.get_config()
  image_default.ddpm_cifar10_recipe(config, "cifar10", image_size=32, num_steps=800_000)
  if "gff" in parts:
    config.diffusion.noise = "gff"
  if "smld" in parts:
    image_default.use_smld(config, sigma_begin=50.0, num_levels=232, step_lr=6.2e-6)
  if "tiny" in parts:
    image_default.make_tiny(config, ngf=16)
  return config
