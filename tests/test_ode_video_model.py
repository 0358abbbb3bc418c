"""mcvd_jax.ode_video (the neural-ODE video models); Moving MNIST is in test_moving_mnist.py.

Every check compares with an independent answer: scipy's matrix exponential for the latent solve
(through the model's own ODE MLP, made linear), the Gaussian negative log-likelihoods and the KL
written out in numpy, the KL by quadrature, a numpy Elman RNN fed the frames backwards, the
convolutions' PyTorch semantics written as sums and the reference's parameter counts. Tiny 32×32 models (16×16 would leave a 1×1 bottleneck, which the
config refuses); compiled functions are shared by module fixtures.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats

from mcvd_jax.ode_video import (OdeVideoConfig, OdeVideoConfigError, decode, default_ode_settings,
                                encode, encode_frames, init_params, kl_standard_normal,
                                latent_trajectory, make_loss_fn, networks, predict, time_grid)

TINY = dict(image_size=32, channels=1, latent_dim=3, enc_channels=(2, 2, 4, 4), fc_hidden=8,
            ode_hidden=8, rnn_hidden=6)
CFG_A = OdeVideoConfig.variant_a(**TINY)
CFG_B = OdeVideoConfig.variant_b(**TINY, kl_weight=0.5)
# A mildly growing rotation-shear: every time of a trajectory has its own latent.
A = np.array([[-0.3, 1.2, 0.0], [-1.1, 0.2, 0.4], [0.3, -0.5, 0.1]])
SETTINGS = default_ode_settings()
SIGMA_CONST = 0.5 * np.log(2 * np.pi * 0.3 ** 2)


def expm_path(z0, times):
  """[B, L] -> [B, T, L]: exp(A (t_k - t_0)) z0, in float64."""
  return np.stack([np.asarray(z0, np.float64) @ scipy.linalg.expm(A * (t - times[0])).T
                   for t in times], axis=1)


def linear_ode_params(hidden, offset=8.0):
  """Parameters of the ODE MLP (ELU(ELU(z K1 + b1) K2 + b2) K3 + b3) that make it exactly
  f(z) = A z while |z| < offset: the offset keeps every ELU input positive (where ELU is the
  identity) and b3 cancels it."""
  L = A.shape[0]
  k1 = np.zeros((L, hidden)); k1[:, :L] = np.eye(L)
  b1 = np.full(hidden, offset)
  k3 = np.zeros((hidden, L)); k3[:L] = A.T
  as32 = lambda a: jnp.asarray(a, jnp.float32)
  return {"fc1": {"kernel": as32(k1), "bias": as32(b1)},
          "fc2": {"kernel": as32(np.eye(hidden)), "bias": as32(np.zeros(hidden))},
          "fc3": {"kernel": as32(k3), "bias": as32(-b1 @ k3)}}


def frames(seed, shape=(2, 4, 32, 32, 1)):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


@pytest.fixture(scope="module")
def params():
  """Random networks with the linear ODE field, for both tiny variants."""
  out = {}
  for name, cfg in (("a", CFG_A), ("b", CFG_B)):
    p = init_params(cfg, jax.random.key(1))
    out[name] = {**p, "ode": linear_ode_params(cfg.ode_hidden)}
  return out


# ----------------------------------------------------------------------------------- the config

def test_variant_constructors_give_the_paper_models():
  a, b = OdeVideoConfig.variant_a(), OdeVideoConfig.variant_b()
  assert (a.latent_dim, a.enc_channels, a.fc_hidden, a.ode_hidden) == (128, (16, 32, 64, 64),
                                                                       256, 256)
  assert (b.latent_dim, b.enc_channels, b.fc_hidden, b.ode_hidden, b.rnn_hidden) == (
      64, (8, 16, 32, 32), 128, 128, 128)
  assert (a.image_size, a.channels, a.sigma, b.kl_weight) == (64, 1, 0.3, 1.0)
  assert OdeVideoConfig(variant="b") == b and OdeVideoConfig() == a
  assert OdeVideoConfig.variant_b(latent_dim=16).latent_dim == 16
  assert hash(OdeVideoConfig.variant_a(enc_channels=[16, 32, 64, 64])) == hash(a)  # jit-static


@pytest.mark.parametrize("overrides, message", [
    (dict(variant="c"), r"model\.variant='c' is not one of"),
    (dict(image_size=60), r"model\.image_size=60 must be divisible by 16"),
    (dict(image_size=0), r"model\.image_size=0 must be a positive integer"),
    (dict(image_size=16), r"model\.image_size=16 must be at least 32 \(a 2×2 bottleneck\)"),
    (dict(latent_dim=0), r"model\.latent_dim=0 must be a positive integer"),
    (dict(enc_channels=(8, 16, 32)), r"model\.enc_channels=\(8, 16, 32\) must be 4 positive"),
    (dict(enc_channels=(8, 16, 48, 64)), r"model\.enc_channels=.* <= 32 or multiples of 32"),
    (dict(sigma=0.0), r"model\.sigma=0.0 must be a finite number > 0"),
    (dict(kl_weight=-1.0), r"model\.kl_weight=-1.0 must be a finite number >= 0"),
    (dict(compute_dtype="float16"), r"model\.compute_dtype='float16' is not one of"),
])
def test_config_errors_name_the_field(overrides, message):
  with pytest.raises(OdeVideoConfigError, match=message):
    OdeVideoConfig(**overrides)


def test_default_ode_settings():
  f32, f64 = default_ode_settings("float32"), default_ode_settings("float64")
  assert (f32.solver, f32.adaptive, f32.rtol, f32.atol, f32.batch_mode) == (
      "dopri5", True, 1e-5, 1e-6, "joint")
  assert (f64.rtol, f64.atol, f64.adjoint) == (1e-7, 1e-9, "recursive_checkpoint")
  with pytest.raises(ValueError, match="precision='bfloat16'"):
    default_ode_settings("bfloat16")
  np.testing.assert_allclose(time_grid(20), np.arange(20) / 19, rtol=1e-6)


# ---------------------------------------------------------------------------------- the networks

def torch_resblock_count(cin, cout, mode):
  """Parameters of the reference's ResBlock: two GroupNorms, conv1/resample, 3×3 conv2."""
  if mode == "down":  # 3×3 and 1×1 stride-2 convs without bias
    resample = 9 * cin * cout + cin * cout
  else:  # two ConvTranspose2d(k=2) with bias
    resample = 2 * (4 * cin * cout + cout)
  return 2 * cin + 2 * cout + resample + 9 * cout * cout


