"""Image-generation scores: improved precision and recall on hand-worked feature sets and against a
brute-force count, the Inception Score on hand-worked probabilities, and the Inception classifier
path (pool features unchanged, 1008-way logits) on randomly initialised weights."""

import jax
import numpy as np
import pytest

from mcvd_jax.metrics import fid, inception, inception_score
from mcvd_jax.metrics.precision_recall import manifold_radii, precision_recall
from mcvd_jax.core.sharding import make_mesh

# ---------------------------------------------------------------------------- precision and recall

# Real a..e and fake f1..f4 in the plane, worked by hand (distances to 3 decimals).
#
# Real pairwise: ab 1, ac 2, ad 4, ae 5, bc √5 = 2.236, bd 3, be √18 = 4.243, cd √20 = 4.472,
#   ce √17 = 4.123, de 3.
#   k=1 radii (nearest other): a 1, b 1, c 2, d 3, e 3.
#   k=3 radii (3rd nearest):   a 4 (1, 2, 4), b 3 (1, 2.236, 3), c 4.123 (2, 2.236, 4.123),
#                              d 4 (3, 3, 4), e 4.243 (3, 4.123, 4.243).
# Fake pairwise: f1f2 √36.25 = 6.021, f1f3 √90.5 = 9.513, f1f4 √11.25 = 3.354, f2f3 3.5,
#   f2f4 √26.5 = 5.148, f3f4 √70.25 = 8.382.
#   k=1 radii: f1 3.354, f2 3.5, f3 3.5, f4 3.354.   k=3 radii: f1 9.513, f2 6.021, f3 9.513,
#   f4 8.382 (with 4 fakes, the farthest other one).
#
# Precision, k=1: f1 is 0.707 from a (radius 1): in. f2 is 2.5 from d (radius 3): in. f3 is 6 from
#   d and 6.708 from e (radii 3), farther from the rest: out. f4 is 3.202 from a (1), 2.693 from b
#   (1), 3.202 from d (3), 5.852 from e (3), 4.717 from c (2): out.   -> 2/4 = 0.5
# Precision, k=3: f1 in (a, 4); f2 in (d: 2.5 < 4); f3 out (d: 6 > 4, e: 6.708 > 4.243);
#   f4 in (a: 3.202 < 4).   -> 3/4 = 0.75
# Recall, k=1: a, b are 0.707 from f1 (radius 3.354), c 1.581 from f1: in. d is 2.5 from f2
#   (radius 3.5): in. e is 3.905 from f2 (3.5), 6.708 from f3 (3.5), 4.301 from f1 (3.354),
#   5.852 from f4 (3.354): out.   -> 4/5 = 0.8
# Recall, k=3: every real point is within 9.513 of f1.   -> 5/5 = 1.0
REAL = np.array([(0, 0), (1, 0), (0, 2), (4, 0), (4, 3)], np.float32)
FAKE = np.array([(0.5, 0.5), (6.5, 0), (10, 0), (2, -2.5)], np.float32)


def one_device():
  return make_mesh(jax.devices()[:1])


@pytest.mark.parametrize("k,want", [(1, (0.5, 0.8)), (3, (0.75, 1.0))])
def test_precision_recall_hand_worked(k, want):
  assert precision_recall(REAL, FAKE, k=k) == pytest.approx(want)
  # Blocks of 2 rows on one device (3 blocks of real, 2 of fake): the same answer as one block.
  assert precision_recall(REAL, FAKE, k=k, batch_size=2, mesh=one_device()) == pytest.approx(want)
  assert precision_recall(REAL, FAKE, k=k, batch_size=64, mesh=one_device()) == pytest.approx(want)
  # Distances do not change when both sets move together (features are centred internally).
  assert precision_recall(REAL + 1000, FAKE + 1000, k=k) == pytest.approx(want)


