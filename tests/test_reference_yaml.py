"""Reading the reference's config.yml (mcvd_jax.convert.export.read_reference_yaml).

fixtures/reference_config.yml is, byte for byte, what PyYAML's yaml.dump(config,
default_flow_style=False) writes for the reference's config Namespace (configs/smmnist_DDPM_big5.yml
through main.py's dict2namespace, its sampling/fast_fid overrides at their default arguments and
`--config_mod model.ch_mult=(1,2,2,2)`, which main.py evals into a tuple) once
`config.device = torch.device('cpu')` is set: every section a `!!python/object:argparse.Namespace`,
`device` a `!!python/object/apply:torch.device` sequence, ch_mult a `!!python/tuple`.
test_fixture_is_what_pyyaml_writes re-dumps it to keep it so.

Python tags read as plain data and are never executed (the loader is a SafeLoader): Namespaces ->
dicts, tuples -> lists, object/apply and object/new -> the list of arguments (device -> ['cpu']) or,
in their mapping form, the mapping; python/name and python/module -> the dotted name.
"""

import argparse
import collections
import datetime
import json
import os
import pathlib
import shutil

import pytest

yaml = pytest.importorskip("yaml")

from mcvd_jax.convert import export  # noqa: E402
from mcvd_jax.convert.export import (diffusion_overrides, load_reference,  # noqa: E402
                                     read_reference_yaml, schedule_fields_of)
from mcvd_jax.convert.reference import ConversionError  # noqa: E402
from mcvd_jax.models.config import reference_model_config  # noqa: E402

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "reference_config.yml"
SECTIONS = {"data", "device", "fast_fid", "model", "optim", "sampling", "test", "training"}


def _assert_plain(value, where="config"):
  """Only what JSON can hold: no Namespace, tuple, or other constructed object."""
  if isinstance(value, dict):
    for k, v in value.items():
      assert isinstance(k, str), f"{where}: key {k!r}"
      _assert_plain(v, f"{where}.{k}")
  elif isinstance(value, list):
    for i, v in enumerate(value):
      _assert_plain(v, f"{where}[{i}]")
  else:
    assert value is None or type(value) in (str, int, float, bool), f"{where}: {value!r}"


def _write_config(tmp_path, body: str) -> str:
  path = tmp_path / "config.yml"
  path.write_text("data: {}\nmodel: {}\n" + body)
  return str(path)


def test_fixture_is_the_namespace_form():
  text = FIXTURE.read_text()
  assert text.startswith("!!python/object:argparse.Namespace\n"
                         "data: !!python/object:argparse.Namespace\n")
  assert "\ndevice: !!python/object/apply:torch.device\n- cpu\n" in text
  assert "\n  ch_mult: !!python/tuple\n  - 1\n" in text
  with pytest.raises(yaml.constructor.ConstructorError):  # what plain safe loading cannot read
    yaml.safe_load(text)


def test_fixture_reads_as_plain_data():
  config = read_reference_yaml(str(FIXTURE))
  assert set(config) == SECTIONS
  _assert_plain(config)
  json.dumps(config)
  assert config["device"] == ["cpu"]
  data, model = config["data"], config["model"]
  assert data["dataset"] == "StochasticMovingMNIST"
  assert (data["channels"], data["image_size"], data["num_frames"], data["num_frames_cond"],
          data["num_frames_future"]) == (1, 64, 5, 5, 0)
  assert data["step_length"] == 0.1 and data["prob_mask_cond"] == 0.0
  assert model["ch_mult"] == [1, 2, 2, 2]  # the !!python/tuple
  assert model["attn_resolutions"] == [8, 16, 32]
  assert (model["arch"], model["version"], model["sigma_dist"]) == ("unetmore", "DDPM", "linear")
  assert model["sigma_begin"] == 0.02 and model["sigma_end"] == 0.0001
  assert model["num_classes"] == 1000 and model["n_head_channels"] == 64
  assert model["dropout"] == 0.1 and model["spade"] is False and model["ema_rate"] == 0.999
  assert config["optim"]["eps"] == 1e-8 and isinstance(config["optim"]["eps"], float)
  assert config["optim"]["weight_decay"] == 0.0 and config["optim"]["lr"] == 0.0002
  assert config["sampling"]["init_prev_t"] == -1.0 and config["sampling"]["subsample"] == 1000
  assert config["fast_fid"]["pr_nn_k"] == 3 and config["training"]["L1"] is False
  assert config["test"] == {"batch_size": 100, "begin_ckpt": 5000, "end_ckpt": 300000}


def _torch_device(*args):  # stands in for the torch.device type in a dump: same module and name
  raise AssertionError("never called")


