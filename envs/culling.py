"""Portal culling: which of a scene's triangles a camera inside a closed room can see.

Why: under llvmpipe a frame costs per rasterised triangle and fragment, and from inside one room of an
apartment most of the scene is behind walls (mean depth complexity ~5.7 on the default scene). Rooms of
procedural indoor scenes are closed boxes whose only openings are their doors, so what a camera in room
A can see lies in A, or in a room B seen through a door of A whose opening projects into the screen, and
so on through B's doors with the screen rectangle narrowed each time (Luebke & Georges 1995, "Portals and
mirrors"). The test is conservative (axis-aligned screen bounds of each opening's box), so culling never
removes a visible triangle; the drawn triangles keep their original order, so the image is the same.
Cameras outside every room (top-down maps, scenes without ``rooms``) draw every room.

Frustum: each part (an instance's consecutive triangles) whose bounding box lies wholly outside the view
frustum is skipped too; llvmpipe shades every vertex it is given, clipped or not.

Back faces: a closed, outward-wound mesh (every directed edge matched by its reverse, positive volume;
walls, floors and closed furniture parts) never shows a back face to a camera outside it, so those
triangles are drawn with back-face culling; open meshes (a bin without a lid) are drawn two-sided.
"""

from __future__ import annotations

import numpy as np

Rect = tuple[float, float, float, float]  # screen rectangle in NDC: x0, y0, x1, y1
FULL: Rect = (-1.0, -1.0, 1.0, 1.0)


