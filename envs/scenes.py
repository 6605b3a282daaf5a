"""Scenes: procedural apartments / park / street from a seed, and any GLB/glTF file with annotations.

A ``Scene`` is a triangle soup (one vertex buffer: position, normal, colour, texture pattern, instance
id) plus the list of semantic objects. Why a soup: the GL renderer draws it in one call, the navigation
grid samples it directly, and GLB export writes it back out per object.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .categories import CATEGORY_BUILDERS, INDOOR_CATEGORIES, OUTDOOR_CATEGORIES
from .primitives import (
    ASPHALT,
    BRICK,
    CARPET,
    CHECKER,
    COL_LAYER,
    COL_UV,
    GRASS,
    LEAVES,
    PLAIN,
    PLANKS,
    SMALL_TILES,
    STRIPES,
    VERTEX_FLOATS,
    MeshBuilder,
    box_tris,
    transform_tris,
)
from .textures import procedural_atlas, to_layer

CATEGORIES: tuple[str, ...] = tuple(CATEGORY_BUILDERS)
#: categories never placed in ``train`` scenes (held out for the ``val_categories`` split)
VAL_CATEGORIES: tuple[str, ...] = ("guitar", "piano", "washing_machine", "standing_fan")
TRAIN_CATEGORIES: tuple[str, ...] = tuple(c for c in INDOOR_CATEGORIES if c not in VAL_CATEGORIES)

ROOM_TYPES: dict[str, tuple[str, ...]] = {
    "living_room": ("sofa", "armchair", "tv_monitor", "table", "potted_plant", "floor_lamp", "bookshelf",
                    "piano", "guitar", "fireplace", "standing_fan", "vase"),
    "bedroom": ("bed", "wardrobe", "nightstand", "desk", "chair", "floor_lamp", "mirror", "guitar",
                "coat_rack"),
    "kitchen": ("refrigerator", "stove", "sink", "table", "chair", "trash_can", "stool", "cabinet",
                "washing_machine"),
    "bathroom": ("toilet", "sink", "bathtub", "trash_can", "washing_machine", "mirror", "cabinet"),
    "office": ("desk", "chair", "bookshelf", "cabinet", "potted_plant", "trash_can", "floor_lamp",
               "coat_rack",
               "standing_fan"),
    "dining_room": ("table", "chair", "cabinet", "vase", "potted_plant", "stool", "piano"),
}  # fmt: skip

TRAIN, VAL_SCENES, VAL_CATEGORIES_SPLIT, OUTDOOR = "train", "val_scenes", "val_categories", "outdoor"


@dataclass(frozen=True)
class SplitSpec:
    """Which scenes a split draws: ``n_scenes`` seeds from ``seed_offset`` of a kind and category set."""

    kind: str
    seed_offset: int
    n_scenes: int
    categories: tuple[str, ...]


SPLITS: dict[str, SplitSpec] = {
    TRAIN: SplitSpec("indoor", 0, 10_000, TRAIN_CATEGORIES),
    VAL_SCENES: SplitSpec("indoor", 1_000_000, 100, TRAIN_CATEGORIES),
    VAL_CATEGORIES_SPLIT: SplitSpec("indoor", 2_000_000, 100, INDOOR_CATEGORIES),
    OUTDOOR: SplitSpec("outdoor", 3_000_000, 100, OUTDOOR_CATEGORIES),
}

WALL_HEIGHT = 2.6
WALL_T = 0.05  # each room's wall is this thick (two rooms back to back make a 0.1 m wall)
DOOR_W, DOOR_H = 1.0, 2.1


class SceneError(ValueError):
    """A scene file is missing, unreadable or has no usable geometry."""


@dataclass
class SceneObject:
    """A semantic object: instance id (>0), category, and world axis-aligned box (centre, full extents)."""

    instance_id: int
    category: str
    center: np.ndarray
    extents: np.ndarray
    node: str | None = None

    @property
    def box_min(self) -> np.ndarray:
        return self.center - self.extents / 2.0

    @property
    def box_max(self) -> np.ndarray:
        return self.center + self.extents / 2.0

    def to_json(self) -> dict:
        return {
            "instance_id": int(self.instance_id),
            "category": self.category,
            "center": [float(v) for v in self.center],
            "extents": [float(v) for v in self.extents],
            "node": self.node,
        }


@dataclass
class Scene:
    """Renderable, navigable scene in Habitat conventions (metres, +y up)."""

    name: str
    vertices: np.ndarray  # (N, 11) float32 triangle soup, see primitives.VERTEX_FLOATS
    objects: list[SceneObject]
    floor_y: float = 0.0
    kind: str = "indoor"
    seed: int | None = None
    #: indoor rooms: {"type", "bounds": [x0, z0, x1, z1], "height", "doors": [{"to": room index, "box":
    #: [x0, y0, z0, x1, y1, z1] of the opening}]}; closed walls apart from the doors (portal culling)
    rooms: list[dict] = field(default_factory=list)
    sky: bool = False
    #: (L, S, S, 4) uint8 base-colour images indexed by the vertices' texture layer; None = the baked
    #: procedural pattern images (shared by every procedural scene, see ``textures.procedural_atlas``)
    textures: np.ndarray | None = None

    def texture_layers(self) -> np.ndarray:
        """The scene's texture images, (L, S, S, 4) uint8 (layer 0 is plain white)."""
        return procedural_atlas() if self.textures is None else self.textures

    @property
    def bounds(self) -> np.ndarray:
        """(2, 3) min/max corner of all geometry."""
        p = self.vertices[:, :3]
        return np.stack([p.min(axis=0), p.max(axis=0)]).astype(np.float64)

    @property
    def categories(self) -> list[str]:
        return sorted({o.category for o in self.objects})

    def objects_of(self, category: str) -> list[SceneObject]:
        return [o for o in self.objects if o.category == category]

    def object_by_id(self, instance_id: int) -> SceneObject:
        for o in self.objects:
            if o.instance_id == instance_id:
                return o
        raise KeyError(f"no object with instance id {instance_id} in scene {self.name!r}")

    def add_object(
        self, mesh_vertices: np.ndarray, category: str, node: str | None = None, textures=None
    ) -> SceneObject:
        """Append geometry (N, VERTEX_FLOATS) as a new semantic object; returns it (its id is the next
        free one). ``textures`` (L, S, S, 4) are the images its texture layers index; they are appended
        to the scene's (resized to its layer size) and the layers renumbered."""
        iid = max([0, *[o.instance_id for o in self.objects]]) + 1
        v = np.array(mesh_vertices, dtype=np.float32, copy=True)
        v[:, 10] = iid
        if textures is not None and len(textures) > 1:
            mine = current = self.texture_layers()
            size = min(MAX_TEXTURE_SIZE, max(mine.shape[1], np.asarray(textures[0]).shape[0]))
            if mine.shape[1] != size:
                mine = np.stack([to_layer(t, size) for t in mine])
            known = {hashlib.sha1(t.tobytes()).hexdigest(): i for i, t in enumerate(mine)}
            remap, extra = np.zeros(len(textures), np.int64), []
            for j in range(1, len(textures)):  # identical images share one layer
                t = to_layer(textures[j], size)
                key = hashlib.sha1(t.tobytes()).hexdigest()
                if key not in known:
                    known[key] = len(mine) + len(extra)
                    extra.append(t)
                remap[j] = known[key]
            v[:, COL_LAYER] = remap[v[:, COL_LAYER].astype(np.int64)]
            if extra or mine is not current:
                self.textures = np.concatenate([mine, *[t[None] for t in extra]])
        lo, hi = v[:, :3].min(axis=0).astype(np.float64), v[:, :3].max(axis=0).astype(np.float64)
        obj = SceneObject(iid, category, (lo + hi) / 2.0, hi - lo, node)
        self.vertices = np.concatenate([self.vertices, v])
        self.objects.append(obj)
        return obj

    def export_glb(self, path: str | os.PathLike, annotation_path: str | os.PathLike | None = None) -> Path:
        """Write the scene as GLB (one node per object) plus an annotation JSON.

        The annotation (default ``<path>.semantic.json``) maps instance id -> category and box and names
        each object's node, so ``load_gltf_scene`` restores the ids.
        """
        path = Path(path)
        ids = self.vertices[:, 10].astype(np.int64)
        names = {0: "structure"}
        for o in self.objects:
            names[o.instance_id] = o.node or f"obj_{o.instance_id:04d}_{o.category}"
        parts = [(names.get(int(iid), f"obj_{int(iid):04d}"), ids == iid) for iid in np.unique(ids)]
        write_glb(self, path, parts)
        ann = Path(annotation_path) if annotation_path else path.with_suffix(".semantic.json")
        objs = []
        for o in self.objects:
            d = o.to_json()
            d["node"] = names[o.instance_id]
            objs.append(d)
        meta = {"scene": self.name, "up": [0, 1, 0], "sky": self.sky, "objects": objs}
        ann.write_text(json.dumps(meta, indent=1))
        return path


