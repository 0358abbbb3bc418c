"""MCVD (masked conditional video diffusion, thesis ch. 7) as a family of the shared core."""

from mcvd_jax.core.family import Family
from mcvd_jax.video_diffusion import config, evaluation, sampling, training

FAMILY = Family(
    name="mcvd",
    description="masked conditional video diffusion: prediction, generation, interpolation",
    validate=config.validate_family,
    build=training.build,
    sample=sampling.sample_and_save,
    evaluation=evaluation.make_evaluation,
    bench_module="mcvd_jax.video_diffusion.bench",
)
