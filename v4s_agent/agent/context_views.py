"""Goal viewpoints from the context video: where the detector saw the goal centred, and the video's
look-arounds (stretches of turning in place) that single out one object. Only RGB and the video's own
camera poses are used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..envs.geometry import yaw_of
from ..envs.goal_viewpoints import SUCCESS_SD
from .goal_detection import box_of, centre_offset, goal_component

_CONTEXT_CACHE: dict[tuple[bytes, str, int], list[tuple[float, float, float, float, int]]] = {}


# how centred (SD) the detector must see the goal for a frame to count as a view of it: the agent's
# context viewpoints and goal views, and the gates' default. The bar a centred goal is scored by (the
# env's success, IF(SD<0.2)); 0.25 before, which showed the planner endings that score as misses
# (docs/RESULTS.md, "Goal views centred as IF counts them")
GOAL_MAX_SD = SUCCESS_SD


def centred_goal(
    prob: np.ndarray, h: int, w: int, threshold: float = 0.2, max_sd: float = GOAL_MAX_SD
) -> tuple[float, float] | None:
    """``(SD, score)`` of the goal region of one frame's class probabilities ``prob (S, S)`` when the
    detector sees it centred (SD <= ``max_sd``) in an ``h`` x ``w`` frame, else ``None``."""
    comp = goal_component(prob, threshold, min_fraction=0.003)
    if comp is None:
        return None
    sd = centre_offset(box_of(comp, h, w), h, w)
    if sd > max_sd:
        return None
    return sd, float(prob[comp].sum()) / prob.size * (1.0 - sd)


def goal_centred_frames(
    detector: Any,
    frames: np.ndarray,
    categories: str | list[str],
    max_sd: float = GOAL_MAX_SD,
    threshold: float = 0.2,
) -> np.ndarray | dict[str, np.ndarray]:
    """Sorted indices of the ``frames`` in which the detector sees a category centred: the views of the
    goal a plan's context can be given at use time (RGB only; ``envs.scene_video.choose_goal_context``).
    One category: its indices; a list: ``{category: indices}`` from one pass of the detector."""
    names = [categories] if isinstance(categories, str) else list(categories)
    frames = np.asarray(frames)
    out: dict[str, list[int]] = {c: [] for c in names}
    known = [c for c in names if c in detector.categories]
    if known and len(frames):
        h, w = frames.shape[1:3]
        cls = [detector.categories.index(c) + 1 for c in known]
        for i0 in range(0, len(frames), 64):
            probs = detector.probs(frames[i0 : i0 + 64])
            for c, j in zip(known, cls, strict=True):
                out[c] += [
                    i0 + i for i, p in enumerate(probs[:, j]) if centred_goal(p, h, w, threshold, max_sd)
                ]
    res = {c: np.asarray(v, np.int64) for c, v in out.items()}
    return res[categories] if isinstance(categories, str) else res


def context_viewpoints(
    detector: Any,
    frames: np.ndarray,
    poses: np.ndarray,
    category: str,
    every: int = 2,
    max_sd: float = GOAL_MAX_SD,
    threshold: float = 0.2,
) -> list[tuple[float, float, float, float, int]]:
    """Places in the context video from which the detector saw ``category`` centred: ``[(x, z, yaw,
    score, frame index)]``, best first, frames within 0.5 m merged (their scores summed; the pose and
    frame are the best-scoring one's).

    Why: the scene video was filmed by someone walking up to the objects; a frame that shows the goal
    centred was taken from a good viewpoint of it, and its pose says where that is. Only RGB and the
    video's own camera poses are used (no depth, no boxes). Cached per video and category.
    """
    import hashlib

    frames = np.asarray(frames)
    key = (hashlib.sha1(np.ascontiguousarray(frames[::97]).tobytes()).digest(), category, id(detector))
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
                hit = centred_goal(p, h, w, threshold, max_sd)
                if hit is None:
                    continue
                T = poses[i]
                x, z, yaw = float(T[0, 3]), float(T[2, 3]), yaw_of(T)
                score = hit[1]
                for o in out:
                    if math.hypot(o[0] - x, o[1] - z) < 0.5:
                        if score > o[4]:
                            o[0], o[1], o[2], o[4], o[5] = x, z, yaw, score, int(i)
                        o[3] += score
                        break
                else:
                    out.append([x, z, yaw, score, score, int(i)])
    res = sorted(((o[0], o[1], o[2], o[3], int(o[5])) for o in out), key=lambda o: -o[3])
    best = best_dwell_view(detector, frames, poses, category)
    if best is not None:  # the stand-out dwell view goes first, marked by a negative score (see below)
        T = poses[best]
        res = [(float(T[0, 3]), float(T[2, 3]), yaw_of(T), -1.0, best)] + [
            r for r in res if math.hypot(r[0] - T[0, 3], r[1] - T[2, 3]) >= 0.5
        ]
    _CONTEXT_CACHE[key] = res
    return res


def dwell_runs(poses: np.ndarray, turns: int = 20) -> list[np.ndarray]:
    """Frame indices of each stretch in which the camera turns in place for at least ``turns`` frames.

    Why: whoever films a scene video stops when something is in front of them and looks around (the
    recorded scene videos end every object visit that way); one frame of each such look-around is a
    deliberate view of one object. Derived from the video's own camera poses only.
    """
    xz = np.asarray(poses)[:, [0, 2], 3]
    still = np.linalg.norm(np.diff(xz, axis=0), axis=1) < 0.01  # frame i -> i+1 did not move
    runs, i = [], 0
    while i < len(still):
        if still[i]:
            j = i
            while j < len(still) and still[j]:
                j += 1
            if j - i >= turns and i > 0:
                runs.append(np.arange(i, j + 1))
            i = j
        else:
            i += 1
    return runs


_DWELL_CACHE: dict[tuple[bytes, int], tuple[list[np.ndarray], np.ndarray]] = {}


def best_dwell_view(
    detector: Any, frames: np.ndarray, poses: np.ndarray, category: str, margin: float = 1.5
) -> int | None:
    """The frame of a look-around (:func:`dwell_runs`) that shows ``category`` most, if that look-around
    clearly stands out from the others.

    Why a ranking: the detector is weak on some classes (1 % of the frame at 0.4 probability for a
    toilet that fills the view), too weak for a threshold, but among the few deliberate stops of a
    video the goal's own stop still scores highest. "Stands out": at least ``margin`` times the
    runner-up's best centre probability mass. The per-frame masses of every class are cached per video.
    """
    import hashlib

    if category not in detector.categories:
        return None
    frames = np.asarray(frames)
    key = (hashlib.sha1(np.ascontiguousarray(frames[::97]).tobytes()).digest(), id(detector))
    if key not in _DWELL_CACHE:
        runs = dwell_runs(poses)
        idx = np.concatenate(runs) if runs else np.zeros(0, int)
        masses = []
        for i0 in range(0, len(idx), 64):
            p = detector.probs(frames[idx[i0 : i0 + 64]])
            s = p.shape[-1]
            g = np.exp(-(((np.arange(s) + 0.5 - s / 2) / (s / 6)) ** 2) / 2)  # centred mass counts most
            masses.append((p * (g[:, None] * g[None, :])).sum(axis=(2, 3)))
        _DWELL_CACHE[key] = (runs, np.concatenate(masses) if masses else np.zeros((0, 1)))
    runs, mass = _DWELL_CACHE[key]
    if len(runs) < 2:
        return None
    cls = detector.categories.index(category) + 1
    best, start = [], 0
    for r in runs:
        m = mass[start : start + len(r), cls]
        best.append((float(m.max()), int(r[int(np.argmax(m))])))
        start += len(r)
    best.sort(reverse=True)
    if best[0][0] < 0.5 or best[0][0] < margin * best[1][0]:
        return None
    return best[0][1]
