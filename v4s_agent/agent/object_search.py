"""Object search: the non-generative navigation stack on the agent's own depth, odometry and detector.

A goal map (detector sightings back-projected with depth and voted over frames) on top of the
:class:`~.occupancy_map.OccupancyMap`, collision-free driving (:mod:`.map_driving`) with recovery,
frontier exploration, context-video viewpoints (:mod:`.context_views`) and a verified stop rule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..envs.actions import MOVE_FORWARD, STOP, TURN_ANGLE_DEG, TURN_LEFT, TURN_RIGHT
from ..envs.geometry import wrap_angle, yaw_of
from ..envs.goal_viewpoints import SUCCESS_SD
from .context_views import context_viewpoints
from .goal_detection import backproject, box_of, centre_offset, goal_component
from .map_driving import drive_to, steer
from .occupancy_map import OccupancyMap


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
        standpoint: a goal seen within the stop distance but not centred enough to stop (low in the pitched
            view) is viewed again from a cell from which its seen points are predicted centred
            (:mod:`.standpoints`), instead of turning in front of it until the patience runs out.
        fitted_stop: a STOP also needs the detector's own box rule (its ``detect``: the threshold, minimum
            area and largest-region rule fitted against the exact semantics, ``config.json``) to put the
            goal's box within ``SUCCESS_SD`` of the centre. Why: the core region the map reads is often a
            part of the object, or two instances merged, centred while the object is not.
        scan_first: look around (``scan_turns``) before driving to context viewpoints too: turns cost no
            path length (SPL counts metres), and a goal in view from the start is then seen first.
        reproduce_stop: also stop where a context look-around's frame that stands out for the goal
            (``context_views.best_dwell_view``) is reproduced (:meth:`_reproduces`), without the live
            detector's box centred.
    """

    centre_tol = 0.09  # the final approach turns until the goal's box centre is this close (x frame width)
    backoff_m = 0.75  # ... and backs off when the goal sits low in the view from nearer than this
    standpoint_tries = 4  # standpoint drives per episode (each ends facing the goal from a new place)
    standpoint_steps = 40  # steps one standpoint drive may take

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
        fitted_stop: bool = False,
        standpoint: bool = True,
        reproduce_stop: bool = True,
        scan_first: bool = True,
    ) -> None:
        self.detector, self.category = detector, category
        self.stop_sd, self.stop_distance, self.min_votes = stop_sd, stop_distance, min_votes
        self.scan_turns, self.arrive_patience, self.threshold = scan_turns, arrive_patience, threshold
        self.fitted_stop, self.standpoint, self.reproduce_stop = fitted_stop, standpoint, reproduce_stop
        self.scan_first = scan_first
        self._stand: dict[str, Any] | None = None  # the standpoint being driven to (goal, cells, steps)
        self.map = OccupancyMap()
        self.votes = np.zeros((self.map.n, self.map.n), np.float32)  # goal sightings, cleared on rejection
        self.sightings = np.zeros((self.map.n, self.map.n), np.float32)  # never cleared (the stop check)
        self.rejected: list[tuple[float, float]] = []
        self.viewpoints: list[tuple[float, float, float, float, int]] = []  # from the context video
        self._ctx_frames: np.ndarray | None = None
        self._rgb: np.ndarray | None = None
        self._failed: list[tuple[int, int]] = []
        self.candidate: tuple[float, float] | None = None
        self.steps, self.last_action, self.last_pose, self._vp_steps = 0, None, None, 0
        self.blocked_streak, self._recovery = 0, []  # type: ignore[var-annotated]
        self._near_steps, self._frontier, self._frontier_age = 0, None, 0
        self.detection: dict[str, Any] | None = None  # this step's goal detection (box, distance, points)
        self.path: list[tuple[int, int]] = []
        self._shape: tuple[int, ...] = (128, 128)
        self.stats: dict[str, Any] = {"detections": 0, "blocked": 0, "rejected": 0, "mode": None}

    def use_context(self, context: dict[str, Any] | None, min_score: float = 0.003) -> None:
        """Take goal viewpoints from the context video (frames + poses), see :func:`context_viewpoints`."""
        if context is None or self.detector is None or self.category is None:
            return
        poses = context.get("poses") if isinstance(context, dict) else None
        if poses is None:
            return
        vps = context_viewpoints(self.detector, context["frames"], np.asarray(poses), self.category)
        self.viewpoints = [v for v in vps if v[3] >= min_score or v[3] < 0][:6]
        self._ctx_frames = np.asarray(context["frames"])

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
        self.sightings.ravel()[cells] += 1.0
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
        self._rgb = rgb
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
        if self._stand is not None:
            a = self._drive_to_standpoint(T)
            if a is not None:
                self.stats["mode"] = "standpoint"
                return a
        det = self.detection
        if det is not None and det["distance"] <= self.stop_distance + 0.8:
            a = self._final_approach(det, T)
            if a is not None:
                return a
        self.candidate = self._best_candidate()
        if self.candidate is not None:
            self.stats["mode"] = "approach"
            return self._approach(T)
        if self.steps < self.scan_turns and (self.scan_first or not self.viewpoints):
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

    def _goal_view(self, det: dict[str, Any]) -> tuple[tuple[float, float, float, float], float]:
        """The box the final approach centres and the SD its stop reads (a hook: the frontier baseline
        grows the detected region first)."""
        h, w = self._shape
        return det["box"], centre_offset(det["box"], h, w)

    def _centred(self, cx: float, w: int, want: int) -> bool:
        """The box centre is close enough to the view's centre that no turn ``want`` is worth making
        (``centre_tol``: a 15 deg turn moves the view by ~0.13 w, so 0.09 w is the finest)."""
        return abs(cx - w / 2) <= self.centre_tol * w

    def _stop_verified(self, xz: tuple[float, float], T: np.ndarray, centred: bool) -> bool:
        """Evidence a stop needs beyond the SD, the distance and earlier sightings (a hook: the frontier
        baseline also wants the box centred and the goal seen from two standpoints)."""
        return self._fitted_box_centred()

    def _fitted_box_centred(self) -> bool:
        """``fitted_stop``: the detector's own box rule sees the goal within ``SUCCESS_SD`` of the centre
        in this frame (True without ``fitted_stop``, or for a detector without ``detect``)."""
        det = getattr(self.detector, "detector", self.detector)  # under a FrameCache
        if not self.fitted_stop or self._rgb is None or self.category is None or not hasattr(det, "detect"):
            return True
        ((box, _),) = det.detect(self._rgb, self.category)
        h, w = self._rgb.shape[:2]
        ok = box is not None and centre_offset(box, h, w) < SUCCESS_SD
        if not ok:
            self.stats["fitted_refusals"] = self.stats.get("fitted_refusals", 0) + 1
        return ok

    def _final_approach(self, det: dict[str, Any], T: np.ndarray) -> int | None:
        """The goal is seen close by: centre it, step closer while it is far, back off when it sits at the
        bottom of the (pitched) view, stop when verified; ``None`` hands over to the approach."""
        h, w = self._shape
        box, sd = self._goal_view(det)
        cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
        gx, gz = float(np.median(det["points"][:, 0])), float(np.median(det["points"][:, 2]))
        r, c = self.map.to_cell(gx, gz)
        # the stop reads the votes that are never cleared: a place rejected after a clumsy approach (the
        # patience ran out while turning) is still the goal when it is seen centred and near again
        seen_before = bool(
            self.map._inside(r, c)
            and self.sightings[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3].max() >= self.min_votes
        )
        dist = det["distance"]
        want = TURN_LEFT if cx < w / 2 else TURN_RIGHT
        centred = self._centred(cx, w, want)
        # a goal centred from under 0.5 m is below the pitched camera's view: that is a false detection
        near = 0.5 <= dist <= self.stop_distance
        if sd <= self.stop_sd and near and seen_before and self._stop_verified((gx, gz), T, centred):
            p = f", p {det['mean_prob']:.2f}" if "mean_prob" in det else ""
            self.stats["stop_reason"] = f"detector: goal centred (SD {sd:.2f}) {dist:.2f} m away{p}"
            return STOP
        if self._is_rejected((gx, gz)):
            return None
        self.stats["mode"] = "final"
        self._near_steps += 1
        if self._near_steps > self.arrive_patience:
            self._reject((gx, gz))
            return None
        if not centred:
            return want
        if self.standpoint and dist <= self.stop_distance and sd > self.stop_sd:
            # within reach but off centre (low in the pitched view): walking on only makes it worse
            a = self._plan_standpoint(det["points"], T)
            if a is not None:
                self.stats["mode"] = "standpoint"
                return a
        if dist < self.backoff_m and cy > 0.6 * h:  # too close: it sits low in the view; turn away, step back
            self._recovery = [MOVE_FORWARD, MOVE_FORWARD] + [TURN_LEFT] * 12
            return self._recovery.pop()
        if (dist > self.stop_distance or cy < 0.4 * h) and self.map.forward_clear(T):
            return MOVE_FORWARD
        return None

    def _plan_standpoint(self, points: np.ndarray, T: np.ndarray) -> int | None:
        """Commit to driving to the nearest standpoint cell of the goal's ``points`` (first action), or
        ``None`` when the robot stands on one already, none is free, or the tries are used up."""
        from .standpoints import standpoint_cells

        tries = self.stats.get("standpoints", 0)
        if tries >= self.standpoint_tries:
            return None
        cells = standpoint_cells(self.map, points, T, self._shape)
        r, c = self.map.to_cell(T[0, 3], T[2, 3])
        if not cells.any() or (self.map._inside(r, c) and cells[int(r), int(c)]):
            return None
        gx, gz = float(np.median(points[:, 0])), float(np.median(points[:, 2]))
        self._stand = {"goal": (gx, gz), "cells": cells, "steps": 0}
        self.stats["standpoints"] = tries + 1
        return self._drive_to_standpoint(T)

    def _drive_to_standpoint(self, T: np.ndarray) -> int | None:
        """One step of the committed drive: to the standpoint cells, then turn to face the goal; ``None``
        (and the commitment dropped) once facing it, unreachable, or after ``standpoint_steps``."""
        st = self._stand
        assert st is not None
        st["steps"] += 1
        if st["steps"] > self.standpoint_steps:
            self._stand = None
            return None
        a, _, path = drive_to(self.map, T, st["cells"], lookahead=4)
        if a is None:
            self._stand = None
            return None
        if a != STOP:
            self.path = path
            return a
        gx, gz = st["goal"]
        err = wrap_angle(math.atan2(-(gx - T[0, 3]), -(gz - T[2, 3])) - yaw_of(T))
        if abs(err) > math.radians(TURN_ANGLE_DEG) / 2:
            return TURN_LEFT if err > 0 else TURN_RIGHT
        self._stand = None
        return None

    def _to_viewpoint(self, T: np.ndarray) -> int | None:
        """Drive to the best context viewpoint, face its heading, look around it; drop it if the goal is
        not seen there (the live detector's final approach takes over when it is)."""
        x, z, yaw, score, idx = self.viewpoints[0]
        if math.hypot(x - T[0, 3], z - T[2, 3]) > 0.3:
            a = self._to_point(T, (x, z), radius=0.2)
            if a is not None and a != STOP:
                return a
            if a is None:
                self._vp_steps += 1
                if self._vp_steps <= 3:
                    return TURN_LEFT
        self._vp_steps += 1
        err = wrap_angle(yaw - yaw_of(T))
        if self._vp_steps <= 14 and abs(math.degrees(err)) > 7.5:
            return TURN_LEFT if err > 0 else TURN_RIGHT
        if score < 0 and self._reproduces(idx, T, (x, z)) and self._fitted_box_centred():
            self.stats["stop_reason"] = "context viewpoint reproduced: the view matches the video frame"
            return STOP
        if self._vp_steps <= 14:
            return TURN_LEFT if self._vp_steps % 6 < 3 else TURN_RIGHT
        self.viewpoints.pop(0)
        self._vp_steps = 0
        return None

    def _reproduces(self, idx: int, T: np.ndarray, xz: tuple[float, float]) -> bool:
        """Standing where a context frame that shows the goal centred was taken, facing the same way, with
        a view that matches it and the detector still seeing some of the goal: the goal view is reached
        (a detector too weak to verify the goal on its own, e.g. 1 % of the frame, can confirm a match)."""
        if not self.reproduce_stop or self._ctx_frames is None or self._rgb is None or self.category is None:
            return False
        if math.hypot(xz[0] - T[0, 3], xz[1] - T[2, 3]) > 0.3:
            return False
        from .agent import frame_similarity

        sim = frame_similarity(self._rgb, self._ctx_frames[idx], ignore_red=False)
        if sim < 0.85:
            return False
        cls = self.detector.categories.index(self.category) + 1
        prob = self.detector.probs(np.stack([self._rgb, self._ctx_frames[idx]]))[:, cls]
        s = prob.shape[-1]
        live, ref = (float(p[s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].max()) for p in prob)
        # the goal as sure as in the video frame (or surely there): a weak class stays weak at the goal
        return live >= min(0.3, 0.6 * ref)

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
