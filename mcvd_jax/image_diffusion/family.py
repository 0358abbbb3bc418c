"""Image diffusion (thesis ch. 6: isotropic and Gaussian-free-field DDPM / DDIM / SMLD) as a
family of the shared core."""

from mcvd_jax.core.family import Family
from mcvd_jax.image_diffusion import config, evaluation, sampling, training

FAMILY = Family(
    name="image_diffusion",
    description="image diffusion: DDPM / DDIM / SMLD, isotropic or Gaussian-free-field noise",
    validate=config.validate_family,
    build=training.build,
    sample=sampling.sample_and_save,
    evaluation=evaluation.make_evaluation,
    bench_module="mcvd_jax.image_diffusion.bench",
)
