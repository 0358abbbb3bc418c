"""The training system: an end-to-end run, bit-exact resume after SIGKILL, the checkpoint fall-back,
non-finite losses, the sharded step, sample mode from a training checkpoint."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from PIL import Image

from configs import smmnist
from mcvd_jax.core.modes import run_mode
from mcvd_jax.video_diffusion.family import FAMILY as MCVD
from mcvd_jax.core import loop
from mcvd_jax.core.checkpointing import (Checkpointer, NoReadableCheckpointError, abstract_like,
                                    check_same_parameters, load_ema_params)
from mcvd_jax.models import UNetConfig, init_params
from mcvd_jax.diffusion.losses import LossAux
from mcvd_jax.core.optim import make_optimizer
from mcvd_jax.core.train_step import (abstract_train_state, create_train_state,
                                      make_train_step)
from mcvd_jax.video_diffusion import config as mcvd_config, tasks
from mcvd_jax.video_diffusion.tasks import Masking
from mcvd_jax.video_diffusion.training import make_masked_loss

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A small network that still has every kind of layer. Every test that trains uses these values
# (only options that do not change the compiled step vary), so the persistent compilation cache
# set up in conftest.py compiles the train step once for all of them.
TEST_OVERRIDES = {
    "model.image_size": 16, "data.digit_size": 8, "model.ngf": 8, "model.ch_mult": (1, 2),
    "model.num_res_blocks": 1, "model.attn_resolutions": (8,), "model.n_head_channels": 8,
    "model.num_frames": 2, "model.num_frames_cond": 2, "training.batch_size": 8,
    "training.num_steps": 4, "training.checkpoint_every": 2, "training.log_every": 2,
    "training.prob_mask_cond": 0.5,
    "training.sample_every": 0, "training.sample_batch_size": 2, "sampling.subsample": 2,
    "sampling.num_frames": 2, "sampling.batch_size": 2, "sampling.task": "prediction",
}


def make_test_config(**overrides):
  config = smmnist.get_config("tiny")
  for dotted, value in {**TEST_OVERRIDES, **overrides}.items():
    section, name = dotted.split(".")
    config[section][name] = value
  return config


def flag_args(**overrides):
  """The same config as command-line overrides of configs/smmnist.py:tiny."""
  args = []
  for dotted, value in {**TEST_OVERRIDES, **overrides}.items():
    if isinstance(value, tuple):
      value = "(" + ",".join(str(v) for v in value) + ",)"
    args.append(f"--config.{dotted}={value}")
  return args


def restore_final(workdir, config):
  """The newest checkpoint's state in `workdir`, on one device."""
  cfg = mcvd_config.validate_model(config)
  abstract = abstract_train_state(lambda key: init_params(cfg, key),
                                  make_optimizer(config.optim),
                                  jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  checkpointer = Checkpointer(str(workdir))
  try:
    return checkpointer.restore_newest(abstract, move_unreadable=False)[0]
  finally:
    checkpointer.close()


def test_end_to_end_run_writes_checkpoints_samples_and_summaries(tmp_path):
  config = make_test_config(**{"training.sample_every": 4, "training.eval_every": 4,
                                 "training.signal_clips": 4, "diffusion.prediction": "v"})
  state = loop.train_and_evaluate(config, str(tmp_path), MCVD)
  assert int(state.step) == 4
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  # The learning signal and the loss per noise-level bucket reached TensorBoard.
  import tensorflow as tf
  tags = set()
  for path in (tmp_path / "tensorboard").iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags |= {value.tag for value in event.summary.value}
  assert {"eval/x0_mae/copy_last", "eval/x0_mae/blank", "eval/past_gain/ema",
          "eval/past_gain/raw", "loss/labels_000-249", "loss/prediction"} <= tags, sorted(tags)
  assert {f"eval/x0_mae/{w}_{p}_past@{s}" for w in ("ema", "raw") for p in ("true", "shuffled")
          for s in ("0.08", "0.28", "0.63")} <= tags, sorted(tags)
  for task in ("prediction", "generation"):  # past masked half the time: both are learned
    gif = Image.open(tmp_path / "samples" / f"step_00000004_{task}.gif")
    # real clips on top, samples below; prediction shows 2 given + 2 generated frames
    assert gif.n_frames == (4 if task == "prediction" else 2)
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
  assert (tmp_path / "config.json").exists()
  # The EMA moved away from the initial parameters, and differs from the trained parameters.
  init = jax.tree.leaves(restore_final(tmp_path, config).params)
  ema = jax.tree.leaves(state.ema_params)
  assert any(not np.array_equal(a, b) for a, b in zip(init, ema))

  # Sample mode picks up the newest checkpoint of the workdir (EMA weights) and real test clips.
  config.sampling.task = "prediction"
  path = run_mode(MCVD, config, str(tmp_path), "sample")
  meta = (tmp_path / "samples_prediction.json").read_text()
  assert "EMA parameters of step 4" in meta
  assert Image.open(path).n_frames == 2 + 2

  # The exported model directory (EMA weights, the run's diffusion settings) samples the same
  # videos, whatever diffusion settings the sampling config has.
  from mcvd_jax.video_diffusion import export
  from_workdir = np.load(tmp_path / "samples_prediction.npz")["videos"]
  assert export.main([f"--workdir={tmp_path}", f"--out={tmp_path / 'model'}"]) == 0
  config.diffusion.prediction, config.diffusion.schedule = "eps", "cosine"
  run_mode(MCVD, config, str(tmp_path / "elsewhere"), "sample", str(tmp_path / "model"))
  np.testing.assert_array_equal(
      np.load(tmp_path / "elsewhere" / "samples_prediction.npz")["videos"], from_workdir)
  assert "model directory" in (tmp_path / "elsewhere" / "samples_prediction.json").read_text()
  config.diffusion.prediction, config.diffusion.schedule = "v", "linear"
  assert export.main([f"--workdir={tmp_path / 'elsewhere'}", "--out=x"]) == 2  # not a run

  # A second call with the same command has nothing left to do and returns the same state.
  again = loop.train_and_evaluate(config, str(tmp_path), MCVD)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(a, b)


def _main_command(workdir, steps):
  return [sys.executable, "-m", "mcvd_jax.main", "--config=configs/smmnist.py:tiny",
          f"--workdir={workdir}"] + flag_args(**{"training.num_steps": steps,
                                                 "training.checkpoint_every": 1})


def test_resume_after_sigkill_is_bit_exact(tmp_path):
  """A run killed at an arbitrary point and restarted with the same command ends with exactly
  the parameters, EMA and optimizer state of an uninterrupted run (the persistent compilation
  cache of conftest.py spares the subprocesses most of the compiling)."""
  steps = 6
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  loop.train_and_evaluate(make_test_config(**{"training.num_steps": steps,
                                               "training.checkpoint_every": 1}), str(straight), MCVD)
  process = subprocess.Popen(_main_command(killed, steps), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (killed / "checkpoints" / "3").exists() and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)  # somewhere after step 3, mid-step or mid-save
  process.wait()
  saved = sorted(int(s) for s in os.listdir(killed / "checkpoints") if s.isdigit())
  assert saved and saved[-1] < steps, f"the run was not interrupted: {saved}"
  subprocess.run(_main_command(killed, steps), cwd=ROOT, check=True, capture_output=True)
  config = make_test_config()
  a, b = restore_final(straight, config), restore_final(killed, config)
  assert int(a.step) == int(b.step) == steps
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _small_state():
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones((3,))}
  tx = make_optimizer(make_test_config().optim)
  return create_train_state(params, tx), tx