def linear_count(i, o):
  return i * o + o


@pytest.mark.parametrize("cfg, expected", [
    (OdeVideoConfig.variant_a(),
     dict(encoder=sum(torch_resblock_count(i, o, "down") for i, o in
                      ((1, 16), (16, 32), (32, 64), (64, 64)))
          + linear_count(1024, 256) + linear_count(256, 128),
          ode=linear_count(128, 256) + linear_count(256, 256) + linear_count(256, 128),
          decoder=linear_count(128, 256) + linear_count(256, 1024)
          + sum(torch_resblock_count(i, o, "up") for i, o in
                ((64, 64), (64, 32), (32, 16), (16, 1))))),
    (OdeVideoConfig.variant_b(),
     dict(encoder=sum(torch_resblock_count(i, o, "down") for i, o in
                      ((1, 8), (8, 16), (16, 32), (32, 32)))
          + linear_count(512 + 128, 128) + linear_count(128, 2 * 64),
          ode=linear_count(64, 128) + linear_count(128, 128) + linear_count(128, 64),
          decoder=linear_count(64, 128) + linear_count(128, 512)
          + sum(torch_resblock_count(i, o, "up") for i, o in
                ((32, 32), (32, 16), (16, 8), (8, 1))))),
])
def test_parameter_counts_match_the_reference_networks(cfg, expected):
  shapes = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
  counts = {name: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))
            for name, tree in shapes.items()}
  assert counts == expected