def write_glb(scene: Scene, path: str | os.PathLike, parts, offset=(0.0, 0.0, 0.0)) -> Path:
    """Write chosen rows of ``scene.vertices`` as a GLB: ``parts`` is a list of (node name, row mask),
    one node each, with positions shifted by ``-offset``. Used by ``export_glb`` and the habitat-sim
    backend (stage and per-object files), so every consumer sees the same scene.

    Each part's triangles are grouped by (colour, texture layer) into one primitive per group, whose
    material is that colour as ``baseColorFactor`` times the layer's image as ``baseColorTexture``
    (PNG, repeat-wrapped, mipmapped, with the renderer's ``MIN_FILTER``): exactly the renderer's base
    colour, in a form that every glTF reader (habitat-sim included) shows. Parts with many distinct vertex
    colours (a loaded vertex-coloured scan) keep them as ``COLOR_0`` instead."""
    import cv2
    import pygltflib as g

    path = Path(path)
    off = np.asarray(offset, dtype=np.float32)
    layers = scene.texture_layers()
    blob = bytearray()
    gl = g.GLTF2(asset=g.Asset(generator="video4spatial"), scene=0, scenes=[g.Scene(nodes=[])])
    gl.samplers = [
        g.Sampler(magFilter=g.LINEAR, minFilter=g.LINEAR_MIPMAP_NEAREST, wrapS=g.REPEAT, wrapT=g.REPEAT)
    ]
    image_of: dict[int, int] = {}
    material_of: dict[tuple, int] = {}

    def view(data: bytes, target=None) -> int:
        while len(blob) % 4:
            blob.append(0)
        gl.bufferViews.append(
            g.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target)
        )
        blob.extend(data)
        return len(gl.bufferViews) - 1

    def accessor(a: np.ndarray, kind: str, minmax: bool = False, normalized: bool = False) -> int:
        ctype = g.UNSIGNED_BYTE if a.dtype == np.uint8 else g.FLOAT
        acc = g.Accessor(bufferView=view(a.tobytes(), g.ARRAY_BUFFER), componentType=ctype, count=len(a),
                         type=kind, normalized=normalized or None)  # fmt: skip
        if minmax:
            acc.min, acc.max = a.min(axis=0).tolist(), a.max(axis=0).tolist()
        gl.accessors.append(acc)
        return len(gl.accessors) - 1

    def texture(layer: int) -> int:
        if layer not in image_of:
            ok, png = cv2.imencode(".png", cv2.cvtColor(layers[layer], cv2.COLOR_RGBA2BGRA))
            assert ok
            gl.images.append(g.Image(bufferView=view(png.tobytes()), mimeType="image/png"))
            gl.textures.append(g.Texture(sampler=0, source=len(gl.images) - 1))
            image_of[layer] = len(gl.textures) - 1
        return image_of[layer]

    def material(rgb: tuple, layer: int) -> int:
        key = (rgb, layer)
        if key not in material_of:
            pbr = g.PbrMetallicRoughness(baseColorFactor=[*rgb, 1.0], metallicFactor=0.0, roughnessFactor=1.0)
            if layer > 0:
                pbr.baseColorTexture = g.TextureInfo(index=texture(layer))
            gl.materials.append(g.Material(pbrMetallicRoughness=pbr, doubleSided=True))
            material_of[key] = len(gl.materials) - 1
        return material_of[key]

    for name, rows in parts:
        v = scene.vertices[rows]
        if len(v) == 0:
            continue
        col = np.round(np.clip(v[:, 6:9], 0, 1) * 255).astype(np.int64)
        layer = v[:, COL_LAYER].astype(np.int64)
        key = (col[:, 0] << 48) | (col[:, 1] << 40) | (col[:, 2] << 32) | layer  # (r, g, b, layer) order
        # groups per triangle (its first vertex), so a triangle never straddles two primitives
        tri_key = key[0::3]
        uniq, inv = np.unique(tri_key, return_inverse=True)
        vertex_colours = len(uniq) > 256
        if vertex_colours:
            uniq, inv = np.unique(layer[0::3], return_inverse=True)
        prims = []
        for gi in range(len(uniq)):
            tri = np.nonzero(inv == gi)[0]
            idx = (tri[:, None] * 3 + np.arange(3)).reshape(-1)
            w = v[idx]
            attrs = g.Attributes(
                POSITION=accessor(np.ascontiguousarray(w[:, :3] - off, np.float32), g.VEC3, minmax=True),
                NORMAL=accessor(np.ascontiguousarray(w[:, 3:6], np.float32), g.VEC3),
                TEXCOORD_0=accessor(np.ascontiguousarray(w[:, COL_UV], np.float32), g.VEC2),
            )
            lay = int(w[0, COL_LAYER])
            if vertex_colours:
                rgba = np.concatenate([col[idx], np.full((len(idx), 1), 255)], axis=1).astype(np.uint8)
                attrs.COLOR_0 = accessor(rgba, g.VEC4, normalized=True)
                mat = material((1.0, 1.0, 1.0), lay)
            else:
                mat = material(tuple(float(c) / 255.0 for c in col[idx[0]]), lay)
            prims.append(g.Primitive(attributes=attrs, material=mat, mode=g.TRIANGLES))
        gl.meshes.append(g.Mesh(primitives=prims, name=name))
        gl.nodes.append(g.Node(mesh=len(gl.meshes) - 1, name=name))
        gl.scenes[0].nodes.append(len(gl.nodes) - 1)
    while len(blob) % 4:
        blob.append(0)
    gl.buffers = [g.Buffer(byteLength=len(blob))]
    gl.set_binary_blob(bytes(blob))
    path.parent.mkdir(parents=True, exist_ok=True)
    gl.save_binary(str(path))
    return path


