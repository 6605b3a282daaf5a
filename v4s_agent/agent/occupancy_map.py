"""A top-down occupancy map from the agent's own depth and odometry.

Why: an agent may not read the env's navigation grid (privileged), but a robot has depth and odometry
(Habitat's GPS+compass). Back-projecting each depth frame into the world gives floor cells (free) and
everything between 0.1 m and head height (obstacles); Dijkstra over the free cells (obstacles inflated by
the robot's radius, unknown cells allowed at a higher cost) gives the distance field that
:mod:`.map_driving` follows with Habitat's discrete actions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..envs.geometry import CAMERA_HEIGHT, intrinsics, yaw_of

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