def test_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
  state, _ = _small_state()
  checkpointer = Checkpointer(str(tmp_path))
  for step in (2, 4):
    checkpointer.save(state._replace(step=jnp.asarray(step, jnp.int32),
                                     params=jax.tree.map(lambda x: x + step, state.params)),
                      {"data_seed": 0})
  checkpointer.close()
  for path in (tmp_path / "checkpoints" / "4" / "state").rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")
  checkpointer = Checkpointer(str(tmp_path))
  restored, meta = checkpointer.restore_newest(abstract_like(state))
  assert int(restored.step) == 2 and meta == {"data_seed": 0}
  np.testing.assert_array_equal(restored.params["w"], state.params["w"] + 2)
  assert (tmp_path / "checkpoints_unreadable" / "4").is_dir()  # kept, not deleted
  # Training can save step 4 again.
  checkpointer.save(restored._replace(step=jnp.asarray(4, jnp.int32)), {"data_seed": 0})
  checkpointer.close()


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
  state, _ = _small_state()
  checkpointer = Checkpointer(str(tmp_path))
  checkpointer.save(state, {})
  checkpointer.close()
  for path in (tmp_path / "checkpoints" / "0" / "state").rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")
  abstract = abstract_like(state)
  with pytest.raises(NoReadableCheckpointError, match="Move the directory away"):
    Checkpointer(str(tmp_path)).restore_newest(abstract)
  assert (tmp_path / "checkpoints" / "0").is_dir()  # nothing moved or deleted


# One resolution, no attention: initialises in a moment.
EMA_TEST_MODEL = dict(image_size=8, channels=1, num_frames=1, num_frames_cond=1, ngf=8,
                      ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), n_head_channels=8)


