"""PSNR and SSIM against scikit-image and hand-made cases; best-of-N and the statistics."""

import math

import numpy as np
import pytest

from mcvd_jax.metrics.image_quality import to_grey_uint8, video_mse, video_psnr, video_ssim
from mcvd_jax.metrics.stats import best_of_n, summarize

skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is a test dependency")


def random_videos(seed, shape=(3, 4, 24, 20, 1)):
  rng = np.random.default_rng(seed)
  real = rng.uniform(size=shape).astype(np.float32)
  fake = np.clip(real + rng.normal(0, 0.1, size=shape), 0, 1).astype(np.float32)
  return real, fake


def test_psnr_from_per_video_mse():
  real, fake = random_videos(0)
  mse = ((real - fake) ** 2).mean(axis=(2, 3, 4)).mean(axis=1)
  np.testing.assert_allclose(video_mse(real, fake), mse, rtol=1e-5)
  np.testing.assert_allclose(video_psnr(real, fake), 10 * np.log10(1 / mse), rtol=1e-5)
  for n in range(3):
    expected = skimage_metrics.peak_signal_noise_ratio(real[n], fake[n], data_range=1.0)
    np.testing.assert_allclose(video_psnr(real, fake)[n], expected, rtol=1e-4)


def test_psnr_of_an_exact_prediction_is_the_rounding_cap_not_infinity():
  from mcvd_jax.metrics.evaluation import report_from_scores
  real, fake = random_videos(0)
  cap = 10 * np.log10(12 * 255 ** 2)  # the PSNR of uint8 rounding noise, 58.9 dB
  psnr = np.asarray(video_psnr(real, np.concatenate([real[:1], fake[1:]])))
  np.testing.assert_allclose(psnr[0], cap, rtol=1e-5)
  assert 10 < psnr[1] < 30  # a visible error is far below the cap
  # an evaluation with one still clip copied exactly (copy-last) summarises instead of failing
  mse = np.array([[0.0, 0.01], [0.02, 0.04]])
  report = report_from_scores({"mse": mse}, metrics=("mse", "psnr"))
  np.testing.assert_allclose(report["psnr"]["best_of_samples"]["mean"],
                             (cap + 10 * np.log10(1 / 0.02)) / 2)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image(channels):
  real, fake = random_videos(1, (2, 3, 32, 28, channels))
  ours = np.asarray(video_ssim(real, fake))
  grey_real, grey_fake = np.asarray(to_grey_uint8(real)), np.asarray(to_grey_uint8(fake))
  expected = np.array([
      np.mean([skimage_metrics.structural_similarity(
          grey_fake[n, t].astype(np.uint8), grey_real[n, t].astype(np.uint8), data_range=255,
          gaussian_weights=True, use_sample_covariance=False) for t in range(3)])
      for n in range(2)])
  np.testing.assert_allclose(ours, expected, atol=1e-5)
  assert np.all(ours < 1) and np.all(ours > 0)


def test_grey_conversion_follows_pil():
  from PIL import Image
  rgb = np.random.default_rng(2).uniform(size=(5, 7, 3)).astype(np.float32)
  as_uint8 = (rgb * 255).astype(np.uint8)  # torchvision's ToPILImage truncates
  pil = np.asarray(Image.fromarray(as_uint8, "RGB").convert("L"))
  np.testing.assert_array_equal(np.asarray(to_grey_uint8(rgb)), pil)


def test_ssim_of_identical_frames_is_one_and_binarize():
  real, _ = random_videos(3, (1, 2, 16, 16, 1))
  np.testing.assert_allclose(video_ssim(real, real), [1.0], atol=1e-6)
  grey = real * 0.2 + 0.4  # mid greys: differ from the binary version except after rounding
  binary = np.round(grey)
  assert float(video_ssim(binary, grey)[0]) < 0.9
  np.testing.assert_allclose(video_ssim(binary, grey, binarize=True), [1.0], atol=1e-6)


def test_metric_input_errors():
  real, fake = random_videos(4)
  with pytest.raises(ValueError, match="same shape"):
    video_mse(real, fake[:, :2])
  with pytest.raises(ValueError, match="11x11"):
    video_ssim(real[:, :, :8, :8], fake[:, :, :8, :8])
  with pytest.raises(ValueError, match=r"\[N, T, H, W, C\]"):
    video_psnr(real[0], fake[0])


def test_best_of_n_and_summary():
  values = np.array([[1.0, 3.0, 2.0], [5.0, 4.0, 6.0]])
  np.testing.assert_array_equal(best_of_n(values, higher_is_better=True), [3.0, 6.0])
  np.testing.assert_array_equal(best_of_n(values, higher_is_better=False), [1.0, 4.0])
  s = summarize([1.0, 2.0, 3.0, 4.0])
  assert s.mean == 2.5 and math.isclose(s.std, np.std([1, 2, 3, 4]))
  # 1.96 * sample std / sqrt(n), as scipy's norm.interval(0.95, scale=sem) gives
  assert math.isclose(s.conf95, 1.959963984540054 * np.std([1, 2, 3, 4], ddof=1) / 2, rel_tol=1e-12)
  with pytest.raises(ValueError, match="not finite"):
    summarize([1.0, math.inf])
  with pytest.raises(ValueError, match="num_videos"):
    best_of_n([1.0, 2.0], True)