def test_init_params_follow_the_modules_initialisers(params):
  p = init_params(CFG_B, jax.random.key(1))
  x = jnp.zeros((1, 1, 32, 32, 1))
  flax_init = jax.eval_shape(lambda k: networks.RnnEncoder(
      CFG_B.enc_channels, CFG_B.rnn_hidden, CFG_B.latent_dim).init(k, x)["params"],
      jax.random.key(0))
  assert jax.tree.structure(flax_init) == jax.tree.structure(p["encoder"])
  assert jax.tree.map(lambda a: a.shape, flax_init) == jax.tree.map(lambda a: a.shape,
                                                                    p["encoder"])
  rnn = p["encoder"]["rnn"]
  bound = 1 / np.sqrt(16 + 6)  # 4 channels × 2×2 features + 6 hidden
  for leaf in (rnn["kernel"], rnn["bias"]):
    assert bound * 0.7 < np.max(np.abs(leaf)) <= bound
  up = p["decoder"]["block1"]["conv1"]  # ConvTranspose 4 -> 2: PyTorch's fan_in 2·2·2
  assert up["kernel"].shape == (2, 2, 2, 4)
  assert 0.5 / np.sqrt(8) < np.max(np.abs(up["kernel"])) <= 1 / np.sqrt(8)
  np.testing.assert_array_equal(p["decoder"]["block0"]["norm1"]["scale"], 1.0)
  np.testing.assert_array_equal(p["decoder"]["block0"]["norm1"]["bias"], 0.0)
  drawn = [np.asarray(a) for a in jax.tree.leaves(p) if np.std(np.asarray(a)) > 0]
  assert len({a.ravel()[0] for a in drawn}) == len(drawn) > 30  # no two leaves share draws
  assert not np.array_equal(init_params(CFG_B, jax.random.key(2))["ode"]["fc1"]["kernel"],
                            p["ode"]["fc1"]["kernel"])


def test_encoder_ends_at_a_sixteenth_and_decoder_mirrors_it():
  cfg = OdeVideoConfig.variant_a()
  tower = networks.ConvTower(cfg.enc_channels)
  x = jnp.zeros((2, 64, 64, 1))

  def run(x):
    variables = tower.init(jax.random.key(0), x)
    return tower.apply(variables, x, capture_intermediates=True)

  out, state = jax.eval_shape(run, x)
  sizes = [state["intermediates"][f"block{i}"]["__call__"][0].shape for i in range(4)]
  assert sizes == [(2, 32, 32, 16), (2, 16, 16, 32), (2, 8, 8, 64), (2, 4, 4, 64)]
  assert out.shape == (2, 64 * 4 * 4) and cfg.bottleneck_size == 4
  half = OdeVideoConfig.variant_b(compute_dtype="bfloat16", image_size=32)
  shapes = jax.eval_shape(lambda k: init_params(half, k), jax.random.key(0))
  decoded = jax.eval_shape(lambda p, z: decode(half, p, z), shapes, jnp.zeros((2, 3, 64)))
  assert (decoded.shape, decoded.dtype) == ((2, 3, 32, 32, 1), jnp.float32)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(shapes))


