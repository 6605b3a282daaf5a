"""Pick the K context frames of a plan from the scene video and the agent's own views (issue 24).

Why retrieval and not a fixed stratified sample: a plan only sees K frames (6 for the shipped model) out
of hundreds; frames that look where the agent is about to go are the ones that say what is there
(WorldMem, Context-as-Memory: retrieve memory frames by field-of-view overlap with the target view).
Where poses are known, every frame's view is a cone on a coarse floor grid; frames are chosen greedily
by how many not-yet-covered cells of the path ahead they see (relevance), then by how many cells of the
scene they add (coverage), so K frames do not all show the same corner. Without poses the choice falls
back to even coverage in time. Indices are source positions: ``0..n_video-1`` are the scene video's,
the agent's own views come after the video's last index.
"""

from __future__ import annotations

import math

import numpy as np


def view_masks(
    poses: np.ndarray,
    points: np.ndarray,
    hfov_deg: float = 90.0,
    max_range: float = 4.0,
    min_range: float = 0.3,
) -> np.ndarray:
    """``(N, P)`` bool: which floor ``points`` ``(P, 2)`` (world x, z) lie in each pose's view cone.

    The camera looks down its -z axis; only its heading matters on the floor (walls are ignored: an
    occluded cell still counts, which errs towards frames that face the right way).
    """
    poses = np.asarray(poses, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(poses) == 0 or len(pts) == 0:
        return np.zeros((len(poses), len(pts)), bool)
    pos = poses[:, [0, 2], 3]  # (N, 2)
    fwd = -poses[:, [0, 2], 2]
    fwd /= np.maximum(np.linalg.norm(fwd, axis=1, keepdims=True), 1e-9)
    d = pts[None, :, :] - pos[:, None, :]  # (N, P, 2)
    dist = np.linalg.norm(d, axis=-1)
    cos = (d * fwd[:, None, :]).sum(-1) / np.maximum(dist, 1e-9)
    return (dist <= max_range) & (dist >= min_range) & (cos >= math.cos(math.radians(hfov_deg) / 2))


def path_points(pose: np.ndarray, waypoints: np.ndarray | None = None, ahead: float = 2.0) -> np.ndarray:
    """Floor points ``(P, 2)`` of the path ahead: the waypoints (if any) and a stretch straight ahead."""
    pose = np.asarray(pose, dtype=np.float64)
    x, z = pose[0, 3], pose[2, 3]
    f = -pose[[0, 2], 2]
    f = f / max(float(np.linalg.norm(f)), 1e-9)
    pts = [np.array([x, z]) + t * f for t in np.linspace(0.5, ahead, 4)]
    if waypoints is not None and len(waypoints):
        wp = np.asarray(waypoints, dtype=np.float64).reshape(-1, 2)
        prev = np.array([x, z])
        for w in wp:  # points every 0.5 m along each leg
            n = max(1, int(np.linalg.norm(w - prev) / 0.5))
            pts += [prev + (w - prev) * (i + 1) / n for i in range(n)]
            prev = w
    return np.stack(pts)


def retrieve_context(
    k: int,
    poses: np.ndarray | None,
    n: int | None = None,
    query: np.ndarray | None = None,
    recent: int = 1,
    cell: float = 0.5,
    coverage_weight: float = 0.1,
    candidates_every: int = 1,
) -> np.ndarray:
    """Sorted indices of ``k`` memory frames (video first, then the agent's own views).

    Args:
        k: frames to pick.
        poses: ``(N, 4, 4)`` camera poses of every memory frame, or ``None`` (unknown: even in time).
        n: memory size when ``poses`` is ``None``.
        query: ``(P, 2)`` floor points of the path ahead (:func:`path_points`); ``None``: coverage only.
        recent: the last ``recent`` frames (the agent's latest views) are always included.
        cell: floor grid step (m) for coverage.
        coverage_weight: weight of newly covered scene cells against newly covered path cells.
        candidates_every: consider every n-th frame only (speed on long videos; the recent ones always).
    """
    size = len(poses) if poses is not None else int(n or 0)
    if size <= 0 or k <= 0:
        raise ValueError(f"need a non-empty memory and k > 0. Got {size} frames, k={k}")
    if size <= k:
        return np.sort(
            np.concatenate([np.arange(size), np.linspace(0, size - 1, k - size).round()]).astype(int)
        )
    recent = min(max(recent, 0), k - 1)
    chosen = list(range(size - recent, size))
    if poses is None:  # no geometry: even coverage in time
        head = np.linspace(0, size - recent - 1, k - recent).round().astype(int)
        return np.sort(np.concatenate([head, np.asarray(chosen, int)]))
    poses = np.asarray(poses, dtype=np.float64)
    xz = poses[:, [0, 2], 3]
    lo, hi = xz.min(0) - 3.0, xz.max(0) + 3.0
    gx, gz = np.meshgrid(np.arange(lo[0], hi[0], cell), np.arange(lo[1], hi[1], cell))
    grid = np.stack([gx.ravel(), gz.ravel()], 1)
    cand = np.setdiff1d(np.arange(0, size - recent, max(1, candidates_every)), chosen)
    scene_vis = view_masks(poses[cand], grid)
    covered = view_masks(poses[chosen], grid).any(0) if chosen else np.zeros(len(grid), bool)
    if query is not None and len(query):
        q = np.asarray(query, dtype=np.float64).reshape(-1, 2)
        # path points snapped to the grid: relevance counts grid cells near the path ahead
        near = (np.abs(grid[None, :, 0] - q[:, None, 0]) <= cell) & (
            np.abs(grid[None, :, 1] - q[:, None, 1]) <= cell
        )
        path_cells = near.any(0)
    else:
        path_cells = np.zeros(len(grid), bool)
    taken = np.zeros(len(cand), bool)
    for _ in range(k - recent):
        new = scene_vis & ~covered[None, :]
        score = (new & path_cells[None, :]).sum(1) + coverage_weight * new.sum(1)
        score = np.where(taken, -1.0, score.astype(np.float64))
        if score.max() <= 0:  # nothing new anywhere: spread the rest evenly over what is left in time
            rest = cand[~taken]
            fill = rest[np.linspace(0, len(rest) - 1, k - len(chosen)).round().astype(int)]
            chosen += [int(i) for i in fill]
            break
        j = int(np.argmax(score))
        taken[j] = True
        chosen.append(int(cand[j]))
        covered |= scene_vis[j]
    return np.sort(np.asarray(chosen[:k], int))
