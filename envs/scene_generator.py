"""Procedural scenes from a seed: multi-room apartments, a park, a street; the object categories and the
named splits (which seeds and categories each draws)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .categories import CATEGORY_BUILDERS, INDOOR_CATEGORIES, OUTDOOR_CATEGORIES
from .primitives import (
    ASPHALT,
    BRICK,
    CARPET,
    CHECKER,
    GRASS,
    LEAVES,
    PLAIN,
    PLANKS,
    SMALL_TILES,
    STRIPES,
    MeshBuilder,
    box_tris,
    transform_tris,
)
from .scene_model import Scene, SceneObject
from .textures import procedural_atlas

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
