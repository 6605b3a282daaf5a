"""Portal culling: which of a scene's triangles a camera inside a closed room can see.

Why: under llvmpipe a frame costs per rasterised triangle and fragment, and from inside one room of an
apartment most of the scene is behind walls (mean depth complexity ~5.7 on the default scene). Rooms of
procedural indoor scenes are closed boxes whose only openings are their doors, so what a camera in room
A can see lies in A, or in a room B seen through a door of A whose opening projects into the screen, and
so on through B's doors with the screen rectangle narrowed each time (Luebke & Georges 1995, "Portals and
mirrors"). The test is conservative (axis-aligned screen bounds of each opening's box), so culling never
removes a visible triangle; the drawn triangles keep their original order, so the image is the same.
Cameras outside every room (top-down maps, scenes without ``rooms``) draw everything.

Back faces: a closed, outward-wound mesh (every directed edge matched by its reverse, positive volume;
walls, floors and closed furniture parts) never shows a back face to a camera outside it, so those
triangles are drawn with back-face culling; open meshes (a bin without a lid) are drawn two-sided.
"""

from __future__ import annotations

import numpy as np

Rect = tuple[float, float, float, float]  # screen rectangle in NDC: x0, y0, x1, y1
FULL: Rect = (-1.0, -1.0, 1.0, 1.0)


class PortalCuller:
    """Draw runs (first vertex, vertex count, back-face cullable) of what a pose can see.

    Args:
        vertices: (N, >=3) triangle-soup positions (3 rows per triangle), as the renderer's buffer.
        rooms: ``Scene.rooms`` with ``bounds``, ``height`` and ``doors``; if any room lacks them (or
            there are more than 62), no room is culled, only back faces.
        enabled: False draws every triangle two-sided (the reference the culled image must equal).
    """

    def __init__(self, vertices: np.ndarray, rooms: list[dict], enabled: bool = True) -> None:
        self.n_vertices = int(len(vertices))
        ntri = self.n_vertices // 3
        self.rooms: list[dict] = []
        self._closed = np.zeros(ntri, bool)
        self._all: list[tuple[int, int, bool]] = [(0, self.n_vertices, False)]
        self._cache: dict[frozenset[int], list[tuple[int, int, bool]]] = {}
        if not enabled:  # everything, two-sided, in one draw
            return
        tri = np.asarray(vertices[:, :3], dtype=np.float64).reshape(-1, 3, 3)
        groups = np.asarray(vertices[::3, 10]) if vertices.shape[1] > 10 else np.zeros(ntri)
        self._closed = closed_outward(tri, groups)
        self._all = _split(np.ones(ntri, bool), self._closed)
        usable = bool(rooms) and all("doors" in r and "height" in r for r in rooms) and len(rooms) <= 62
        if not usable:
            return
        self.rooms = rooms
        lo, hi = tri.min(axis=1), tri.max(axis=1)
        b = np.array([r["bounds"] for r in self.rooms], dtype=np.float64)  # (R, 4) x0 z0 x1 z1
        eps = 1e-4
        # a triangle belongs to every room its xz bounding box overlaps (with area), or whose closed
        # rectangle holds its centroid; one belonging to none is always drawn in full
        c = tri.mean(axis=1)
        member = (
            (lo[:, None, 0] < b[None, :, 2] - eps) & (hi[:, None, 0] > b[None, :, 0] + eps)
            & (lo[:, None, 2] < b[None, :, 3] - eps) & (hi[:, None, 2] > b[None, :, 1] + eps)
        ) | (
            (c[:, None, 0] >= b[None, :, 0] - eps) & (c[:, None, 0] <= b[None, :, 2] + eps)
            & (c[:, None, 2] >= b[None, :, 1] - eps) & (c[:, None, 2] <= b[None, :, 3] + eps)
        )  # fmt: skip
        mask = (member.astype(np.int64) << np.arange(len(self.rooms))).sum(axis=1)
        # segments: consecutive triangles with the same rooms and back-face state
        sig = mask * 2 + self._closed
        cut = np.flatnonzero(np.diff(sig)) + 1
        starts, ends = np.r_[0, cut], np.r_[cut, ntri]
        self._segments = [
            (int(s0) * 3, int(s1 - s0) * 3, bool(self._closed[s0]),
             [r for r in range(len(self.rooms)) if (int(mask[s0]) >> r) & 1])
            for s0, s1 in zip(starts, ends, strict=True)
        ]  # fmt: skip
        self._bounds = [tuple(float(v) for v in r["bounds"]) for r in self.rooms]
        self._height = [float(r["height"]) for r in self.rooms]
        # per room: (room it leads to, door number); every door's box corners in one array, projected
        # once per frame
        self._doors: list[list[tuple[int, int]]] = []
        boxes = []
        for r in self.rooms:
            self._doors.append([])
            for d in r["doors"]:
                self._doors[-1].append((int(d["to"]), len(boxes)))
                boxes.append(_box_corners(d["box"]))
        self._corners = np.concatenate(boxes) if boxes else np.zeros((0, 4))

    @property
    def active(self) -> bool:
        return bool(self.rooms)

    def rooms_at(self, eye: np.ndarray, margin: float = 0.1) -> list[int]:
        """Rooms whose box (grown by ``margin``) holds the camera centre."""
        x, y, z = (float(v) for v in eye[:3])
        return [i for i, ((x0, z0, x1, z1), h) in enumerate(zip(self._bounds, self._height, strict=True))
                if x0 - margin <= x <= x1 + margin and z0 - margin <= z <= z1 + margin
                and -margin < y < h - margin] if self.rooms else []  # fmt: skip

    def visible_rooms(self, T_wc: np.ndarray, mvp: np.ndarray) -> dict[int, Rect] | None:
        """Rooms seen from pose ``T_wc`` (projection-view ``mvp``), each with the screen rectangle it
        can show in; None = the camera is in no room, draw everything."""
        start = self.rooms_at(np.asarray(T_wc)[:3, 3])
        if not start:
            return None
        seen: dict[int, Rect] = dict.fromkeys(start, FULL)
        door_rects = _door_rects(self._corners @ np.asarray(mvp, np.float64).T)
        stack = [(r, FULL, (r,)) for r in start]
        while stack:
            room, rect, path = stack.pop()
            for to, k in self._doors[room]:
                if to in path or door_rects[k] is None:
                    continue
                d = door_rects[k]
                sub = (max(rect[0], d[0]), max(rect[1], d[1]), min(rect[2], d[2]), min(rect[3], d[3]))
                if sub[0] >= sub[2] or sub[1] >= sub[3]:
                    continue
                seen[to] = _union(seen[to], sub) if to in seen else sub
                stack.append((to, sub, (*path, to)))
        return seen

    def ranges(self, T_wc: np.ndarray, mvp: np.ndarray) -> list[tuple[int, int, bool]]:
        """(first vertex, count, cull back faces) runs to draw, in buffer order (so depth ties resolve
        as in a full draw)."""
        if not self.rooms:
            return self._all
        seen = self.visible_rooms(T_wc, mvp)
        if seen is None or len(seen) == len(self.rooms):
            return self._all
        key = frozenset(seen)
        out = self._cache.get(key)
        if out is None:
            out = []
            for first, count, closed, rooms in self._segments:
                if rooms and not any(r in key for r in rooms):
                    continue
                if out and out[-1][0] + out[-1][1] == first and out[-1][2] == closed:
                    out[-1] = (out[-1][0], out[-1][1] + count, closed)
                else:
                    out.append((first, count, closed))
            if len(self._cache) >= 1024:  # distinct visible-room sets; bounded for many-room scenes
                self._cache.clear()
            self._cache[key] = out
        return out


