"""Fréchet Inception Distance (Heusel et al. 2017) for image models, as `pytorch-fid` computes it.

Images are resized to 299 x 299 (bilinear, half-pixel centres, no antialiasing), mapped from [0, 1]
to [-1, 1], grey repeated to RGB; the features are Inception-v3's 2048-d average pool
(`inception.InceptionV3`), and the distance is the Fréchet distance of Gaussians fitted to the two
feature sets (`fvd.frechet_distance`, float64).

Weights: no package ships them, and nothing is downloaded. FID needs pytorch-fid's converted TF
weights, `pt_inception-2015-12-05-6726825d.pth` (a PyTorch state dict; published with pytorch-fid's
GitHub releases, github.com/mseitzer/pytorch-fid). Convert it once, where PyTorch is installed:

  python -m mcvd_jax.metrics.fid --convert_from=pt_inception-2015-12-05-6726825d.pth \\
      --out=inception_fid.npz

The .npz holds every array of that state dict under its original name (e.g.
'Mixed_5b.branch1x1.conv.weight', OIHW; '...bn.weight', 'bn.bias', 'bn.running_mean',
'bn.running_var'), float32; FID ignores the 'fc.*' classifier (inception_score.py reads it).
Then:

  python -m mcvd_jax.metrics.fid --weights=inception_fid.npz --real=real.npy --fake=fake.npy
  python -m mcvd_jax.evaluate ... --metrics=fid,... --fid_weights=inception_fid.npz

Image sets: uint8 [N, H, W, C] or float [0, 1], C in {1, 3}; .npy/.npz files or folders of images.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mcvd_jax.metrics import inception
from mcvd_jax.metrics.fvd import check_pixel_values, frechet_distance
from mcvd_jax.metrics.sharded import map_batches

RESOLUTION = 299
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


def missing_weights_error(path: str | None = None) -> FileNotFoundError:
  """The error for an FID asked for without (readable) Inception weights."""
  where = f"{path} does not exist. " if path else ""
  return FileNotFoundError(
      f"{where}FID needs Inception-v3 weights, which no package ships and nothing downloads: get "
      f"pytorch-fid's {WEIGHTS_NAME} (github.com/mseitzer/pytorch-fid releases), convert it with "
      f"`python -m mcvd_jax.metrics.fid --convert_from={WEIGHTS_NAME} --out=inception_fid.npz` "
      f"(needs PyTorch), and pass the .npz: --fid_weights=inception_fid.npz (python -m "
      f"mcvd_jax.evaluate), --weights=... (python -m mcvd_jax.metrics.fid) or "
      f"fid.load_inception_params(path)")


def load_inception_params(path: str | None) -> dict:
  """{'params', 'batch_stats'} for inception.InceptionV3 from an .npz of pytorch-fid's state dict
  (see the module docstring). FileNotFoundError saying how to get one when `path` is None or
  missing; ValueError naming the file when it is unreadable or does not fit the network."""
  if not path or not os.path.exists(path):
    raise missing_weights_error(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      state = {name: data[name] for name in data.files}
  except Exception as e:  # a truncated or foreign file raises many kinds of errors
    raise ValueError(f"{path}: cannot read it as an .npz of Inception weights ({e}); convert the "
                     f"PyTorch file again with --convert_from") from e
  return jax.device_put(inception.variables_from_state_dict(state, path))


def save_inception_params(variables: dict, path: str) -> None:
  """Writes variables in the .npz format `load_inception_params` reads (pytorch-fid names)."""
  np.savez(path, **inception.state_dict_names(variables))


def convert_pytorch_weights(pth_path: str, out_path: str) -> None:
  """pytorch-fid's .pth state dict -> the .npz `load_inception_params` reads (needs PyTorch)."""
  try:
    import torch
  except ImportError as e:
    raise ImportError("converting the .pth needs PyTorch (pip install torch); the converted .npz "
                      "is then used without it") from e
  if not os.path.exists(pth_path):
    raise FileNotFoundError(f"{pth_path} does not exist (pytorch-fid's {WEIGHTS_NAME})")
  try:
    state = torch.load(pth_path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise ValueError(f"{pth_path}: cannot read it as a PyTorch state dict ({e})") from e
  arrays = {name: value.detach().cpu().numpy() for name, value in state.items()
            if hasattr(value, "detach")}
  inception.variables_from_state_dict(arrays, pth_path)  # refuse to write a file that won't load
  np.savez(out_path, **{k: v.astype(np.float32) if v.dtype.kind == "f" else v
                        for k, v in arrays.items()})


# ------------------------------------------------------------------------------------------------
# Features and the distance


def check_images(images: np.ndarray, name: str) -> None:
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"{name}: images must be [N, H, W, C] with C = 1 or 3 (channels-last), got "
                     f"shape {images.shape}")
  if images.shape[0] < 2:
    raise ValueError(f"{name}: FID fits a Gaussian to 2048-d features and needs at least 2 "
                     f"images (thousands for a meaningful value; 50,000 is usual), got "
                     f"{images.shape[0]}")
  check_pixel_values(images, name, "images")