def test_convolutions_follow_pytorch_semantics():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
  # Stride-2 3×3 with one pixel of padding on every side (not SAME's bottom/right only).
  conv = networks.down_conv(3, 2, 3)
  k = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
  xp = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
  want = np.array([[np.einsum("abc,abco->o", xp[2 * i:2 * i + 3, 2 * j:2 * j + 3], k)
                    for j in range(3)] for i in range(3)])
  np.testing.assert_allclose(conv.apply({"params": {"kernel": k}}, x)[0], want, rtol=1e-5,
                             atol=1e-5)
  # ConvTranspose2d(k=2, s=2): y[2i+a, 2j+b, o] = Σ_c x[i, j, c] W[c, o, a, b] + bias[o].
  kernel = rng.standard_normal((2, 2, 3, 2)).astype(np.float32)  # [kh, kw, out, in]
  bias = rng.standard_normal(3).astype(np.float32)
  torch_w = np.transpose(kernel, (3, 2, 0, 1))  # [Cin, Cout, 2, 2]
  want = np.einsum("ijc,coab->iajbo", x[0], torch_w).reshape(12, 12, 3) + bias
  got = networks.up_conv(3).apply({"params": {"kernel": kernel, "bias": bias}}, x)
  np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)
  # Feature maps flatten in PyTorch's (C, h, w) order, and unflatten back.
  flat = np.asarray(networks.flatten_channel_major(x))
  np.testing.assert_array_equal(flat[0], np.transpose(x[0], (2, 0, 1)).ravel())
  np.testing.assert_array_equal(networks.unflatten_channel_major(flat, 2, 6), x)


def test_decoder_output_is_in_range_and_shaped(params):
  p = params["a"]
  # A large bias on the last block's shortcut drives the pre-tanh output to ~±10.
  last = p["decoder"]["block3"]
  for bias in (10.0, -10.0):
    shifted = {**p, "decoder": {**p["decoder"], "block3": {
        **last, "shortcut": {**last["shortcut"], "bias": jnp.full((1,), bias)}}}}
    z = np.random.default_rng(3).standard_normal((2, 6, 3)).astype(np.float32)
    x = decode(CFG_A, shifted, z)
    assert x.shape == (2, 6, 32, 32, 1) and x.dtype == jnp.float32
    x = np.asarray(x)
    assert np.max(np.abs(x)) <= 1.0 and np.min(x * np.sign(bias)) > 0.99


def test_variant_b_encoder_reads_the_frames_backwards(params):
  p, video = params["b"], frames(8)  # the shapes of the variant B loss test: one compile
  tower = networks.ConvTower(CFG_B.enc_channels)
  feat = jax.jit(tower.apply)({"params": p["encoder"]["features"]}, video.reshape(8, 32, 32, 1))
  feat = np.asarray(feat, np.float64).reshape(2, 4, -1)
  kernel, bias = (np.asarray(p["encoder"]["rnn"][n], np.float64) for n in ("kernel", "bias"))
  w_out, b_out = (np.asarray(p["encoder"]["h2o"][n], np.float64) for n in ("kernel", "bias"))

  def posterior(order):
    h = np.zeros((2, CFG_B.rnn_hidden))
    for k in order:
      h = np.tanh(np.concatenate([feat[:, k], h], axis=1) @ kernel + bias)
    out = h @ w_out + b_out
    return out[:, :3], out[:, 3:]

  enc = encode(CFG_B, p, video)  # key None: z0 is the mean
  mean, logvar = posterior([3, 2, 1, 0])
  np.testing.assert_allclose(enc.mean, mean, atol=1e-5)
  np.testing.assert_allclose(enc.logvar, logvar, atol=1e-5)
  np.testing.assert_array_equal(enc.z0, enc.mean)
  assert np.max(np.abs(posterior([0, 1, 2, 3])[0] - mean)) > 1e-3  # the order matters


def test_variant_a_encodes_frame_zero_alone(params):
  video = frames(7)  # the shapes of the variant A loss test: one compile
  per_frame = encode_frames(CFG_A, params["a"], video)
  enc = encode(CFG_A, params["a"], video)
  assert per_frame.shape == (2, 4, 3) and enc.logvar is None
  np.testing.assert_array_equal(enc.z0, enc.mean)
  np.testing.assert_allclose(enc.z0, per_frame[:, 0], atol=1e-6)
  # Each frame is encoded on its own: reversing the frames reverses the encodings.
  np.testing.assert_allclose(encode_frames(CFG_A, params["a"], video[:, ::-1]),
                             per_frame[:, ::-1], atol=1e-6)
  np.testing.assert_array_equal(encode(CFG_A, params["a"], video.at[:, 1:].set(0.0)).z0, enc.z0)
  with pytest.raises(ValueError, match="encode_frames is variant A's"):
    encode_frames(CFG_B, params["b"], video)