def _union(a: Rect, b: Rect) -> Rect:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def closed_outward(tri: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per triangle: is it part of a closed, outward-wound solid, so its back faces never show?

    Generators and glTF primitives emit each part's triangles together, so the buffer is cut into
    consecutive runs (within one group id) that close on their own: every edge run once in each
    direction and no edge twice in the same one. A run that closes with positive signed volume is a solid
    seen from outside; open parts (a bin without a lid), inside-out parts and whatever follows an open
    part in its group are drawn two-sided.
    """
    nt = len(tri)
    out = np.zeros(nt, bool)
    if nt == 0:
        return out
    q = np.round(tri / 1e-5).astype(np.int64).reshape(-1, 3)  # shared corners compare exactly
    _, vid = np.unique(q, axis=0, return_inverse=True)
    vid = vid.reshape(-1, 3).tolist()
    vol = (np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0).tolist()
    groups = np.asarray(groups).tolist()
    start, open_edges, ok, v = 0, set(), True, 0.0
    for t in range(nt):
        if t > start and groups[t] != groups[t - 1]:
            start, open_edges, ok, v = t, set(), True, 0.0  # a group ends open: nothing of it is culled
        i0, i1, i2 = vid[t]
        for e in ((i0, i1), (i1, i2), (i2, i0)):
            if (e[1], e[0]) in open_edges:
                open_edges.remove((e[1], e[0]))
            elif e in open_edges:
                ok = False  # the same edge twice in one direction: not a consistently wound surface
            else:
                open_edges.add(e)
        v += vol[t]
        if not open_edges:
            if ok and v > 0:
                out[start : t + 1] = True
            start, ok, v = t + 1, True, 0.0
    return out


def _split(keep: np.ndarray, closed: np.ndarray) -> list[tuple[int, int, bool]]:
    """Runs of kept triangles in buffer order (so depth ties resolve as in a full draw), cut wherever
    the back-face state changes."""
    runs = [(f, c, True) for f, c in _runs(keep & closed)] + [(f, c, False) for f, c in _runs(keep & ~closed)]
    return sorted(runs)


def _box_corners(box) -> np.ndarray:
    x0, y0, z0, x1, y1, z1 = (float(v) for v in box)
    return np.array([[x, y, z, 1.0] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])


def _door_rects(clip: np.ndarray) -> list[Rect | None]:
    """Screen bounding rectangle (NDC) of each door box from its 8 corners' clip coordinates; None if the
    box is wholly outside the view. A box reaching behind the camera plane gets the whole screen."""
    c = clip.reshape(-1, 8, 4)
    x, y, w = c[..., 0], c[..., 1], c[..., 3]
    outside = (x < -w).all(1) | (x > w).all(1) | (y < -w).all(1) | (y > w).all(1) | (w <= 1e-6).all(1)
    straddle = (w <= 1e-6).any(1)
    ws = np.where(w > 1e-6, w, 1.0)
    nx, ny = x / ws, y / ws
    lo_x, hi_x, lo_y, hi_y = nx.min(1), nx.max(1), ny.min(1), ny.max(1)
    return [
        None
        if outside[k]
        else FULL
        if straddle[k]
        else (float(lo_x[k]), float(lo_y[k]), float(hi_x[k]), float(hi_y[k]))
        for k in range(len(c))
    ]


def _runs(keep: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of kept triangles as (first vertex, vertex count)."""
    k = np.concatenate([[False], keep, [False]]).astype(np.int8)
    d = np.diff(k)
    starts, ends = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
    return [(int(s) * 3, int(e - s) * 3) for s, e in zip(starts, ends, strict=True)]