def test_load_ema_params_reads_the_ema_of_any_optimizer_and_falls_back(tmp_path):
  import optax
  cfg = UNetConfig(**EMA_TEST_MODEL)
  params = init_params(cfg, jax.random.key(0))
  init = lambda key: init_params(cfg, key)  # noqa: E731
  tx = optax.sgd(0.1, momentum=0.9)  # not the config's Adam: the optimizer state is not read
  checkpointer = Checkpointer(str(tmp_path))
  for step in (2, 4):
    ema = jax.tree.map(lambda p: p + step, params)
    checkpointer.save(create_train_state(params, tx)._replace(
        step=jnp.asarray(step, jnp.int32), ema_params=ema), {})
  checkpointer.close()

  ema, step = load_ema_params(str(tmp_path), init)
  assert step == 4
  for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b + 4)
  ema, step = load_ema_params(str(tmp_path / "checkpoints" / "2"), init)
  assert step == 2
  np.testing.assert_array_equal(jax.tree.leaves(ema)[0], jax.tree.leaves(params)[0] + 2)

  # Another architecture fails with the differences named, for a given step and for the newest.
  other = UNetConfig(**{**EMA_TEST_MODEL, "ngf": 16})
  init_other = lambda key: init_params(other, key)  # noqa: E731
  with pytest.raises(ValueError, match="do not fit the model config.*saved .* model "):
    load_ema_params(str(tmp_path / "checkpoints" / "4"), init_other)
  with pytest.raises(NoReadableCheckpointError, match="do not fit the model config"):
    load_ema_params(str(tmp_path), init_other)

  # A damaged newest checkpoint: the previous one's EMA, and nothing is moved (read-only use).
  for path in (tmp_path / "checkpoints" / "4" / "state").rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")
  assert load_ema_params(str(tmp_path), init)[1] == 2
  assert (tmp_path / "checkpoints" / "4").is_dir()
  assert load_ema_params(str(tmp_path / "empty"), init) is None


def test_check_same_parameters_names_missing_unexpected_and_reshaped():
  expected = {"a": jnp.zeros((2,)), "b": jnp.zeros((3,)), "c": {"d": jnp.zeros((1, 2))}}
  check_same_parameters(expected, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                               expected))
  saved = {"a": jnp.zeros((2,)), "c": {"d": jnp.zeros((2, 2))}, "e": jnp.zeros(())}
  with pytest.raises(ValueError) as error:
    check_same_parameters(saved, expected)
  message = str(error.value)
  assert "missing (1): ['b']" in message and "unexpected (1): ['e']" in message
  assert "['c']['d']: saved (2, 2), model (1, 2)" in message


def _fake_loss(value_fn):
  def loss_fn(params, x0, cond, key, cond_mask=None):
    loss = value_fn(params)
    per_sample = jnp.full((x0.shape[0],), loss)
    return loss, LossAux(jnp.zeros((x0.shape[0],), jnp.int32), per_sample, x0, x0)
  return loss_fn


def _videos(k=1, b=4):
  return jnp.zeros((k, b, 2, 4, 4, 1), jnp.uint8)


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nonfinite_loss_policies(policy):
  state, tx = _small_state()
  masking = Masking(1, 1, 0)
  loss = _fake_loss(lambda p: jnp.sum(p["w"]) * jnp.nan)
  step = jax.jit(make_train_step(make_masked_loss(loss, masking), tx, ema_rate=0.9,
                                 train_key=jax.random.key(0), nonfinite_loss=policy))
  new, metrics = step(state, _videos(k=2))
  assert int(new.step) == 2 and np.all(np.asarray(metrics["finite"]) == 0.0)
  params_kept = np.array_equal(new.params["w"], state.params["w"])
  assert params_kept == (policy == "skip")  # 'stop' leaves stopping to the loop, before saving


def test_nonfinite_loss_stops_the_loop_without_saving_the_bad_state(tmp_path):
  # A checkpoint at step 2 whose parameters hold a NaN: the next loss is not finite.
  config = make_test_config(**{"training.checkpoint_every": 1})
  trainer = loop.Trainer(config, str(tmp_path), MCVD)
  state = jax.jit(lambda s: s._replace(
      step=jnp.asarray(2, jnp.int32),
      params=jax.tree.map(lambda p: p.at[(0,) * p.ndim].set(jnp.nan), s.params)))(
          trainer.init_state())
  checkpointer = Checkpointer(str(tmp_path))
  checkpointer.save(state, trainer.checkpoint_meta())
  checkpointer.close()
  with pytest.raises(loop.NonFiniteLossError, match="not finite at step 3"):
    loop.train_and_evaluate(config, str(tmp_path), MCVD)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_per_task_losses_and_window_summary():
  state, tx = _small_state()
  masking = Masking(1, 1, 1, prob_mask_cond=0.5, prob_mask_future=0.5)
  loss = _fake_loss(lambda p: jnp.sum(p["w"]))
  step = jax.jit(make_train_step(make_masked_loss(loss, masking), tx, ema_rate=0.9,
                                 train_key=jax.random.key(0)))
  _, metrics = step(state, jnp.zeros((3, 64, 3, 4, 4, 1), jnp.uint8))
  counts = sum(np.asarray(metrics[f"count/{t}"]) for t in
               ("prediction", "generation", "interpolation", "past_reconstruction"))
  np.testing.assert_array_equal(counts, [64, 64, 64])  # every sample teaches exactly one task
  summary = loop.summarize_window([metrics])
  for task in ("prediction", "generation", "interpolation", "past_reconstruction"):
    assert summary[f"loss/{task}"] == pytest.approx(summary["loss"], rel=1e-5)
  assert summary["skipped_updates"] == 0.0


