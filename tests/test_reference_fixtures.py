"""Our network, loss and samplers reproduce the official implementation's outputs (float32)."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import FIXTURES, ROOT, reference_files
from mcvd_jax.core.modes import run_mode
from mcvd_jax.video_diffusion.family import FAMILY as MCVD
from mcvd_jax.convert import check
from mcvd_jax.convert.export import load_converted, load_reference, save_converted
from mcvd_jax.convert.reference import ConversionError, convert_state_dict
from mcvd_jax.models import make_denoise_fn, reference_model_config

CASES = reference_files()


@pytest.mark.skipif(not CASES, reason=f"reference fixtures not found at {FIXTURES}")
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fixture_reproduced(path):
  results = check.check_file(str(path), log=lambda line: None)
  judged = [r for r in results if r.judged]
  assert judged, "nothing was compared"
  for r in judged:
    assert r.max_rel <= check.RELATIVE_TOLERANCE, r.line()
    if r.name == "forward.out":  # one float32 forward pass lands near 1e-6, far inside 1e-5
      assert r.max_rel < 1e-5, r.line()


def test_param_count_matches_reference(fixture_dir):
  for name in ("concat_small", "spatin_small", "concat_future_small"):
    meta = json.loads((fixture_dir / f"{name}.json").read_text())
    cfg, params, _ = load_reference(str(fixture_dir / f"{name}.npz"))
    count = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    assert count == meta["param_count"], name


def test_check_cli_passes_and_fails(fixture_dir, tmp_path):
  src = fixture_dir / "concat_small.npz"
  ok = subprocess.run([sys.executable, "-m", "mcvd_jax.convert", f"--reference={src}", "--check"],
                      cwd=ROOT, capture_output=True, text=True)
  assert ok.returncode == 0, ok.stdout + ok.stderr
  assert "forward.out" in ok.stdout and "max_rel" in ok.stdout
  # A copy whose stored output is off by 1e-3 relative must be rejected.
  arrays = dict(np.load(src))
  arrays["out"] = arrays["out"] * (1 + 1e-3)
  bad = tmp_path / "tampered.npz"
  np.savez(bad, **arrays)
  shutil.copy(src.with_suffix(".json"), bad.with_suffix(".json"))
  fail = subprocess.run([sys.executable, "-m", "mcvd_jax.convert", f"--reference={bad}", "--check"],
                        cwd=ROOT, capture_output=True, text=True)
  assert fail.returncode == 1, fail.stdout + fail.stderr
  assert "FAIL" in fail.stdout


def test_convert_writes_orbax_checkpoint(fixture_dir, tmp_path):
  path = fixture_dir / "spatin_small.npz"
  cfg, params, schedule_fields = load_reference(str(path))
  save_converted(str(tmp_path / "ckpt"), cfg, params, schedule_fields)
  cfg2, params2, fields2 = load_converted(str(tmp_path / "ckpt"))
  assert cfg2 == cfg and fields2["sigma_dist"] == "linear"
  arrays = np.load(path)
  out = jax.jit(make_denoise_fn(cfg2))(params2, check.to_nhwc(arrays["x"]), arrays["labels"],
                              check.to_nhwc(arrays["cond"]))
  np.testing.assert_allclose(check.to_nchw(out), arrays["out"], rtol=0, atol=5e-5)


def test_conversion_errors_name_the_problem(fixture_dir):
  arrays = np.load(fixture_dir / "concat_small.npz")
  meta = json.loads((fixture_dir / "concat_small.json").read_text())
  state = {k[len("param/"):]: arrays[k] for k in arrays.files if k.startswith("param/")}
  cfg = reference_model_config(meta["model_fields"])
  missing = dict(state)
  del missing["unet.all_modules.6.NIN_1.W"]
  with pytest.raises(ConversionError, match="unet.all_modules.6.NIN_1.W"):
    convert_state_dict(missing, cfg)
  extra = dict(state, **{"unet.all_modules.99.weight": np.zeros(3)})
  with pytest.raises(ConversionError, match="not used"):
    convert_state_dict(extra, cfg)
  # The same weights against a config with another width: a shape error naming the leaf.
  wider = dict(meta["model_fields"], model=dict(meta["model_fields"]["model"], ngf=64))
  with pytest.raises(ConversionError):
    convert_state_dict(state, reference_model_config(wider))
  # DataParallel's "module." prefix is accepted.
  prefixed = {"module." + k: v for k, v in state.items()}
  assert jax.tree_util.tree_structure(convert_state_dict(prefixed, cfg)) == \
      jax.tree_util.tree_structure(convert_state_dict(state, cfg))


def test_corrupt_reference_file(tmp_path, fixture_dir):
  bad = tmp_path / "broken.npz"
  bad.write_bytes(b"not a zip file")
  shutil.copy(fixture_dir / "concat_small.json", tmp_path / "broken.json")
  with pytest.raises(ConversionError, match="broken.npz"):
    check.check_file(str(bad))
  with pytest.raises(FileNotFoundError, match="nothing.pt"):
    load_reference(str(tmp_path / "nothing.pt"))
  with pytest.raises(FileNotFoundError, match="config"):
    (tmp_path / "present.pt").write_bytes(b"")
    load_reference(str(tmp_path / "present.pt"))


def test_torch_checkpoint_conversion(fixture_dir, tmp_path):
  """A checkpoint in the reference's format ([model, optimizer, epoch, step, EMA shadow] with
  DataParallel prefixes, config.yml beside it) converts to the same network."""
  torch = pytest.importorskip("torch", reason="the .pt path needs torch (optional dependency)")
  yaml = pytest.importorskip("yaml")
  arrays = np.load(fixture_dir / "concat_small.npz")
  meta = json.loads((fixture_dir / "concat_small.json").read_text())
  state = {"module." + k[len("param/"):]: torch.from_numpy(np.array(arrays[k]))
           for k in arrays.files if k.startswith("param/")}
  ema = {k: v.clone() for k, v in state.items() if not k.endswith(("betas", "alphas", "alphas_prev", "sigmas"))}
  model_weights = {k: v * 0 for k, v in state.items()}  # tells the two apart
  torch.save([model_weights, {}, 1, 100, ema], tmp_path / "checkpoint_100.pt")
  (tmp_path / "config.yml").write_text(yaml.safe_dump(meta["config"]))
  out = subprocess.run([sys.executable, "-m", "mcvd_jax.convert",
                        f"--reference={tmp_path / 'checkpoint_100.pt'}", f"--out={tmp_path / 'ckpt'}"],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  cfg, params, _ = load_converted(str(tmp_path / "ckpt"))
  got = jax.jit(make_denoise_fn(cfg))(params, check.to_nhwc(arrays["x"]), arrays["labels"],
                                      check.to_nhwc(arrays["cond"]))
  np.testing.assert_allclose(check.to_nchw(got), arrays["out"], rtol=0, atol=5e-5)


def test_sampling_a_converted_checkpoint_uses_its_schedule(fixture_dir, tmp_path):
  from configs import smmnist
  from mcvd_jax.convert.export import diffusion_overrides
  cfg, params, fields = load_reference(str(fixture_dir / "concat_small.npz"))
  assert diffusion_overrides(dict(fields, sigma_dist="cosine"))["schedule"] == "cosine"
  save_converted(str(tmp_path / "ckpt"), cfg, params, dict(fields, num_classes=7))
  config = smmnist.get_config()
  config.sampling.task, config.sampling.subsample = "prediction", 2
  config.sampling.batch_size, config.sampling.num_frames = 1, 3
  run_mode(MCVD, config, str(tmp_path / "work"), "sample", checkpoint=str(tmp_path / "ckpt"))
  meta = json.loads((tmp_path / "work" / "samples_prediction.json").read_text())
  # range(0, 7, 3) = 3 steps over the checkpoint's 7 levels; the config's 1000 would give 2.
  assert meta["steps"] == 3
  video = np.load(tmp_path / "work" / "samples_prediction.npz")["videos"]
  assert video.shape == (1, 2 + 3, 32, 32, 1)  # the checkpoint's network: 2 past frames, 32x32
