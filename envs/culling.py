"""Portal culling: which of a scene's triangles a camera inside a closed room can see.

Why: under llvmpipe a frame costs per rasterised triangle and fragment, and from inside one room of an
apartment most of the scene is behind walls (mean depth complexity ~5.7 on the default scene). Rooms of
procedural indoor scenes are closed boxes whose only openings are their doors, so what a camera in room
A can see lies in A, or in a room B seen through a door of A whose opening projects into the screen, and
so on through B's doors with the screen rectangle narrowed each time (Luebke & Georges 1995, "Portals and
mirrors"). The test is conservative (axis-aligned screen bounds of each opening's box), so culling never
removes a visible triangle: culling alone never changes the image.
Cameras outside every room (top-down maps, scenes without ``rooms``) draw every room.

Frustum: each part (an instance's consecutive triangles) whose bounding box lies wholly outside the view
frustum is skipped too; llvmpipe shades every vertex it is given, clipped or not. A part of a room seen
only through doors must meet the frustum narrowed to the doors' screen rectangle (about a quarter of the
vertices on the benchmark walk).

Order: the kept parts are drawn nearest first (by the distance from the camera's 0.5 m cell to each
part's box centre), so llvmpipe's early depth test rejects what nearer parts already cover before the
fragment shader (and its texture lookup) runs: on the benchmark walk 1.22 instead of 1.46 fragments per
pixel pass the depth test.
The order only decides which of two exactly coplanar faces wins a depth tie (no pixel on 200 indoor walk
poses, 31 pixel values in 40 outdoor frames); ``order="buffer"`` keeps the scene's own order.

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
    box meets the view frustum, sorts them nearest first (closed solids before two-sided parts), and
    merges neighbours in the buffer into runs. The renderer submits each stretch of runs with the same
    back-face state as one multi-draw (``glMultiDrawArraysIndirect``), so the many small runs cost one
    call.

    Args:
        vertices: (N, >=3) triangle-soup positions (3 rows per triangle), as the renderer's buffer; column
            10, where present, is the instance id (closed solids and segments never span two).
        rooms: ``Scene.rooms`` with ``bounds``, ``height`` and ``doors``; if any room lacks them (or
            there are more than 62), no room is culled, only parts outside the view and back faces.
        enabled: False draws every triangle two-sided, in buffer order (the reference the culled image
            must equal up to depth ties).
        order: ``"front_to_back"`` (nearest parts first) or ``"buffer"`` (the scene's order).
    """

    CELL = 0.5  #: metres; poses in one cell share a draw order (and its cache entry)

    def __init__(self, vertices: np.ndarray, rooms: list[dict], enabled: bool = True,
                 order: str = "front_to_back") -> None:  # fmt: skip
        if order not in ("front_to_back", "buffer"):
            raise ValueError(f"order must be 'front_to_back' or 'buffer', got {order!r}")
        self.order = order
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
        seg_lo, seg_hi = np.minimum.reduceat(lo, starts), np.maximum.reduceat(hi, starts)
        # per segment: box centre and half extent (one array for the frustum test's single matmul)
        self._seg_boxes = np.concatenate([(seg_lo + seg_hi) / 2, (seg_hi - seg_lo) / 2], axis=1)
        self._seg_centre = self._seg_boxes[:, :3]
        self._cache: dict[bytes, tuple[np.ndarray, list[tuple[bool, int, int]]]] = {}
        self._bounds = [tuple(float(v) for v in r["bounds"]) for r in self.rooms]
        self._height = [float(r["height"]) for r in self.rooms]
        # per room: (room it leads to, door number); every door's box corners in one array, projected
        # once per frame (a door listed by both of its rooms, once)
        self._doors: list[list[tuple[int, int]]] = []
        boxes: dict[tuple[float, ...], int] = {}
        for r in self.rooms:
            self._doors.append([])
            for d in r["doors"]:
                box = tuple(float(v) for v in d["box"])
                self._doors[-1].append((int(d["to"]), boxes.setdefault(box, len(boxes))))
        self._corners = np.concatenate([_box_corners(b) for b in boxes]) if boxes else np.zeros((0, 4))
        # per segment and room: does the segment belong to it (last column: to no room)
        seg_rooms = mask[starts]
        rooms_bits = seg_rooms[:, None] >> np.arange(len(self.rooms))
        self._member = np.concatenate([(rooms_bits & 1).astype(bool), (seg_rooms == 0)[:, None]], 1)

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
        """Per segment: is it drawn from this pose? It is when one of its rooms is visible (or it belongs
        to none) and, with ``frustum``, its box meets the view frustum, narrowed to the doors' screen
        rectangle for a room seen only through doors."""
        m = np.asarray(mvp, np.float64)
        seen = self.visible_rooms(T_wc, mvp) if self.rooms else None
        if seen is None:  # no rooms, or the camera is outside them all: every part, in the frustum
            keep = np.ones(len(self._seg_first), bool)
            if frustum:
                keep &= _meets(self._seg_boxes, _planes(m, [FULL]))[:, 0]
            return keep
        cols = [*seen, len(self.rooms)]  # the visible rooms, and "no room"
        member = self._member[:, cols]
        if frustum:
            member &= _meets(self._seg_boxes, _planes(m, [*seen.values(), FULL]))
        return member.any(axis=1)

    def draws(self, T_wc: np.ndarray, mvp: np.ndarray, frustum: bool = True
              ) -> tuple[np.ndarray, list[tuple[bool, int, int]]]:  # fmt: skip
        """Draw commands for pose ``T_wc``: a (K, 5) uint32 array of (vertex count, 1, first vertex, 0,
        0) rows in draw order, and the batches that submit them: (cull back faces, first row, rows)."""
        if not self.enabled:
            return self._commands(np.array([0]), np.array([self.n_vertices]), np.array([False]))
        keep = self.keep(T_wc, mvp, frustum)
        key = keep.tobytes()
        if self.order == "front_to_back":
            cell = np.floor(np.asarray(T_wc, np.float64)[:3, 3] / self.CELL)
            key += cell.astype(np.int64).tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        k = np.flatnonzero(keep)
        if len(k) == 0:
            return np.zeros((0, 5), np.uint32), []
        if self.order == "front_to_back":
            d = np.linalg.norm(self._seg_centre[k] - (cell + 0.5) * self.CELL, axis=1)
            k = k[np.lexsort((k, d, ~self._seg_closed[k]))]  # closed first, then nearest, then buffer
        closed = self._seg_closed[k]
        first, end = self._seg_first[k], self._seg_end[k]
        # (np.concatenate, not np.r_: this runs per frame, and np.r_ costs ~10 us a call)
        cut = np.flatnonzero((first[1:] != end[:-1]) | (closed[1:] != closed[:-1])) + 1
        heads = np.concatenate(([0], cut))
        tails = np.concatenate((heads[1:], [len(k)])) - 1
        out = self._commands(first[heads], end[tails] - first[heads], closed[heads])
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
        b0, b1 = np.concatenate(([0], cut)), np.concatenate((cut, [len(run)]))
        return cmds, [(bool(state[a]), int(a), int(b - a)) for a, b in zip(b0, b1, strict=True)]

    def ranges(self, T_wc: np.ndarray, mvp: np.ndarray, frustum: bool = False) -> list[tuple[int, int, bool]]:
        """(first vertex, count, cull back faces) runs to draw, in draw order; by default those of the
        visible rooms only (``frustum=True`` also drops parts outside the view, as the renderer does)."""
        cmds, batches = self.draws(T_wc, mvp, frustum)
        return [(int(cmds[i, 2]), int(cmds[i, 0]), closed)
                for closed, a, n in batches for i in range(a, a + n)]  # fmt: skip


