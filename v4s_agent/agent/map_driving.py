"""Driving on an :class:`~.occupancy_map.OccupancyMap`: turn-or-go steering and shortest-path driving.

The non-generative frontier baseline and the planner agent both drive with these, so they are compared
with the same sensors and the same low-level driving.
"""

from __future__ import annotations

import math

import numpy as np

from ..envs.actions import MOVE_FORWARD, STOP, TURN_ANGLE_DEG, TURN_LEFT, TURN_RIGHT
from ..envs.geometry import wrap_angle, yaw_of
from .occupancy_map import OccupancyMap


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
