"""The per-dataset configs reproduce the paper's runs (reference YAML + training_scripts.sh).

Fast: builds ConfigDicts and UNetConfigs only; nothing is compiled.
"""

import importlib

import pytest

from mcvd_jax.models import UNetConfig

DATASETS = ("bair", "kth", "cityscapes", "ucf101")


def load(name):
  return importlib.import_module(f"configs.{name}")


def all_variants():
  return [(name, v) for name in DATASETS for v in load(name).VARIANTS]


# Values shared by every run of a dataset: the YAML plus the script lines of its block.
COMMON = {
    "bair": dict(image_size=64, channels=3, num_frames=5, ngf=192, ch_mult=(1, 2, 3, 4),
                 n_head_channels=192, dropout=0.1, batch=64, lr=1e-4, sample_frames=28),
    "kth": dict(image_size=64, channels=1, num_frames=5, ngf=96, ch_mult=(1, 2, 3, 4),
                n_head_channels=96, dropout=0.1, batch=64, lr=2e-4, sample_frames=20),
    "cityscapes": dict(image_size=128, channels=3, num_frames=5, ngf=192, ch_mult=(1, 1, 2, 3, 4),
                       n_head_channels=192, dropout=0.0, batch=32, lr=1e-4, sample_frames=28),
    "ucf101": dict(image_size=64, channels=3, num_frames=4, ngf=288, ch_mult=(1, 2, 3, 4),
                   n_head_channels=288, dropout=0.1, batch=32, lr=1e-4, sample_frames=16),
}

# Per run: the fields that differ from COMMON, plus frames, masks and conditioning
# (cond, future, p_cond, p_future, spatin, spade_dim).
RUNS = {
    ("bair", ""): dict(cond=1, future=0, p_cond=0.0, p_future=0.0, spatin=False),
    ("bair", "c2"): dict(cond=2, future=0, p_cond=0.0, p_future=0.0, spatin=False),
    ("bair", "spatin"): dict(cond=1, future=0, p_cond=0.0, p_future=0.0, spatin=True,
                             spade_dim=128),
    ("bair", "past_mask"): dict(cond=1, future=0, p_cond=0.5, p_future=0.0, spatin=False),
    ("bair", "spatin+past_mask"): dict(cond=1, future=0, p_cond=0.5, p_future=0.0, spatin=True,
                                       spade_dim=128),
    ("bair", "c2+spatin"): dict(cond=2, future=0, p_cond=0.0, p_future=0.0, spatin=True,
                                spade_dim=128),
    ("bair", "c2+past_mask"): dict(cond=2, future=0, p_cond=0.5, p_future=0.0, spatin=False),
    ("bair", "c2+spatin+past_mask"): dict(cond=2, future=0, p_cond=0.5, p_future=0.0,
                                          spatin=True, spade_dim=128),
    ("bair", "general"): dict(cond=1, future=1, p_cond=0.5, p_future=0.5, spatin=False),
    ("bair", "c2+general"): dict(cond=2, future=2, p_cond=0.5, p_future=0.5, spatin=False),
    ("kth", ""): dict(cond=10, future=0, p_cond=0.0, p_future=0.0, spatin=False),
    ("kth", "spatin"): dict(cond=10, future=0, p_cond=0.0, p_future=0.0, spatin=True,
                            spade_dim=192, ngf=192),
    ("kth", "past_mask"): dict(cond=10, future=0, p_cond=0.5, p_future=0.0, spatin=False),
    ("kth", "general"): dict(cond=5, future=5, p_cond=0.5, p_future=0.5, spatin=False),
    ("kth", "interp"): dict(cond=10, num_frames=10, future=5, p_cond=0.0, p_future=0.5,
                            spatin=True, spade_dim=128),
    ("kth", "interp_c5"): dict(cond=5, future=5, p_cond=0.0, p_future=0.5, spatin=True,
                               spade_dim=128),
    ("cityscapes", ""): dict(cond=2, future=0, p_cond=0.0, p_future=0.0, spatin=False),
    ("cityscapes", "spatin"): dict(cond=2, future=0, p_cond=0.0, p_future=0.0, spatin=True,
                                   spade_dim=128, ngf=256, n_head_channels=256, batch=16),
    ("cityscapes", "past_mask"): dict(cond=2, future=0, p_cond=0.5, p_future=0.0, spatin=False),
    ("cityscapes", "general"): dict(cond=2, future=2, p_cond=0.5, p_future=0.5, spatin=True,
                                    spade_dim=128, ngf=256, n_head_channels=256, batch=16),
    ("cityscapes", "interp_maskcond"): dict(cond=2, future=2, p_cond=0.5, p_future=0.0,
                                            spatin=True, spade_dim=128, ngf=256,
                                            n_head_channels=256, batch=16),
    ("ucf101", ""): dict(cond=4, future=0, p_cond=0.0, p_future=0.0, spatin=False),
    ("ucf101", "spatin"): dict(cond=4, future=0, p_cond=0.0, p_future=0.0, spatin=True,
                               spade_dim=192),
    ("ucf101", "past_mask"): dict(cond=4, future=0, p_cond=0.5, p_future=0.0, spatin=False),
    ("ucf101", "spatin+past_mask"): dict(cond=4, future=0, p_cond=0.5, p_future=0.0, spatin=True,
                                         spade_dim=192),
    ("ucf101", "general"): dict(cond=4, future=4, p_cond=0.5, p_future=0.5, spatin=True,
                                spade_dim=192),
    ("ucf101", "interp"): dict(cond=4, future=4, p_cond=0.0, p_future=0.5, spatin=True,
                               spade_dim=192),
}


