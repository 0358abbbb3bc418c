"""Base configuration: every experiment file edits a copy of this one.

Sections: model (the network; becomes a frozen UNetConfig), diffusion (forward process), sampling
(the sampler and the task rollout), training (masking probabilities; the training loop lands with
its own fields later).
"""

import ml_collections


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = model = ml_collections.ConfigDict()
  model.image_size = 64
  model.channels = 1
  model.num_frames = 5          # current frames denoised together (T)
  model.num_frames_cond = 5     # past frames (Nc)
  model.num_frames_future = 0   # future frames (Nf)
  model.ngf = 64
  model.ch_mult = (1, 2, 3, 4)
  model.num_res_blocks = 2
  model.attn_resolutions = (8, 16, 32)
  model.n_head_channels = 64
  model.dropout = 0.1
  model.spatin = False          # False: concat conditioning; True: SPATIN
  model.spade_dim = 128
  model.cond_emb = False
  model.dtype = "float32"       # compute dtype; bfloat16 on TPU/GPU

  config.diffusion = diffusion = ml_collections.ConfigDict()
  diffusion.kind = "ddpm"       # ddpm | smld
  diffusion.schedule = "linear"  # linear | cosine (ddpm)
  diffusion.num_steps = 1000
  diffusion.beta_start = 0.02   # beta of label 0, the noisiest (reference convention)
  diffusion.beta_end = 1e-4
  diffusion.sigma_begin = 1.0   # smld: geometric sigmas from sigma_begin down to sigma_end
  diffusion.sigma_end = 0.01
  diffusion.noise = "isotropic"  # isotropic | gff (Gaussian free field)
  diffusion.l1 = False

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.kind = "ddpm"        # ddpm | ddim | smld
  sampling.subsample = 100      # loop steps; 0 visits every label
  sampling.eta = 0.0            # ddim only
  sampling.clip_before = True
  sampling.denoise = True
  sampling.reference_denoise_label = False  # True reproduces the reference's final-step label
  sampling.step_lr = 8e-6       # smld
  sampling.n_steps_each = 1     # smld
  sampling.task = "generation"  # prediction | generation | interpolation | past_reconstruction
  sampling.num_frames = 10      # frames to generate
  sampling.batch_size = 4

  config.training = training = ml_collections.ConfigDict()
  training.prob_mask_cond = 0.0
  training.prob_mask_future = 0.0
  training.prob_mask_sync = False
  return config
