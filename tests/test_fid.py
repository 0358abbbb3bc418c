"""FID on a randomly initialised Inception-v3 (the real weights are user-supplied): shapes, a set
against itself, a growing shift, the weight file and its PyTorch conversion, the refusal without
weights, and the blocks against PyTorch's functional ops on the same state dict."""

import functools

import jax
import numpy as np
import pytest

from mcvd_jax.metrics import fid, inception


@functools.lru_cache(maxsize=None)
def _random_state() -> dict:
  """pytorch-fid-named arrays of a random network, BatchNorm statistics randomised too (the
  initial ones, 0 and 1, would not show a mix-up of mean, var, scale and bias)."""
  rng = np.random.default_rng(1)
  state = inception.state_dict_names(inception.init_variables(0))
  for name in state:
    if name.endswith(("bn.weight", "bn.running_var")):
      state[name] = rng.uniform(0.5, 1.5, state[name].shape).astype(np.float32)
    elif name.endswith(("bn.bias", "bn.running_mean")):
      state[name] = rng.uniform(-0.2, 0.2, state[name].shape).astype(np.float32)
  return state


@pytest.fixture(scope="module")
def variables():
  return inception.variables_from_state_dict(_random_state(), "random")


def _images(n=6, size=24, channels=3, seed=0, shift=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size] / size
  base = np.stack([np.sin(6 * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)) + k)
                   for k in range(channels) for _ in range(1)], -1)
  images = [(base * 0.5 + 0.5) * 200 + rng.uniform(0, 40, base.shape) for _ in range(n)]
  return np.clip(np.stack(images) + shift, 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_features_self_distance_and_shift(variables):
  real = _images()
  feats = fid.inception_features(variables, real, batch_size=4, size=75)
  assert feats.shape == (6, 2048) and feats.dtype == np.float32 and np.all(np.isfinite(feats))
  assert feats.std() > 1e-3  # the random network does respond to its inputs
  # Grey images are RGB images with three equal channels.
  grey = real[..., :1]
  np.testing.assert_allclose(fid.inception_features(variables, grey, batch_size=4, size=75),
                             fid.inception_features(variables, np.repeat(grey, 3, -1),
                                                    batch_size=4, size=75), rtol=1e-5, atol=1e-5)
  assert abs(fid.fid(variables, real, real, batch_size=4, size=75)) < 1e-6
  shifted = [fid.fid(variables, real, _images(shift=s), batch_size=4, size=75) for s in (10, 40)]
  assert 0 < shifted[0] < shifted[1]


def test_weight_file_round_trip(tmp_path, variables):
  path = tmp_path / "inception_fid.npz"
  fid.save_inception_params(variables, str(path))
  loaded = fid.load_inception_params(str(path))
  flat = lambda tree: jax.tree_util.tree_flatten_with_path(tree)[0]  # noqa: E731
  assert [k for k, _ in flat(loaded)] == [k for k, _ in flat(variables)]
  for (_, a), (_, b) in zip(flat(loaded), flat(variables)):
    np.testing.assert_array_equal(np.asarray(a), b)
  with np.load(path) as data:  # pytorch-fid's names and layouts
    assert data["Mixed_7c.branch3x3_2a.conv.weight"].shape == (384, 384, 1, 3)
    assert data["Conv2d_1a_3x3.bn.running_var"].shape == (32,)


def test_refuses_without_weights(tmp_path):
  for path in (None, "", str(tmp_path / "absent.npz")):
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05.*convert_from.*"
                       "--fid_weights"):
      fid.load_inception_params(path)
  (tmp_path / "junk.npz").write_bytes(b"junk")
  with pytest.raises(ValueError, match="junk.npz: cannot read"):
    fid.load_inception_params(str(tmp_path / "junk.npz"))
  state = dict(_random_state())
  del state["Mixed_6b.branch7x7_2.conv.weight"]
  state["Mixed_5b.branch1x1.bn.running_mean"] = np.zeros(7, np.float32)
  np.savez(tmp_path / "partial.npz", **state)
  with pytest.raises(ValueError, match=r"partial.npz does not hold pytorch-fid's.*1 missing "
                     r"\['Mixed_6b.branch7x7_2.conv.weight'\].*running_mean \(7,\)"):
    fid.load_inception_params(str(tmp_path / "partial.npz"))


def test_image_checks():
  v = {}
  with pytest.raises(ValueError, match="at least 2 images"):
    fid.inception_features(v, np.zeros((1, 80, 80, 3), np.uint8))
  with pytest.raises(ValueError, match="channels-last"):
    fid.inception_features(v, np.zeros((2, 3, 80, 80), np.uint8))
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    fid.inception_features(v, np.full((2, 80, 80, 3), 2.0, np.float32))


def test_pytorch_file_conversion(tmp_path, variables):
  torch = pytest.importorskip("torch")
  state = {k: torch.from_numpy(v.copy()) for k, v in _random_state().items()}
  state["fc.weight"] = torch.zeros(1008, 2048)  # pytorch-fid's classifier: present, ignored
  state["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(0)
  torch.save(state, tmp_path / "pt_inception.pth")
  fid.convert_pytorch_weights(str(tmp_path / "pt_inception.pth"), str(tmp_path / "out.npz"))
  loaded = fid.load_inception_params(str(tmp_path / "out.npz"))
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), b)
  with pytest.raises(FileNotFoundError, match="absent.pth"):
    fid.convert_pytorch_weights(str(tmp_path / "absent.pth"), str(tmp_path / "x.npz"))