# ------------------------------------------------------------------------------------------ procedural


def _place_object(builder: MeshBuilder, rng, category: str, iid: int, x: float, z: float, yaw: float):
    parts = CATEGORY_BUILDERS[category](rng)
    allv = []
    for p in parts:
        t = transform_tris(p.tris, yaw, (x, 0.0, z))
        builder.add_triangles(t, p.color, p.pattern, iid)
        allv.append(t.reshape(-1, 3))
    pts = np.concatenate(allv)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return SceneObject(iid, category, (lo + hi) / 2.0, hi - lo, f"obj_{iid:04d}_{category}")


def _footprint(category: str, rng_seed: int) -> tuple[float, float]:
    """Local footprint (width x, depth z) of a category instance built from ``rng_seed``."""
    parts = CATEGORY_BUILDERS[category](np.random.default_rng(rng_seed))
    pts = np.concatenate([p.tris.reshape(-1, 3) for p in parts])
    return float(pts[:, 0].max() - pts[:, 0].min()), float(pts[:, 2].max() - pts[:, 2].min())


_FLOORS = [(PLANKS, (0.62, 0.45, 0.3)), (CHECKER, (0.8, 0.78, 0.72)), (CARPET, (0.55, 0.5, 0.6)),
           (SMALL_TILES, (0.75, 0.8, 0.82)), (PLANKS, (0.45, 0.3, 0.2)),
           (CHECKER, (0.6, 0.62, 0.65))]  # fmt: skip