#: the planes x >= x0 w, x <= x1 w, y >= y0 w, y <= y1 w, z >= -w, z <= w as rows on clip coordinates,
#: the rectangle's terms (column 3 of the first four) filled in by ``_planes``
_SIDES = np.array([[1, 0, 0, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, -1, 0, 0], [0, 0, 1, 1], [0, 0, -1, 1]],
                  np.float64)  # fmt: skip


def _planes(m: np.ndarray, rects: list[Rect]) -> np.ndarray:
    """(K, 6, 4) clip-space planes of the view frustum narrowed to each screen rectangle (NDC x0, y0,
    x1, y1): x >= x0 w, x <= x1 w, y >= y0 w, y <= y1 w (planes through the eye; Gribb & Hartmann for
    the full screen), and the near and far planes. Row combinations of the projection-view ``m``."""
    r = np.asarray(rects, np.float64).reshape(-1, 4)
    a = np.repeat(_SIDES[None], len(r), axis=0)
    a[:, :4, 3] = np.stack([-r[:, 0], r[:, 2], -r[:, 1], r[:, 3]], axis=1)
    return a @ m


def _meets(boxes: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """(boxes, K): does each box ((N, 6) centre and half extent) meet each of K frusta ((K, 6, 4)
    planes), i.e. is it wholly behind none of their planes? (its corner farthest along a plane's normal
    is inside)"""
    p = planes.reshape(-1, 4)
    n = p[:, :3].T
    far = boxes @ np.concatenate([n, np.abs(n)]) + p[:, 3]  # one small matmul: numpy's call cost rules
    return (far.reshape(len(boxes), -1, 6) >= 0).all(axis=2)


def _union(a: Rect, b: Rect) -> Rect:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def closed_outward(tri: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per triangle: is it part of a closed, outward-wound solid, so its back faces never show?

    Generators and glTF primitives emit each part's triangles together, so the buffer is cut into
    consecutive runs (within one group id) that close on their own: every edge run once in each
    direction and no edge twice in the same one. A run that closes with positive signed volume is a solid
    seen from outside; open parts (a bin without a lid), inside-out parts and whatever follows an open
    part in its group are drawn two-sided.

    Vectorised (it runs for every renderer a reset builds): a run can only close after triangle t when
    every edge so far is paired, i.e. when the running XOR of 64-bit edge hashes returns to its value at
    the run's start; each such candidate run is then checked exactly (its directed edges are the reverses
    of its directed edges, none twice), so a hash collision can only leave a part two-sided.
    """
    nt = len(tri)
    if nt == 0:
        return np.zeros(0, bool)
    q = np.round(tri / 1e-5).astype(np.int64).reshape(-1, 3)  # shared corners compare exactly
    order = np.lexsort((q[:, 2], q[:, 1], q[:, 0]))
    qs = q[order]
    vid = np.empty(len(q), np.int64)
    vid[order] = np.cumsum(np.r_[True, (qs[1:] != qs[:-1]).any(axis=1)]) - 1
    nv = int(vid.max()) + 1
    a = vid.reshape(-1, 3)
    b = a[:, [1, 2, 0]]  # the directed edges a -> b of each triangle
    h = _mix64(np.minimum(a, b) * nv + np.maximum(a, b))
    x = np.bitwise_xor.accumulate(h[:, 0] ^ h[:, 1] ^ h[:, 2])
    groups = np.asarray(groups)
    gfirst = np.r_[True, groups[1:] != groups[:-1]]
    gstart = np.flatnonzero(gfirst)
    base = np.where(gstart > 0, x[np.maximum(gstart - 1, 0)], np.uint64(0))[np.cumsum(gfirst) - 1]
    closes = x == base  # every edge since the group's start (or the last closed run) is paired
    run_first = gfirst | np.r_[False, closes[:-1]]
    run = np.cumsum(run_first) - 1
    starts = np.flatnonzero(run_first)
    ends = np.r_[starts[1:], nt] - 1
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    ok = closes[ends] & (np.add.reduceat(vol, starts) > 0)
    # exact check: per run, the sorted directed edges equal the sorted reversed ones, with no repeats
    er = np.repeat(run, 3)
    fwd, rev = (a * nv + b).ravel(), (b * nv + a).ravel()
    o = np.lexsort((fwd, er))
    fs, rs = fwd[o], rev[np.lexsort((rev, er))]
    ro = er[o]
    bad = (fs != rs) | np.r_[False, (fs[1:] == fs[:-1]) & (ro[1:] == ro[:-1])]
    ok[ro[bad]] = False
    return ok[run]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: well-spread 64-bit hashes of int64 keys."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _box_corners(box) -> np.ndarray:
    x0, y0, z0, x1, y1, z1 = (float(v) for v in box)
    return np.array([[x, y, z, 1.0] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])


def _door_rects(clip: np.ndarray) -> list[Rect | None]:
    """Screen bounding rectangle (NDC) of each door box from its 8 corners' clip coordinates; None if the
    box is wholly outside the view. A box reaching behind the camera plane gets the whole screen."""
    c = clip.reshape(-1, 8, 4)
    w = c[..., 3:]
    xy = c[..., :2]
    behind = w[..., 0] <= 1e-6
    outside = (xy < -w).all(1).any(1) | (xy > w).all(1).any(1) | behind.all(1)
    ndc = xy / np.where(w > 1e-6, w, 1.0)
    rects = np.concatenate([ndc.min(1), ndc.max(1)], axis=1).tolist()
    return [None if out else FULL if st else tuple(r)
            for out, st, r in zip(outside.tolist(), behind.any(1).tolist(), rects, strict=True)]  # fmt: skip