_torch_device.__module__, _torch_device.__name__ = "torch", "device"


class _Device:
  def __init__(self, *args):
    self.args = args

  def __reduce__(self):  # what torch.device.__reduce__ returns
    return (_torch_device, self.args)


def _dict2namespace(config):  # the reference's main.dict2namespace
  namespace = argparse.Namespace()
  for key, value in config.items():
    setattr(namespace, key, _dict2namespace(value) if isinstance(value, dict) else value)
  return namespace


def test_fixture_is_what_pyyaml_writes():
  """Rebuilding the reference's Namespace from what we read and dumping it as its main.py does
  gives the fixture back exactly (so the fixture is PyYAML's form, and nothing was lost)."""
  config = read_reference_yaml(str(FIXTURE))
  device = config.pop("device")
  config["model"]["ch_mult"] = tuple(config["model"]["ch_mult"])
  namespace = _dict2namespace(config)
  namespace.device = _Device(*device)
  assert yaml.dump(namespace, default_flow_style=False) == FIXTURE.read_text()


def test_plain_config_still_reads(tmp_path):
  """The plain form (the reference's main.py dumping its config dict) reads as before."""
  config = read_reference_yaml(str(FIXTURE))
  path = tmp_path / "plain.yml"
  path.write_text(yaml.dump(config, default_flow_style=False))
  assert "!!" not in path.read_text()
  assert read_reference_yaml(str(path)) == config


Point = collections.namedtuple("Point", "x y")


class _DeviceWithState(_Device):
  def __reduce__(self):  # (callable, args, state): object/apply in its mapping form
    return (_torch_device, self.args, {"index": 0})


class _Dict(dict):  # a dict subclass with attributes: object/new with state and dictitems
  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.note = "n"


class _Stateful:  # __reduce_ex__ gives object/new with a non-dict state: the mapping form
  def __init__(self, value):
    self.value = value

  def __getstate__(self):
    return [self.value]


@pytest.mark.parametrize("obj, expected", [
    (argparse.Namespace(a=1, b=argparse.Namespace(c="x")), {"a": 1, "b": {"c": "x"}}),
    ((1, 2.5, "three"), [1, 2.5, "three"]),
    (_Device("cuda", 0), ["cuda", 0]),  # object/apply, sequence form
    (_DeviceWithState("cuda"), {"args": ["cuda"], "state": {"index": 0}}),  # apply, mapping form
    (collections.OrderedDict([("a", 1), ("b", 2)]), [[["a", 1], ["b", 2]]]),  # apply, pairs
    (_Dict(a=1), {"dictitems": {"a": 1}, "state": {"note": "n"}}),  # object/new, mapping form
    (frozenset([3]), [[3]]),  # object/apply:builtins.frozenset [[3]]
    (datetime.timedelta(days=1, seconds=2), [1, 2, 0]),  # object/apply:datetime.timedelta
    (Point(1, 2), [1, 2]),  # object/new, sequence form
    (_Stateful(7), {"state": [7]}),  # object/new, mapping form
    (os.path.join, os.path.join.__module__ + ".join"),  # python/name
    (json, "json"),  # python/module
    (1 + 2j, 1 + 2j),  # python/complex
    ({"x": {1, 2}}, {"x": {1, 2}}),  # !!set (safe)
])
def test_python_tags_read_as_data(tmp_path, obj, expected):
  """Each python/ tag PyYAML's default Dumper writes, as it writes it, reads as plain data."""
  text = yaml.dump({"data": {}, "model": {}, "value": obj}, default_flow_style=False)
  assert "!!python/" in text or "!!set" in text
  path = tmp_path / "config.yml"
  path.write_text(text)
  assert read_reference_yaml(str(path))["value"] == expected


def test_shared_objects_read_through_aliases(tmp_path):
  shared = (8, 16)
  section = argparse.Namespace(x=shared, y=shared)
  text = yaml.dump({"data": section, "model": section}, default_flow_style=False)
  assert "&id001" in text and "*id001" in text
  path = tmp_path / "config.yml"
  path.write_text(text)
  config = read_reference_yaml(str(path))
  assert config["data"] == config["model"] == {"x": [8, 16], "y": [8, 16]}