_WALLS = [(STRIPES, (0.9, 0.86, 0.75)), (STRIPES, (0.7, 0.8, 0.85)), (PLAIN, (0.92, 0.9, 0.88)),
          (STRIPES, (0.85, 0.75, 0.7)), (BRICK, (0.75, 0.55, 0.45)),
          (STRIPES, (0.75, 0.85, 0.7))]  # fmt: skip


def _room_walls(
    mb: MeshBuilder, x0, z0, x1, z1, doors: dict[str, list[tuple[float, float]]], pat, col
) -> None:
    """Walls just inside the room rectangle, with door gaps (side -> list of (start, end) along the side)."""
    sides = {
        "n": ((x0, z0), (x1, z0), (0, 1)),
        "s": ((x0, z1), (x1, z1), (0, -1)),
        "w": ((x0, z0), (x0, z1), (1, 0)),
        "e": ((x1, z0), (x1, z1), (-1, 0)),
    }
    for side, (a, b, inward) in sides.items():
        horizontal = side in ("n", "s")
        s0, s1 = (a[0], b[0]) if horizontal else (a[1], b[1])
        fixed = a[1] if horizontal else a[0]
        fixed += inward[1 if horizontal else 0] * WALL_T / 2.0
        cuts = sorted(doors.get(side, []))
        segs, cur = [], s0
        for d0, d1 in cuts:
            segs.append((cur, d0, 0.0, WALL_HEIGHT))
            segs.append((d0, d1, DOOR_H, WALL_HEIGHT))  # lintel
            cur = d1
        segs.append((cur, s1, 0.0, WALL_HEIGHT))
        for u0, u1, y0, y1 in segs:
            if u1 - u0 < 1e-3:
                continue
            cu, ln = (u0 + u1) / 2.0, u1 - u0
            if horizontal:
                t = box_tris((cu, (y0 + y1) / 2.0, fixed), (ln, y1 - y0, WALL_T))
            else:
                t = box_tris((fixed, (y0 + y1) / 2.0, cu), (WALL_T, y1 - y0, ln))
            mb.add_triangles(t, col, pat, 0)


