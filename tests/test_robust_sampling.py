"""Samplers robust at the noisiest labels, and the v / x0 parametrisations.

The perturbed oracle models what a real network does: it knows roughly where the content is (a
Gaussian posterior around the true frames, width S) but takes whatever structure the noisy input
carries as signal, and its ε is off by a small known error. Its x̂0 at the noisiest labels is then
clipped garbage, as a trained network's is. The reference's DDIM step feeds the raw ε̂ (error
included) into the next state at full weight; the robust step re-derives ε̂ from the clipped x̂0.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcvd_jax.diffusion import parametrisation as par
from mcvd_jax.diffusion.losses import make_loss_fn
from mcvd_jax.diffusion.samplers import make_sampler
from mcvd_jax.diffusion.schedules import make_schedule
from mcvd_jax.diffusion.weighting import make_loss_reduction, snr
from mcvd_jax.video_diffusion import signal
from mcvd_jax.diffusion.factory import Diffusion
from mcvd_jax.diffusion.noise import isotropic
from mcvd_jax.video_diffusion.tasks import Masking

SHAPE = (8, 8, 8, 4)
RNG = np.random.default_rng(0)
X0 = jnp.asarray(np.where(RNG.random(SHAPE) < 0.2, 1.0, -1.0), jnp.float32)  # digits on black
ERROR_PATTERN = jnp.asarray(RNG.standard_normal(SHAPE), jnp.float32)
X_INIT = jax.random.normal(jax.random.key(1), SHAPE)
PRIOR_WIDTH = 0.3
SCHEDULES = {name: make_schedule(name, 1000) for name in ("cosine", "linear")}


def perturbed_oracle(schedule, eps_error):
  """ε of the posterior mean of x0 under the prior N(X0, S²), plus eps_error × a fixed pattern."""
  def network(params, x, labels, cond, key, cond_mask=None):
    a = schedule.alphas[labels].reshape(-1, 1, 1, 1)
    gain = jnp.sqrt(a) * PRIOR_WIDTH**2 / (a * PRIOR_WIDTH**2 + 1 - a)
    x0_hat = X0 + gain * (x - jnp.sqrt(a) * X0)
    return (x - jnp.sqrt(a) * x0_hat) / jnp.sqrt(1 - a) + eps_error * ERROR_PATTERN
  return network


def sample_error(schedule_name, kind, update, eps_error):
  """Mean |sample − X0| in [0, 1] pixel units."""
  schedule = SCHEDULES[schedule_name]
  sampler = make_sampler(perturbed_oracle(schedule, eps_error), kind=kind, schedule=schedule,
                         subsample=50 if kind == "ddim" else 100, update=update)
  out = jax.jit(sampler.sample)(None, X_INIT, None, jax.random.key(2))
  return float(jnp.mean(jnp.abs(out - X0))) / 2


@pytest.mark.parametrize("schedule_name", ["cosine", "linear"])
def test_ddim_stays_near_the_data_with_a_perturbed_oracle(schedule_name):
  exact = sample_error(schedule_name, "ddim", "robust", 0.0)
  assert exact < 0.07  # the prior's own spread: the oracle's sample is near the data
  bound = exact + 0.03
  assert sample_error(schedule_name, "ddim", "robust", 0.1) < bound
  # The reference's step exceeds the bound: the error injected at the noisy labels persists.
  assert sample_error(schedule_name, "ddim", "reference", 0.1) > bound + 0.03


def test_ddpm_stays_near_the_data_with_either_update():
  exact = sample_error("cosine", "ddpm", "robust", 0.0)
  for update in ("robust", "reference"):
    assert sample_error("cosine", "ddpm", update, 0.1) < exact + 0.03


def test_updates_agree_where_nothing_is_clipped():
  schedule = SCHEDULES["linear"]
  net = perturbed_oracle(schedule, 0.1)
  runs = [make_sampler(net, kind="ddim", schedule=schedule, subsample=20, clip_before=False,
                       denoise=False, update=update).sample(None, X_INIT, None)
          for update in ("robust", "reference")]
  np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)


def test_robust_final_step_returns_the_clean_estimate():
  """With the exact ε, the robust sampler returns x0 itself; the reference's final step returns
  √ᾱ_last x0 + (rounding), visibly shrunk at DDIM-10."""
  schedule = SCHEDULES["linear"]
  exact = lambda p, x, labels, c, k, cond_mask=None: (  # noqa: E731
      (x - jnp.sqrt(schedule.alphas[labels]).reshape(-1, 1, 1, 1) * X0)
      / jnp.sqrt(1 - schedule.alphas[labels]).reshape(-1, 1, 1, 1))
  robust = make_sampler(exact, kind="ddim", schedule=schedule, subsample=10).sample(
      None, X_INIT, None)
  reference = make_sampler(exact, kind="ddim", schedule=schedule, subsample=10,
                           update="reference").sample(None, X_INIT, None)
  np.testing.assert_allclose(robust, X0, atol=1e-4)
  assert float(jnp.max(jnp.abs(reference - X0))) > 0.01


@pytest.mark.parametrize("prediction", par.PREDICTIONS)
def test_parametrisations_invert_each_other(prediction):
  x0 = jnp.asarray(RNG.uniform(-1, 1, (4, 3)), jnp.float32)
  z = jnp.asarray(RNG.standard_normal((4, 3)), jnp.float32)
  a = jnp.asarray([1e-4, 0.1, 0.5, 0.999], jnp.float32)
  x_t = jnp.sqrt(a)[:, None] * x0 + jnp.sqrt(1 - a)[:, None] * z
  output = z if prediction == "eps" else par.regression_target(prediction, x0, z, a)
  x0_hat, z_hat = par.clean_and_noise(prediction, output, x_t, a)
  tol = 1e-2 if prediction == "eps" else 1e-5  # ε's x̂0 amplifies rounding by 1/√ᾱ = 100
  np.testing.assert_allclose(x0_hat, x0, atol=tol)
  np.testing.assert_allclose(z_hat, z, atol=1e-3 if prediction == "x0" else 1e-5)


def test_v_target_is_the_formula():
  x0, z, a = jnp.float32(0.5), jnp.float32(-1.0), jnp.float32(0.36)
  assert float(par.regression_target("v", x0, z, a)) == pytest.approx(0.6 * -1.0 - 0.8 * 0.5)


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_ddim_with_an_oracle_returns_x0(prediction):
  schedule = SCHEDULES["cosine"]

  def oracle(params, x, labels, cond, key, cond_mask=None):
    a = schedule.alphas[labels].reshape(-1, 1, 1, 1)
    z = (x - jnp.sqrt(a) * X0) / jnp.sqrt(1 - a)
    return X0 if prediction == "x0" else par.regression_target("v", X0, z, a)

  # The reference's final step returns √ᾱ_last x0 (0.996 x0 here): exact up to that shrink.
  for update, tol in (("robust", 1e-4), ("reference", 5e-3)):
    out = make_sampler(oracle, kind="ddim", schedule=schedule, subsample=20,
                       prediction=prediction, update=update).sample(None, X_INIT, None)
    np.testing.assert_allclose(out, X0, atol=tol)


def test_v_and_x0_losses_regress_their_targets():
  schedule = SCHEDULES["linear"]
  x0 = X0[:2]
  noise = jnp.asarray(RNG.standard_normal(x0.shape), jnp.float32)
  labels = jnp.asarray([3, 700])
  zero = lambda p, x, labels, cond, key, cond_mask=None: jnp.zeros_like(x)  # noqa: E731
  a = schedule.alphas[labels].reshape(-1, 1, 1, 1)
  for prediction, target in (("v", jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * x0), ("x0", x0)):
    loss, aux = make_loss_fn(zero, schedule=schedule, prediction=prediction)(
        None, x0, None, jax.random.key(0), labels=labels, noise=noise)
    want = 0.5 * jnp.sum(jnp.square(target).reshape(2, -1), axis=1)
    np.testing.assert_allclose(aux.loss_per_sample, want, rtol=1e-5)
    assert float(loss) == pytest.approx(float(jnp.mean(want)), rel=1e-5)


def test_min_snr_weights_per_parametrisation_are_hang_et_al():
  schedule = SCHEDULES["linear"]
  ratio = snr(schedule)
  labels = jnp.asarray([0, 400, 999])
  want = {"eps": np.minimum(ratio, 5) / ratio, "v": np.minimum(ratio, 5) / (ratio + 1),
          "x0": np.minimum(ratio, 5)}
  for prediction, table in want.items():
    reduce = make_loss_reduction("min_snr", 5.0, schedule=schedule, prediction=prediction)
    got = [float(reduce(3 * jnp.eye(3)[i], labels)) for i in range(3)]  # w[label i]
    np.testing.assert_allclose(got, table[np.asarray(labels)], rtol=1e-5)


@pytest.mark.parametrize("prediction, kind, target, words", [
    ("w", "ddpm", "white", "unknown"), ("v", "smld", "white", "kind='ddpm'"),
    ("x0", "ddpm", "correlated", "target='white'")])
def test_bad_predictions_are_named(prediction, kind, target, words):
  with pytest.raises(ValueError, match=f"diffusion.prediction.*{words}"):
    par.check_prediction(prediction, kind, target)


def test_unknown_update_is_named():
  with pytest.raises(ValueError, match="sampling.update_rule='fast'"):
    make_sampler(lambda *a, **k: a[1], kind="ddim", schedule=SCHEDULES["linear"], update="fast")


def test_learning_signal_reads_a_v_network():
  """An oracle v network that knows the current frames scores zero in the learning signal."""
  diffusion = Diffusion("ddpm", isotropic(), schedule=SCHEDULES["linear"], prediction="v")
  masking = Masking(num_frames_cond=2, num_frames=2, num_frames_future=0)
  images = RNG.integers(0, 256, (4, 1, 8, 8, 1), dtype=np.uint8)
  clips = np.repeat(images, 4, axis=1)
  x0 = jnp.asarray(np.repeat(images, 2, axis=1)[..., 0].transpose(0, 2, 3, 1), jnp.float32)
  x0 = x0 / 127.5 - 1

  def oracle(params, x, labels, cond, key, cond_mask=None):
    a = diffusion.schedule.alphas[labels].reshape(-1, 1, 1, 1)
    z = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
    return par.regression_target("v", x0, z, a)

  values = signal.make_learning_signal(oracle, diffusion, masking, clips)({"ema": {}})
  for _, level in signal.signal_labels(diffusion):
    assert float(values[f"x0_mae/ema_true_past@{level:.2f}"]) < 1e-3