def preprocess_for_inception(images: jax.Array, size: int = RESOLUTION) -> jax.Array:
  """[N, H, W, C] uint8 or [0, 1] floats -> [N, size, size, 3] float32 in [-1, 1]."""
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
  n, h, w, c = x.shape
  if (h, w) != (size, size):
    x = jax.image.resize(x, (n, size, size, c), method="linear", antialias=False)
  x = 2.0 * x - 1.0
  return jnp.repeat(x, 3, axis=-1) if c == 1 else x


@functools.lru_cache(maxsize=None)
def _features_fn(size: int):
  def features(variables: dict, images: jax.Array) -> jax.Array:
    with jax.default_matmul_precision("float32"):  # a metric: no TF32/bf16 passes
      return inception.InceptionV3().apply(variables, preprocess_for_inception(images, size))
  return features


def inception_features(variables: dict, images, batch_size: int = 50, mesh: Mesh | None = None,
                       size: int = RESOLUTION) -> np.ndarray:
  """[N, H, W, C] images -> [N, 2048] float32 pool features, `batch_size` images per call sharded
  over the devices of `mesh`. `size` other than 299 is for tests only (>= 75)."""
  images = np.asarray(images)
  check_images(images, "inception_features")
  if size < inception.MIN_SIZE:
    raise ValueError(f"size={size}: Inception-v3 needs inputs of at least {inception.MIN_SIZE}")
  return map_batches(_features_fn(size), variables, [images], batch_size=batch_size, mesh=mesh)


def fid(variables: dict, real_images, fake_images, batch_size: int = 50,
        mesh: Mesh | None = None, size: int = RESOLUTION) -> float:
  """FID between two image sets (see `inception_features` for the arguments)."""
  real = inception_features(variables, real_images, batch_size, mesh, size)
  fake = inception_features(variables, fake_images, batch_size, mesh, size)
  return frechet_distance(fake, real)


# ------------------------------------------------------------------------------------------------
# Command line


def main(argv):
  import sys

  from absl import flags
  del argv
  f = flags.FLAGS
  try:
    if f.convert_from:
      if not f.out:
        raise ValueError("--convert_from needs --out=PATH.npz")
      convert_pytorch_weights(f.convert_from, f.out)
      print(f"wrote {f.out}")
      return
    if not (f.real and f.fake):
      raise ValueError("give --real and --fake image sets (or --convert_from to convert weights)")
    from mcvd_jax.metrics.video_files import load_images
    variables = load_inception_params(f.weights)
    value = fid(variables, load_images(f.real), load_images(f.fake), f.batch_size)
  except (ValueError, FileNotFoundError, ImportError) as e:
    sys.exit(f"error: {e}")
  print(f"FID {value:.4f}")


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("real", None, "Real images: .npy/.npz [N, H, W, C] or a folder of images.")
  flags.DEFINE_string("fake", None, "Generated images, same formats.")
  flags.DEFINE_string("weights", None, "Inception weights (.npz converted with --convert_from).")
  flags.DEFINE_string("convert_from", None, f"pytorch-fid's {WEIGHTS_NAME} to convert.")
  flags.DEFINE_string("out", None, "Where --convert_from writes the .npz.")
  flags.DEFINE_integer("batch_size", 50, "Images per network call (sharded over devices).")
  app.run(main)