def _make_indoor(seed: int, categories: tuple[str, ...]) -> Scene:
    rng = np.random.default_rng(seed)
    ncol, nrow = (2, 2) if rng.random() < 0.5 else (3, 2)
    widths = rng.uniform(3.2, 5.0, ncol)
    depths = rng.uniform(3.2, 4.6, nrow)
    xs = np.concatenate([[0.0], np.cumsum(widths)]) - widths.sum() / 2.0
    zs = np.concatenate([[0.0], np.cumsum(depths)]) - depths.sum() / 2.0
    types = list(ROOM_TYPES)
    room_types = [types[i] for i in rng.permutation(len(types))[: ncol * nrow]]
    # doorways: spanning tree over the room grid + a few extra connections
    cells = [(c, r) for r in range(nrow) for c in range(ncol)]
    edges = [((c, r), (c + 1, r)) for r in range(nrow) for c in range(ncol - 1)]
    edges += [((c, r), (c, r + 1)) for r in range(nrow - 1) for c in range(ncol)]
    order = rng.permutation(len(edges))
    parent = {cell: cell for cell in cells}

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    doors = []
    for i in order:
        a, b = edges[i]
        if find(a) != find(b):
            parent[find(a)] = find(b)
            doors.append((a, b))
        elif rng.random() < 0.3:
            doors.append((a, b))
    room_doors: dict[tuple[int, int], dict[str, list]] = {cell: {} for cell in cells}
    # each doorway's opening as a box through both walls, for the renderer's portal culling
    portals: dict[tuple[int, int], list[dict]] = {cell: [] for cell in cells}
    for a, b in doors:
        if a[1] == b[1]:  # east-west neighbours: door in the vertical wall between
            lo, hi = zs[a[1]], zs[a[1] + 1]
            d0 = rng.uniform(lo + 0.4, hi - 0.4 - DOOR_W)
            room_doors[a].setdefault("e", []).append((d0, d0 + DOOR_W))
            room_doors[b].setdefault("w", []).append((d0, d0 + DOOR_W))
            xw = xs[a[0] + 1]
            box = [xw - WALL_T, 0.0, d0, xw + WALL_T, DOOR_H, d0 + DOOR_W]
        else:
            lo, hi = xs[a[0]], xs[a[0] + 1]
            d0 = rng.uniform(lo + 0.4, hi - 0.4 - DOOR_W)
            room_doors[a].setdefault("s", []).append((d0, d0 + DOOR_W))
            room_doors[b].setdefault("n", []).append((d0, d0 + DOOR_W))
            zw = zs[a[1] + 1]
            box = [d0, 0.0, zw - WALL_T, d0 + DOOR_W, DOOR_H, zw + WALL_T]
        box = [float(v) for v in box]
        portals[a].append({"to": cells.index(b), "box": box})
        portals[b].append({"to": cells.index(a), "box": box})

    mb = MeshBuilder()
    objects: list[SceneObject] = []
    rooms = []
    allowed = set(categories)
    for k, (c, r) in enumerate(cells):
        x0, x1, z0, z1 = xs[c], xs[c + 1], zs[r], zs[r + 1]
        rtype = room_types[k]
        fpat, fcol = _FLOORS[int(rng.integers(len(_FLOORS)))]
        wpat, wcol = _WALLS[int(rng.integers(len(_WALLS)))]
        fcol = np.clip(np.asarray(fcol) + rng.uniform(-0.06, 0.06, 3), 0, 1)
        wcol = np.clip(np.asarray(wcol) + rng.uniform(-0.06, 0.06, 3), 0, 1)
        mb.add_triangles(
            box_tris(((x0 + x1) / 2, -0.025, (z0 + z1) / 2), (x1 - x0, 0.05, z1 - z0)), fcol, fpat, 0
        )
        mb.add_triangles(
            box_tris(((x0 + x1) / 2, WALL_HEIGHT + 0.025, (z0 + z1) / 2), (x1 - x0, 0.05, z1 - z0)),
            (0.95, 0.95, 0.93),
        )
        _room_walls(mb, x0, z0, x1, z1, room_doors[(c, r)], wpat, wcol)
        rooms.append({"type": rtype, "bounds": [float(x0), float(z0), float(x1), float(z1)],
                      "height": WALL_HEIGHT, "doors": portals[(c, r)]})  # fmt: skip
        # furniture: against walls, keep doorways and a central corridor clear
        cands = [cat for cat in ROOM_TYPES[rtype] if cat in allowed]
        if not cands:
            cands = [cat for cat in categories if cat in INDOOR_CATEGORIES] or list(categories)
        n_obj = int(rng.integers(3, 6))
        occupied: list[tuple[float, float, float, float]] = []
        for side, spans in room_doors[(c, r)].items():
            for d0, d1 in spans:
                if side in ("n", "s"):
                    zz = z0 if side == "n" else z1
                    occupied.append((d0 - 0.3, zz - 1.2, d1 + 0.3, zz + 1.2))
                else:
                    xx = x0 if side == "w" else x1
                    occupied.append((xx - 1.2, d0 - 0.3, xx + 1.2, d1 + 0.3))
        for _ in range(n_obj):
            cat = cands[int(rng.integers(len(cands)))]
            obj_seed = int(rng.integers(2**31))
            fw, fd = _footprint(cat, obj_seed)
            for _try in range(12):
                side = int(rng.integers(4))
                yaw = [0.0, math.pi, -math.pi / 2, math.pi / 2][side]  # front faces into the room
                # 0: back on north wall (faces +z), 1: south (faces -z), 2: west (faces +x), 3: east (-x)
                w_, d_ = (fw, fd) if side < 2 else (fd, fw)
                m = WALL_T + 0.02
                if side < 2:
                    x = rng.uniform(x0 + m + w_ / 2, max(x0 + m + w_ / 2, x1 - m - w_ / 2))
                    z = z0 + m + d_ / 2 if side == 0 else z1 - m - d_ / 2
                else:
                    z = rng.uniform(z0 + m + d_ / 2, max(z0 + m + d_ / 2, z1 - m - d_ / 2))
                    x = x0 + m + w_ / 2 if side == 2 else x1 - m - w_ / 2
                rect = (x - w_ / 2 - 0.05, z - d_ / 2 - 0.05, x + w_ / 2 + 0.05, z + d_ / 2 + 0.05)
                if rect[0] < x0 or rect[2] > x1 or rect[1] < z0 or rect[3] > z1:
                    continue
                if any(
                    rect[0] < o[2] and o[0] < rect[2] and rect[1] < o[3] and o[1] < rect[3] for o in occupied
                ):
                    continue
                occupied.append(rect)
                objects.append(
                    _place_object(mb, np.random.default_rng(obj_seed), cat, len(objects) + 1, x, z, yaw)
                )
                break
    return Scene(f"indoor_{seed}", mb.finish(), objects, 0.0, "indoor", seed, rooms)


