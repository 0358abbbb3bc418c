"""Image diffusion (thesis ch. 6): DDPM / DDIM / SMLD on images, isotropic or with Gaussian-free-field
noise (arXiv 2210.12254), as a family of the shared core."""