def test_every_variant_has_expectations():
  assert sorted(RUNS) == sorted(all_variants())


@pytest.mark.parametrize("name,variant", all_variants())
def test_variant_builds_and_validates(name, variant):
  config = load(name).get_config(variant)
  cfg = UNetConfig.from_mapping(config.model)  # raises ValueError naming a bad field
  assert config.data.dataset == name
  assert cfg.cond_frames > 0


@pytest.mark.parametrize("name,variant", all_variants())
def test_variant_matches_the_paper(name, variant):
  config = load(name).get_config(variant)
  want = {**COMMON[name], **RUNS[(name, variant)]}
  model = config.model
  assert model.image_size == want["image_size"]
  assert model.channels == want["channels"]
  assert model.num_frames == want["num_frames"]
  assert model.num_frames_cond == want["cond"]
  assert model.num_frames_future == want["future"]
  assert model.ngf == want["ngf"]
  assert tuple(model.ch_mult) == want["ch_mult"]
  assert model.num_res_blocks == 2
  assert tuple(model.attn_resolutions) == (8, 16, 32)
  assert model.n_head_channels == want["n_head_channels"]
  assert model.dropout == want["dropout"]
  assert model.spatin is want["spatin"]
  if want["spatin"]:
    assert model.spade_dim == want["spade_dim"]
  assert model.cond_emb is False
  assert config.training.batch_size == want["batch"]
  assert config.training.prob_mask_cond == want["p_cond"]
  assert config.training.prob_mask_future == want["p_future"]
  assert config.training.prob_mask_sync is False
  assert config.training.ema_rate == 0.999
  assert config.optim.optimizer == "adam"
  assert config.optim.lr == want["lr"]
  assert config.optim.warmup == 5000
  assert config.optim.beta1 == 0.9
  assert config.optim.eps == 1e-8
  assert config.optim.weight_decay == 0.0
  assert config.optim.grad_clip == 1.0
  assert config.diffusion.kind == "ddpm"
  assert config.diffusion.schedule == "linear"
  assert config.diffusion.num_steps == 1000
  assert config.diffusion.beta_start == 0.02
  assert config.diffusion.beta_end == 1e-4
  assert config.sampling.num_frames == want["sample_frames"]
  assert config.sampling.subsample == 100
  assert config.sampling.clip_before is True
  assert config.training.log_every == 100
  assert config.training.sample_every == 50_000


