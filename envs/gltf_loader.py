"""Scenes from files: any GLB/glTF (or OBJ/PLY) with an optional semantic annotation, Habitat's stage
conventions (up axis, scale) respected, and GLB objects placed into a scene as goals."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .primitives import PLAIN, VERTEX_FLOATS, MeshBuilder, transform_tris
from .scene_model import MAX_TEXTURE_SIZE, Scene, SceneError, SceneObject
from .textures import to_layer


def _basis_to_habitat(up, front) -> np.ndarray:
    """3x3 rotation taking a file's (up, front) axes to Habitat's (+y up, -z front)."""
    u = np.asarray(up, dtype=np.float64)
    f = np.asarray(front, dtype=np.float64)
    u /= np.linalg.norm(u)
    f /= np.linalg.norm(f)
    r = np.cross(f, u)  # right = front x up
    src = np.stack([r, u, -f], axis=1)  # columns: file vectors of habitat x, y, z
    return src.T


def load_mesh_vertices(path: str | os.PathLike, up=(0, 1, 0), front=(0, 0, -1), scale: float = 1.0):
    """Read a GLB/glTF/OBJ/PLY file into soup vertices (N, VERTEX_FLOATS), {node name: [(start, stop)]}
    row ranges (a node's own and its children's), and the (L, S, S, 4) uint8 texture images its
    vertices' layers index (layer 0 white).

    The base colour follows glTF: vertex colour x material ``baseColorFactor`` (in the colour columns)
    times the ``baseColorTexture`` sampled at ``TEXCOORD_0`` (a texture layer and the UV columns).
    """
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise SceneError(f"scene file not found: {str(p)!r}")
    try:
        loaded = trimesh.load(str(p), force="scene")
    except Exception as exc:  # trimesh raises many types on corrupt files
        raise SceneError(f"could not read scene file {str(p)!r}: {type(exc).__name__}: {exc}") from exc
    R = _basis_to_habitat(up, front) * float(scale)
    chunks, ranges, start = [], {}, 0
    parents = loaded.graph.transforms.parents
    images: list = []
    image_ids: dict[str, int] = {}
    for node_name in loaded.graph.nodes_geometry:
        T, geom_name = loaded.graph[node_name]
        mesh = loaded.geometry.get(geom_name)
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
        verts = trimesh.transformations.transform_points(mesh.vertices, T) @ R.T
        faces = np.asarray(mesh.faces)
        colors, uv, image = _mesh_base_color(mesh)
        layer = 0
        if image is not None:  # one layer per distinct image (materials often share one)
            key = hashlib.sha1(np.ascontiguousarray(np.asarray(image)).tobytes()).hexdigest()
            if key not in image_ids:
                images.append(image)
                image_ids[key] = len(images)
            layer = image_ids[key]
        mb = MeshBuilder()
        mb.add_triangles(verts[faces], colors[faces].reshape(-1, 3), PLAIN, 0,
                         uvs=uv[faces].reshape(-1, 2), layer=layer)  # fmt: skip
        chunk = mb.finish()
        chunks.append(chunk)
        # a glTF node with several primitives loads as child nodes: the rows count for every ancestor
        names, parent = {node_name, geom_name}, parents.get(node_name)
        while parent is not None and parent != loaded.graph.base_frame:
            names.add(parent)
            parent = parents.get(parent)
        for name in names:
            ranges.setdefault(name, []).append((start, start + len(chunk)))
        start += len(chunk)
    if not chunks:
        raise SceneError(f"scene file {str(p)!r} has no triangle meshes")
    size = min(MAX_TEXTURE_SIZE, max([1, *(max(np.asarray(im).shape[:2]) for im in images)]))
    textures = np.stack([np.full((size, size, 4), 255, np.uint8), *(to_layer(im, size) for im in images)])
    return np.concatenate(chunks), ranges, textures


def _mesh_base_color(mesh):
    """Per-vertex base colour (V, 3) in [0, 1], UVs (V, 2) in glTF's convention (v down, 0 = first image
    row) and the base-colour image (PIL) or None: vertex colour x baseColorFactor, as glTF defines it."""
    n = len(mesh.vertices)
    color, uv, image = np.ones((n, 3)), np.zeros((n, 2)), None
    vis = mesh.visual
    try:
        if vis.kind == "texture" or hasattr(vis, "material"):
            mat = vis.material
            factor = getattr(mat, "baseColorFactor", None)
            if factor is None and getattr(mat, "diffuse", None) is not None:  # OBJ/MTL materials
                factor = mat.diffuse
            if factor is not None:
                f = np.asarray(factor, dtype=np.float64)[:3]
                color = color * (f / 255.0 if f.max() > 1.0 else f)
            image = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
            vc = getattr(vis, "vertex_attributes", {}).get("color")
            if vc is not None and len(vc) == n:
                vc = np.asarray(vc, dtype=np.float64)[:, :3]
                color = color * (vc / 255.0 if vc.max() > 1.0 else vc)
            if image is not None and vis.uv is not None and len(vis.uv) == n:
                uv = np.asarray(vis.uv, dtype=np.float64).copy()
                uv[:, 1] = 1.0 - uv[:, 1]  # trimesh flips glTF's v on load; undo it
            else:
                image = None
        else:
            color = np.asarray(vis.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    except Exception:  # untextured / odd material: mid grey
        color, image = np.full((n, 3), 0.7), None
    return color, uv, image


def load_gltf_scene(
    path: str | os.PathLike,
    annotation: str | os.PathLike | dict | None = None,
    up=None,
    front=None,
    scale: float = 1.0,
) -> Scene:
    """Load any GLB/glTF scene (Habitat stage conventions respected) with an optional semantic annotation.

    ``up``/``front`` default to a ``<stem>.stage_config.json`` beside the file when there is one (Habitat
    writes ``"up": [0,0,1]`` for z-up stages), else glTF's own +y up / -z front. ``annotation`` is a JSON
    path or dict ``{"objects": [{"instance_id", "category", "node"?, "center"?, "extents"?}]}``: objects
    with ``node`` take that node's triangles; others take the triangles whose centroid lies in their box.
    Without it ``<file>.semantic.json`` beside the scene is used when present.
    """
    p = Path(path)
    if not p.is_file():
        raise SceneError(f"scene file not found: {str(p)!r}")
    cfg_path = p.with_name(p.name.split(".")[0] + ".stage_config.json")
    scale_src = "scale="
    if (up is None or front is None) and cfg_path.is_file():
        cfg = _read_json(cfg_path, "stage config")
        up = cfg.get("up", up)
        front = cfg.get("front", front)
        if "scale" in cfg:
            sc = np.asarray(cfg["scale"], dtype=object).reshape(-1)
            if not sc.size or not all(_is_number(v) and math.isfinite(v) and v > 0 for v in sc):
                raise SceneError(
                    f"{cfg_path}: 'scale' must be a positive number or [x, y, z]; got {cfg['scale']!r}"
                )
            scale, scale_src = float(np.mean(sc.astype(float))), f"'scale' in {cfg_path.name}"
    if not (_is_number(scale) and math.isfinite(scale) and scale > 0):
        raise SceneError(f"scale must be a positive number; got {scale!r}")
    up = (0, 1, 0) if up is None else up
    front = (0, 0, -1) if front is None else front
    verts, ranges, textures = load_mesh_vertices(p, up, front, scale)
    _check_extent(verts, p, scale, scale_src)
    if annotation is None and p.with_suffix(".semantic.json").is_file():
        annotation = p.with_suffix(".semantic.json")
    objects: list[SceneObject] = []
    sky = False
    if annotation is not None:
        src = "annotation" if isinstance(annotation, dict) else f"annotation {str(annotation)!r}"
        ann = annotation if isinstance(annotation, dict) else _read_json(annotation)
        entries = _check_annotation(ann, src)
        sky = bool(ann.get("sky", False))
        for i, entry in enumerate(entries):
            iid, cat = int(entry["instance_id"]), str(entry["category"])
            node = entry.get("node")
            if node is not None and node not in ranges:
                known = sorted(ranges)
                raise SceneError(
                    f"{src}: objects[{i}] ({cat!r}) names node {node!r}, which {p.name} does not have; its "
                    f"nodes: {known[:12]}{' ...' if len(known) > 12 else ''}. Fix the name, or give "
                    "'center' and 'extents' instead"
                )
            if node is not None:
                for a, b in ranges[node]:
                    verts[a:b, 10] = iid
            else:
                c, e = np.asarray(entry["center"], float), np.asarray(entry["extents"], float)
                cent = verts[:, :3].reshape(-1, 3, 3).mean(axis=1)
                inside = np.all(np.abs(cent - c) <= e / 2 + 1e-6, axis=1)
                verts.reshape(-1, 3, VERTEX_FLOATS)[inside, :, 10] = iid
            sel = verts[:, 10] == iid
            if not sel.any():
                raise SceneError(
                    f"{src}: objects[{i}] ({cat!r}, instance {iid}) selects no triangles of {p.name}: its "
                    "box holds no triangle centroid (check units and up axis), or another object took them"
                )
            lo, hi = (
                verts[sel, :3].min(axis=0).astype(np.float64),
                verts[sel, :3].max(axis=0).astype(np.float64),
            )
            objects.append(SceneObject(iid, cat, (lo + hi) / 2, hi - lo, node))
    floor_y = estimate_floor_y(verts)
    return Scene(p.stem, verts, objects, floor_y, "gltf", None, [], sky=sky, textures=textures)


def _read_json(path, what: str = "annotation") -> dict:
    p = Path(path)
    if not p.is_file():
        raise SceneError(f"{what} file not found: {str(p)!r}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SceneError(f"{what} file {str(p)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SceneError(f"{what} file {str(p)!r} must hold a JSON object, not a {type(data).__name__}")
    return data


#: the largest horizontal size (m) a loaded scene may have: the nav grid (5 cm cells) of a larger one
#: needs gigabytes; a GLB in centimetres, or a wrong ``scale``, is what produces such sizes
MAX_SCENE_EXTENT = 200.0


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _check_extent(verts: np.ndarray, path: Path, scale: float, scale_src: str) -> None:
    """Refuse a scene too large to navigate, with a hint about units (the size guard)."""
    xyz = verts[:, :3]
    size = xyz.max(axis=0) - xyz.min(axis=0)
    if not np.isfinite(size).all():
        raise SceneError(f"scene file {str(path)!r} has non-finite vertex positions")
    wide = float(max(size[0], size[2]))
    if wide > MAX_SCENE_EXTENT:
        raise SceneError(
            f"scene {path.name} is {size[0]:.0f} m x {size[2]:.0f} m after scale {scale:g} ({scale_src}): "
            f"larger than the {MAX_SCENE_EXTENT:.0f} m the navigation grid supports. glTF is in metres; a "
            "file in centimetres needs scale 0.01, and a 'scale' in a stage_config.json multiplies the "
            "file's units: check both"
        )


_ANN_HELP = (
    'expected {"objects": [{"instance_id": int >= 1, "category": str, "node": str} or '
    '{"instance_id", "category", "center": [x, y, z], "extents": [x, y, z]}], "sky"?: bool}'
)


def _check_annotation(ann: Any, src: str) -> list[dict]:
    """The annotation's object entries, or a SceneError that names the bad entry and field."""
    if not isinstance(ann, dict):
        raise SceneError(f"{src} must be a JSON object; {_ANN_HELP}")
    objs = ann.get("objects", [])
    if not isinstance(objs, list):
        raise SceneError(f"{src}: 'objects' must be a list; {_ANN_HELP}")
    if "sky" in ann and not isinstance(ann["sky"], bool | np.bool_):
        raise SceneError(f"{src}: 'sky' must be true or false; got {ann['sky']!r}")
    seen: set[int] = set()
    for i, e in enumerate(objs):
        where = f"{src}: objects[{i}]"
        if not isinstance(e, dict):
            raise SceneError(f"{where} must be an object; {_ANN_HELP}")
        iid = e.get("instance_id")
        if not (isinstance(iid, int | np.integer) and not isinstance(iid, bool)) or iid < 1 or iid > 2**24:
            raise SceneError(
                f"{where}: 'instance_id' must be an integer >= 1 (0 is the background); got {iid!r}"
            )
        if iid in seen:
            raise SceneError(f"{where}: instance_id {iid} is used twice; each object needs its own")
        seen.add(int(iid))
        if not isinstance(e.get("category"), str) or not e["category"].strip():
            raise SceneError(f"{where}: 'category' must be a non-empty string; got {e.get('category')!r}")
        node = e.get("node")
        if node is not None and (not isinstance(node, str) or not node):
            raise SceneError(f"{where}: 'node' must be a node name (string); got {node!r}")
        if node is None:
            for k in ("center", "extents"):
                v = e.get(k)
                ok = isinstance(v, list | tuple) and len(v) == 3 and all(_is_number(x) for x in v)
                if not ok or not np.isfinite(np.asarray(v, float)).all():
                    raise SceneError(f"{where}: needs 'node', or '{k}' as 3 finite numbers; got {v!r}")
            if min(e["extents"]) < 0:
                raise SceneError(f"{where}: 'extents' must be >= 0; got {e['extents']!r}")
    return objs


