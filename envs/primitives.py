"""Triangle-soup mesh building from primitives (boxes, cylinders, spheres, cones).

Why a triangle soup: the renderer draws the whole scene in one call from one vertex buffer, and flat
per-face normals make primitive furniture read clearly under simple lighting.
"""

from __future__ import annotations

import math

import numpy as np

# pattern ids understood by the renderer's fragment shader (procedural textures in world space)
PLAIN, CHECKER, PLANKS, STRIPES, BRICK, GRASS, ASPHALT, CARPET, SMALL_TILES, WOOD, LEAVES = range(11)

# per-vertex float layout: position(3) normal(3) color(3) pattern(1) instance id(1) uv(2) texture layer(1).
# colour x the texture layer's image at uv is the surface's base colour, as glTF defines it; procedural
# surfaces use layer = pattern id of the scene's baked pattern images (``textures.procedural_atlas``).
VERTEX_FLOATS = 14
COL_UV = slice(11, 13)
COL_LAYER = 13
TILE_M = 4.0  # metres of world covered by one repeat of a procedural pattern image (world-planar UVs)


def planar_uv(tris: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(M*3, 2) UVs of (M, 3, 3) triangles in tile units: floors/ceilings map (x, z), walls (x + z, y)."""
    p = np.asarray(tris, dtype=np.float64).reshape(-1, 3)
    n = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    horizontal = np.abs(n[:, 1]) > 0.5
    u = np.where(horizontal, p[:, 0], p[:, 0] + p[:, 2])
    v = np.where(horizontal, p[:, 2], p[:, 1])
    return np.stack([u, v], axis=1) / TILE_M


class MeshBuilder:
    """Accumulates coloured, instance-labelled triangles; ``finish`` returns one (N, 11) float32 array."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []

    def add_triangles(
        self,
        tris: np.ndarray,
        color,
        pattern: int = PLAIN,
        instance_id: int = 0,
        normals: np.ndarray | None = None,
        uvs: np.ndarray | None = None,
        layer: int | None = None,
    ) -> None:
        """Add (M, 3, 3) triangles with one colour (or (M*3, 3) per-vertex colours); flat face normals
        unless ``normals`` (M, 3, 3) given; world-planar UVs on texture layer ``pattern`` unless ``uvs``
        (M*3, 2) and ``layer`` are given."""
        tris = np.asarray(tris, dtype=np.float64).reshape(-1, 3, 3)
        if len(tris) == 0:
            return
        if normals is None:
            n = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
            normals = np.repeat(n[:, None, :], 3, axis=1)
        out = np.empty((len(tris) * 3, VERTEX_FLOATS), dtype=np.float32)
        out[:, 0:3] = tris.reshape(-1, 3)
        out[:, 3:6] = np.asarray(normals).reshape(-1, 3)
        col = np.asarray(color, dtype=np.float32)
        out[:, 6:9] = col.reshape(-1, 3) if col.ndim > 1 else col[None, :3]
        out[:, 9] = pattern
        out[:, 10] = instance_id
        out[:, COL_UV] = planar_uv(tris, out[:, 3:6]) if uvs is None else np.asarray(uvs).reshape(-1, 2)
        out[:, COL_LAYER] = pattern if layer is None else layer
        self._chunks.append(out)

    def extend(self, other: MeshBuilder) -> None:
        self._chunks.extend(other._chunks)

    def finish(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros((0, VERTEX_FLOATS), dtype=np.float32)
        return np.concatenate(self._chunks, axis=0)


_BOX_FACES = np.array(
    [
        [0, 2, 1], [0, 3, 2],  # -z
        [4, 5, 6], [4, 6, 7],  # +z
        [0, 1, 5], [0, 5, 4],  # -y
        [3, 7, 6], [3, 6, 2],  # +y
        [0, 4, 7], [0, 7, 3],  # -x
        [1, 2, 6], [1, 6, 5],  # +x
    ]
)  # fmt: skip


def box_tris(center, size, yaw: float = 0.0) -> np.ndarray:
    """Triangles (12, 3, 3) of an axis-aligned box of ``size`` at ``center``, rotated by ``yaw`` about +y."""
    c = np.asarray(center, dtype=np.float64)
    h = 0.5 * np.asarray(size, dtype=np.float64)
    corners = (
        np.array(
            [
                [-1, -1, -1],
                [1, -1, -1],
                [1, 1, -1],
                [-1, 1, -1],
                [-1, -1, 1],
                [1, -1, 1],
                [1, 1, 1],
                [-1, 1, 1],
            ],
            dtype=np.float64,
        )
        * h
    )
    if yaw:
        corners = corners @ _rot_y(yaw).T
    return (corners + c)[_BOX_FACES]


def cylinder_tris(center, radius: float, height: float, segments: int = 16, radius_top: float | None = None):
    """Triangles of a vertical cylinder (or frustum/cone with ``radius_top``) centred at ``center``."""
    c = np.asarray(center, dtype=np.float64)
    rt = radius if radius_top is None else radius_top
    a = np.linspace(0.0, 2.0 * math.pi, segments + 1)
    ca, sa = np.cos(a), np.sin(a)
    y0, y1 = c[1] - height / 2.0, c[1] + height / 2.0
    bot = np.stack([c[0] + radius * ca, np.full_like(ca, y0), c[2] + radius * sa], axis=1)
    top = np.stack([c[0] + rt * ca, np.full_like(ca, y1), c[2] + rt * sa], axis=1)
    tris = []
    for i in range(segments):
        tris.append([bot[i], top[i], bot[i + 1]])
        tris.append([bot[i + 1], top[i], top[i + 1]])
        tris.append([[c[0], y0, c[2]], bot[i], bot[i + 1]])
        if rt > 0:
            tris.append([[c[0], y1, c[2]], top[i + 1], top[i]])
    return np.asarray(tris)


def sphere_tris(center, radius, segments: int = 12, rings: int = 8) -> np.ndarray:
    """Triangles of a UV sphere; ``radius`` may be a 3-vector for an ellipsoid."""
    c = np.asarray(center, dtype=np.float64)
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (3,))
    th = np.linspace(0.0, math.pi, rings + 1)
    ph = np.linspace(0.0, 2.0 * math.pi, segments + 1)
    pts = (
        np.stack(
            [
                np.outer(np.sin(th), np.cos(ph)),
                np.outer(np.cos(th), np.ones_like(ph)),
                np.outer(np.sin(th), np.sin(ph)),
            ],
            axis=-1,
        )
        * r
        + c
    )
    tris = []
    for i in range(rings):
        for j in range(segments):
            p00, p01, p10, p11 = pts[i, j], pts[i, j + 1], pts[i + 1, j], pts[i + 1, j + 1]
            if i > 0:
                tris.append([p00, p01, p10])
            if i < rings - 1:
                tris.append([p01, p11, p10])
    return np.asarray(tris)


def _rot_y(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def transform_tris(tris: np.ndarray, yaw: float, offset) -> np.ndarray:
    """Rotate triangles by ``yaw`` about +y then translate by ``offset``."""
    return tris @ _rot_y(yaw).T + np.asarray(offset, dtype=np.float64)


class Part:
    """A primitive of an object in its local frame (origin on the floor at the footprint centre)."""

    __slots__ = ("tris", "color", "pattern")

    def __init__(self, tris: np.ndarray, color, pattern: int = PLAIN) -> None:
        self.tris = np.asarray(tris, dtype=np.float64)
        self.color = color
        self.pattern = pattern
