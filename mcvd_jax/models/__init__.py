"""flax.linen networks: the MCVD denoiser (concat and SPATIN conditioning)."""

from mcvd_jax.models.config import UNetConfig, reference_model_config
from mcvd_jax.models.unet import UNet, init_params, make_denoise_fn, module_list

__all__ = ["UNet", "UNetConfig", "init_params", "make_denoise_fn", "module_list",
           "reference_model_config"]
