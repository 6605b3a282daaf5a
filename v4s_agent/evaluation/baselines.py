"""The non-generative baseline a robotics user would pick instead of a video model.

Frontier exploration (Yamauchi 1997) on an occupancy map built from depth and odometry, and a detector
that tells when the goal is in view: then drive to it (its position from the depth under the box), face
it and stop. It has exactly the sensors the planner agent may use (RGB, depth, odometry, the
instruction), no navigation grid and no semantic ids. Its detector is the evaluation's own CNN trained on
rendered frames of every indoor category (a stand-in for an off-the-shelf open-vocabulary detector,
which cannot be downloaded here); success is judged by the env, not by that detector.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..agent.mapping import OccupancyMap, drive_to, steer
from ..envs.actions import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT
from ..envs.geometry import intrinsics, wrap_angle, yaw_of
from .metrics import sd_from_box


def category_from_instruction(instruction: str, categories: list[str]) -> str | None:
    """The longest known category named in the instruction (``potted_plant`` matches "potted plant")."""
    text = " " + instruction.lower().replace("-", " ") + " "
    hits = [c for c in categories if f" {c.replace('_', ' ')}" in text]
    return max(hits, key=len) if hits else None


class FrontierAgent:
    """Explore frontiers until the detector sees the goal, then approach it and stop.

    Args:
        detector: an object with ``categories`` and ``detect(frame, category) -> [(box, score)]``.
        stop_sd: stop when the detected goal box is at most this SD (below the env's 0.2: the detector's
            own SD error is about 0.07) ...
        stop_distance: ... and the goal (by depth) is at most this far (metres).
        approach_radius: drive to any free cell within this distance of the goal's estimated position.
        scan_turns: turns in place at the start (24 x 15 deg = a full look around).
    """

    def __init__(
        self,
        detector: Any,
        stop_sd: float = 0.15,
        stop_distance: float = 1.1,
        approach_radius: float = 0.8,
        scan_turns: int = 24,
    ) -> None:
        self.detector = detector
        self.stop_sd, self.stop_distance = stop_sd, stop_distance
        self.approach_radius, self.scan_turns = approach_radius, scan_turns
        self.stats: dict[str, Any] = {}
        self.last_plan = None

    def reset(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        if "depth" not in obs:
            raise ValueError("FrontierAgent needs depth: make the env with obs_keys=('rgb', 'depth')")
        self.map = OccupancyMap()
        self.category = category_from_instruction(str(info.get("instruction", "")), self.detector.categories)
        self.goal_xz: tuple[float, float] | None = None
        self._false: list[tuple[float, float]] = []
        self._search_turns = 0
        self.steps, self.last_action, self.last_pose, self._last_moved = 0, None, None, 1.0
        self.stats = {"plans": 0, "plan_latency_ms": [], "stop_reason": None, "detections": 0}

    def _goal_from_box(self, box: tuple[float, ...], depth: np.ndarray, T_wc: np.ndarray) -> tuple | None:
        """World (x, z) of the box centre, at the median depth of the box's central half."""
        h, w = depth.shape
        x0, y0, x1, y1 = box
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        qx, qy = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
        patch = depth[
            int(max(0, cy - qy)) : int(min(h, cy + qy + 1)), int(max(0, cx - qx)) : int(min(w, cx + qx + 1))
        ]
        patch = patch[patch > 0]
        if patch.size == 0:
            return None
        d = float(np.median(patch))
        K = intrinsics(h, w)
        pc = np.array([(cx - K[0, 2]) / K[0, 0] * d, -(cy - K[1, 2]) / K[1, 1] * d, -d])
        pw = T_wc[:3, :3] @ pc + T_wc[:3, 3]
        return float(pw[0]), float(pw[2])

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any] | None = None) -> int:
        if info is None or "agent_pose" not in info:
            raise ValueError("FrontierAgent needs odometry: pass the env's info (agent_pose) to act()")
        T = np.asarray(info["agent_pose"], dtype=np.float64)
        rgb, depth = np.asarray(obs["rgb"]), np.asarray(obs["depth"])
        if self.last_action == MOVE_FORWARD and self.last_pose is not None:
            moved = math.hypot(T[0, 3] - self.last_pose[0, 3], T[2, 3] - self.last_pose[2, 3])
            self._last_moved = moved
            if moved < 0.05:  # bumped into something the depth did not show
                self.map.mark_blocked_ahead(self.last_pose)
        self.map.integrate(depth, T)
        a = self._decide(rgb, depth, T)
        self.last_action, self.last_pose = a, T
        self.steps += 1
        return a

    def _decide(self, rgb: np.ndarray, depth: np.ndarray, T: np.ndarray) -> int:
        h, w = depth.shape
        if self.category is not None:
            ((box, _),) = self.detector.detect(rgb, self.category)
            goal = self._goal_from_box(box, depth, T) if box is not None else None
            if goal is not None and not self._rejected(goal):
                self.stats["detections"] += 1
                self.goal_xz, self._search_turns = goal, 0
                if math.hypot(goal[0] - T[0, 3], goal[1] - T[2, 3]) <= self.stop_distance:
                    return self._final_approach(box, h, w)
        if self.goal_xz is not None:
            return self._approach(T)
        if self.steps < self.scan_turns:
            return TURN_LEFT
        return self._explore(T)

    def _rejected(self, goal: tuple[float, float]) -> bool:
        """Within 1 m of a place where a detection was not confirmed on arrival (a false positive)."""
        return any(math.hypot(goal[0] - x, goal[1] - z) < 1.0 for x, z in self._false)

    def _explore(self, T: np.ndarray) -> int:
        f = self.map.frontiers()
        r, c = self.map.to_cell(T[0, 3], T[2, 3])
        rr, cc = np.mgrid[0 : self.map.n, 0 : self.map.n]
        f &= (rr - r) ** 2 + (cc - c) ** 2 > (1.0 / self.map.cell) ** 2
        a, _, _ = drive_to(self.map, T, f) if f.any() else (None, 0.0, [])
        return TURN_LEFT if a in (None, STOP) else a

    def _final_approach(self, box: tuple[float, ...], h: int, w: int) -> int:
        """The goal is seen and close: centre it horizontally, step closer while it sits high, stop."""
        if sd_from_box(box, h, w) <= self.stop_sd:
            self.stats["stop_reason"] = "detector: goal centred and close"
            return STOP
        cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
        if abs(cx - w / 2) > 0.07 * w:  # a 15 deg turn moves the view by ~0.13 w: this is the finest
            return TURN_LEFT if cx < w / 2 else TURN_RIGHT
        blocked = self.last_action == MOVE_FORWARD and self._last_moved < 0.05
        if cy < 0.45 * h and not blocked:  # the goal sits high in the (pitched) view: it is still far
            return MOVE_FORWARD
        self.stats["stop_reason"] = "detector: goal close, best centring reached"
        return STOP

    def _approach(self, T: np.ndarray) -> int:
        """Drive next to the goal's estimated position; there, look around for it, else reject it."""
        gx, gz = self.goal_xz  # type: ignore[misc]
        m = self.map
        rr, cc = np.mgrid[0 : m.n, 0 : m.n]
        xs, zs = m.to_world(rr, cc)
        goals = ((xs - gx) ** 2 + (zs - gz) ** 2 <= self.approach_radius**2) & ~m.blocked()
        a, _, _ = drive_to(m, T, goals) if goals.any() else (None, 0.0, [])
        near = math.hypot(gx - T[0, 3], gz - T[2, 3]) <= self.stop_distance
        if a not in (None, STOP) and not near:
            return a
        if a is None and not near:
            self._search_turns += 1
            if self._search_turns <= 12:
                return steer(T, (gx, gz))
        else:  # arrived: face the goal, then look around for it
            err = wrap_angle(math.atan2(-(gx - T[0, 3]), -(gz - T[2, 3])) - yaw_of(T))
            self._search_turns += 1
            if self._search_turns <= 24:
                if abs(math.degrees(err)) > 7.5 and self._search_turns <= 6:
                    return TURN_LEFT if err > 0 else TURN_RIGHT
                return TURN_LEFT
        self._false.append((gx, gz))  # not confirmed: a false detection or unreachable
        self.goal_xz, self._search_turns = None, 0
        return self._explore(T)
