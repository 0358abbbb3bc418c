"""Pictures of posed bodies: skeletons (and meshes where the model has one) as uint8 images / PNG.

Orthographic views of metres-and-+Y-up bodies: "front" looks along -Z (the body faces +Z, its
left side on the picture's right), "side" along -X. Every panel of one picture shares one scale
and centre, so sizes and motions compare across samples. Host-side numpy + Pillow: call it on
arrays fetched from the device, e.g. for a sample mode's media.
"""

from __future__ import annotations

import colorsys
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

_VIEWS = {"front": (0, 1, 2, 1.0), "side": (2, 1, 0, -1.0)}  # screen x axis, y axis, depth, x sign
_BACKGROUND = (255, 255, 255)


def _project(points: np.ndarray, view: str) -> tuple[np.ndarray, np.ndarray]:
  """[N, 3] world -> ([N, 2] screen (x right, y up), [N] depth, larger = nearer the viewer)."""
  if view not in _VIEWS:
    raise ValueError(f"view must be one of {sorted(_VIEWS)}, got {view!r}")
  sx, sy, d, sign = _VIEWS[view]
  return np.stack([sign * points[:, sx], points[:, sy]], -1), sign * points[:, d]


def _bone_colours(num_joints: int) -> list[tuple[int, int, int]]:
  return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(j / max(num_joints, 1), 0.8, 0.75))
          for j in range(num_joints)]


def draw_panel(joints: np.ndarray, parents: Sequence[int], *, view: str, size: int,
               centre: np.ndarray, scale: float, vertices: np.ndarray | None = None,
               faces: np.ndarray | None = None) -> Image.Image:
  """One view of one body: joints [J, 3], optional mesh vertices [V, 3] and faces [F, 3]."""
  image = Image.new("RGB", (size, size), _BACKGROUND)
  draw = ImageDraw.Draw(image)

  def to_pixels(xy):
    return np.stack([size / 2 + (xy[:, 0] - centre[0]) * scale,
                     size / 2 - (xy[:, 1] - centre[1]) * scale], -1)

  if vertices is not None and faces is not None:
    xy, depth = _project(vertices, view)
    px = to_pixels(xy)
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    toward_viewer = np.zeros(3)
    toward_viewer[_VIEWS[view][2]] = _VIEWS[view][3]
    light = 0.35 + 0.6 * np.abs(normals @ toward_viewer)  # two-sided: no culling surprises
    for f in np.argsort(depth[faces].mean(1)):  # painter's algorithm: far faces first
      shade = int(255 * light[f])
      draw.polygon([tuple(p) for p in px[faces[f]]], fill=(shade, int(shade * 0.85), int(shade * 0.75)))

  xy, _ = _project(joints, view)
  px = to_pixels(xy)
  radius = max(1.5, size / 120)
  for j, (p, colour) in enumerate(zip(parents, _bone_colours(len(parents)))):
    if p >= 0:
      draw.line([tuple(px[p]), tuple(px[j])], fill=colour, width=max(1, size // 96))
  for x, y in px:
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(20, 20, 20))
  return image


def render_poses(joints: np.ndarray, parents: Sequence[int], *, vertices: np.ndarray | None = None,
                 faces: np.ndarray | None = None, views: Sequence[str] = ("front", "side"),
                 size: int = 256, margin: float = 0.08) -> np.ndarray:
  """A picture of B posed bodies: joints [B, J, 3] (+ vertices [B, V, 3], faces [F, 3]) ->
  uint8 [len(views) * size, B * size, 3]; one row per view, one column per body."""
  joints = np.asarray(joints, np.float64)
  if joints.ndim != 3 or joints.shape[1] != len(parents) or joints.shape[2] != 3:
    raise ValueError(f"joints must be [B, {len(parents)}, 3], got {joints.shape}")
  vertices = None if vertices is None else np.asarray(vertices, np.float64)
  rows = []
  for view in views:
    points = joints if vertices is None else np.concatenate([joints, vertices], 1)
    xy = np.concatenate([_project(p, view)[0] for p in points])
    lo, hi = xy.min(0), xy.max(0)
    scale = size * (1 - 2 * margin) / max(float((hi - lo).max()), 1e-6)
    panels = [draw_panel(joints[b], parents, view=view, size=size, centre=(lo + hi) / 2,
                         scale=scale, vertices=None if vertices is None else vertices[b],
                         faces=faces) for b in range(len(joints))]
    rows.append(np.concatenate([np.asarray(p) for p in panels], axis=1))
  return np.concatenate(rows, axis=0)


def write_poses_png(path: str | pathlib.Path, joints: np.ndarray, parents: Sequence[int],
                    **kwargs) -> pathlib.Path:
  """render_poses, written as a PNG file; returns its path."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(render_poses(joints, parents, **kwargs)).save(path)
  return path