class PortalCuller:
    """What a pose can see, as draw commands: portal culling of rooms, frustum culling of parts, and
    back-face culling of closed solids.

    The buffer is cut into segments (consecutive triangles of one instance, with the same rooms and
    back-face state). A pose keeps the segments of the rooms it sees (``visible_rooms``) whose bounding
    box meets the view frustum; kept neighbours are merged into runs, in buffer order, so depth ties
    resolve as in a full draw. The renderer submits each stretch of runs with the same back-face state as
    one multi-draw (``glMultiDrawArraysIndirect``), so the many small runs cost one call.

    Args:
        vertices: (N, >=3) triangle-soup positions (3 rows per triangle), as the renderer's buffer; column
            10, where present, is the instance id (closed solids and segments never span two).
        rooms: ``Scene.rooms`` with ``bounds``, ``height`` and ``doors``; if any room lacks them (or
            there are more than 62), no room is culled, only parts outside the view and back faces.
        enabled: False draws every triangle two-sided (the reference the culled image must equal).
    """

    def __init__(self, vertices: np.ndarray, rooms: list[dict], enabled: bool = True) -> None:
        self.n_vertices = int(len(vertices))
        self.chunk = 600  # vertices per draw command (a multiple of 3)
        ntri = self.n_vertices // 3
        self.enabled = bool(enabled) and ntri > 0
        self.rooms: list[dict] = []
        self._closed = np.zeros(ntri, bool)
        if not self.enabled:  # everything, two-sided
            return
        tri = np.asarray(vertices[: ntri * 3, :3], dtype=np.float64).reshape(-1, 3, 3)
        groups = np.asarray(vertices[::3, 10])[:ntri] if vertices.shape[1] > 10 else np.zeros(ntri)
        self._closed = closed_outward(tri, groups)
        lo, hi = tri.min(axis=1), tri.max(axis=1)
        mask = np.zeros(ntri, np.int64)
        usable = bool(rooms) and all("doors" in r and "height" in r for r in rooms) and len(rooms) <= 62
        if usable:
            self.rooms = rooms
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
        # segments: consecutive triangles of one instance with the same rooms and back-face state
        cut = np.flatnonzero((np.diff(mask) != 0) | (np.diff(self._closed.astype(np.int8)) != 0)
                             | (np.diff(groups) != 0)) + 1  # fmt: skip
        starts, ends = np.r_[0, cut], np.r_[cut, ntri]
        self._seg_first = (starts * 3).astype(np.int64)
        self._seg_end = (ends * 3).astype(np.int64)
        self._seg_closed = self._closed[starts]
        self._seg_rooms = mask[starts]
        seg_lo, seg_hi = np.minimum.reduceat(lo, starts), np.maximum.reduceat(hi, starts)
        self._seg_centre, self._seg_extent = (seg_lo + seg_hi) / 2, (seg_hi - seg_lo) / 2
        self._cache: dict[bytes, tuple[np.ndarray, list[tuple[bool, int, int]]]] = {}
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
        """Whether rooms are culled (the scene's rooms have doors)."""
        return bool(self.rooms)

    @property
    def max_commands(self) -> int:
        """An upper bound on the draw commands of one pose (the indirect buffer's size in rows)."""
        if not self.enabled:
            return max(1, -(-self.n_vertices // self.chunk))
        return max(1, int((-(-(self._seg_end - self._seg_first) // self.chunk)).sum()))

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

    def keep(self, T_wc: np.ndarray, mvp: np.ndarray, frustum: bool = True) -> np.ndarray:
        """Per segment: is it drawn from this pose (in a visible room, and, with ``frustum``, its box
        meets the view frustum)?"""
        keep = np.ones(len(self._seg_first), bool)
        if self.rooms:
            seen = self.visible_rooms(T_wc, mvp)
            if seen is not None:
                vis = sum(1 << r for r in seen)
                keep = (self._seg_rooms == 0) | ((self._seg_rooms & vis) != 0)
        if frustum:
            # Gribb & Hartmann: the frustum's planes are sums of mvp rows; a box is outside when its
            # corner farthest along a plane's normal is behind that plane
            m = np.asarray(mvp, np.float64)
            planes = np.stack([m[3] + m[0], m[3] - m[0], m[3] + m[1], m[3] - m[1], m[3] + m[2], m[3] - m[2]])
            n = planes[:, :3].T
            far = self._seg_centre @ n + self._seg_extent @ np.abs(n) + planes[:, 3]
            keep &= (far >= 0).all(axis=1)
        return keep

    def draws(self, T_wc: np.ndarray, mvp: np.ndarray, frustum: bool = True
              ) -> tuple[np.ndarray, list[tuple[bool, int, int]]]:  # fmt: skip
        """Draw commands for pose ``T_wc``: a (K, 5) uint32 array of (vertex count, 1, first vertex, 0,
        0) rows in buffer order, and the batches that submit them: (cull back faces, first row, rows)."""
        if not self.enabled:
            return self._commands(np.array([0]), np.array([self.n_vertices]), np.array([False]))
        keep = self.keep(T_wc, mvp, frustum)
        key = keep.tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        k = np.flatnonzero(keep)
        if len(k) == 0:
            return np.zeros((0, 5), np.uint32), []
        closed = self._seg_closed[k]
        new_run = np.r_[True, (np.diff(k) != 1) | (closed[1:] != closed[:-1])]
        heads = np.flatnonzero(new_run)
        tails = np.r_[heads[1:], len(k)] - 1
        first = self._seg_first[k[heads]]
        count = self._seg_end[k[tails]] - first
        out = self._commands(first, count, closed[heads])
        if len(self._cache) >= 4096:  # distinct visible sets; bounded for long walks in big scenes
            self._cache.clear()
        self._cache[key] = out
        return out

    def _commands(self, first: np.ndarray, count: np.ndarray, closed: np.ndarray
                  ) -> tuple[np.ndarray, list[tuple[bool, int, int]]]:  # fmt: skip
        """Runs (first vertex, vertex count, back-face state) as draw commands and batches. Long runs go in
        pieces of at most ``chunk`` vertices: from some poses llvmpipe's draw module takes 3-4x as long
        for one 12k-vertex draw as for the same vertices in 600-vertex pieces (from others the same;
        ``benchmarks/bench_render_breakdown.py`` measures both)."""
        pieces = -(-count // self.chunk)
        run = np.repeat(np.arange(len(first)), pieces)
        offset = (np.arange(len(run)) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * self.chunk
        cmds = np.zeros((len(run), 5), np.uint32)
        cmds[:, 0] = np.minimum(self.chunk, count[run] - offset)
        cmds[:, 1] = 1
        cmds[:, 2] = first[run] + offset
        state = closed[run]
        cut = np.flatnonzero(state[1:] != state[:-1]) + 1
        b0, b1 = np.r_[0, cut], np.r_[cut, len(run)]
        return cmds, [(bool(state[a]), int(a), int(b - a)) for a, b in zip(b0, b1, strict=True)]

    def ranges(self, T_wc: np.ndarray, mvp: np.ndarray, frustum: bool = False) -> list[tuple[int, int, bool]]:
        """(first vertex, count, cull back faces) runs to draw, in buffer order; by default those of the
        visible rooms only (``frustum=True`` also drops parts outside the view, as the renderer does)."""
        cmds, batches = self.draws(T_wc, mvp, frustum)
        return [(int(cmds[i, 2]), int(cmds[i, 0]), closed)
                for closed, a, n in batches for i in range(a, a + n)]  # fmt: skip


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


def _box_corners(box) -> np.ndarray:
    x0, y0, z0, x1, y1, z1 = (float(v) for v in box)
    return np.array([[x, y, z, 1.0] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])


def _door_rects(clip: np.ndarray) -> list[Rect | None]:
    """Screen bounding rectangle (NDC) of each door box from its 8 corners' clip coordinates; None if the
    box is wholly outside the view. A box reaching behind the camera plane gets the whole screen."""
    c = clip.reshape(-1, 8, 4)
    x, y, w = c[..., 0], c[..., 1], c[..., 3]
    outside = (x < -w).all(1) | (x > w).all(1) | (y < -w).all(1) | (y > w).all(1) | (w <= 1e-6).all(1)
    straddle = (w <= 1e-6).any(1).tolist()
    ws = np.where(w > 1e-6, w, 1.0)
    nx, ny = x / ws, y / ws
    rects = np.stack([nx.min(1), ny.min(1), nx.max(1), ny.max(1)], axis=1).tolist()
    return [None if out else FULL if st else tuple(r)
            for out, st, r in zip(outside.tolist(), straddle, rects, strict=True)]  # fmt: skip
