"""The shared core every family plugs into: main's modes and the one config check every mode makes
(`modes`), the training loop (`loop`), the update (`train_step`), the optimizer and its schedule
(`optim`), the shared config sections (`config_base`, `config_checks`), checkpoints and the weights
sample/eval use (`checkpointing`, `weights`), the mesh (`sharding`), batch-independent keys
(`keys`), sample files (`media`), the evaluation runner, the bench harness, compiler options and
host-memory tuning. See `family` for what a family provides."""
