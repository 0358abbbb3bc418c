"""Pure diffusion maths: schedules, noise models, losses and samplers."""