def _make_outdoor(seed: int, kind: str, categories: tuple[str, ...]) -> Scene:
    rng = np.random.default_rng(seed)
    mb = MeshBuilder()
    objects: list[SceneObject] = []
    allowed = [c for c in categories if c in CATEGORY_BUILDERS]
    if kind == "park":
        sx, sz = rng.uniform(14, 20), rng.uniform(14, 20)
        mb.add_triangles(box_tris((0, -0.025, 0), (sx, 0.05, sz)), (0.3, 0.55, 0.2), GRASS, 0)
        mb.add_triangles(box_tris((0, 0.001, 0), (sx, 0.002, 2.0)), (0.65, 0.6, 0.5), ASPHALT, 0)
        mb.add_triangles(box_tris((0, 0.001, 0), (2.0, 0.002, sz)), (0.65, 0.6, 0.5), ASPHALT, 0)
        for sgn in (-1, 1):  # hedges bound the park
            mb.add_triangles(box_tris((0, 0.5, sgn * sz / 2), (sx, 1.0, 0.6)), (0.15, 0.4, 0.12), LEAVES, 0)
            mb.add_triangles(box_tris((sgn * sx / 2, 0.5, 0), (0.6, 1.0, sz)), (0.15, 0.4, 0.12), LEAVES, 0)
        pref = ["tree", "bench", "picnic_table", "street_lamp", "trash_can", "bicycle", "potted_plant"]
        hx, hz = sx / 2 - 1.5, sz / 2 - 1.5
        road = [(-1.6, -hz - 2, 1.6, hz + 2), (-hx - 2, -1.6, hx + 2, 1.6)]
    else:
        sx, sz = rng.uniform(10, 12), rng.uniform(26, 34)
        mb.add_triangles(box_tris((0, -0.025, 0), (sx, 0.05, sz)), (0.3, 0.3, 0.32), ASPHALT, 0)
        for sgn in (-1, 1):
            mb.add_triangles(
                box_tris((sgn * (sx / 2 - 1.25), 0.001, 0), (2.5, 0.002, sz)), (0.7, 0.7, 0.68), CHECKER, 0
            )
            for i in range(int(sz // 6)):  # building facades
                h = rng.uniform(5, 9)
                col = np.clip(np.asarray([0.7, 0.5, 0.4]) + rng.uniform(-0.2, 0.2, 3), 0, 1)
                zc = -sz / 2 + 3 + 6 * i
                mb.add_triangles(box_tris((sgn * (sx / 2 + 1), h / 2, zc), (2.0, h, 5.9)), col, BRICK, 0)
        for i in range(int(sz // 3)):  # lane markings
            mb.add_triangles(
                box_tris((0, 0.002, -sz / 2 + 1.5 + 3 * i), (0.15, 0.004, 1.5)), (0.95, 0.95, 0.9)
            )
        for sgn in (-1, 1):  # road end barriers
            mb.add_triangles(box_tris((0, 0.5, sgn * sz / 2), (sx, 1.0, 0.3)), (0.8, 0.8, 0.8), STRIPES, 0)
        pref = [
            "car",
            "street_lamp",
            "fire_hydrant",
            "mailbox",
            "traffic_cone",
            "bicycle",
            "bench",
            "trash_can",
        ]
        hx, hz = sx / 2 - 0.6, sz / 2 - 1.5
        road = [(-1.3, -hz - 2, 1.3, hz + 2)]
    cands = [c for c in pref if c in allowed] or allowed
    occupied = list(road)
    n_obj = int(rng.integers(8, 14))
    for _ in range(n_obj):
        cat = cands[int(rng.integers(len(cands)))]
        obj_seed = int(rng.integers(2**31))
        fw, fd = _footprint(cat, obj_seed)
        for _try in range(15):
            yaw = float(rng.choice([0.0, math.pi / 2, math.pi, -math.pi / 2]))
            w_, d_ = (fw, fd) if abs(math.sin(yaw)) < 0.5 else (fd, fw)
            x = rng.uniform(-hx + w_ / 2, hx - w_ / 2)
            z = rng.uniform(-hz + d_ / 2, hz - d_ / 2)
            rect = (x - w_ / 2 - 0.3, z - d_ / 2 - 0.3, x + w_ / 2 + 0.3, z + d_ / 2 + 0.3)
            if any(rect[0] < o[2] and o[0] < rect[2] and rect[1] < o[3] and o[1] < rect[3] for o in occupied):
                continue
            occupied.append(rect)
            objects.append(
                _place_object(mb, np.random.default_rng(obj_seed), cat, len(objects) + 1, x, z, yaw)
            )
            break
    return Scene(f"{kind}_{seed}", mb.finish(), objects, 0.0, kind, seed, [], sky=True)


def make_scene(seed: int = 0, kind: str = "indoor", categories: tuple[str, ...] | None = None) -> Scene:
    """Procedural scene, deterministic from ``seed``.

    Args:
        seed: layout / furniture seed.
        kind: ``"indoor"`` (multi-room apartment), ``"park"``, ``"street"`` or ``"outdoor"`` (park or street
            by seed parity).
        categories: object categories allowed in the scene (default: train categories indoors, outdoor set
            outdoors).
    """
    if kind == "outdoor":
        kind = "park" if seed % 2 == 0 else "street"
    if kind not in ("indoor", "park", "street"):
        raise ValueError(f"unknown scene kind {kind!r}; expected 'indoor', 'park', 'street' or 'outdoor'")
    if categories is not None:
        unknown = [c for c in categories if c not in CATEGORY_BUILDERS]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {sorted(CATEGORY_BUILDERS)}")
    if kind == "indoor":
        return _make_indoor(int(seed), tuple(categories) if categories else TRAIN_CATEGORIES)
    return _make_outdoor(int(seed), kind, tuple(categories) if categories else OUTDOOR_CATEGORIES)


def split_scene(split: str, index: int) -> Scene:
    """The ``index``-th scene (modulo the split size) of a named split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    spec = SPLITS[split]
    seed = spec.seed_offset + int(index) % spec.n_scenes
    if split == VAL_CATEGORIES_SPLIT:
        # make sure held-out categories are present: bias the allowed set towards them
        scene = make_scene(seed, spec.kind, spec.categories)
        if not any(o.category in VAL_CATEGORIES for o in scene.objects):
            scene = make_scene(seed, spec.kind, VAL_CATEGORIES + ("chair", "table"))
        return scene
    return make_scene(seed, spec.kind, spec.categories)


# ---------------------------------------------------------------------------------------------- glTF


def _basis_to_habitat(up, front) -> np.ndarray:
    """3x3 rotation taking a file's (up, front) axes to Habitat's (+y up, -z front)."""
    u = np.asarray(up, dtype=np.float64)
    f = np.asarray(front, dtype=np.float64)
    u /= np.linalg.norm(u)
    f /= np.linalg.norm(f)
    r = np.cross(f, u)  # right = front x up
    src = np.stack([r, u, -f], axis=1)  # columns: file vectors of habitat x, y, z
    return src.T


MAX_TEXTURE_SIZE = 1024  #: loaded base-colour images are resized to one layer size, at most this


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


def place_category(scene: Scene, category: str, position, yaw: float = 0.0, seed: int = 0) -> SceneObject:
    """Build one instance of a procedural ``category`` (style from ``seed``) on the scene's floor at
    ``position`` (x, z), facing ``yaw``; returns the new object (for composing scenes around a file)."""
    if category not in CATEGORY_BUILDERS:
        raise ValueError(f"unknown category {category!r}; known: {sorted(CATEGORY_BUILDERS)}")
    mb = MeshBuilder()
    _place_object(mb, np.random.default_rng(seed), category, 0, float(position[0]), float(position[1]), yaw)
    v = mb.finish()
    v[:, 1] += scene.floor_y
    return scene.add_object(v, category, textures=procedural_atlas())


__all__ = [
    "CATEGORIES",
    "OUTDOOR",
    "ROOM_TYPES",
    "SPLITS",
    "TRAIN",
    "TRAIN_CATEGORIES",
    "VAL_CATEGORIES",
    "VAL_CATEGORIES_SPLIT",
    "VAL_SCENES",
    "VERTEX_FLOATS",
    "Scene",
    "SceneError",
    "SceneObject",
    "SplitSpec",
    "estimate_floor_y",
    "load_gltf_scene",
    "make_scene",
    "place_category",
    "place_object_file",
    "split_scene",
    "write_glb",
]
