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
import warnings

import numpy as np

from ..envs.actions import TURN_ANGLE_DEG
from .occupancy_map import OccupancyMap

_TURN = math.radians(TURN_ANGLE_DEG)


def camera_pitch(T_wc: np.ndarray) -> float:
    """Pitch (rad, negative looking down) of a camera-to-world pose (the camera looks along -z)."""
    fwd = -np.asarray(T_wc, np.float64)[:3, 2]
    return float(math.asin(max(-1.0, min(1.0, fwd[1]))))


def predicted_sd(
    points: np.ndarray,
    xs: np.ndarray,
    zs: np.ndarray,
    cam_y: float,
    yaw: np.ndarray,
    pitch: float,
    h: int,
    w: int,
    hfov_deg: float = 90.0,
) -> np.ndarray:
    """SD (box-centre offset over half the diagonal) of ``points`` (N, 3) seen from cameras at
    (``xs``, ``cam_y``, ``zs``) with headings ``yaw`` and ``pitch`` (the env's camera; NaN when no point
    is in front of the camera)."""
    rel = points[None, :, :] - np.stack([xs, np.full_like(xs, cam_y), zs], axis=1)[:, None, :]
    cy, sy = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x1 = cy * rel[..., 0] - sy * rel[..., 2]  # world -> yawed frame (inverse of a rotation about y)
    z1 = sy * rel[..., 0] + cy * rel[..., 2]
    y1 = rel[..., 1]
    cp, sp = math.cos(pitch), math.sin(pitch)
    yc = cp * y1 + sp * z1  # -> pitched camera frame
    depth = -(-sp * y1 + cp * z1)
    front = depth > 0.05
    f = 0.5 * w / math.tan(math.radians(hfov_deg) / 2)
    d = np.where(front, depth, 1.0)
    u = np.where(front, np.clip(f * x1 / d + 0.5 * w, 0, w), np.nan)
    v = np.where(front, np.clip(-f * yc / d + 0.5 * h, 0, h), np.nan)
    with warnings.catch_warnings():  # a camera with no point in front: NaN, by design
        warnings.simplefilter("ignore", RuntimeWarning)
        bx = 0.5 * (np.nanmin(u, axis=1) + np.nanmax(u, axis=1)) - 0.5 * w
        by = 0.5 * (np.nanmin(v, axis=1) + np.nanmax(v, axis=1)) - 0.5 * h
    return np.hypot(bx, by) / (0.5 * math.hypot(h, w))


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
    sd = predicted_sd(pts, xs, zs, float(T_wc[1, 3]), yaw, camera_pitch(T_wc), shape[0], shape[1])
    if not np.isfinite(sd).any():
        return out
    good = np.isfinite(sd) & (sd <= min(max_sd, float(np.nanmin(sd)) + slack))
    out[rr[good], cc[good]] = True
    return out
