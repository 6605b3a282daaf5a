"""Where to stand to see the goal centred: standpoint cells predicted from the goal's seen 3-D points.

Why: the camera is pitched down 30 degrees, so a low object seen from under ~0.9 m sits in the lower
part of the view, off centre, and only stepping back raises it; steps are 0.25 m, so walking straight at
the object lands in the narrow band of distances where it is both within the stop distance and centred
about half of the time. The search stood in front of the goal turning left and right until its patience
ran out (traced on ``val_scenes`` seed 1017 with exact semantics, issue 21). Projecting the goal's points
into the view from each nearby free cell, at the 15-degree heading that faces them, tells which cells
give a centred view within the stop distance; the robot drives to the nearest of those instead.
"""

from __future__ import annotations

import math

import numpy as np

from ..envs.actions import TURN_ANGLE_DEG
from ..envs.goal_viewpoints import points_sd
from .occupancy_map import OccupancyMap

_TURN = math.radians(TURN_ANGLE_DEG)


def camera_pitch(T_wc: np.ndarray) -> float:
    """Pitch (rad, negative looking down) of a camera-to-world pose (the camera looks along -z)."""
    fwd = -np.asarray(T_wc, np.float64)[:3, 2]
    return float(math.asin(max(-1.0, min(1.0, fwd[1]))))


def facing_yaw(xs: np.ndarray, zs: np.ndarray, gx: float, gz: float, yaw_now: float) -> np.ndarray:
    """The heading the robot can take (its own heading plus whole turns) nearest to the bearing of
    (``gx``, ``gz``) from each cell."""
    bearing = np.arctan2(-(gx - xs), -(gz - zs))
    k = np.round(((bearing - yaw_now + math.pi) % (2 * math.pi) - math.pi) / _TURN)
    return yaw_now + k * _TURN


def standpoint_cells(
    grid: OccupancyMap,
    points: np.ndarray,
    T_wc: np.ndarray,
    shape: tuple[int, int],
    max_sd: float = 0.17,
    slack: float = 0.04,
    reach: tuple[float, float] = (0.55, 0.95),
    max_points: int = 256,
) -> np.ndarray:
    """Bool map of free cells from which the goal's ``points`` are predicted the most centred (SD within
    ``slack`` of the best cell's, and at most ``max_sd``) at a heading the robot can take, with the
    nearest point ``reach`` metres away on the floor.

    Why the best and not a fixed SD: a low object is centred only from the far edge of the stop distance
    (a 0.9 m tall one at SD 0.16 from 0.9 m), so a fixed strict bound leaves no cell at all."""
    out = np.zeros((grid.n, grid.n), bool)
    pts = np.asarray(points, np.float64)
    if len(pts) == 0:
        return out
    if len(pts) > max_points:
        pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(int)]
    gx, gz = float(np.median(pts[:, 0])), float(np.median(pts[:, 2]))
    r0, c0 = grid.to_cell(gx, gz)
    k = int(math.ceil((reach[1] + 0.6) / grid.cell))
    rr, cc = np.mgrid[max(0, r0 - k) : min(grid.n, r0 + k + 1), max(0, c0 - k) : min(grid.n, c0 + k + 1)]
    rr, cc = rr.ravel(), cc.ravel()
    ok = ~grid.blocked()[rr, cc]
    rr, cc = rr[ok], cc[ok]
    if len(rr) == 0:
        return out
    xs, zs = grid.to_world(rr, cc)
    near = np.min(np.hypot(xs[:, None] - pts[None, :, 0], zs[:, None] - pts[None, :, 2]), axis=1)
    ok = (near >= reach[0]) & (near <= reach[1])
    rr, cc, xs, zs = rr[ok], cc[ok], xs[ok], zs[ok]
    if len(rr) == 0:
        return out
    from ..envs.geometry import yaw_of

    yaw = facing_yaw(xs, zs, gx, gz, yaw_of(T_wc))
    sd = points_sd(pts, xs, zs, float(T_wc[1, 3]), yaw, camera_pitch(T_wc), *shape, drop_behind=True)
    if not np.isfinite(sd).any():
        return out
    good = np.isfinite(sd) & (sd <= min(max_sd, float(np.nanmin(sd)) + slack))
    out[rr[good], cc[good]] = True
    return out
