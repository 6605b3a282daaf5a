"""Shortest-path expert over the discrete actions (makes training data, upper-bounds the agent).

Why a distance field: one Dijkstra from the goal set per episode, then every decision is a few O(1)
lookups — follow the steepest descent a short distance ahead, turn towards that waypoint, step; inside the
goal set, turn until the goal is centred (or the goal heading is reached), then STOP.
"""

from __future__ import annotations

import math

import numpy as np

from .actions import MOVE_FORWARD, STOP, TURN_ANGLE_DEG, TURN_LEFT, TURN_RIGHT
from .geometry import wrap_angle
from .navigation import NavGrid

_HALF_TURN = math.radians(TURN_ANGLE_DEG) / 2.0 + 1e-6


GOAL_TOLERANCE = 0.11  # m: 0.25 m steps on a 15-deg lattice cannot land on every cell, so "at goal" is loose


def lookahead_point(navgrid: NavGrid, field: np.ndarray, x: float, z: float, lookahead: float = 0.6,
                    tolerance: float = GOAL_TOLERANCE):  # fmt: skip
    """Point about ``lookahead`` metres down the shortest path from (x, z) (None within ``tolerance`` of
    the goal set)."""
    r, c = navgrid.to_cell(x, z)
    H, W = navgrid.shape
    if not (0 <= r < H and 0 <= c < W) or not np.isfinite(field[r, c]):
        x, z = navgrid.snap(x, z)
        r, c = navgrid.to_cell(x, z)
    if field[r, c] <= tolerance:
        return None
    steps = max(1, int(lookahead / navgrid.cell_size))
    for _ in range(steps):
        best, br, bc = field[r, c], r, c
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if 0 <= rr < H and 0 <= cc < W and field[rr, cc] < best:
                    best, br, bc = field[rr, cc], rr, cc
        if (br, bc) == (r, c) or best <= 0:
            r, c = br, bc
            break
        r, c = br, bc
    wx, wz = navgrid.to_world(r, c)
    return float(wx), float(wz)


def turn_towards(yaw: float, target_yaw: float) -> int:
    """TURN_LEFT / TURN_RIGHT towards ``target_yaw``, or STOP when already within half a turn step."""
    err = wrap_angle(target_yaw - yaw)
    if abs(err) <= _HALF_TURN:
        return STOP
    return TURN_LEFT if err > 0 else TURN_RIGHT


def heading_to(x: float, z: float, tx: float, tz: float) -> float:
    """Yaw that faces point (tx, tz) from (x, z) (yaw 0 faces -z, positive turns left)."""
    return math.atan2(-(tx - x), -(tz - z))


def expert_action(
    navgrid: NavGrid,
    field: np.ndarray,
    x: float,
    z: float,
    yaw: float,
    final_yaw: float,
    forward_result=None,
) -> int:
    """Next discrete action: follow ``field`` downhill; in the goal set turn to ``final_yaw``, then STOP.

    ``forward_result()`` (optional) returns the (x, z) a forward step would reach (with sliding); a step
    that would not get closer along ``field`` is replaced by a turn towards the path.
    """
    wp = lookahead_point(navgrid, field, x, z)
    if wp is None:
        return turn_towards(yaw, final_yaw)
    want = heading_to(x, z, *wp)
    err = wrap_angle(want - yaw)
    if abs(err) > math.radians(TURN_ANGLE_DEG) * 0.75:
        return TURN_LEFT if err > 0 else TURN_RIGHT
    if forward_result is not None:
        nx, nz = forward_result()
        if _field_at(navgrid, field, nx, nz) >= _field_at(navgrid, field, x, z) - 1e-6:
            return TURN_LEFT if err >= 0 else TURN_RIGHT
    return MOVE_FORWARD


def _field_at(navgrid: NavGrid, field: np.ndarray, x: float, z: float) -> float:
    r, c = navgrid.to_cell(x, z)
    if 0 <= r < field.shape[0] and 0 <= c < field.shape[1]:
        return float(field[r, c])
    return float("inf")