def _brute_force(real, fake, k):
  def radii(x):
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]

  def share(queries, ref):
    return np.mean(np.any(np.linalg.norm(queries[:, None] - ref[None], axis=-1) <= radii(ref),
                          axis=1))
  return share(fake, real), share(real, fake)


def test_precision_recall_blocks_against_brute_force():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(37, 16)).astype(np.float32)
  fake = (rng.normal(size=(29, 16)) * 1.3 + 0.4).astype(np.float32)
  for k in (1, 3, 5):
    want = _brute_force(real.astype(np.float64), fake.astype(np.float64), k)
    assert 0 < want[0] < 1 and 0 < want[1] < 1  # a case that tells counts apart
    assert precision_recall(real, fake, k=k, batch_size=8) == pytest.approx(want)  # 8 devices
    assert precision_recall(real, fake, k=k, batch_size=5, mesh=one_device()) == pytest.approx(want)


def test_precision_recall_of_a_set_against_itself_and_duplicates():
  rng = np.random.default_rng(1)
  feats = rng.normal(size=(20, 4)).astype(np.float32)
  assert precision_recall(feats, feats, k=3) == (1.0, 1.0)
  assert precision_recall(feats, feats + 100.0, k=1) == (0.0, 0.0)
  # A duplicated vector: its twin is its nearest neighbour, at distance 0; only the vector itself
  # is left out (squared radii).
  twins = np.array([(0, 0), (0, 0), (3, 4)], np.float32)
  np.testing.assert_allclose(manifold_radii(twins, k=1), [0, 0, 25], atol=1e-5)
  np.testing.assert_allclose(manifold_radii(twins, k=2), [25, 25, 25], rtol=1e-6)


def test_precision_recall_errors():
  with pytest.raises(ValueError, match="differ in dimension.*\\(5, 2\\).*\\(4, 3\\)"):
    precision_recall(REAL, np.zeros((4, 3), np.float32))
  with pytest.raises(ValueError, match="fake features hold 4 vectors.*k=4.*at least k \\+ 1 = 5"):
    precision_recall(REAL, FAKE, k=4)
  with pytest.raises(ValueError, match="real features must be \\[N, D\\]"):
    precision_recall(REAL[:, 0], FAKE)
  bad = FAKE.copy()
  bad[2, 1] = np.nan
  with pytest.raises(ValueError, match="fake features contain NaN or inf"):
    precision_recall(REAL, bad)
  with pytest.raises(ValueError, match="k must be an integer >= 1"):
    precision_recall(REAL, FAKE, k=0)


# ---------------------------------------------------------------------------------- inception score


def test_inception_score_hand_worked():
  # Every image unsure in the same way: p(y|x) = p(y), KL 0, score exp(0) = 1.
  assert inception_score.inception_score_from_probs(np.full((40, 7), 1 / 7), splits=4) == (
      pytest.approx(1.0), pytest.approx(0.0))
  # Confident images spread evenly over C classes: KL = log C for each, score C.
  one_hot = np.eye(5)[np.arange(50) % 5]
  mean, std = inception_score.inception_score_from_probs(one_hot, splits=10)
  assert mean == pytest.approx(5.0) and std == pytest.approx(0.0, abs=1e-12)
  # Two images, p(y|x1) = (1/2, 1/2), p(y|x2) = (1, 0); p(y) = (3/4, 1/4).
  #   KL1 = 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3); KL2 = log(4/3); mean 3/4 log(4/3).
  #   IS = (4/3) ** (3/4) = 1.2408.
  probs = np.array([[0.5, 0.5], [1.0, 0.0]])
  assert inception_score.inception_score_from_probs(probs, splits=1) == (
      pytest.approx((4 / 3) ** 0.75), 0.0)


