"""The paper's test protocols as data, and choosing them for a model."""

import pytest

from configs import bair, kth, smmnist
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.video_diffusion import config as mcvd_config, evaluation as mcvd_eval
from mcvd_jax.metrics import evaluation, protocols
from mcvd_jax.models import UNetConfig


def test_paper_protocols_are_in_the_table():
  want = {  # name: (task, p, n, f)
      "bair_pred_1to15": ("prediction", 1, 15, 0),
      "bair_pred_2to28": ("prediction", 2, 28, 0),
      "kth_pred_10to30": ("prediction", 10, 30, 0),
      "kth_pred_10to40": ("prediction", 10, 40, 0),
      "smmnist_pred_5to10": ("prediction", 5, 10, 0),
      "cityscapes_pred_2to28": ("prediction", 2, 28, 0),
      "ucf101_pred_4to16": ("prediction", 4, 16, 0),
      "smmnist_interp_5+5to5": ("interpolation", 5, 5, 5),
      "bair_gen_1+15": ("generation", 1, 15, 0),
  }
  for name, (task, p, n, f) in want.items():
    got = protocols.get(name)
    assert (got.task, got.cond_frames, got.pred_frames, got.future_frames) == (task, p, n, f)
    assert got.num_test_videos == 256 and got.samples_per_video == 10
    assert got.source  # every protocol says where its numbers come from


@pytest.mark.parametrize("protocol", list(protocols.PROTOCOLS.values()), ids=lambda p: p.name)
def test_protocol_sanity(protocol):
  assert protocol.task in protocols.TASKS
  assert protocol.dataset in ("smmnist", "kth", "bair", "cityscapes", "ucf101")
  assert protocol.name.startswith(protocol.dataset + "_")
  assert set(protocol.metrics) <= set(evaluation.METRICS)
  assert set(protocol.table) <= set(protocol.metrics)  # the paper's columns are all computed
  # The reference computes FVD exactly for clips of >= 10 frames.
  assert ("fvd" in protocol.metrics) == (protocol.clip_frames >= 10)
  if protocol.task == "generation":
    assert protocol.metrics == ("fvd",) and protocol.scored_cond_frames == 0
  else:
    assert {"psnr", "ssim", "lpips"} <= set(protocol.metrics)
    assert protocol.scored_cond_frames == protocol.cond_frames
  assert (protocol.future_frames > 0) == (protocol.task == "interpolation")
  assert protocol.binarize == (protocol.dataset == "smmnist")
  evaluation.check_shapes(  # the protocol's own sizes pass the input checks
      (protocol.num_test_videos, protocol.clip_frames, 64, 64, 1),
      (protocol.num_test_videos, protocol.samples_per_video, protocol.clip_frames, 64, 64, 1),
      cond_frames=protocol.scored_cond_frames, future_frames=protocol.future_frames,
      metrics=protocol.metrics)


def test_overrides_and_unknown_names():
  p = protocols.get("kth_pred_10to30").with_overrides(num_test_videos=4, samples_per_video=2,
                                                       metrics=("psnr",))
  assert (p.num_test_videos, p.samples_per_video, p.metrics) == (4, 2, ("psnr",))
  assert protocols.get("kth_pred_10to30").with_overrides() == protocols.get("kth_pred_10to30")
  with pytest.raises(ValueError, match="unknown evaluation protocol 'kth_9to9'"):
    protocols.get("kth_9to9")


def _chosen(config):
  cfg = UNetConfig.from_mapping(config.model)
  return [p.name for p in mcvd_eval.select_protocols(config, cfg,
                                                    mcvd_config.validate_eval(config))]


def test_default_choice_follows_the_model():
  assert _chosen(bair.get_config()) == ["bair_pred_1to15"]
  assert _chosen(bair.get_config("c2")) == ["bair_pred_2to14", "bair_pred_2to28"]
  assert _chosen(bair.get_config("past_mask")) == ["bair_pred_1to15", "bair_gen_1+15"]
  assert _chosen(kth.get_config("interp")) == ["kth_pred_10to30", "kth_pred_10to40",
                                               "kth_interp_10+5to10"]
  assert "smmnist_interp_5+5to5" in _chosen(smmnist.get_config("general"))


def test_choice_errors_name_the_field():
  config = bair.get_config()
  config.eval.protocols = "bair_pred_2to28"
  with pytest.raises(ConfigError, match="eval.protocols: bair_pred_2to28 does not fit.*"
                     "model.num_frames_cond=1"):
    _chosen(config)
  config.eval.protocols = "bair_gen_1+15"
  with pytest.raises(ConfigError, match="not trained for generation"):
    _chosen(config)
  config.eval.protocols = "nope"
  with pytest.raises(ConfigError, match="eval.protocols='nope': unknown"):
    mcvd_config.validate_eval(config)
  config = smmnist.get_config("tiny")  # 2 past frames: no SMMNIST protocol fits
  with pytest.raises(ConfigError, match="no evaluation protocol of data.dataset='smmnist'"):
    _chosen(config)
  config = smmnist.get_config()
  config.eval.num_test_videos = 1  # FVD needs two videos: said before anything is sampled
  with pytest.raises(ConfigError, match="at least 2 real videos.*num_test_videos"):
    _chosen(config)
  config.eval.metrics = "psnr,bleu"
  with pytest.raises(ConfigError, match="eval.metrics='psnr,bleu'.*bleu"):
    mcvd_config.validate_eval(config)


def test_metrics_override_narrows_each_protocol():
  config = bair.get_config("past_mask")
  config.eval.metrics = "psnr,ssim"  # generation computes FVD only: left out, not given PSNR
  assert _chosen(config) == ["bair_pred_1to15"]
  config.eval.metrics = "fvd,fid"
  cfg = UNetConfig.from_mapping(config.model)
  runs = mcvd_eval.select_protocols(config, cfg, mcvd_config.validate_eval(config))
  assert [p.metrics for p in runs] == [("fvd", "fid"), ("fvd", "fid")]
  config.eval.protocols = "bair_gen_1+15"
  config.eval.metrics = "psnr"
  with pytest.raises(ConfigError, match="leaves protocol bair_gen_1\\+15 nothing"):
    _chosen(config)
