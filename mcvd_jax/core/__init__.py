"""The shared core every family plugs into: the training loop (`loop`), the update (`train_step`),
checkpoints, config checks of the shared sections, the evaluation runner, the bench harness,
compiler options and host-memory tuning. See `family` for what a family provides."""
