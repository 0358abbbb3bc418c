"""Neural-ODE video (thesis ch. 3; Kanaa, Voleti et al. 2019): encoder -> latent ODE -> decoder,
trained to reconstruct the first frames and integrated on to extrapolate. Pure JAX/Flax/Diffrax.

    cfg = OdeVideoConfig.variant_b(image_size=64)
    params = init_params(cfg, key)
    times = time_grid(20)                                   # t_k = k / 19
    loss_fn = make_loss_fn(cfg, times[:10], default_ode_settings())
    frames = predict(cfg, params, video[:, :10], times, default_ode_settings())
"""

from mcvd_jax.ode_video.losses import gaussian_nll, kl_standard_normal, make_loss_fn
from mcvd_jax.ode_video.model import (VARIANT_DEFAULTS, VARIANTS, Encoding, OdeVideoConfig,
                                      OdeVideoConfigError, decode, default_ode_settings, encode,
                                      encode_frames, init_params, integrate_latent, latent_field,
                                      latent_trajectory, predict, time_grid)

__all__ = [
    "VARIANTS", "VARIANT_DEFAULTS", "Encoding", "OdeVideoConfig", "OdeVideoConfigError",
    "decode", "default_ode_settings", "encode", "encode_frames", "gaussian_nll", "init_params",
    "integrate_latent", "kl_standard_normal", "latent_field", "latent_trajectory",
    "make_loss_fn", "predict", "time_grid",
]
