"""Video tasks: frame layout, masking of past/future blocks, block-autoregressive rollouts."""