def test_inception_score_splits():
  e = np.eye(2)
  # Classes 0, 1, 0, 1 in two parts: each part covers both classes evenly, IS 2 each.
  assert inception_score.inception_score_from_probs(e[[0, 1, 0, 1]], splits=2) == (2.0, 0.0)
  # Classes 0, 0, 1, 1: in two parts each part is one class (IS 1); as one part, IS 2. The parts
  # are contiguous runs in the given order, as the original code (no shuffling).
  assert inception_score.inception_score_from_probs(e[[0, 0, 1, 1]], splits=2) == (1.0, 0.0)
  assert inception_score.inception_score_from_probs(e[[0, 0, 1, 1]], splits=1)[0] == (
      pytest.approx(2.0))
  # Five images in two parts: rows 0:2 (= 5 * 0 // 2 : 5 * 1 // 2) and 2:5.
  #   Part 1, classes 0, 1: IS 2. Part 2, classes 0, 0, 1: p(y) = (2/3, 1/3), KL log(3/2) twice
  #   and log 3 once, mean log((9/4 * 3) ** (1/3)), IS 6.75 ** (1/3) = 1.8899.
  #   Mean (2 + 1.8899) / 2 = 1.94495, population std (2 - 1.8899) / 2 = 0.05505.
  third = 6.75 ** (1 / 3)
  mean, std = inception_score.inception_score_from_probs(e[[0, 1, 0, 0, 1]], splits=2)
  assert mean == pytest.approx((2 + third) / 2) and std == pytest.approx((2 - third) / 2)


def test_inception_score_errors():
  with pytest.raises(ValueError, match="3 images cannot be cut into splits=10"):
    inception_score.inception_score_from_probs(np.full((3, 4), 0.25))
  with pytest.raises(ValueError, match="probability distribution.*not logits"):
    inception_score.inception_score_from_probs(np.array([[2.0, -1.0], [0.0, 1.0]]), splits=1)
  with pytest.raises(ValueError, match="NaN or inf"):
    inception_score.inception_score_from_probs(np.array([[np.nan, 1.0]]), splits=1)
  with pytest.raises(ValueError, match="must be \\[N, C\\]"):
    inception_score.inception_score_from_probs(np.full(4, 0.25), splits=1)
  with pytest.raises(ValueError, match="splits must be an integer"):
    inception_score.inception_score_from_probs(np.full((4, 2), 0.5), splits=0)


# -------------------------------------------------------------------- the Inception classifier path

# Pool features of `_images()` through init_variables(0) at size 75, computed with inception.py as
# it was before the classifier was added (git HEAD at the time): the first four features per image
# and each image's feature sum and sum of squares.
_OLD_FIRST4 = np.array([[0.06023283, 0.08781602, 0.10417886, 0.51025742],
                        [0.02362159, 0.0914776, 0.10387744, 0.53968453],
                        [0.01676646, 0.11563487, 0.0720768, 0.49530756]])
_OLD_SUM = np.array([163.73161153, 162.7593973, 156.80869267])
_OLD_SUM_SQ = np.array([53.56388562, 52.57430842, 49.3909945])


def _images():
  return np.random.default_rng(0).integers(0, 256, (3, 75, 75, 3), np.uint8)


def _fc_state(seed=1):
  rng = np.random.default_rng(seed)
  return {"fc.weight": rng.normal(0, 0.05, (1008, 2048)).astype(np.float32),
          "fc.bias": rng.normal(0, 0.5, 1008).astype(np.float32)}


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
  """pytorch-fid-named random weights with the classifier, as the converter writes them."""
  path = tmp_path_factory.mktemp("inception") / "inception_fid.npz"
  np.savez(path, **inception.state_dict_names(inception.init_variables(0)), **_fc_state())
  return str(path)


