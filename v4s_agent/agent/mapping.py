"""A top-down occupancy map from the agent's own depth and odometry, and shortest-path driving on it.

Why: an agent may not read the env's navigation grid (privileged), but a robot has depth and odometry
(Habitat's GPS+compass). Back-projecting each depth frame into the world gives floor cells (free) and
everything between 0.1 m and head height (obstacles); Dijkstra over the free cells (obstacles inflated by
the robot's radius, unknown cells allowed at a higher cost) gives a path, and a turn-or-go controller
follows it with Habitat's discrete actions. Both the non-generative frontier baseline and the planner
agent use it, so they are compared with the same sensors and the same low-level driving.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..envs.actions import MOVE_FORWARD, STOP, TURN_ANGLE_DEG, TURN_LEFT, TURN_RIGHT
from ..envs.geometry import CAMERA_HEIGHT, intrinsics, wrap_angle, yaw_of

UNKNOWN_COST = 3.0  # path cost of an unobserved cell relative to a free one (optimistic, but prefers known)


class OccupancyMap:
    """2-D grid (rows = world z, columns = world x) of free/obstacle evidence from depth frames.

    Args:
        cell: cell size in metres.
        size_m: side of the square map, centred on the first pose it integrates.
        agent_radius: obstacles are inflated by this much for planning.
        max_range: depth beyond this is ignored (noisy and coarse at low resolution).
        hfov_deg: the camera's horizontal field of view.
    """

    def __init__(
        self,
        cell: float = 0.1,
        size_m: float = 40.0,
        agent_radius: float = 0.2,
        max_range: float = 5.0,
        hfov_deg: float = 90.0,
    ) -> None:
        if cell <= 0 or size_m <= cell:
            raise ValueError(f"need 0 < cell < size_m. Got cell={cell}, size_m={size_m}")
        self.cell, self.n = float(cell), int(round(size_m / cell))
        self.agent_radius, self.max_range, self.hfov_deg = agent_radius, max_range, hfov_deg
        self.free = np.zeros((self.n, self.n), np.int32)
        self.occ = np.zeros((self.n, self.n), np.int32)
        self.visited = np.zeros((self.n, self.n), bool)
        self.bump = np.zeros((self.n, self.n), np.int32)  # forward steps that did not move: unseen obstacles
        self.near = np.zeros((self.n, self.n), bool)  # within blind_radius of a visited pose: not unknown
        self.blind_radius = 0.5  # the floor closer than this is below the pitched camera's field of view
        self.origin: tuple[float, float] | None = None  # world (x, z) of the grid's corner

    # ------------------------------------------------------------------ coordinates
    def to_cell(self, x: np.ndarray | float, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """World (x, z) -> integer (row, col) (may lie outside the grid)."""
        assert self.origin is not None, "integrate a frame or set_origin first"
        r = np.floor((np.asarray(z) - self.origin[1]) / self.cell).astype(np.int64)
        c = np.floor((np.asarray(x) - self.origin[0]) / self.cell).astype(np.int64)
        return r, c

    def to_world(self, r: np.ndarray | float, c: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Cell centre (row, col) -> world (x, z)."""
        assert self.origin is not None
        return (
            self.origin[0] + (np.asarray(c) + 0.5) * self.cell,
            self.origin[1] + (np.asarray(r) + 0.5) * self.cell,
        )

    def set_origin(self, T_wc: np.ndarray) -> None:
        if self.origin is None:
            half = 0.5 * self.n * self.cell
            self.origin = (float(T_wc[0, 3]) - half, float(T_wc[2, 3]) - half)

    def _inside(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (r >= 0) & (r < self.n) & (c >= 0) & (c < self.n)

    # ------------------------------------------------------------------ evidence
    def integrate(self, depth: np.ndarray, T_wc: np.ndarray, stride: int = 1) -> None:
        """Add one metric z-depth frame (0 = no hit) seen from camera pose ``T_wc``."""
        depth = np.asarray(depth, dtype=np.float64)
        if depth.ndim != 2:
            raise ValueError(f"depth must be (H, W). Got {depth.shape}")
        T_wc = np.asarray(T_wc, dtype=np.float64)
        self.set_origin(T_wc)
        h, w = depth.shape
        K = intrinsics(h, w, self.hfov_deg)
        vs, us = np.mgrid[0:h:stride, 0:w:stride]
        d = depth[vs, us]
        ok = (d > 0) & (d < self.max_range)
        d, us, vs = d[ok], us[ok], vs[ok]
        pc = np.stack([(us + 0.5 - K[0, 2]) / K[0, 0] * d, -(vs + 0.5 - K[1, 2]) / K[1, 1] * d, -d])
        pw = T_wc[:3, :3] @ pc + T_wc[:3, 3:4]
        floor_y = T_wc[1, 3] - CAMERA_HEIGHT
        rel = pw[1] - floor_y
        r, c = self.to_cell(pw[0], pw[2])
        inside = self._inside(r, c)
        floor = inside & (rel < 0.1)
        obst = inside & (rel >= 0.1) & (rel < CAMERA_HEIGHT + 0.3)
        np.add.at(self.free, (r[floor], c[floor]), 1)
        np.add.at(self.occ, (r[obst], c[obst]), 1)
        self.mark_visited(T_wc)

    def mark_visited(self, T_wc: np.ndarray) -> None:
        """The robot's footprint is free (it stands there), below the camera's field of view."""
        self.set_origin(T_wc)
        r, c = self.to_cell(T_wc[0, 3], T_wc[2, 3])
        k = max(1, int(math.ceil(self.agent_radius / self.cell)) - 1)
        rr, cc = np.mgrid[r - k : r + k + 1, c - k : c + k + 1]
        m = self._inside(rr, cc)
        self.visited[rr[m], cc[m]] = True
        k = int(math.ceil(self.blind_radius / self.cell))
        rr, cc = np.mgrid[r - k : r + k + 1, c - k : c + k + 1]
        m = self._inside(rr, cc) & ((rr - r) ** 2 + (cc - c) ** 2 <= k * k)
        self.near[rr[m], cc[m]] = True

    def mark_blocked_ahead(self, T_wc: np.ndarray, distance: float = 0.3) -> None:
        """A forward step that did not move the robot: something it cannot see is in front.

        Why a separate layer across the robot's width: one cell of obstacle evidence is outvoted by the
        floor seen there, and the robot then drives into the same spot again (issue 21: 100+ blocked
        moves per episode); a bump is hard evidence that only standing there can clear.
        """
        self.set_origin(T_wc)
        yaw = yaw_of(T_wc)
        fx, fz = -math.sin(yaw), -math.cos(yaw)
        for ahead in (distance - 0.05, distance + 0.05):
            for side in (-0.1, 0.0, 0.1):
                x = T_wc[0, 3] + ahead * fx - side * fz
                z = T_wc[2, 3] + ahead * fz + side * fx
                r, c = self.to_cell(x, z)
                if self._inside(r, c):
                    self.bump[r, c] += 1

    # ------------------------------------------------------------------ layers
    def occupied(self) -> np.ndarray:
        """Obstacle cells: obstacle evidence that is not outweighed by floor evidence."""
        return ((self.occ > np.maximum(1, self.free // 4)) | (self.bump > 0)) & ~self.visited

    def known_free(self) -> np.ndarray:
        return ((self.free > 0) | self.visited) & ~self.occupied()

    def blocked(self) -> np.ndarray:
        """Obstacles inflated by the agent radius (a disk), the planner's no-go cells."""
        from scipy.ndimage import binary_dilation

        k = int(math.ceil(self.agent_radius / self.cell))
        yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
        disk = (yy * yy + xx * xx) <= k * k
        return binary_dilation(self.occupied(), structure=disk) & ~self.visited

    def frontiers(self, min_size: int = 3) -> np.ndarray:
        """Known-free, unblocked cells next to unknown ones (in clusters of at least ``min_size``)."""
        from scipy.ndimage import binary_dilation, label

        free = self.known_free() & ~self.blocked()
        unknown = (self.free == 0) & (self.occ == 0) & ~self.visited & ~self.near
        f = free & binary_dilation(unknown, structure=np.ones((3, 3), bool))
        lab, n = label(f, structure=np.ones((3, 3), bool))
        if n == 0:
            return f
        sizes = np.bincount(lab.ravel())
        keep = sizes >= min_size
        keep[0] = False
        return keep[lab]

    # ------------------------------------------------------------------ planning
    def distance_field(self, goals: np.ndarray) -> np.ndarray:
        """Path length (m) from every cell to the nearest ``goals`` cell (bool grid); ``inf`` = unreachable.

        Dijkstra on the 8-connected grid of unblocked cells inside the known area's bounding box (+ margin);
        unknown cells cost ``UNKNOWN_COST`` times a free one.
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import dijkstra

        goals = np.asarray(goals, bool)
        out = np.full((self.n, self.n), np.inf)
        if not goals.any():
            return out
        known = (self.free > 0) | (self.occ > 0) | self.visited | goals
        rows, cols = np.nonzero(known)
        m = 8
        r0, r1 = max(0, rows.min() - m), min(self.n, rows.max() + m + 1)
        c0, c1 = max(0, cols.min() - m), min(self.n, cols.max() + m + 1)
        blocked = self.blocked()[r0:r1, c0:c1]
        g = goals[r0:r1, c0:c1]
        cost = np.where(((self.free > 0) | self.visited)[r0:r1, c0:c1], 1.0, UNKNOWN_COST)
        h, w = blocked.shape
        idx = np.arange(h * w).reshape(h, w)
        passable = ~blocked | g
        src, dst, wt = [], [], []
        for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
            a = idx[0 : h - dr, max(0, -dc) : w - max(0, dc)]  # dr >= 0 for these four offsets
            b = idx[dr:h, max(0, dc) : w - max(0, -dc)]
            ok = passable.ravel()[a.ravel()] & passable.ravel()[b.ravel()]
            step = self.cell * (math.sqrt(2) if dr and dc else 1.0)
            cw = 0.5 * (cost.ravel()[a.ravel()] + cost.ravel()[b.ravel()]) * step
            src += [a.ravel()[ok], b.ravel()[ok]]
            dst += [b.ravel()[ok], a.ravel()[ok]]
            wt += [cw[ok], cw[ok]]
        graph = coo_matrix(
            (np.concatenate(wt), (np.concatenate(src), np.concatenate(dst))), shape=(h * w, h * w)
        ).tocsr()
        d = dijkstra(graph, directed=True, indices=idx[g], min_only=True)
        out[r0:r1, c0:c1] = d.reshape(h, w)
        return out

    def forward_clear(
        self, T_wc: np.ndarray, step: float = 0.25, radius: float = 0.1, yaw: float | None = None
    ) -> bool:
        """No obstacle cell within ``radius`` of the midpoint and end of a forward step (uninflated map),
        heading ``yaw`` (default: the pose's); the env checks the same two points against the robot."""
        if self.origin is None:
            return True
        occ = self.occupied()
        yaw = yaw_of(T_wc) if yaw is None else yaw
        fx, fz = -math.sin(yaw), -math.cos(yaw)
        for t in (0.5 * step, step):
            for side in (-radius, 0.0, radius):
                r, c = self.to_cell(T_wc[0, 3] + t * fx - side * fz, T_wc[2, 3] + t * fz + side * fx)
                if self._inside(r, c) and occ[r, c]:
                    return False
        return True

    def render(self, T_wc: np.ndarray | None = None, path: Sequence[tuple[int, int]] = ()) -> np.ndarray:
        """uint8 RGB top-down view (unknown grey, free white, obstacles black, agent red, path blue)."""
        img = np.full((self.n, self.n, 3), 128, np.uint8)
        img[self.known_free()] = 255
        img[self.occupied()] = 0
        for r, c in path:
            img[r, c] = (60, 90, 255)
        if T_wc is not None and self.origin is not None:
            r, c = self.to_cell(T_wc[0, 3], T_wc[2, 3])
            if self._inside(r, c):
                img[max(0, r - 1) : r + 2, max(0, c - 1) : c + 2] = (255, 0, 0)
        return img


def steer(
    T_wc: np.ndarray, target_xz: tuple[float, float], turn_tolerance_deg: float = TURN_ANGLE_DEG / 2
) -> int:
    """Turn towards ``target_xz`` until within tolerance, then move forward (Habitat actions)."""
    dx, dz = target_xz[0] - T_wc[0, 3], target_xz[1] - T_wc[2, 3]
    err = wrap_angle(math.atan2(-dx, -dz) - yaw_of(T_wc))
    if abs(math.degrees(err)) > turn_tolerance_deg:
        return TURN_LEFT if err > 0 else TURN_RIGHT
    return MOVE_FORWARD


def next_waypoint(
    dist: np.ndarray, start: tuple[int, int], lookahead: int = 5
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Follow the distance field downhill from ``start`` for ``lookahead`` cells: (waypoint, path)."""
    r, c = start
    n = dist.shape[0]
    path = [(r, c)]
    for _ in range(lookahead):
        best, bd = None, dist[r, c] if 0 <= r < n and 0 <= c < n else np.inf
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr or dc) and 0 <= rr < n and 0 <= cc < n and dist[rr, cc] < bd:
                    best, bd = (rr, cc), dist[rr, cc]
        if best is None:
            break
        r, c = best
        path.append(best)
    return (r, c), path


def drive_to(
    grid: OccupancyMap, T_wc: np.ndarray, goals: np.ndarray, lookahead: int = 5
) -> tuple[int | None, float, list[tuple[int, int]]]:
    """One action towards the nearest ``goals`` cell: ``(action or None if unreachable, length, path)``."""
    dist = grid.distance_field(goals)
    return drive_on(grid, T_wc, goals, dist, lookahead)


def drive_on(
    grid: OccupancyMap, T_wc: np.ndarray, goals: np.ndarray, dist: np.ndarray, lookahead: int = 5
) -> tuple[int | None, float, list[tuple[int, int]]]:
    """``drive_to`` with a precomputed distance field ``dist`` to ``goals``.

    Why headings and not "steer at a waypoint": a waypoint a few cells down the path cuts corners, the
    clearance check then refuses the step and the robot dithered left/right for hundreds of steps
    (issue 21). Here every one of the 24 headings is scored by the distance-to-goal after one clear
    forward step in it, plus a small cost per turn; the best heading is turned to, or walked.
    """
    r, c = grid.to_cell(T_wc[0, 3], T_wc[2, 3])
    r, c = int(r), int(c)
    if not (0 <= r < grid.n and 0 <= c < grid.n) or not np.isfinite(dist[r, c]):
        return None, float("inf"), []
    if goals[r, c]:
        return STOP, 0.0, [(r, c)]
    _, path = next_waypoint(dist, (r, c), lookahead)
    here = float(dist[r, c])
    yaw0 = yaw_of(T_wc)
    best_k, best_v = None, here + 0.05  # a slight detour around an inflated corner is allowed
    for k in sorted(range(-11, 13), key=abs):
        yaw = yaw0 + math.radians(TURN_ANGLE_DEG) * k
        if not grid.forward_clear(T_wc, yaw=yaw, radius=0.07):
            continue
        x = T_wc[0, 3] - 0.25 * math.sin(yaw)
        z = T_wc[2, 3] - 0.25 * math.cos(yaw)
        v = _soft_lookup(grid, dist, x, z) + 0.03 * abs(k)
        if v < best_v:
            best_k, best_v = k, v
    if best_k is None:
        return None, here, path
    if best_k == 0:
        return MOVE_FORWARD, here, path
    return (TURN_LEFT if best_k > 0 else TURN_RIGHT), here, path


def _soft_lookup(grid: OccupancyMap, dist: np.ndarray, x: float, z: float) -> float:
    """Distance-to-goal at world (x, z); in an inflated (blocked) cell, via its best neighbour."""
    r, c = grid.to_cell(x, z)
    r, c = int(r), int(c)
    if not (0 <= r < grid.n and 0 <= c < grid.n):
        return float("inf")
    if np.isfinite(dist[r, c]):
        return float(dist[r, c])
    win = dist[max(0, r - 1) : r + 2, max(0, c - 1) : c + 2]
    return float(win.min()) + 0.5 * grid.cell if np.isfinite(win).any() else float("inf")


# ---------------------------------------------------------------------- object search (map + detector)


def goal_component(
    prob: np.ndarray, threshold: float = 0.3, min_fraction: float = 0.006
) -> np.ndarray | None:
    """The 8-connected region of ``prob > threshold`` with the largest probability mass (bool mask).

    Why not the box of every pixel above threshold (the evaluation's reading): a few scattered false
    pixels stretch that box over the whole frame, so the goal's estimated position jumped by metres from
    one frame to the next and the old baseline turned left and right forever (issue 21).
    """
    from scipy.ndimage import label

    m = prob > threshold
    if m.mean() < min_fraction:
        return None
    lab, n = label(m, structure=np.ones((3, 3), bool))
    if n == 0:
        return None
    mass = np.bincount(lab.ravel(), weights=prob.ravel(), minlength=n + 1)
    mass[0] = 0.0
    best = int(np.argmax(mass))
    comp = lab == best
    return comp if comp.mean() >= min_fraction else None


def backproject(
    depth: np.ndarray, T_wc: np.ndarray, mask: np.ndarray, hfov_deg: float = 90.0, max_range: float = 5.0
) -> np.ndarray:
    """World points ``(N, 3)`` of the depth pixels under ``mask`` (any resolution; resized to depth's)."""
    h, w = depth.shape
    if mask.shape != (h, w):
        ry = (np.arange(h) * mask.shape[0]) // h
        rx = (np.arange(w) * mask.shape[1]) // w
        mask = mask[ry[:, None], rx[None, :]]
    vs, us = np.nonzero(mask & (depth > 0) & (depth < max_range))
    if len(vs) == 0:
        return np.zeros((0, 3))
    d = depth[vs, us].astype(np.float64)
    K = intrinsics(h, w, hfov_deg)
    pc = np.stack([(us + 0.5 - K[0, 2]) / K[0, 0] * d, -(vs + 0.5 - K[1, 2]) / K[1, 1] * d, -d])
    return (T_wc[:3, :3] @ pc + T_wc[:3, 3:4]).T


def box_of(mask: np.ndarray, h: int, w: int) -> tuple[float, float, float, float]:
    """Pixel box ``(x0, y0, x1, y1)`` in an ``h`` x ``w`` frame of a mask at any resolution."""
    ys, xs = np.nonzero(mask)
    sy, sx = h / mask.shape[0], w / mask.shape[1]
    return (xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy)


_CONTEXT_CACHE: dict[tuple[bytes, str], list[tuple[float, float, float, float]]] = {}


def context_viewpoints(
    detector: Any,
    frames: np.ndarray,
    poses: np.ndarray,
    category: str,
    every: int = 2,
    max_sd: float = 0.25,
    threshold: float = 0.3,
) -> list[tuple[float, float, float, float]]:
    """Places in the context video from which the detector saw ``category`` centred: ``[(x, z, yaw,
    score)]``, best first, frames within 0.5 m merged (their scores summed).

    Why: the scene video was filmed by someone walking up to the objects; a frame that shows the goal
    centred was taken from a good viewpoint of it, and its pose says where that is. Only RGB and the
    video's own camera poses are used (no depth, no boxes). Cached per video and category.
    """
    import hashlib

    frames = np.asarray(frames)
    key = (hashlib.sha1(np.ascontiguousarray(frames[::97]).tobytes()).digest(), category)
    if key in _CONTEXT_CACHE:
        return _CONTEXT_CACHE[key]
    out: list[list[float]] = []
    if category in detector.categories and len(frames):
        cls = detector.categories.index(category) + 1
        idx = np.arange(0, len(frames), max(1, every))
        h, w = frames.shape[1:3]
        for i0 in range(0, len(idx), 64):
            sel = idx[i0 : i0 + 64]
            for i, p in zip(sel, detector.probs(frames[sel])[:, cls], strict=True):
                comp = goal_component(p, threshold, min_fraction=0.01)
                if comp is None:
                    continue
                sd = _sd(box_of(comp, h, w), h, w)
                if sd > max_sd:
                    continue
                T = poses[i]
                x, z, yaw = float(T[0, 3]), float(T[2, 3]), yaw_of(T)
                score = float(p[comp].sum()) / p.size * (1.0 - sd)
                for o in out:
                    if math.hypot(o[0] - x, o[1] - z) < 0.5:
                        if score > o[4]:
                            o[0], o[1], o[2], o[4] = x, z, yaw, score
                        o[3] += score
                        break
                else:
                    out.append([x, z, yaw, score, score])
    res = sorted(((o[0], o[1], o[2], o[3]) for o in out), key=lambda o: -o[3])
    _CONTEXT_CACHE[key] = res
    return res


class ObjectSearch:
    """The non-generative navigation stack: depth + odometry map, goal map from a detector, collision-free
    driving with recovery, frontier exploration, and a verified stop rule.

    Why one class for the frontier baseline and the V4S agent: both then have the same sensors and the
    same low-level driving, so the gap between them is what the video plan adds (its waypoint biases
    where to explore, see ``act(..., waypoint=)``).

    Args:
        detector: ``categories`` and ``probs(frames) -> (N, C+1, S, S)`` (the evaluator detector), or None.
        category: the goal category (``None``: no detector use; the agent only explores).
        stop_sd: stop when the detected goal region's box is at most this SD ...
        stop_distance: ... and its nearest points are at most this far (floor distance, metres).
        min_votes: frames that must have seen the goal at a place before it is approached.
        scan_turns: turns in place at the start (24 x 15 deg = a full look around).
        arrive_patience: steps near a goal candidate without a verified stop before it is rejected.
    """

    def __init__(
        self,
        detector: Any = None,
        category: str | None = None,
        stop_sd: float = 0.18,
        stop_distance: float = 1.0,
        min_votes: int = 3,
        scan_turns: int = 24,
        arrive_patience: int = 30,
        threshold: float = 0.3,
    ) -> None:
        self.detector, self.category = detector, category
        self.stop_sd, self.stop_distance, self.min_votes = stop_sd, stop_distance, min_votes
        self.scan_turns, self.arrive_patience, self.threshold = scan_turns, arrive_patience, threshold
        self.map = OccupancyMap()
        self.votes = np.zeros((self.map.n, self.map.n), np.float32)
        self.rejected: list[tuple[float, float]] = []
        self.viewpoints: list[tuple[float, float, float, float]] = []  # from the context video
        self._failed: list[tuple[int, int]] = []
        self.candidate: tuple[float, float] | None = None
        self.steps, self.last_action, self.last_pose, self._vp_steps = 0, None, None, 0
        self.blocked_streak, self._recovery = 0, []  # type: ignore[var-annotated]
        self._near_steps, self._frontier, self._frontier_age = 0, None, 0
        self.detection: dict[str, Any] | None = None  # this step's goal detection (box, distance, points)
        self.path: list[tuple[int, int]] = []
        self._shape: tuple[int, ...] = (128, 128)
        self.stats: dict[str, Any] = {"detections": 0, "blocked": 0, "rejected": 0, "mode": None}

    def use_context(self, context: dict[str, Any] | None, min_score: float = 0.01) -> None:
        """Take goal viewpoints from the context video (frames + poses), see :func:`context_viewpoints`."""
        if context is None or self.detector is None or self.category is None:
            return
        poses = context.get("poses") if isinstance(context, dict) else None
        if poses is None:
            return
        vps = context_viewpoints(self.detector, context["frames"], np.asarray(poses), self.category)
        self.viewpoints = [v for v in vps if v[3] >= min_score][:6]

    # ------------------------------------------------------------------ perception
    def _detect(self, rgb: np.ndarray, depth: np.ndarray, T: np.ndarray) -> None:
        self.detection = None
        if self.detector is None or self.category is None or self.category not in self.detector.categories:
            return
        prob = self.detector.probs(rgb[None])[0][self.detector.categories.index(self.category) + 1]
        comp = goal_component(prob, self.threshold)
        if comp is None:
            return
        pts = backproject(depth, T, comp)
        if len(pts) < 3:
            return
        h, w = depth.shape
        box = box_of(comp, h, w)
        floor_d = np.hypot(pts[:, 0] - T[0, 3], pts[:, 2] - T[2, 3])
        self.detection = {"box": box, "distance": float(np.percentile(floor_d, 10)), "points": pts}
        self.stats["detections"] += 1
        r, c = self.map.to_cell(pts[:, 0], pts[:, 2])
        ok = self.map._inside(r, c)
        cells = np.unique(r[ok] * self.map.n + c[ok])
        xs, zs = self.map.to_world(cells // self.map.n, cells % self.map.n)
        cells = cells[[not self._is_rejected((float(x), float(z))) for x, z in zip(xs, zs, strict=True)]]
        self.votes.ravel()[cells] += 1.0

    def _best_candidate(self) -> tuple[float, float] | None:
        """The place most frames saw the goal at (votes pooled over 3x3 cells), if seen often enough."""
        from scipy.ndimage import uniform_filter

        if self.votes.max() <= 0:
            return None
        pooled = uniform_filter(self.votes, size=3, mode="constant") * 9.0
        r, c = np.unravel_index(int(np.argmax(pooled)), pooled.shape)
        if pooled[r, c] < self.min_votes:
            return None
        x, z = self.map.to_world(r, c)
        return float(x), float(z)

    def _reject(self, xz: tuple[float, float], radius: float = 1.0) -> None:
        """Forget the goal evidence around ``xz`` (not confirmed up close: a false detection)."""
        rr, cc = np.mgrid[0 : self.map.n, 0 : self.map.n]
        xs, zs = self.map.to_world(rr, cc)
        self.votes[(xs - xz[0]) ** 2 + (zs - xz[1]) ** 2 <= radius**2] = 0.0
        self.rejected.append(xz)
        self.stats["rejected"] += 1
        self.candidate, self._near_steps = None, 0

    # ------------------------------------------------------------------ acting
    def act(
        self,
        rgb: np.ndarray,
        depth: np.ndarray,
        T: np.ndarray,
        waypoint: tuple[float, float] | None = None,
    ) -> int:
        """One action. ``waypoint`` (world x, z), e.g. from a video plan, is driven to while no goal has
        been seen often enough; without one the robot explores the nearest frontier."""
        T = np.asarray(T, dtype=np.float64)
        if self.last_action == MOVE_FORWARD and self.last_pose is not None:
            moved = math.hypot(T[0, 3] - self.last_pose[0, 3], T[2, 3] - self.last_pose[2, 3])
            if moved < 0.1:  # bumped into something the depth did not show (or slid along it)
                self.map.mark_blocked_ahead(self.last_pose)
                self.blocked_streak += 1
                self.stats["blocked"] += 1
            else:
                self.blocked_streak = 0
        self._shape = tuple(depth.shape)
        self.map.integrate(depth, T, stride=2)
        self._detect(rgb, depth, T)
        self.path = []
        a = self._decide(T, waypoint)
        if a == MOVE_FORWARD and not self.map.forward_clear(T, radius=0.07):
            a = self._turn_towards_free(T)
        self.last_action, self.last_pose = a, T
        self.steps += 1
        return a

    def _decide(self, T: np.ndarray, waypoint: tuple[float, float] | None) -> int:
        if self._recovery:
            self.stats["mode"] = "recovery"
            return self._recovery.pop()
        if self.blocked_streak >= 3:  # the map keeps sending it into something: back off by turning
            self.blocked_streak = 0
            self._recovery = [TURN_LEFT] * 4
            return self._decide(T, waypoint)
        det = self.detection
        if det is not None and det["distance"] <= self.stop_distance + 0.8:
            a = self._final_approach(det, T)
            if a is not None:
                return a
        self.candidate = self._best_candidate()
        if self.candidate is not None:
            self.stats["mode"] = "approach"
            return self._approach(T)
        if self.steps < self.scan_turns and not self.viewpoints:
            self.stats["mode"] = "scan"
            return TURN_LEFT
        if self.viewpoints:
            a = self._to_viewpoint(T)
            if a is not None:
                self.stats["mode"] = "context viewpoint"
                return a
        if waypoint is not None:
            a = self._to_point(T, waypoint, radius=0.5)
            if a is not None and a != STOP:
                self.stats["mode"] = "waypoint"
                return a
        self.stats["mode"] = "explore"
        return self._explore(T, waypoint)

    def _final_approach(self, det: dict[str, Any], T: np.ndarray) -> int | None:
        """The goal is seen close by: centre it, step closer while it is far, back off when it sits at the
        bottom of the (pitched) view, stop when verified; ``None`` hands over to the approach."""
        h, w = self._shape
        box = det["box"]
        cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
        sd = _sd(box, h, w)
        gx, gz = float(np.median(det["points"][:, 0])), float(np.median(det["points"][:, 2]))
        if self._is_rejected((gx, gz)):
            return None
        r, c = self.map.to_cell(gx, gz)
        seen_before = bool(
            self.map._inside(r, c)
            and self.votes[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3].max() >= self.min_votes
        )
        self.stats["mode"] = "final"
        dist = det["distance"]
        # a goal centred from under 0.5 m is below the pitched camera's view: that is a false detection
        if sd <= self.stop_sd and 0.5 <= dist <= self.stop_distance and seen_before:
            self.stats["stop_reason"] = f"detector: goal centred (SD {sd:.2f}) {dist:.2f} m away"
            return STOP
        self._near_steps += 1
        if self._near_steps > self.arrive_patience:
            self._reject((gx, gz))
            return None
        if abs(cx - w / 2) > 0.09 * w:  # a 15 deg turn moves the view by ~0.13 w: this is the finest
            return TURN_LEFT if cx < w / 2 else TURN_RIGHT
        if dist < 0.75 and cy > 0.6 * h:  # too close: it sits low in the view; turn away, step back
            self._recovery = [MOVE_FORWARD, MOVE_FORWARD] + [TURN_LEFT] * 12
            return self._recovery.pop()
        if (dist > self.stop_distance or cy < 0.4 * h) and self.map.forward_clear(T):
            return MOVE_FORWARD
        return None

    def _to_viewpoint(self, T: np.ndarray) -> int | None:
        """Drive to the best context viewpoint, face its heading, look around it; drop it if the goal is
        not seen there (the live detector's final approach takes over when it is)."""
        x, z, yaw, _ = self.viewpoints[0]
        if math.hypot(x - T[0, 3], z - T[2, 3]) > 0.4:
            a = self._to_point(T, (x, z), radius=0.3)
            if a is not None and a != STOP:
                return a
            if a is None:
                self._vp_steps = self._vp_steps + 1
                if self._vp_steps <= 3:
                    return TURN_LEFT
        self._vp_steps = self._vp_steps + 1
        err = wrap_angle(yaw - yaw_of(T))
        if self._vp_steps <= 14 and abs(math.degrees(err)) > 7.5:
            return TURN_LEFT if err > 0 else TURN_RIGHT
        if self._vp_steps <= 14:
            return TURN_LEFT if self._vp_steps % 6 < 3 else TURN_RIGHT
        self.viewpoints.pop(0)
        self._vp_steps = 0
        return None

    def _is_rejected(self, xz: tuple[float, float]) -> bool:
        return any(math.hypot(xz[0] - x, xz[1] - z) < 1.0 for x, z in self.rejected)

    def _to_point(
        self, T: np.ndarray, xz: tuple[float, float], radius: float, inner: float = 0.0
    ) -> int | None:
        """Drive to any unblocked cell between ``inner`` and ``radius`` of ``xz``; STOP there; None if
        unreachable."""
        m = self.map
        r, c = m.to_cell(xz[0], xz[1])
        k = int(math.ceil(radius / m.cell))
        goals = np.zeros((m.n, m.n), bool)
        r0, r1, c0, c1 = max(0, r - k), min(m.n, r + k + 1), max(0, c - k), min(m.n, c + k + 1)
        if r0 >= r1 or c0 >= c1:
            return None
        rr, cc = np.mgrid[r0:r1, c0:c1]
        d2 = (rr - r) ** 2 + (cc - c) ** 2
        goals[r0:r1, c0:c1] = (d2 <= k * k) & (d2 >= (inner / m.cell) ** 2)
        goals &= ~m.blocked()
        if not goals.any():
            return None
        a, _, self.path = drive_to(m, T, goals, lookahead=4)
        return a

    def _approach(self, T: np.ndarray) -> int:
        """Drive next to the goal candidate; there, face it and look around; reject it if unconfirmed."""
        gx, gz = self.candidate  # type: ignore[misc]
        near = math.hypot(gx - T[0, 3], gz - T[2, 3]) <= self.stop_distance + 0.1
        a = None if near else self._to_point(T, (gx, gz), radius=self.stop_distance - 0.05, inner=0.6)
        if a is not None and a != STOP:
            return a
        self._near_steps += 1
        if self._near_steps > self.arrive_patience or (a is None and not near and self._near_steps > 8):
            self._reject((gx, gz))
            return self._explore(T, None)
        err = wrap_angle(math.atan2(-(gx - T[0, 3]), -(gz - T[2, 3])) - yaw_of(T))
        if abs(math.degrees(err)) > 20 and self._near_steps <= 6:
            return TURN_LEFT if err > 0 else TURN_RIGHT
        if not near and a is None:
            return steer(T, (gx, gz))
        return TURN_LEFT if self._near_steps % 8 < 4 else TURN_RIGHT

    def _explore(self, T: np.ndarray, bias: tuple[float, float] | None) -> int:
        """Drive to a frontier: the nearest by path, or with ``bias`` the one best on path + distance to it;
        the chosen one is kept (hysteresis) until reached or gone, so the robot does not dither."""
        m = self.map
        f = m.frontiers()
        r, c = m.to_cell(T[0, 3], T[2, 3])
        rr, cc = np.mgrid[0 : m.n, 0 : m.n]
        f &= (rr - r) ** 2 + (cc - c) ** 2 > (1.0 / m.cell) ** 2
        for fr, fc in self._failed[-30:]:  # frontiers the driver could not make progress to
            f[max(0, fr - 5) : fr + 6, max(0, fc - 5) : fc + 6] = False
        if not f.any():
            return TURN_LEFT
        self._frontier_age += 1
        keep = self._frontier
        if keep is not None:
            kr, kc = keep
            win = f[max(0, kr - 3) : kr + 4, max(0, kc - 3) : kc + 4]
            if not win.any() or self._frontier_age > 40:
                keep = None
        if keep is None:
            me = np.zeros((m.n, m.n), bool)
            me[r, c] = True
            d = m.distance_field(me)
            score = np.where(f, d, np.inf)
            if bias is not None:
                xs, zs = m.to_world(rr, cc)
                score = score + 1.5 * np.hypot(xs - bias[0], zs - bias[1])
            if not np.isfinite(score).any():
                return TURN_LEFT
            keep = tuple(int(v) for v in np.unravel_index(int(np.argmin(score)), score.shape))
            self._frontier, self._frontier_age = keep, 0
        goals = np.zeros((m.n, m.n), bool)
        kr, kc = keep
        goals[max(0, kr - 2) : kr + 3, max(0, kc - 2) : kc + 3] = True
        goals &= ~m.blocked()
        if not goals.any():
            self._frontier = None
            return TURN_LEFT
        a, _, self.path = drive_to(m, T, goals, lookahead=4)
        if a in (None, STOP):
            if a is None:
                self._failed.append(keep)
            self._frontier = None
            return TURN_LEFT
        return a

    def _turn_towards_free(self, T: np.ndarray) -> int:
        """Forward is not clear: turn to the side whose first step is clear (left when both or neither)."""
        left = self.map.forward_clear(_turned(T, +1))
        right = self.map.forward_clear(_turned(T, -1))
        if right and not left:
            return TURN_RIGHT
        return TURN_LEFT


def _turned(T: np.ndarray, sign: int) -> np.ndarray:
    """``T`` turned in place by one 15-degree step (``+1`` left)."""
    a = math.radians(TURN_ANGLE_DEG) * sign
    c, s = math.cos(a), math.sin(a)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    out = np.array(T, dtype=np.float64, copy=True)
    out[:3, :3] = R @ out[:3, :3]
    return out


def _sd(box: tuple[float, float, float, float], h: int, w: int) -> float:
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    return math.hypot(cx - 0.5 * w, cy - 0.5 * h) / (0.5 * math.hypot(h, w))
