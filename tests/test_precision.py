"""model.dtype=bfloat16 as mixed precision and model.remat, on one update of a tiny MCVD model.

Every variant runs the real training update (core.train_step around the masked MCVD loss) once
from the same float32 parameters (random ones, tiny_params), batch and key. The optimizer is
momentum SGD with lr 1, no clipping and no warm-up, so after one update its momentum trace is
exactly the gradient and the update is exactly -gradient: the tests compare gradients and updated
parameters with one compile per variant (compiles dominate the run time on CPU).
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mcvd_jax.core.config_base import optim_section
from mcvd_jax.core.optim import make_optimizer
from mcvd_jax.core.train_step import create_train_state, make_train_step
from mcvd_jax.diffusion.losses import make_loss_fn
from mcvd_jax.diffusion.schedules import linear_schedule
from mcvd_jax.models import UNetConfig, init_params, make_denoise_fn
from mcvd_jax.models.kernels import multi_head_attention
from mcvd_jax.models.kernel_choice import library_attention
from mcvd_jax.video_diffusion.tasks import Masking
from mcvd_jax.video_diffusion.training import make_masked_loss
from tiny_params import random_params

# One resolution (a second one would double the compile time; test_kernel_choice.py runs the
# FIR resampling inside the UNet), the middle attention block, dropout on.
TINY = dict(image_size=8, channels=1, num_frames=2, num_frames_cond=1, ngf=8, ch_mult=(1,),
            num_res_blocks=1, attn_resolutions=(), n_head_channels=8, dropout=0.1)
BATCH = 4
# XLA's CPU backend compiles these train steps faster without its LLVM optimisation passes
# (compiles dominate these tests); every variant compared is compiled the same way.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
VIDEOS = np.random.default_rng(0).integers(0, 256, (1, BATCH, 3, 8, 8, 1), dtype=np.uint8)


@functools.lru_cache(maxsize=None)
def one_update(dtype: str = "float32", remat: str = "none"):
  """(state before, state after, metrics) of one update of the variant, from float32 params."""
  cfg = UNetConfig(**TINY, dtype=dtype, remat=remat)
  tx = make_optimizer(optim_section(optimizer="sgd", lr=1.0, warmup=0, grad_clip=0.0,
                                    momentum=0.9))
  masking = Masking(1, 2, 0, prob_mask_cond=0.5)
  loss_fn = make_masked_loss(make_loss_fn(make_denoise_fn(cfg), schedule=linear_schedule()),
                             masking)
  step = make_train_step(loss_fn, tx, ema_rate=0.9, train_key=jax.random.key(3))
  state = create_train_state(random_params(UNetConfig(**TINY)), tx)
  new_state, metrics = jax.jit(step, compiler_options=FAST_COMPILE)(state, VIDEOS)
  return state, new_state, metrics


def gradient(state):
  """The gradient of the update that produced `state`: its momentum trace after one update."""
  is_trace = lambda s: isinstance(s, optax.TraceState)
  [trace] = [s.trace for s in jax.tree.leaves(state.opt_state, is_leaf=is_trace) if is_trace(s)]
  return trace


def relative_error(got, want) -> float:
  """||got - want|| / ||want|| over all leaves of two trees of the same structure."""
  pairs = zip(jax.tree.leaves(got), jax.tree.leaves(want))
  diff = sum(float(jnp.sum((a - b) ** 2)) for a, b in pairs)
  norm = sum(float(jnp.sum(b**2)) for b in jax.tree.leaves(want))
  return (diff / norm) ** 0.5


def test_sgd_update_is_minus_the_gradient():
  """The premise of this file: the update equals -trace, the trace is the gradient."""
  state, new_state, _ = one_update()
  grads = gradient(new_state)
  moved = jax.tree.map(lambda a, b: a - b, state.params, new_state.params)
  assert relative_error(moved, grads) < 1e-6
  assert sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)) > 0


def test_bfloat16_update_is_close_to_float32_and_keeps_float32_state():
  """bfloat16 compute changes the masked MCVD loss by < 0.2% and the gradient (= the SGD update)
  by < 5% (relative L2 norm over all parameters).

  Why these tolerances: bfloat16 keeps 8 significant bits (relative rounding 2^-9, about 0.2%, per
  operation). The loss is a float32 mean of float32 squared errors of the float32-cast output, so
  only the network's forward rounding enters it, partly averaging out. The gradient goes back
  through ~20 bfloat16 convolutions and matmuls, each rounding activations and cotangents.
  Measured here: loss 0.03% and gradient 1.3% apart; the bounds leave a ~4-8x margin for other
  seeds and XLA versions. (That the softmax runs in float32 is checked directly below.)
  """
  state, f32_state, f32_metrics = one_update("float32")
  _, bf16_state, bf16_metrics = one_update("bfloat16")
  loss32, loss16 = float(f32_metrics["loss"][0]), float(bf16_metrics["loss"][0])
  assert bf16_metrics["loss"].dtype == jnp.float32
  assert abs(loss16 - loss32) < 2e-3 * abs(loss32), (loss16, loss32)
  update32 = jax.tree.map(lambda a, b: a - b, f32_state.params, state.params)
  update16 = jax.tree.map(lambda a, b: a - b, bf16_state.params, state.params)
  assert relative_error(update16, update32) < 0.05
  # Parameters, optimizer state and EMA stay float32 under bfloat16 compute.
  for tree in (bf16_state.params, bf16_state.opt_state, bf16_state.ema_params):
    floats = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)


@pytest.mark.parametrize("remat", ["blocks", "dots_saveable"])
def test_remat_gives_the_same_gradients_and_parameter_tree(remat):
  """Rematerialisation recomputes the same float32 operations (dropout masks included, from the
  same rng): the gradients agree to float32 rounding (XLA may fuse the recomputed blocks
  differently, so bit equality is not promised) and the parameter tree is unchanged."""
  _, plain, plain_metrics = one_update("float32", "none")
  _, rematted, remat_metrics = one_update("float32", remat)
  assert jax.tree.structure(rematted.params) == jax.tree.structure(plain.params)
  np.testing.assert_allclose(remat_metrics["loss"], plain_metrics["loss"], rtol=1e-6)
  assert relative_error(gradient(rematted), gradient(plain)) < 1e-5


def test_remat_parameter_names_do_not_change():
  """Converted checkpoints load into a rematted network: init gives the same paths and shapes."""
  def shapes(cfg):
    tree = jax.eval_shape(lambda key: init_params(cfg, key), jax.random.key(0))
    return {jax.tree_util.keystr(path): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}

  plain = shapes(UNetConfig(**TINY))
  assert "['mid_attn']['q']['kernel']" in plain
  for remat in ("blocks", "dots_with_no_batch_dims_saveable"):
    assert shapes(UNetConfig(**TINY, remat=remat)) == plain


@pytest.mark.parametrize("attention", [multi_head_attention, library_attention])
def test_attention_logits_and_softmax_are_float32_for_bfloat16_inputs(attention):
  """The exp and max of the softmax run in float32 with bfloat16 q, k, v; the output is bfloat16
  and matches the float32 computation on the same (rounded) inputs to bfloat16 rounding."""
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 64, 2, 8)).astype(jnp.bfloat16)
             for i in range(3))
  jaxpr = jax.make_jaxpr(lambda q, k, v: attention(q, k, v, 8**-0.5))(q, k, v)

  def eqns(jaxpr):  # every equation, inside custom_vjp / jit sub-jaxprs too
    yield from jaxpr.eqns
    for sub in jax.extend.core.subjaxprs(jaxpr):
      yield from eqns(sub)

  softmax_ops = [e for e in eqns(jaxpr.jaxpr) if e.primitive.name in ("exp", "reduce_max")]
  assert softmax_ops and all(e.outvars[0].aval.dtype == jnp.float32 for e in softmax_ops)
  out = attention(q, k, v, 8**-0.5)
  assert out.dtype == jnp.bfloat16
  want = attention(*(a.astype(jnp.float32) for a in (q, k, v)), 8**-0.5)
  np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=2e-2, rtol=2e-2)


def test_model_dtype_and_remat_are_validated():
  with pytest.raises(ValueError, match=r"model\.dtype='float16'.*float32.*bfloat16"):
    UNetConfig(**TINY, dtype="float16")
  with pytest.raises(ValueError, match=r"model\.dtype='float64'"):
    UNetConfig(**TINY, dtype="float64")
  with pytest.raises(ValueError, match=r"model\.remat='dots'.*'blocks'.*'dots_saveable'"):
    UNetConfig(**TINY, remat="dots")
  assert UNetConfig(**TINY, remat="nothing_saveable").remat_policy is (
      jax.checkpoint_policies.nothing_saveable)
  assert UNetConfig(**TINY, remat="blocks").remat_policy is None
