"""Texture images of scenes: the procedural patterns baked once into tileable images, world-planar UVs,
and resizing of loaded glTF base-colour images into one texture array.

Why bake: the renderer's fragment shader used to evaluate value noise per pixel, which made it the
bottleneck under llvmpipe and left other renderers (habitat-sim, glTF viewers) with nothing to show. A
baked, mipmapped, tileable image per pattern is one texture lookup, and the exported GLB carries the same
images, so every renderer shows the same scene.

A pattern image covers ``TILE_M`` x ``TILE_M`` metres of world-planar UV (u, v in metres / ``TILE_M``) and
repeats seamlessly: every lattice and period below is a whole number of cycles per tile.
"""

from __future__ import annotations

import functools

import numpy as np

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
    TILE_M,
    WOOD,
)

PATTERN_SIZE = 512  #: pixels per side of a baked pattern image (128 px per metre)
N_PATTERNS = 11  #: pattern ids 0 (plain, white) .. 10


def _table(seed: int, px: int, py: int) -> np.ndarray:
    """Uniform values per lattice cell: hash(i, j) = table[i % px, j % py] (so the pattern tiles)."""
    return np.random.default_rng(1000 + seed).random((px, py))


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int, px: int, py: int | None = None) -> np.ndarray:
    py = px if py is None else py
    return _table(seed, px, py)[np.mod(ix, px).astype(np.int64), np.mod(iy, py).astype(np.int64)]


def _weights(x: np.ndarray, period: int) -> np.ndarray:
    """(len(x), period) smoothstep interpolation weights of lattice coordinates ``x`` (periodic)."""
    i0 = np.floor(x)
    t = x - i0
    t = t * t * (3 - 2 * t)
    w = np.zeros((len(x), period))
    rows = np.arange(len(x))
    np.add.at(w, (rows, np.mod(i0, period).astype(np.int64)), 1 - t)
    np.add.at(w, (rows, np.mod(i0 + 1, period).astype(np.int64)), t)
    return w


def _noise(x: np.ndarray, y: np.ndarray, seed: int, px: int, py: int | None = None) -> np.ndarray:
    """Smooth value noise on the grid x (columns, 1-D) by y (rows, 1-D), periodic with ``px`` x ``py``
    cells. Separable: rows of y-weights times the lattice table times x-weights (two small matmuls)."""
    py = px if py is None else py
    return _weights(y, py) @ _table(seed, px, py).T @ _weights(x, px).T


def _pattern(k: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Brightness multiplier of pattern ``k`` on the grid of world-planar coordinates u (columns) by v
    (rows), in metres: a (len(v), len(u)) array."""
    T = TILE_M
    U, V = u[None, :], v[:, None]

    def nz(f, seed):  # noise with f cells per metre, periodic over the tile
        n = int(round(f * T))
        return _noise(u * f, v * f, seed, n)

    if k == CHECKER:
        return np.where(np.mod(np.floor(U * 2) + np.floor(V * 2), 2) < 1, 1.0, 0.78)
    if k == PLANKS:  # rows of boards, each row shifted by its own offset
        rows = np.floor(v * 5)
        out = np.empty((len(v), len(u)))
        wv = _weights(v * 40, int(40 * T))
        table = _table(2, int(2 * T), int(40 * T)).T
        for r in np.unique(rows):
            sel = rows == r
            x = u + _hash(np.array([r]), np.ones(1), 1, int(5 * T), 1)[0] * 3.0
            n = wv[sel] @ table @ _weights(x * 2, int(2 * T)).T
            seam = np.where((np.mod(V[sel] * 5, 1) < 0.06) | (np.mod(x[None, :] * 0.75, 1) < 0.02), 0.7, 1.0)
            out[sel] = seam * (0.85 + 0.15 * n)
        return out
    if k == STRIPES:
        return 0.88 + 0.12 * (np.mod(U * 3, 1) >= 0.5) + 0.04 * nz(20, 3)
    if k == BRICK:
        row = np.floor(V * 8)
        x = U * 4 + 0.5 * np.mod(row, 2)
        m = np.where((np.mod(V * 8, 1) < 0.1) | (np.mod(x, 1) < 0.05), 0.75, 1.0)
        return m * (0.85 + 0.15 * _hash(np.floor(x), row, 4, int(4 * T), int(8 * T)))
    if k == GRASS:
        return 0.75 + 0.35 * nz(6, 5) * nz(23, 6)
    if k == ASPHALT:
        return 0.8 + 0.25 * nz(9, 7) + 0.05 * _hash(np.floor(U * 40), np.floor(V * 40), 8, int(40 * T))
    if k == CARPET:
        return 0.82 + 0.18 * nz(14, 9)
    if k == SMALL_TILES:
        return np.where((np.mod(U * 5, 1) < 0.06) | (np.mod(V * 5, 1) < 0.06), 0.65, 1.0)
    if k == WOOD:
        f = 2 * np.pi * round(30 * T / (2 * np.pi)) / T  # ~30 rad/m, a whole number of cycles per tile
        return 0.85 + 0.15 * np.sin(U * f + 4.0 * nz(3, 10))
    if k == LEAVES:
        return 0.7 + 0.45 * nz(8, 11)
    if k == PLAIN:
        return np.ones((len(v), len(u)))
    raise ValueError(f"unknown pattern id {k}")


@functools.lru_cache(maxsize=1)
def procedural_atlas(size: int = PATTERN_SIZE) -> np.ndarray:
    """(N_PATTERNS, size, size, 4) uint8 RGBA images, one per pattern id (layer 0 plain white).

    Each is supersampled 2x2 per pixel so the seams and lattice cells are antialiased, and clipped to
    [0, 1]: a texture multiplies the vertex colour, as glTF defines base colour. Read-only, shared."""
    s = (np.arange(2 * size) + 0.5) / (2 * size) * TILE_M  # image row = v, column = u
    out = np.empty((N_PATTERNS, size, size, 4), np.uint8)
    for k in range(N_PATTERNS):
        p = np.clip(_pattern(k, s, s), 0.0, 1.0).reshape(size, 2, size, 2).mean(axis=(1, 3))
        g = np.round(p * 255).astype(np.uint8)
        out[k, ..., :3] = g[..., None]
        out[k, ..., 3] = 255
    out.flags.writeable = False
    return out


def to_layer(image, size: int) -> np.ndarray:
    """A base-colour image (PIL image or array, grey/RGB/RGBA) as a (size, size, 4) uint8 RGBA layer."""
    import cv2

    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a.astype(np.float64) * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 3:
        a = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)
    a = a[..., :4]
    if a.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if max(a.shape[:2]) > size else cv2.INTER_LINEAR
        a = cv2.resize(a, (size, size), interpolation=interp)
    return np.ascontiguousarray(a)


__all__ = ["N_PATTERNS", "PATTERN_SIZE", "TILE_M", "procedural_atlas", "to_layer"]
