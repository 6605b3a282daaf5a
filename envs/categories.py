"""Object categories built from primitives, each recognisable by its shape and colour.

Every builder takes an ``np.random.Generator`` and returns parts in the object's local frame (origin on
the floor at the footprint centre, front facing +z), so that styles (sizes, colours, variants) vary per
instance while staying deterministic from the scene seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .primitives import CARPET, LEAVES, PLAIN, WOOD, Part, box_tris, cylinder_tris, sphere_tris

Builder = Callable[[np.random.Generator], list[Part]]


def _B(x, y, z, sx, sy, sz, color, pattern=PLAIN) -> Part:  # noqa: N802 - short builder alias
    """Box with its bottom at height ``y`` (so furniture is written bottom-up)."""
    return Part(box_tris((x, y + sy / 2.0, z), (sx, sy, sz)), color, pattern)


def _C(x, y, z, r, h, color, rt=None, seg=16, pattern=PLAIN) -> Part:  # noqa: N802
    """Vertical cylinder / cone with its bottom at height ``y``."""
    return Part(cylinder_tris((x, y + h / 2.0, z), r, h, seg, rt), color, pattern)


def _S(x, y, z, r, color, pattern=PLAIN) -> Part:  # noqa: N802
    return Part(sphere_tris((x, y, z), r), color, pattern)


def _pick(rng: np.random.Generator, palette) -> np.ndarray:
    base = np.asarray(palette[int(rng.integers(len(palette)))], dtype=np.float64)
    return np.clip(base + rng.uniform(-0.04, 0.04, 3), 0.0, 1.0)


WOODS = [(0.55, 0.36, 0.2), (0.42, 0.26, 0.14), (0.7, 0.52, 0.32), (0.3, 0.18, 0.1)]
FABRICS = [(0.2, 0.35, 0.6), (0.55, 0.15, 0.15), (0.35, 0.5, 0.3), (0.5, 0.5, 0.52), (0.6, 0.45, 0.25)]
WHITE = (0.93, 0.93, 0.92)
BLACK = (0.08, 0.08, 0.09)
METAL = (0.6, 0.62, 0.65)


def chair(rng):
    w, d, sh = rng.uniform(0.42, 0.5), rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48)
    c, seat = _pick(rng, WOODS), _pick(rng, FABRICS) if rng.random() < 0.5 else _pick(rng, WOODS)
    lg = 0.04
    parts = [_B(sx * (w / 2 - lg), 0, sz * (d / 2 - lg), lg, sh, lg, c) for sx in (-1, 1) for sz in (-1, 1)]
    parts.append(_B(0, sh, 0, w, 0.05, d, seat))
    parts.append(_B(0, sh + 0.05, -d / 2 + 0.03, w, rng.uniform(0.4, 0.5), 0.05, c))
    return parts


def table(rng):
    w, d, h = rng.uniform(1.0, 1.6), rng.uniform(0.7, 0.95), rng.uniform(0.72, 0.78)
    c = _pick(rng, WOODS)
    if rng.random() < 0.4:  # pedestal style
        return [
            _B(0, h - 0.04, 0, w, 0.04, d, c, WOOD),
            _C(0, 0, 0, 0.06, h - 0.04, c),
            _C(0, 0, 0, 0.3, 0.04, c),
        ]
    lg = 0.06
    parts = [
        _B(sx * (w / 2 - lg), 0, sz * (d / 2 - lg), lg, h - 0.04, lg, c) for sx in (-1, 1) for sz in (-1, 1)
    ]
    return [*parts, _B(0, h - 0.04, 0, w, 0.04, d, c, WOOD)]


def sofa(rng):
    w, d = rng.uniform(1.7, 2.3), rng.uniform(0.85, 1.0)
    c = _pick(rng, FABRICS)
    dark = np.clip(c * 0.8, 0, 1)
    return [
        _B(0, 0.08, 0.05, w - 0.3, 0.35, d - 0.1, c, CARPET),
        _B(0, 0.0, 0, w, 0.1, d, BLACK),
        _B(0, 0.08, -d / 2 + 0.1, w, 0.75, 0.2, dark, CARPET),
        _B(-w / 2 + 0.1, 0.08, 0, 0.2, 0.55, d, dark, CARPET),
        _B(w / 2 - 0.1, 0.08, 0, 0.2, 0.55, d, dark, CARPET),
    ]


def armchair(rng):
    w, d = rng.uniform(0.8, 0.95), rng.uniform(0.8, 0.9)
    c = _pick(rng, FABRICS)
    dark = np.clip(c * 0.8, 0, 1)
    return [
        _B(0, 0.1, 0.05, w - 0.3, 0.33, d - 0.1, c, CARPET),
        _B(0, 0.0, 0, w, 0.1, d, _pick(rng, WOODS)),
        _B(0, 0.1, -d / 2 + 0.1, w, 0.8, 0.2, dark, CARPET),
        _B(-w / 2 + 0.1, 0.1, 0, 0.2, 0.5, d, dark, CARPET),
        _B(w / 2 - 0.1, 0.1, 0, 0.2, 0.5, d, dark, CARPET),
    ]


def bed(rng):
    w, d = rng.choice([1.0, 1.4, 1.6]), rng.uniform(1.95, 2.1)
    frame, sheet = _pick(rng, WOODS), _pick(rng, [WHITE, (0.8, 0.85, 0.95), (0.95, 0.88, 0.8)])
    blanket = _pick(rng, FABRICS)
    return [
        _B(0, 0, 0, w, 0.3, d, frame, WOOD),
        _B(0, 0.3, 0.05, w - 0.06, 0.2, d - 0.1, sheet),
        _B(0, 0.5, 0.25, w - 0.04, 0.04, d * 0.6, blanket, CARPET),
        _B(0, 0.5, -d / 2 + 0.25, w * 0.7, 0.12, 0.35, WHITE),
        _B(0, 0, -d / 2 + 0.03, w, 1.0, 0.06, frame, WOOD),
    ]


def tv_monitor(rng):
    w = rng.uniform(0.9, 1.4)
    stand = _pick(rng, WOODS)
    return [
        _B(0, 0, 0, w + 0.3, 0.5, 0.4, stand, WOOD),
        _B(0, 0.5, 0, 0.25, 0.05, 0.15, BLACK),
        _B(0, 0.55, 0, 0.05, 0.1, 0.05, BLACK),
        _B(0, 0.62, 0, w, w * 0.58, 0.05, BLACK),
        _B(0, 0.65, 0.026, w - 0.06, w * 0.58 - 0.06, 0.002, (0.12, 0.2, 0.35)),
    ]


def refrigerator(rng):
    w, h = rng.uniform(0.6, 0.8), rng.uniform(1.7, 1.9)
    c = _pick(rng, [WHITE, METAL, (0.85, 0.85, 0.8)])
    return [
        _B(0, 0, 0, w, h, 0.65, c),
        _B(0, h * 0.62, 0.326, w - 0.02, 0.01, 0.01, BLACK),
        _B(w / 2 - 0.08, h * 0.68, 0.34, 0.03, 0.35, 0.03, METAL),
        _B(w / 2 - 0.08, h * 0.3, 0.34, 0.03, 0.35, 0.03, METAL),
    ]


def potted_plant(rng):
    pot = _pick(rng, [(0.72, 0.38, 0.22), (0.85, 0.85, 0.8), (0.25, 0.25, 0.3)])
    g = _pick(rng, [(0.15, 0.5, 0.15), (0.25, 0.6, 0.2), (0.1, 0.4, 0.2)])
    ph = rng.uniform(0.3, 0.45)
    r = rng.uniform(0.3, 0.45)
    return [
        _C(0, 0, 0, 0.18, ph, pot, rt=0.22),
        _C(0, ph, 0, 0.025, 0.3, (0.35, 0.25, 0.1)),
        _S(0, ph + 0.3 + r * 0.7, 0, (r, r * 1.2, r), g, LEAVES),
    ]


def floor_lamp(rng):
    h = rng.uniform(1.5, 1.75)
    shade = _pick(rng, [(0.98, 0.92, 0.7), WHITE, (0.95, 0.8, 0.55)])
    return [
        _C(0, 0, 0, 0.18, 0.04, BLACK),
        _C(0, 0.04, 0, 0.02, h - 0.3, METAL),
        _C(0, h - 0.32, 0, 0.25, 0.32, shade, rt=0.15),
    ]


def bookshelf(rng):
    w, h, d = rng.uniform(0.8, 1.2), rng.uniform(1.6, 2.0), 0.35
    c = _pick(rng, WOODS)
    parts = [
        _B(0, 0, -d / 2 + 0.01, w, h, 0.02, c, WOOD),
        _B(-w / 2, 0, 0, 0.03, h, d, c),
        _B(w / 2, 0, 0, 0.03, h, d, c),
    ]
    n = 5
    for i in range(n):
        y = i * h / n
        parts.append(_B(0, y, 0, w, 0.025, d, c, WOOD))
        x = -w / 2 + 0.04
        while x < w / 2 - 0.08:
            bw = rng.uniform(0.03, 0.07)
            bh = rng.uniform(0.6, 0.9) * (h / n - 0.04)
            col = rng.uniform(0.1, 0.9, 3)
            parts.append(_B(x + bw / 2, y + 0.025, 0.02, bw, bh, d - 0.08, col))
            x += bw + 0.005
    parts.append(_B(0, h - 0.025, 0, w, 0.025, d, c))
    return parts


def toilet(rng):
    c = _pick(rng, [WHITE, (0.9, 0.92, 0.95)])
    return [
        _C(0, 0, 0.1, 0.15, 0.35, c, rt=0.2),
        _C(0, 0.35, 0.12, 0.21, 0.05, c),
        _B(0, 0.3, -0.18, 0.42, 0.45, 0.18, c),
        _B(0, 0.75, -0.18, 0.45, 0.04, 0.2, c),
    ]


def sink(rng):
    w = rng.uniform(0.5, 0.8)
    cab = _pick(rng, [*WOODS, WHITE])
    return [
        _B(0, 0, 0, w, 0.8, 0.5, cab, WOOD),
        _B(0, 0.8, 0, w + 0.02, 0.06, 0.52, WHITE),
        _B(0, 0.83, 0.03, w - 0.15, 0.035, 0.32, (0.7, 0.75, 0.8)),
        _C(0, 0.86, -0.2, 0.02, 0.2, METAL),
        _B(0, 1.03, -0.13, 0.03, 0.03, 0.15, METAL),
    ]


def bathtub(rng):
    w, d = rng.uniform(1.5, 1.75), rng.uniform(0.7, 0.8)
    c = _pick(rng, [WHITE, (0.9, 0.9, 0.85)])
    return [
        _B(0, 0, -d / 2 + 0.04, w, 0.55, 0.08, c),
        _B(0, 0, d / 2 - 0.04, w, 0.55, 0.08, c),
        _B(-w / 2 + 0.04, 0, 0, 0.08, 0.55, d, c),
        _B(w / 2 - 0.04, 0, 0, 0.08, 0.55, d, c),
        _B(0, 0, 0, w, 0.1, d, c),
        _B(0, 0.1, 0, w - 0.16, 0.25, d - 0.16, (0.5, 0.75, 0.9)),
        _C(-w / 2 + 0.15, 0.55, 0, 0.025, 0.25, METAL),
    ]


def wardrobe(rng):
    w, h = rng.uniform(1.0, 1.6), rng.uniform(1.9, 2.2)
    c = _pick(rng, WOODS)
    return [
        _B(0, 0, 0, w, h, 0.6, c, WOOD),
        _B(0, 0.05, 0.301, 0.01, h - 0.1, 0.005, BLACK),
        _B(-0.06, h * 0.45, 0.31, 0.025, 0.3, 0.025, METAL),
        _B(0.06, h * 0.45, 0.31, 0.025, 0.3, 0.025, METAL),
    ]


def desk(rng):
    w, h = rng.uniform(1.1, 1.5), 0.75
    c = _pick(rng, [*WOODS, WHITE, (0.2, 0.2, 0.22)])
    return [
        _B(0, h - 0.035, 0, w, 0.035, 0.65, c, WOOD),
        _B(-w / 2 + 0.02, 0, 0, 0.04, h - 0.035, 0.62, c),
        _B(w / 2 - 0.22, 0, 0, 0.4, h - 0.035, 0.62, c),
        _B(w / 2 - 0.22, h * 0.55, 0.311, 0.36, 0.12, 0.01, np.clip(np.asarray(c) * 0.7, 0, 1)),
        _B(w / 2 - 0.22, h * 0.25, 0.311, 0.36, 0.12, 0.01, np.clip(np.asarray(c) * 0.7, 0, 1)),
        _B(-0.1, h, -0.15, 0.5, 0.32, 0.03, BLACK),
    ]


def stove(rng):
    c = _pick(rng, [WHITE, METAL, (0.15, 0.15, 0.15)])
    parts = [
        _B(0, 0, 0, 0.6, 0.88, 0.6, c),
        _B(0, 0.88, 0, 0.6, 0.02, 0.6, BLACK),
        _B(0, 0.2, 0.301, 0.45, 0.4, 0.005, BLACK),
    ]
    parts += [_C(x, 0.9, z, 0.09, 0.015, (0.35, 0.35, 0.35)) for x in (-0.14, 0.14) for z in (-0.14, 0.14)]
    parts.append(_B(0, 0.9, -0.28, 0.6, 0.15, 0.04, c))
    return parts


def washing_machine(rng):
    c = _pick(rng, [WHITE, (0.85, 0.87, 0.9)])
    door = Part(
        np.asarray(cylinder_tris((0, 0, 0), 0.2, 0.04, 20))[..., [0, 2, 1]] + np.array([0, 0.42, 0.3]),
        (0.2, 0.25, 0.35),
    )
    return [_B(0, 0, 0, 0.6, 0.85, 0.58, c), door, _B(0, 0.72, 0.291, 0.5, 0.08, 0.01, (0.3, 0.3, 0.3))]


def piano(rng):
    c = _pick(rng, [BLACK, (0.25, 0.12, 0.06)])
    parts = [
        _B(0, 0, -0.15, 1.45, 1.25, 0.35, c),
        _B(0, 0.7, 0.12, 1.45, 0.05, 0.3, c),
        _B(0, 0.75, 0.12, 1.3, 0.02, 0.2, WHITE),
        _B(-0.68, 0, 0.15, 0.06, 0.75, 0.3, c),
        _B(0.68, 0, 0.15, 0.06, 0.75, 0.3, c),
    ]
    parts += [
        _B(-0.6 + i * 0.045, 0.77, 0.07, 0.02, 0.015, 0.1, BLACK) for i in range(27) if i % 7 not in (2, 6)
    ]
    return parts


def guitar(rng):
    body = _pick(rng, [(0.8, 0.5, 0.2), (0.6, 0.1, 0.1), (0.9, 0.75, 0.5), BLACK])
    return [
        _S(0, 0.3, 0, (0.2, 0.22, 0.06), body),
        _S(0, 0.58, 0, (0.15, 0.14, 0.055), body),
        _C(0, 0.45, 0.061, 0.05, 0.005, BLACK),
        _B(0, 0.65, 0.0, 0.05, 0.5, 0.03, (0.3, 0.18, 0.08)),
        _B(0, 1.15, 0.0, 0.08, 0.16, 0.03, (0.2, 0.1, 0.05)),
        _B(0, 0.05, -0.15, 0.25, 0.03, 0.3, BLACK),
    ]


def cabinet(rng):
    w, h = rng.uniform(0.8, 1.4), rng.uniform(0.7, 1.0)
    c = _pick(rng, [*WOODS, WHITE, (0.6, 0.7, 0.75)])
    parts = [_B(0, 0, 0, w, h, 0.45, c, WOOD)]
    n = int(rng.integers(2, 4))
    for i in range(n):
        y = (i + 0.5) * h / n
        parts.append(_B(0, y - 0.005, 0.226, w - 0.04, 0.01, 0.005, BLACK))
        parts.append(_B(0, y + h / (2 * n) * 0.4, 0.235, 0.15, 0.025, 0.02, METAL))
    return parts


def nightstand(rng):
    c = _pick(rng, WOODS)
    return [
        _B(0, 0, 0, 0.45, 0.55, 0.4, c, WOOD),
        _B(0, 0.35, 0.201, 0.4, 0.01, 0.005, BLACK),
        _C(0, 0.45, 0.21, 0.02, 0.02, METAL),
        _C(0.1, 0.55, 0, 0.06, 0.25, _pick(rng, FABRICS), rt=0.1),
    ]


def trash_can(rng):
    c = _pick(rng, [(0.3, 0.3, 0.32), (0.2, 0.45, 0.25), (0.2, 0.3, 0.6), METAL])
    h = rng.uniform(0.5, 0.8)
    return [_C(0, 0, 0, 0.2, h, c, rt=0.22), _C(0, h, 0, 0.23, 0.04, BLACK)]


def coat_rack(rng):
    c = _pick(rng, WOODS)
    parts = [_C(0, 0, 0, 0.22, 0.04, c), _C(0, 0.04, 0, 0.025, 1.75, c), _S(0, 1.8, 0, 0.05, c)]
    for a in range(4):
        x, z = 0.14 * np.cos(a * np.pi / 2), 0.14 * np.sin(a * np.pi / 2)
        parts.append(_B(x / 2, 1.6, z / 2, abs(x) + 0.03, 0.03, abs(z) + 0.03, c))
    parts.append(_B(0.12, 0.9, 0.0, 0.15, 0.65, 0.3, _pick(rng, FABRICS)))
    return parts


def vase(rng):
    c = _pick(rng, [(0.2, 0.35, 0.7), (0.75, 0.2, 0.2), (0.9, 0.85, 0.6), (0.2, 0.55, 0.5)])
    return [
        _C(0, 0, 0, 0.12, 0.1, c, rt=0.18),
        _C(0, 0.1, 0, 0.18, 0.4, c, rt=0.08),
        _C(0, 0.5, 0, 0.08, 0.2, c, rt=0.12),
        _C(0, 0.7, 0, 0.01, 0.25, (0.2, 0.5, 0.15)),
        _S(0, 0.97, 0, 0.1, _pick(rng, [(0.95, 0.3, 0.5), (0.95, 0.85, 0.2), WHITE])),
    ]


def stool(rng):
    c = _pick(rng, [*WOODS, (0.7, 0.1, 0.1), BLACK])
    h = rng.uniform(0.6, 0.75)
    parts = [_C(0, h - 0.05, 0, 0.18, 0.05, c)]
    parts += [_B(sx * 0.1, 0, sz * 0.1, 0.03, h - 0.05, 0.03, METAL) for sx in (-1, 1) for sz in (-1, 1)]
    parts.append(_B(0, h * 0.35, 0, 0.23, 0.02, 0.23, METAL))
    return parts


def fireplace(rng):
    c = _pick(rng, [(0.6, 0.3, 0.2), (0.75, 0.72, 0.68), (0.45, 0.45, 0.45)])
    from .primitives import BRICK

    return [
        _B(-0.55, 0, 0, 0.3, 1.1, 0.45, c, BRICK),
        _B(0.55, 0, 0, 0.3, 1.1, 0.45, c, BRICK),
        _B(0, 0.8, 0, 0.8, 0.3, 0.45, c, BRICK),
        _B(0, 0, -0.1, 0.8, 0.8, 0.25, (0.06, 0.05, 0.05)),
        _B(0, 1.1, 0.02, 1.6, 0.06, 0.5, _pick(rng, WOODS)),
        _S(0, 0.15, 0.05, (0.25, 0.12, 0.12), (1.0, 0.5, 0.1)),
    ]


def standing_fan(rng):
    c = _pick(rng, [WHITE, BLACK, (0.3, 0.5, 0.8)])
    blade = Part(
        np.asarray(cylinder_tris((0, 0, 0), 0.28, 0.08, 20))[..., [0, 2, 1]] + np.array([0, 1.2, 0.02]),
        (0.75, 0.78, 0.82),
    )
    return [
        _C(0, 0, 0, 0.2, 0.04, c),
        _C(0, 0.04, 0, 0.025, 1.05, c),
        _B(0, 1.08, -0.1, 0.12, 0.16, 0.2, c),
        blade,
    ]


def mirror(rng):
    c = _pick(rng, [*WOODS, (0.85, 0.7, 0.3)])
    return [
        _B(0, 0, -0.2, 0.5, 0.04, 0.45, c),
        _B(0, 0.04, -0.05, 0.65, 1.6, 0.05, c),
        _B(0, 0.1, -0.02, 0.55, 1.48, 0.02, (0.75, 0.88, 0.95)),
    ]


# ----------------------------------------------------------------------------------------- outdoor


def bench(rng):
    c = _pick(rng, WOODS)
    m = _pick(rng, [BLACK, (0.15, 0.3, 0.15), METAL])
    parts = [_B(0, 0.42, z, 1.6, 0.04, 0.12, c, WOOD) for z in (-0.15, 0.0, 0.15)]
    parts += [_B(0, 0.55, -0.24, 1.6, 0.1, 0.03, c, WOOD), _B(0, 0.72, -0.26, 1.6, 0.1, 0.03, c, WOOD)]
    parts += [_B(x, 0, 0, 0.06, 0.42, 0.5, m) for x in (-0.7, 0.7)]
    parts += [_B(x, 0.42, -0.26, 0.05, 0.45, 0.04, m) for x in (-0.7, 0.7)]
    return parts


def tree(rng):
    h = rng.uniform(2.2, 3.5)
    g = _pick(rng, [(0.15, 0.45, 0.12), (0.2, 0.55, 0.2), (0.3, 0.5, 0.1)])
    trunk = [_C(0, 0, 0, 0.15, h, (0.4, 0.27, 0.15), rt=0.1)]
    if rng.random() < 0.5:  # conifer
        return trunk + [
            _C(0, h * 0.35 + i * 0.6, 0, 1.1 - 0.3 * i, 1.2, g, rt=0.0, pattern=LEAVES) for i in range(3)
        ]
    r = rng.uniform(1.0, 1.4)
    return trunk + [_S(0, h + r * 0.5, 0, (r, r * 0.9, r), g, LEAVES)]


def car(rng):
    c = _pick(rng, [(0.75, 0.1, 0.1), (0.1, 0.2, 0.6), (0.9, 0.9, 0.9), (0.15, 0.15, 0.15), (0.9, 0.7, 0.1)])
    parts = [
        _B(0, 0.3, 0, 1.8, 0.65, 4.2, c),
        _B(0, 0.95, -0.15, 1.6, 0.55, 2.2, c),
        _B(0, 1.0, -0.15, 1.62, 0.42, 1.9, (0.2, 0.25, 0.3)),
        _B(0, 0.55, 2.101, 1.2, 0.15, 0.01, (0.9, 0.9, 0.7)),
    ]
    for x in (-0.8, 0.8):
        for z in (-1.35, 1.35):
            t = np.asarray(cylinder_tris((0, 0, 0), 0.33, 0.25, 16))[..., [1, 0, 2]] + np.array([x, 0.33, z])
            parts.append(Part(t, BLACK))
    return parts


def street_lamp(rng):
    c = _pick(rng, [BLACK, (0.2, 0.3, 0.25), METAL])
    h = rng.uniform(3.5, 4.5)
    return [
        _C(0, 0, 0, 0.15, 0.4, c),
        _C(0, 0.4, 0, 0.06, h - 0.4, c),
        _B(0, h - 0.05, 0.35, 0.08, 0.08, 0.8, c),
        _B(0, h - 0.2, 0.7, 0.35, 0.15, 0.5, (1.0, 0.95, 0.7)),
    ]


def traffic_cone(rng):
    o = _pick(rng, [(1.0, 0.45, 0.05), (1.0, 0.3, 0.05)])
    h = rng.uniform(0.5, 0.75)
    return [
        _B(0, 0, 0, 0.45, 0.04, 0.45, BLACK),
        _C(0, 0.04, 0, 0.18, h, o, rt=0.03),
        _C(0, 0.04 + h * 0.45, 0, 0.115, h * 0.15, WHITE, rt=0.1),
    ]


def fire_hydrant(rng):
    c = _pick(rng, [(0.85, 0.1, 0.08), (0.95, 0.8, 0.1)])
    parts = [_C(0, 0, 0, 0.16, 0.08, c), _C(0, 0.08, 0, 0.12, 0.55, c), _S(0, 0.65, 0, 0.13, c)]
    t = np.asarray(cylinder_tris((0, 0, 0), 0.06, 0.42, 12))[..., [1, 0, 2]] + np.array([0, 0.45, 0])
    return [*parts, Part(t, c), _C(0, 0.78, 0, 0.03, 0.06, c)]


def mailbox(rng):
    c = _pick(rng, [(0.1, 0.2, 0.6), (0.75, 0.1, 0.1), (0.85, 0.8, 0.2)])
    return [
        _B(0, 0, 0, 0.08, 1.0, 0.08, (0.3, 0.3, 0.3)),
        _B(0, 1.0, 0, 0.35, 0.35, 0.55, c),
        Part(
            np.asarray(cylinder_tris((0, 0, 0), 0.175, 0.55, 16))[..., [0, 2, 1]] + np.array([0, 1.35, 0]), c
        ),
        _B(0.19, 1.15, 0.1, 0.02, 0.25, 0.05, (0.9, 0.1, 0.1)),
    ]


def bicycle(rng):
    c = _pick(rng, [(0.1, 0.5, 0.8), (0.8, 0.1, 0.1), (0.1, 0.6, 0.2), BLACK])
    parts = []
    for z in (-0.52, 0.52):
        t = np.asarray(cylinder_tris((0, 0, 0), 0.34, 0.04, 20))[..., [1, 0, 2]] + np.array([0, 0.34, z])
        parts.append(Part(t, BLACK))
    parts += [
        _B(0, 0.55, 0, 0.04, 0.04, 1.0, c),
        _B(0, 0.34, -0.15, 0.04, 0.5, 0.04, c),
        _B(0, 0.34, 0.45, 0.04, 0.6, 0.04, c),
        _B(0, 0.85, -0.15, 0.12, 0.05, 0.25, BLACK),
        _B(0, 0.95, 0.45, 0.55, 0.03, 0.04, BLACK),
    ]
    return parts


def picnic_table(rng):
    c = _pick(rng, WOODS)
    parts = [_B(0, 0.72, 0, 1.8, 0.05, 0.75, c, WOOD)]
    parts += [_B(0, 0.42, z, 1.8, 0.04, 0.28, c, WOOD) for z in (-0.62, 0.62)]
    parts += [_B(x, 0, 0, 0.08, 0.72, 1.5, c) for x in (-0.7, 0.7)]
    return parts


CATEGORY_BUILDERS: dict[str, Builder] = {
    "chair": chair,
    "table": table,
    "sofa": sofa,
    "armchair": armchair,
    "bed": bed,
    "tv_monitor": tv_monitor,
    "refrigerator": refrigerator,
    "potted_plant": potted_plant,
    "floor_lamp": floor_lamp,
    "bookshelf": bookshelf,
    "toilet": toilet,
    "sink": sink,
    "bathtub": bathtub,
    "wardrobe": wardrobe,
    "desk": desk,
    "stove": stove,
    "washing_machine": washing_machine,
    "piano": piano,
    "guitar": guitar,
    "cabinet": cabinet,
    "nightstand": nightstand,
    "trash_can": trash_can,
    "coat_rack": coat_rack,
    "vase": vase,
    "stool": stool,
    "fireplace": fireplace,
    "standing_fan": standing_fan,
    "mirror": mirror,
    "bench": bench,
    "tree": tree,
    "car": car,
    "street_lamp": street_lamp,
    "traffic_cone": traffic_cone,
    "fire_hydrant": fire_hydrant,
    "mailbox": mailbox,
    "bicycle": bicycle,
    "picnic_table": picnic_table,
}

INDOOR_CATEGORIES: tuple[str, ...] = tuple(list(CATEGORY_BUILDERS)[:28])
OUTDOOR_CATEGORIES: tuple[str, ...] = tuple(list(CATEGORY_BUILDERS)[28:]) + ("trash_can", "potted_plant")
