"""Neural-ODE video prediction (thesis ch. 3: encoder -> latent ODE -> decoder, variants A and B)
as a family of the shared core."""

from mcvd_jax.core.family import Family
from mcvd_jax.ode_video import config, evaluation, sampling, training

FAMILY = Family(
    name="ode_video",
    description="neural-ODE video prediction: reconstruct the given frames, extrapolate on",
    validate=config.validate_family,
    build=training.build,
    sample=sampling.sample_and_save,
    evaluation=evaluation.make_evaluation,
)
