"""MCVD, the masked conditional video diffusion family: its config checks (`config`), training
loss and media (`training`), sample mode (`sampling`), evaluation protocols (`evaluation`,
`eval_sampling`) and benchmarks (`bench`); `family.FAMILY` plugs them into the core."""