def estimate_floor_y(verts: np.ndarray) -> float:
    """Height of the floor: the level holding the most upward-facing triangle area (ties -> lowest)."""
    tri = verts[:, :3].reshape(-1, 3, 3).astype(np.float64)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(n, axis=1)
    up = n[:, 1] / np.maximum(2 * area, 1e-12)
    sel = (up > 0.9) & (area > 0)
    if not sel.any():
        return float(tri[:, :, 1].min())
    ys = tri[sel, :, 1].mean(axis=1)
    bins = np.round(ys / 0.05).astype(np.int64)
    uniq, inv = np.unique(bins, return_inverse=True)
    w = np.bincount(inv, weights=area[sel])
    best = w.max()
    cand = uniq[w >= 0.5 * best]
    level = cand.min()
    return float(np.median(ys[bins == level]))


def place_object_file(
    scene: Scene,
    path: str | os.PathLike,
    category: str,
    position,
    yaw: float = 0.0,
    up=(0, 1, 0),
    front=(0, 0, -1),
) -> SceneObject:
    """Put a GLB object (e.g. Habitat's ``chair.glb``) on the floor at ``position`` (x, z) as a goal."""
    verts, _, textures = load_mesh_vertices(path, up, front)
    pts = verts[:, :3].astype(np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    off = np.array([-(lo[0] + hi[0]) / 2, -lo[1], -(lo[2] + hi[2]) / 2])
    tris = (pts + off).reshape(-1, 3, 3)
    tris = transform_tris(tris, yaw, (position[0], scene.floor_y, position[1]))
    verts[:, :3] = tris.reshape(-1, 3)
    nrm = (
        verts[:, 3:6].astype(np.float64)
        @ np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]]).T
    )
    verts[:, 3:6] = nrm
    return scene.add_object(verts, category, node=Path(path).stem, textures=textures)