def test_pool_features_unchanged_and_logits(weight_file):
  images = _images()
  variables = fid.load_inception_params(weight_file)  # FID's loader: no classifier
  assert "fc" not in variables["params"]
  feats = fid.inception_features(variables, images, batch_size=4, size=75)
  np.testing.assert_allclose(feats[:, :4], _OLD_FIRST4, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(feats.astype(np.float64).sum(1), _OLD_SUM, rtol=1e-5)
  np.testing.assert_allclose((feats.astype(np.float64) ** 2).sum(1), _OLD_SUM_SQ, rtol=1e-5)

  with_fc = inception_score.load_inception_score_params(weight_file)
  assert with_fc["params"]["fc"]["kernel"].shape == (2048, 1008)
  # The logits network's pool features are FID's (to float32 rounding: unsharded here), and its
  # Dense adds fc.bias.
  fc = _fc_state()
  with jax.default_matmul_precision("float32"):
    pool, logits = jax.jit(inception.InceptionV3(logits=True).apply)(
        with_fc, fid.preprocess_for_inception(images, 75))
  np.testing.assert_allclose(np.asarray(pool), feats, rtol=1e-4, atol=1e-5)
  assert logits.shape == (3, 1008)
  np.testing.assert_allclose(logits, feats @ fc["fc.weight"].T + fc["fc.bias"], rtol=1e-4,
                             atol=1e-4)
  # As the original IS code: pool features @ fc.weight.T, without fc.bias unless asked for.
  unbiased = inception_score.inception_logits(with_fc, images, batch_size=4, size=75)
  assert unbiased.shape == (3, inception.CLASSES)
  np.testing.assert_allclose(unbiased, feats @ fc["fc.weight"].T, rtol=1e-4, atol=1e-4)
  biased = inception_score.inception_logits(with_fc, images, batch_size=4, size=75,
                                            use_fc_bias=True)
  np.testing.assert_allclose(biased, feats @ fc["fc.weight"].T + fc["fc.bias"], rtol=1e-4,
                             atol=1e-4)
  probs = inception_score.inception_probs(with_fc, images, batch_size=4, size=75)
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
  mean, std = inception_score.inception_score(with_fc, images, splits=1, batch_size=4, size=75)
  assert mean == pytest.approx(inception_score.inception_score_from_probs(probs, 1)[0])
  assert 1.0 <= mean <= inception.CLASSES and std == 0.0
  # One pass for FID and IS: the same pool features and probabilities as the two separate calls.
  joint_feats, joint_probs = inception_score.inception_features_and_probs(
      with_fc, images, batch_size=4, size=75)
  np.testing.assert_allclose(joint_feats, feats, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(joint_probs, probs, rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="inception_features_and_probs: images must be"):
    inception_score.inception_features_and_probs(with_fc, images[0], size=75)


def test_classifier_weights_round_trip_and_errors(tmp_path, weight_file):
  with_fc = inception_score.load_inception_score_params(weight_file)
  fid.save_inception_params(with_fc, str(tmp_path / "again.npz"))  # fc back in pytorch layout
  with np.load(tmp_path / "again.npz") as data:
    np.testing.assert_array_equal(data["fc.weight"], _fc_state()["fc.weight"])
    np.testing.assert_array_equal(data["fc.bias"], _fc_state()["fc.bias"])
  # A weight file without the classifier: FID loads it, the Inception Score names what is missing.
  no_fc = tmp_path / "fid_only.npz"
  np.savez(no_fc, **inception.state_dict_names(inception.init_variables(0)))
  variables = fid.load_inception_params(str(no_fc))
  with pytest.raises(ValueError, match="fid_only.npz has no fc.weight / fc.bias.*--convert_from"):
    inception_score.load_inception_score_params(str(no_fc))
  with pytest.raises(ValueError, match="lack.*load_inception_score_params"):
    inception_score.inception_logits(variables, _images(), size=75)
  state = {"fc.weight": np.zeros((1000, 2048), np.float32), "fc.bias": np.zeros(1008, np.float32)}
  with pytest.raises(ValueError, match="wrong shape: fc.weight \\(1000, 2048\\)"):
    inception.classifier_variables_from_state_dict(state, "x.npz")
  with pytest.raises(FileNotFoundError, match="pt_inception"):
    inception_score.load_inception_score_params(str(tmp_path / "absent.npz"))