def test_main_variants_pin_the_papers_numbers():
  """The headline runs, spelled out (the issue's BAIR numbers and the scripts' lines)."""
  bair = load("bair").get_config()
  assert (bair.model.ngf, bair.model.n_head_channels) == (192, 192)
  assert (bair.model.num_frames, bair.model.num_frames_cond) == (5, 1)
  assert (bair.training.batch_size, bair.optim.lr, bair.optim.warmup) == (64, 1e-4, 5000)
  assert (bair.training.ema_rate, bair.optim.grad_clip, bair.optim.optimizer) == (0.999, 1.0, "adam")
  kth = load("kth").get_config("")
  assert (kth.model.ngf, kth.model.num_frames, kth.model.num_frames_cond) == (96, 5, 10)
  assert (kth.optim.lr, kth.sampling.num_frames) == (2e-4, 20)
  city = load("cityscapes").get_config(None)
  assert (city.model.image_size, city.model.ch_mult, city.model.ngf) == (128, (1, 1, 2, 3, 4), 192)
  assert (city.model.dropout, city.training.batch_size) == (0.0, 32)
  ucf = load("ucf101").get_config()
  assert (ucf.model.ngf, ucf.model.n_head_channels, ucf.model.num_frames) == (288, 288, 4)
  assert (ucf.model.num_frames_cond, ucf.training.batch_size, ucf.sampling.num_frames) == (4, 32, 16)


@pytest.mark.parametrize("name,variant", [("bair", "past_mask+spatin"), ("bair", "general+c2"),
                                          ("ucf101", "past_mask+spatin")])
def test_combinations_in_any_order(name, variant):
  canonical = "+".join(sorted(variant.split("+"), key=load(name)._PARTS.index))
  assert load(name).get_config(variant).to_dict() == load(name).get_config(canonical).to_dict()


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("variant", ["nope", "spatin+spatin", "tiny", "spatin+general+past_mask"])
def test_unknown_variant_raises(name, variant):
  with pytest.raises(ValueError, match="unknown variant") as err:
    load(name).get_config(variant)
  assert "past_mask" in str(err.value)  # the message lists the valid variants


def test_config_sections_unchanged():
  """Dataset files only edit fields of the base config; they never add new ones."""
  from configs import default
  base = default.get_config()
  for name, variant in all_variants():
    config = load(name).get_config(variant)
    for section in ("data", "model", "diffusion", "sampling", "optim", "training"):
      assert set(config[section].keys()) == set(base[section].keys()), (name, variant, section)


def test_no_field_shadows_a_configdict_method():
  """A field named like a ConfigDict method (update, get, lock, ...) cannot be set from the
  command line (`--config.sampling.update=...` reached the method): every field is free."""
  import ml_collections
  from configs import default, image_default
  reserved = set(dir(ml_collections.ConfigDict()))
  for config in (default.get_config(), image_default.get_config()):
    for section in config.keys():
      fields = config[section].keys() if hasattr(config[section], "keys") else []
      assert not reserved & ({section} | set(fields)), (section, reserved & set(fields))


def test_new_sampling_and_diffusion_fields_parse_as_strings_from_flags():
  """The options the robust sampler and the parametrisation added are str fields that a
  command-line override can set by path."""
  from ml_collections.config_flags import config_path
  from configs import smmnist
  config = smmnist.get_config("tiny")
  for path, value in (("sampling.update_rule", "reference"), ("diffusion.prediction", "v")):
    assert config_path.get_type(path, config) is str
    config_path.set_value(path, config, value)
    assert config_path.get_value(path, config) == value