def test_sharded_step_matches_one_device():
  """The same update on an 8-device data mesh and on one device (a one-level network: the
  forward pass of the full one is sharded in test_sharding.py)."""
  config = make_test_config(**{"model.ch_mult": (1,), "model.attn_resolutions": (16,)})
  trainer_cfg = mcvd_config.validate_model(config)
  from mcvd_jax.diffusion.factory import diffusion_from_config
  from mcvd_jax.diffusion.losses import make_loss_fn
  from mcvd_jax.models import make_denoise_fn
  from conftest import cached_init
  diffusion = diffusion_from_config(config.diffusion)
  loss_fn = make_loss_fn(make_denoise_fn(trainer_cfg), schedule=diffusion.schedule)
  tx = make_optimizer(config.optim)
  masking = tasks.masking_from_config(config)
  steps = make_train_step(make_masked_loss(loss_fn, masking), tx, ema_rate=0.999,
                          train_key=jax.random.key(3))
  videos = np.random.default_rng(0).integers(0, 256, (1, 8, 4, 16, 16, 1), dtype=np.uint8)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "data"))
    state = jax.device_put(create_train_state(cached_init(trainer_cfg), tx), replicated)
    fn = jax.jit(steps, in_shardings=(replicated, batch), out_shardings=(replicated, replicated))
    results.append(fn(state, jax.device_put(videos, batch)))
  (one, m1), (eight, m8) = results
  assert len(jax.devices()) == 8
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_workdir_that_cannot_be_written_fails_before_training(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(loop.WorkdirError, match="not writable"):
    loop.train_and_evaluate(make_test_config(), str(blocker / "run"), MCVD)


def test_gff_video_model_trains_and_samples_every_task(tmp_path):
  # Non-isotropic video diffusion (no public code has it): GFF noise on every frame, the paper's
  # white-noise target, past and future both masked at random, so all four tasks are learned.
  config = make_test_config(**{
      "diffusion.noise": "gff", "diffusion.target": "white", "model.num_frames_future": 1,
      "training.prob_mask_future": 0.5, "training.num_steps": 2, "training.sample_every": 2})
  state = loop.train_and_evaluate(config, str(tmp_path), MCVD)
  assert int(state.step) == 2
  for task, frames in (("prediction", 4), ("generation", 2), ("interpolation", 5),
                       ("past_reconstruction", 3)):
    gif = Image.open(tmp_path / "samples" / f"step_00000002_{task}.gif")
    assert gif.n_frames == frames, task
    pixels = np.asarray(gif.convert("L"))
    assert pixels.std() > 0, task  # an image, not a constant canvas
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.ema_params))


def test_the_mcvd_train_step_computes_what_it_did_before_the_core_change(tmp_path):
  """Three updates of the test config from init give bit for bit the losses and last gradient norm
  that the code before the core change (model state, config optimizer, checked configs) gave, and
  its EMA sum to 1e-12: tests/fixtures/mcvd_train_losses.json. (The EMA sum's last bits depend on
  XLA's CPU thread count: on one core, `taskset -c 0`, a float32 parameter or two round the other
  way; a changed update moves it by orders of magnitude more.)"""
  import json
  expected = json.loads((ROOT / "tests" / "fixtures" / "mcvd_train_losses.json").read_text())
  expected = expected["by_device_count"][str(jax.device_count())]
  trainer = loop.Trainer(make_test_config(), str(tmp_path), MCVD)
  state = trainer.init_state()
  losses = []
  for step in range(3):
    state, metrics = trainer.train_steps(state, trainer.global_batches(step, 1))
    losses.append(float(np.asarray(metrics["loss"])[0]))
  assert [float.hex(x) for x in losses] == expected["losses_hex"]
  assert float.hex(float(np.asarray(metrics["grad_norm"])[0])) == expected["last_grad_norm_hex"]
  ema_sum = float(sum(np.asarray(leaf, np.float64).sum()
                      for leaf in jax.tree.leaves(state.ema_params)))
  assert ema_sum == pytest.approx(float.fromhex(expected["ema_sum_hex"]), rel=1e-12, abs=0)