def test_tags_that_would_run_code_are_read_as_data(tmp_path):
  """Python tags are never executed: no command, call, object or import; they come back as their
  arguments (the sequence form), their mapping, or their dotted name."""
  files = [tmp_path / name for name in ("hacked_system", "hacked_open", "hacked_popen")]
  path = _write_config(tmp_path, (
      f'device: !!python/object/apply:os.system ["echo hacked > {files[0]}"]\n'
      f'opened: !!python/object/apply:builtins.open ["{files[1]}", "w"]\n'
      f'popen: !!python/object/new:subprocess.Popen {{args: [[touch, "{files[2]}"]]}}\n'
      f'nomodule: !!python/object/apply:not_a_module_xyz.boom [1]\n'
      f'fn: !!python/name:os.system ""\n'
      f'kw: !!python/object/apply:os.makedirs {{args: ["{files[0]}"], kwds: {{exist_ok: true}}}}\n'
      f'obj: !!python/object:not_a_module_xyz.Thing {{a: 1}}\n'))
  config = read_reference_yaml(path)
  assert not any(f.exists() for f in files)
  assert config["device"] == [f"echo hacked > {files[0]}"]
  assert config["opened"] == [str(files[1]), "w"]
  assert config["popen"] == {"args": [["touch", str(files[2])]]}
  assert config["nomodule"] == [1]
  assert config["fn"] == "os.system"
  assert config["kw"] == {"args": [str(files[0])], "kwds": {"exist_ok": True}}
  assert config["obj"] == {"a": 1}
  _assert_plain(config)
  # Control: the same `open` line does create its file under an unsafe loader, so the check above
  # would notice a loader that executes tags.
  control = tmp_path / "control"
  opened = yaml.unsafe_load(f'!!python/object/apply:builtins.open ["{control}", "w"]')
  opened.close()
  assert control.exists()


def test_unreadable_config_is_a_clear_error(tmp_path):
  with pytest.raises(ConversionError, match="config.yml is not readable.*!foo"):
    read_reference_yaml(_write_config(tmp_path, "x: !foo 1\n"))
  with pytest.raises(ConversionError, match="config.yml is not readable"):
    read_reference_yaml(_write_config(tmp_path, "x: [1\n"))
  (tmp_path / "config.yml").write_text("!!python/object:argparse.Namespace\ntraining: {}\n")
  with pytest.raises(ConversionError, match="needs data and model"):
    read_reference_yaml(str(tmp_path / "config.yml"))


EXPECTED_SCHEDULE = {"sigma_dist": "linear", "sigma_begin": 0.02, "sigma_end": 0.0001,
                     "num_classes": 1000, "version": "DDPM"}


def test_fixture_gives_our_model_config_and_schedule():
  fields = read_reference_yaml(str(FIXTURE))
  cfg = reference_model_config(fields)
  assert (cfg.image_size, cfg.channels, cfg.num_frames, cfg.num_frames_cond,
          cfg.num_frames_future) == (64, 1, 5, 5, 0)
  assert (cfg.ngf, cfg.ch_mult, cfg.num_res_blocks, cfg.attn_resolutions) == (64, (1, 2, 2, 2), 2,
                                                                             (8, 16, 32))
  assert (cfg.n_head_channels, cfg.dropout, cfg.spatin, cfg.cond_emb) == (64, 0.1, False, False)
  assert schedule_fields_of(fields) == EXPECTED_SCHEDULE
  assert diffusion_overrides(schedule_fields_of(fields)) == {
      "schedule": "linear", "beta_start": 0.02, "beta_end": 0.0001, "num_steps": 1000}


@pytest.mark.parametrize("explicit_config", [False, True])
def test_load_reference_reads_the_config_beside_a_checkpoint(tmp_path, monkeypatch,
                                                              explicit_config):
  """load_reference's .pt path (as `python -m mcvd_jax.convert --reference=checkpoint_N.pt` runs
  it) with the official config.yml, the torch-only weight reading stubbed out."""
  run = tmp_path / "logs"
  run.mkdir()
  checkpoint = run / "checkpoint_5000.pt"
  checkpoint.write_bytes(b"")
  if explicit_config:
    config_path = str(tmp_path / "elsewhere.yml")
    shutil.copy(FIXTURE, config_path)
  else:
    config_path = None
    shutil.copy(FIXTURE, run / "config.yml")
  calls = []
  monkeypatch.setattr(export, "load_torch_checkpoint",
                      lambda path, use_ema=True: calls.append((path, use_ema)) or {"w": 1})
  monkeypatch.setattr(export, "convert_state_dict", lambda state, cfg: {"converted": (state, cfg)})
  cfg, params, schedule = load_reference(str(checkpoint), config_path, use_ema=False)
  assert calls == [(str(checkpoint), False)]
  assert params["converted"] == ({"w": 1}, cfg)
  assert cfg == reference_model_config(read_reference_yaml(str(FIXTURE)))
  assert cfg.ch_mult == (1, 2, 2, 2) and cfg.image_size == 64
  assert schedule == EXPECTED_SCHEDULE
  json.dumps({"diffusion": schedule})  # save_converted writes it into model_config.json