def test_blocks_match_pytorch_functional_ops(variables):
  """Our blocks against pytorch-fid's block definitions written with torch.nn.functional on the
  same state dict: the kernel layout, BatchNorm (eps 1e-3), asymmetric paddings, the average pools
  that leave the padding out and Mixed_7c's max pool."""
  torch = pytest.importorskip("torch")
  functional = torch.nn.functional
  state = {k: torch.from_numpy(v) for k, v in _random_state().items()}

  def basic(name, x, stride=1, padding=0):
    x = functional.conv2d(x, state[f"{name}.conv.weight"], stride=stride, padding=padding)
    x = functional.batch_norm(x, state[f"{name}.bn.running_mean"], state[f"{name}.bn.running_var"],
                              state[f"{name}.bn.weight"], state[f"{name}.bn.bias"], False, 0.0,
                              1e-3)
    return functional.relu(x)

  def block_a(p, x):
    b5 = basic(f"{p}.branch5x5_2", basic(f"{p}.branch5x5_1", x), padding=2)
    b3 = basic(f"{p}.branch3x3dbl_1", x)
    b3 = basic(f"{p}.branch3x3dbl_3", basic(f"{p}.branch3x3dbl_2", b3, padding=1), padding=1)
    pool = functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return torch.cat([basic(f"{p}.branch1x1", x), b5, b3, basic(f"{p}.branch_pool", pool)], 1)

  def block_c(p, x):
    b7 = basic(f"{p}.branch7x7_1", x)
    b7 = basic(f"{p}.branch7x7_3", basic(f"{p}.branch7x7_2", b7, padding=(0, 3)), padding=(3, 0))
    bd = basic(f"{p}.branch7x7dbl_1", x)
    for i, pad in ((2, (3, 0)), (3, (0, 3)), (4, (3, 0)), (5, (0, 3))):
      bd = basic(f"{p}.branch7x7dbl_{i}", bd, padding=pad)
    pool = functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return torch.cat([basic(f"{p}.branch1x1", x), b7, bd, basic(f"{p}.branch_pool", pool)], 1)

  def block_e2(p, x):
    b3 = basic(f"{p}.branch3x3_1", x)
    b3 = torch.cat([basic(f"{p}.branch3x3_2a", b3, padding=(0, 1)),
                    basic(f"{p}.branch3x3_2b", b3, padding=(1, 0))], 1)
    bd = basic(f"{p}.branch3x3dbl_2", basic(f"{p}.branch3x3dbl_1", x), padding=1)
    bd = torch.cat([basic(f"{p}.branch3x3dbl_3a", bd, padding=(0, 1)),
                    basic(f"{p}.branch3x3dbl_3b", bd, padding=(1, 0))], 1)
    pool = functional.max_pool2d(x, 3, 1, 1)
    return torch.cat([basic(f"{p}.branch1x1", x), b3, bd, basic(f"{p}.branch_pool", pool)], 1)

  def ours(module, name, x):
    sub = {"params": variables["params"][name], "batch_stats": variables["batch_stats"][name]}
    return np.asarray(jax.jit(module.apply)(sub, x))

  rng = np.random.default_rng(3)
  cases = [(inception.BasicConv(32, (3, 3), strides=2), "Conv2d_1a_3x3", 3,
            lambda x: basic("Conv2d_1a_3x3", x, stride=2)),
           (inception.InceptionA(32), "Mixed_5b", 192, lambda x: block_a("Mixed_5b", x)),
           (inception.InceptionC(128), "Mixed_6b", 768, lambda x: block_c("Mixed_6b", x)),
           (inception.InceptionE(max_pool=True), "Mixed_7c", 2048,
            lambda x: block_e2("Mixed_7c", x))]
  for module, name, channels, reference in cases:
    x = rng.normal(size=(2, 9, 7, channels)).astype(np.float32)
    want = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours(module, name, x), want, rtol=2e-4, atol=2e-4, err_msg=name)


@pytest.mark.slow
def test_frame_fid_in_the_video_evaluation(variables):
  from mcvd_jax.metrics import evaluation
  rng = np.random.default_rng(5)
  real = rng.integers(0, 256, (2, 3, 16, 16, 1), np.uint8)
  fake = rng.integers(0, 256, (2, 1, 3, 16, 16, 1), np.uint8)
  report = evaluation.evaluate_video_sets(real, fake, cond_frames=1, metrics=("fid",),
                                          fid_params=variables)
  frames = lambda v: v[..., 1:, :, :, :].reshape(-1, 16, 16, 1)  # noqa: E731  the scored frames
  assert report["fid"]["value"] == pytest.approx(fid.fid(variables, frames(real), frames(fake)),
                                                 rel=1e-5)
  assert report["fid"]["num_real_frames"] == report["fid"]["num_fake_frames"] == 4
