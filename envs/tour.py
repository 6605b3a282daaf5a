"""Context tours: a smooth camera walk through the whole scene (the Video4Spatial "context video").

Why this recipe: farthest-point waypoints over the navigable floor visit every room, shortest paths between
them keep the camera on walkable floor, and smoothing the heading (plus a slow look-around) gives the
continuous, overlapping views a video model needs.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .geometry import DEFAULT_CAMERA_PITCH, make_pose
from .navigation import NavGrid
from .scenes import Scene


def tour_poses(
    scene: Scene, navgrid: NavGrid, n_frames: int = 48, seed: int = 0, pitch: float = DEFAULT_CAMERA_PITCH
) -> np.ndarray:
    """(n_frames, 4, 4) float64 camera-to-world poses of a covering tour, deterministic from ``seed``."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng(seed)
    rr, cc = np.nonzero(navgrid.navigable)
    if len(rr) == 0:
        raise RuntimeError(f"scene {scene.name!r} has no navigable floor for a tour")
    wx, wz = navgrid.to_world(rr, cc)
    pts = np.stack([wx, wz], axis=1)
    area = len(rr) * navgrid.cell_size**2
    k = int(np.clip(round(area / 7.0), 3, 12))
    # farthest point sampling from a random start
    chosen = [int(rng.integers(len(pts)))]
    d = np.linalg.norm(pts - pts[chosen[0]], axis=1)
    for _ in range(k - 1):
        j = int(np.argmax(d))
        chosen.append(j)
        d = np.minimum(d, np.linalg.norm(pts - pts[j], axis=1))
    # greedy nearest-neighbour order through the waypoints
    order, left = [chosen[0]], set(chosen[1:])
    while left:
        last = pts[order[-1]]
        j = min(left, key=lambda i: float(np.linalg.norm(pts[i] - last)))
        order.append(j)
        left.remove(j)
    poly = [pts[order[0]][None]]
    for a, b in zip(order[:-1], order[1:], strict=False):
        seg = navgrid.shortest_path(tuple(pts[a]), tuple(pts[b]))
        if np.isfinite(seg).all() and len(seg) > 1:
            poly.append(seg[1:])
    path = np.concatenate(poly)
    if len(path) < 2:
        path = np.concatenate([path, path + 1e-3])
    seg_len = np.linalg.norm(np.diff(path, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg_len)])
    # smooth the polyline in arc length, then resample n_frames points evenly
    dense = np.linspace(0, s[-1], max(4 * n_frames, 64))
    px = gaussian_filter1d(np.interp(dense, s, path[:, 0]), 3.0, mode="nearest")
    pz = gaussian_filter1d(np.interp(dense, s, path[:, 1]), 3.0, mode="nearest")
    hx = np.gradient(px)
    hz = np.gradient(pz)
    yaw = np.unwrap(np.arctan2(-hx, -hz))
    yaw = gaussian_filter1d(yaw, 6.0, mode="nearest")
    t = np.linspace(0, 1, len(dense))
    yaw = yaw + math.radians(35.0) * np.sin(2 * math.pi * t * max(2, k // 2) + rng.uniform(0, 2 * math.pi))
    sel = np.linspace(0, len(dense) - 1, n_frames).round().astype(int)
    out = np.empty((n_frames, 4, 4))
    for i, j in enumerate(sel):
        x, z = float(px[j]), float(pz[j])
        if not navgrid.is_navigable(x, z):
            x, z = navgrid.snap(x, z)
        out[i] = make_pose(x, z, float(yaw[j]), scene.floor_y, pitch=pitch)
    return out


def make_tour(scene: Scene, renderer, n_frames: int = 48, seed: int = 0, navgrid: NavGrid | None = None,
              pitch: float = DEFAULT_CAMERA_PITCH) -> dict[str, np.ndarray]:  # fmt: skip
    """Render a context tour: ``{"frames": uint8 (N,H,W,3), "poses": float64 (N,4,4)}``.

    ``pitch`` (radians) is the fixed camera pitch; pass the env's ``camera_pitch`` so context frames match
    the agent's view.
    """
    navgrid = navgrid or NavGrid(scene)
    poses = tour_poses(scene, navgrid, n_frames, seed, pitch)
    frames = np.empty((n_frames, renderer.height, renderer.width, 3), dtype=np.uint8)
    for i, T in enumerate(poses):
        renderer.draw(T)
        renderer.read_rgb(frames[i])
    return {"frames": frames, "poses": poses}