def test_latent_trajectory_matches_the_matrix_exponential(params):
  times = np.array([0.1, 0.25, 0.7, 1.3], np.float32)  # irregular, starting away from 0
  z0 = jnp.asarray([[0.8, -1.1, 0.4], [-0.5, 0.3, 1.2]], jnp.float32)
  z, num_evals = latent_trajectory(CFG_A, params["a"], z0, times, SETTINGS)
  want = expm_path(z0, times)
  np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-4)
  assert np.max(np.abs(want - expm_path(z0, np.concatenate([[0.0], times])[:-1]))) > 0.05
  assert int(num_evals) > 1 and (int(num_evals) - 1) % 6 == 0  # dopri5: 1 + 6 per step
  one, evals = latent_trajectory(CFG_A, params["a"], z0, times[:1], SETTINGS)
  np.testing.assert_array_equal(one[:, 0], z0)
  assert int(evals) == 0
  with pytest.raises(ValueError, match="strictly increasing"):
    latent_trajectory(CFG_A, params["a"], z0, times[::-1], SETTINGS)


def test_kl_closed_form_against_quadrature():
  mean = np.array([[0.0, 1.3, -0.7], [0.4, 0.0, 2.0]])
  logvar = np.array([[0.0, -1.2, 0.8], [0.3, -2.5, 0.0]])
  def kl_1d(m, lv):
    q = scipy.stats.norm(m, np.exp(0.5 * lv))
    f = lambda x: q.pdf(x) * (q.logpdf(x) - scipy.stats.norm.logpdf(x))
    return scipy.integrate.quad(f, -30, 30, points=[m], limit=200)[0]
  want = [sum(kl_1d(m, lv) for m, lv in zip(mr, lr)) for mr, lr in zip(mean, logvar)]
  got = kl_standard_normal(jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32))
  assert got.shape == (2,)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert float(kl_standard_normal(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0


# ------------------------------------------------------------------------------------ the losses

def gaussian_nll_np(x, mean, sigma=0.3):
  x, mean = np.asarray(x, np.float64), np.asarray(mean, np.float64)
  per = (x - mean) ** 2 / (2 * sigma ** 2) + 0.5 * np.log(2 * np.pi * sigma ** 2)
  return per.reshape(len(x), -1).sum(axis=1)


def test_variant_a_loss_by_hand(params):
  p, video, times = params["a"], frames(7), time_grid(4)  # t = 0, 1/3, 2/3, 1
  loss, metrics = make_loss_fn(CFG_A, times, SETTINGS)(p, video, None)
  targets = np.asarray(encode_frames(CFG_A, p, video), np.float64)
  z = expm_path(targets[:, 0], times)  # z(t_k) from z0 = E(x_0)
  decoded = np.asarray(decode(CFG_A, p, jnp.asarray(z, jnp.float32)), np.float64)
  nll_pixels, nll_latent = gaussian_nll_np(video, decoded), gaussian_nll_np(targets, z)
  np.testing.assert_allclose(metrics["nll_latent"], nll_latent.mean(), atol=2e-3)
  np.testing.assert_allclose(metrics["nll_pixels"], nll_pixels.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss, (nll_pixels + nll_latent).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["pixel_mse"], np.mean((np.asarray(video) - decoded) ** 2),
                             rtol=1e-4)
  assert metrics["loss"] == loss and all(v.dtype == jnp.float32 for v in metrics.values())
  assert metrics["num_evals"] > 1
  bare, _ = make_loss_fn(CFG_A, times, SETTINGS, include_constants=False)(p, video, None)
  np.testing.assert_allclose(loss - bare, (4 * 32 * 32 + 4 * 3) * SIGMA_CONST, rtol=1e-4)
  with pytest.raises(ValueError, match="batch has 3 frames"):
    make_loss_fn(CFG_A, times, SETTINGS)(p, video[:, :3], None)


def test_variant_b_loss_by_hand(params):
  p, video, times, key = params["b"], frames(8), time_grid(4), jax.random.key(9)
  loss, metrics = make_loss_fn(CFG_B, times, SETTINGS)(p, video, key)
  enc = encode(CFG_B, p, video, key)  # conditions on the frames it reconstructs
  z = expm_path(enc.z0, times)
  decoded = np.asarray(decode(CFG_B, p, jnp.asarray(z, jnp.float32)), np.float64)
  mean, logvar = np.asarray(enc.mean, np.float64), np.asarray(enc.logvar, np.float64)
  kl = 0.5 * np.sum(np.exp(logvar) + mean ** 2 - 1 - logvar, axis=1)
  nll = gaussian_nll_np(video, decoded)
  np.testing.assert_allclose(metrics["kl"], kl.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["nll_pixels"], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss, (nll + 0.5 * kl).mean(), rtol=1e-5)  # kl_weight 0.5
  np.testing.assert_allclose(metrics["posterior_std"], np.exp(0.5 * logvar).mean(), rtol=1e-5)
  eps = (enc.z0 - enc.mean) / jnp.exp(0.5 * enc.logvar)  # z0 = mean + exp(½ logvar)·ε
  np.testing.assert_allclose(eps, jax.random.normal(key, (2, 3)), atol=1e-5)
  other, _ = make_loss_fn(CFG_B, times, SETTINGS)(p, video, jax.random.key(10))
  assert abs(float(other) - float(loss)) > 1e-3  # ε is drawn from the key


# ----------------------------------------------------------------- compiled: one trace per shape

def test_train_step_compiles_once_and_reaches_every_network():
  params = init_params(CFG_B, jax.random.key(2))
  loss_fn = make_loss_fn(CFG_B, time_grid(6)[:4], SETTINGS._replace(rtol=1e-3, atol=1e-4))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, batch, key):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
    return loss, metrics, grads

  first = step(params, frames(11), jax.random.key(0))
  second = step(params, frames(12), jax.random.key(1))
  assert float(first[0]) != float(second[0])
  for name in ("encoder", "ode", "decoder"):
    grads = [np.asarray(g) for g in jax.tree.leaves(second[2][name])]
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert sum(float(np.sum(g ** 2)) for g in grads) > 0, name
  assert set(second[1]) == {"loss", "nll_pixels", "pixel_mse", "num_evals", "kl",
                            "posterior_std"}


def test_predict_compiles_once_and_returns_frames_in_time_order(params):
  p = params["a"]
  # 4 given frames, 2 extrapolated, irregular times (the shapes of the tests above: encode
  # [2, 4] and decode [2, 6] are compiled already).
  times = jnp.asarray([0.0, 0.15, 0.4, 0.5, 0.9, 1.2], jnp.float32)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(params, given, times):
    return predict(CFG_A, params, given, times, SETTINGS)

  given = frames(7)
  out = np.asarray(run(p, given, times))
  z0 = encode(CFG_A, p, given).z0
  want = decode(CFG_A, p, jnp.asarray(expm_path(z0, np.asarray(times)), jnp.float32))
  assert out.shape == (2, 6, 32, 32, 1)
  np.testing.assert_allclose(out, want, atol=2e-4)  # frame k is the latent at times[k]
  assert np.max(np.abs(out[:, 1:] - out[:, :1])) > 1e-2  # the frames do move
  # Variant A reads the first given frame only; a new first frame changes every frame.
  np.testing.assert_array_equal(run(p, given.at[:, 1:].set(0.5), times), out)
  changed = np.asarray(run(p, given.at[:, 0].set(0.5), times))
  assert np.min(np.max(np.abs(changed - out), axis=(2, 3, 4))) > 1e-4
