"""The top-down map beside the view in ``V4SNavEnv.render()``: floor, walkable cells, obstacles, the goal,
the path so far and the agent with its heading."""

from __future__ import annotations

import numpy as np

from .geometry import forward_xz
from .navigation import NavGrid


def top_down_map(g: NavGrid, height: int, goal_objs, goal_xz, trajectory, x: float, z: float, yaw: float):
    """uint8 ``(height, W, 3)`` map of grid ``g`` (its aspect kept): goal objects' footprints (or the goal
    point ``goal_xz``, or None) in red, the ``trajectory`` [(x, z), ...] in blue, the agent at (x, z) facing
    ``yaw`` in green."""
    import cv2

    h = height
    base = np.full((*g.shape, 3), 40, np.uint8)
    base[g.floor_mask] = (110, 110, 110)
    base[g.navigable] = (200, 200, 200)
    base[g.obstacle_mask] = (60, 60, 70)
    m = cv2.resize(base, (h * g.shape[1] // max(g.shape[0], 1) or 1, h), interpolation=cv2.INTER_NEAREST)
    sx = m.shape[1] / (g.shape[1] * g.cell_size)
    sz = m.shape[0] / (g.shape[0] * g.cell_size)

    def px(x, z):
        return int((x - g.origin[0]) * sx), int((z - g.origin[1]) * sz)

    for o in goal_objs:
        cv2.rectangle(
            m, px(o.box_min[0], o.box_min[2]), px(o.box_max[0], o.box_max[2]), (220, 40, 40), -1
        )
    if goal_xz is not None:
        cv2.circle(m, px(*goal_xz), 3, (220, 40, 40), -1)
    pts = np.array([px(x, z) for x, z in trajectory], np.int32)
    if len(pts) > 1:
        cv2.polylines(m, [pts], False, (30, 90, 230), 1)
    ax, az = px(x, z)
    dx, dz = forward_xz(yaw)
    cv2.circle(m, (ax, az), 3, (20, 160, 20), -1)
    cv2.line(m, (ax, az), (int(ax + dx * 8), int(az + dz * 8)), (20, 160, 20), 1)
    return m
