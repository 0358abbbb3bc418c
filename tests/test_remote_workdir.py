"""Workdirs on a filesystem that is not the local disk, through core.paths (etils.epath): training,
its SIGTERM stop and resume, sample and eval modes of the toy family against TensorFlow's
in-memory `ram://` filesystem, which epath and TensorBoard's writer reach through tf.io.gfile as
they reach gs://. Orbax does not write ram://, so the checkpoints go through the local mirror
(core.checkpointing); gs:// and s3:// it writes itself."""

import os
import uuid

import jax
import numpy as np
import pytest
from etils.epath import gpath, register

import toy_family
from mcvd_jax.core import loop, media, paths
from mcvd_jax.core.checkpointing import Checkpointer, step_names
from mcvd_jax.core.modes import run_mode
from mcvd_jax.core.preemption import TrainingPreempted


@pytest.fixture
def ram(monkeypatch):
  """A fresh ram:// directory, epath taught the scheme (it knows gs://, s3://, az://, hf://)."""
  monkeypatch.setattr(gpath, "_URI_PREFIXES", gpath._URI_PREFIXES + ("ram://",))
  monkeypatch.setattr(gpath, "_URI_SCHEMES", gpath._URI_SCHEMES | {"ram"})
  monkeypatch.setitem(gpath._URI_MAP_ROOT, "ram://", "/ram/")
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "ram", gpath._PREFIX_TO_BACKEND["gs"])
  monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, "ram://", gpath.PosixGPath)
  return f"ram://bucket/run_{uuid.uuid4().hex[:8]}"


def test_toy_trains_stops_resumes_samples_and_evaluates_on_ram(ram, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # anything written locally by mistake would land here
  config = toy_family.toy_config()
  # SIGTERM as the batch of step 4 is made: a checkpoint of step 4 on ram://, then a stop.
  monkeypatch.setenv("TOY_SIGNAL_AT", "SIGTERM:0:train:4")
  with pytest.raises(TrainingPreempted, match=f"step 4 in {ram}"):
    loop.train_and_evaluate(config, ram, toy_family.FAMILY)
  monkeypatch.delenv("TOY_SIGNAL_AT")
  assert paths.listdir(os.path.join(ram, "checkpoints")) == ["2", "4"]
  resumed = loop.train_and_evaluate(config, ram, toy_family.FAMILY)  # from ram://.../4
  straight = loop.train_and_evaluate(config, str(tmp_path / "local"), toy_family.FAMILY)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert paths.listdir(os.path.join(ram, "checkpoints")) == ["2", "4", "6"]
  assert paths.listdir(os.path.join(ram, "media")) == ["fit_3.npy", "fit_6.npy"]
  assert any(name.startswith("events.out.tfevents")
             for name in paths.listdir(os.path.join(ram, "tensorboard")))
  assert paths.read_json(os.path.join(ram, "config.json"))["family"] == "toy"

  # Sample and eval modes read the checkpoint from ram:// and write there.
  predictions = paths.load_npy(run_mode(toy_family.FAMILY, config, ram, "sample"))
  np.testing.assert_allclose(predictions, toy_family.predict(
      resumed.ema_params, toy_family.test_points(), resumed.model_state["x_mean"]), rtol=1e-6)
  report = paths.read_json(run_mode(toy_family.FAMILY, config, ram, "eval"))
  assert report["protocols"]["toy_mse"]["results"]["mse"] == pytest.approx(
      toy_family.test_mse(resumed.ema_params, resumed.model_state), rel=1e-5)
  assert paths.listdir(os.path.join(ram, "eval", "toy_mse")) == [
      "batch_00000.npz", "batch_00001.npz", "batch_00002.npz", "meta.json"]
  again = paths.read_json(run_mode(toy_family.FAMILY, config, ram, "eval"))
  assert again["protocols"]["toy_mse"]["batches"]["computed_now"] == 0
  assert sorted(os.listdir(tmp_path)) == ["local"]


def test_unreadable_checkpoint_on_ram_is_moved_aside_there(ram):
  config = toy_family.toy_config(sample_every=0, eval_every=0)
  loop.train_and_evaluate(config, ram, toy_family.FAMILY)
  newest = os.path.join(ram, "checkpoints", "6")
  paths.rmtree(os.path.join(newest, "state"))  # the damage: step 6's arrays are gone
  trainer = loop.Trainer(config, ram, toy_family.FAMILY)
  checkpointer = Checkpointer(ram)
  try:
    state, _ = checkpointer.restore_newest(trainer.abstract_state())
  finally:
    checkpointer.close()
  assert int(state.step) == 4
  # (TensorFlow's ram:// lists by bare prefix: checkpoints/ also shows "_unreadable")
  assert step_names(os.path.join(ram, "checkpoints")) == ["2", "4"]
  assert paths.listdir(os.path.join(ram, "checkpoints_unreadable")) == ["6"]


def test_sample_files_and_reports_are_written_whole_on_ram(ram):
  video = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), np.uint8)
  path = media.write_sample_files(os.path.join(ram, "samples", "clip"), video,
                                  {"videos": video[None]}, {"what": "test"})
  assert path == os.path.join(ram, "samples", "clip.gif")
  assert paths.listdir(os.path.join(ram, "samples")) == ["clip.gif", "clip.json", "clip.npz"]
  np.testing.assert_array_equal(paths.load_npz(os.path.join(ram, "samples", "clip.npz"))["videos"],
                                video[None])
  with paths.open_file(path, "rb") as f:
    assert f.read(6) == b"GIF89a"
  assert paths.read_json(os.path.join(ram, "samples", "clip.json")) == {"what": "test"}
