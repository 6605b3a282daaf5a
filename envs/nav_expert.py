"""``V4SNavEnv``'s shortest-path expert: ``expert.py``'s rules applied to the current episode.

The env asks :meth:`NavExpertMixin.expert_action` for the next action: walk down the expert's distance
field to a goal viewpoint (or the goal pose), drop a spot from which the goal cannot be centred, then turn
to the heading from which the goal looks best centred and STOP.
"""

from __future__ import annotations

import numpy as np

from .actions import STOP
from .expert import expert_action, heading_to, lookahead_point, turn_towards
from .geometry import make_pose, wrap_angle
from .goal_metrics import box_from_mask, sd_from_box
from .goal_viewpoints import _TURN, SUCCESS_SD, footprint_distance, predicted_sd


class NavExpertMixin:
    """The expert of ``V4SNavEnv`` (reads the episode state the env keeps: position, yaw, goal)."""

    @property
    def _safe_field(self) -> np.ndarray:
        """The expert's distance field (edges near obstacles weigh more): computed on first use, as only
        the expert needs it."""
        if self._safe_field_value is None:
            if self.task == "object":
                self._safe_field_value = self._bundle.safe_field(self.goal_category)
            else:
                self._safe_field_value = self._bundle.navgrid.distance_field(self._goal_mask, safe=True)
        return self._safe_field_value

    @_safe_field.setter
    def _safe_field(self, value: np.ndarray) -> None:
        self._safe_field_value = value

    # ---------------------------------------------------------------------------------------- expert
    def expert_action(self) -> int:
        """The shortest-path expert's next action: walk to a goal viewpoint (or the goal pose), turn until
        the goal is centred (or the goal heading is reached), then STOP."""
        if not self._episode_ready:
            raise RuntimeError("expert_action() needs an episode: call reset() first")
        g = self._bundle.navgrid
        state = (round(self._x, 2), round(self._z, 2), self._yaw_steps)
        self._expert_visits[state] = self._expert_visits.get(state, 0) + 1
        if self._expert_visits[state] > 3:
            # cycling (the 0.25 m / 15 deg lattice cannot reach the remaining viewpoints): settle here
            if self.task == "object" and self._near_goal_object():
                return turn_towards(self.yaw, self._goal_heading()[0])
            return STOP
        final_yaw = self._goal_yaw if self.task == "pose" else self.yaw
        if self.task == "object" and lookahead_point(g, self._safe_field, self._x, self._z) is None:
            final_yaw, best_sd = self._goal_heading()
            if best_sd >= SUCCESS_SD - 0.01 and self._replans < 3:
                # this spot cannot centre the goal well enough (occlusion, too close): drop it and walk on
                self._replans += 1
                self._excluded |= g.point_mask(self._x, self._z, 0.35)
                mask = self._goal_mask & ~self._excluded
                if (mask & g.navigable).any():
                    self._safe_field = g.distance_field(mask, safe=True)
                    return self.expert_action()
        return expert_action(g, self._safe_field, self._x, self._z, self.yaw, final_yaw,
                             forward_result=lambda: self._try_forward()[:2])  # fmt: skip

    def _goal_heading(self) -> tuple[float, float]:
        """The 15-deg heading from which the nearest goal instance looks best centred (predicted from its
        3-D box, so the expert never dithers between two headings)."""
        o = min(self._goal_objs, key=lambda o: float(footprint_distance(self._x, self._z, o)))
        yaws = np.arange(24) * _TURN
        h, w = self.resolution
        sd = predicted_sd(np.full(24, self._x), np.full(24, self._z), o, self._bundle.scene.floor_y,
                           self.camera_pitch, h, w, yaw=yaws)  # fmt: skip
        bearing = heading_to(self._x, self._z, float(o.center[0]), float(o.center[2]))
        facing = np.cos(yaws - bearing) > 0.5
        sd = np.where(facing, sd, np.inf)
        key = (round(self._x, 3), round(self._z, 3))
        if self._final_heading is not None and self._final_heading[0] == key:
            return self._final_heading[1], self._final_heading[2]
        best, best_sd = float(yaws[int(np.argmin(sd))]), np.inf
        r = self._bundle.renderer
        for j in np.argsort(sd)[:4]:
            if not np.isfinite(sd[j]):
                break
            r.draw(
                make_pose(
                    self._x, self._z, float(yaws[j]), self._bundle.scene.floor_y, pitch=self.camera_pitch
                )
            )
            sem = r.read_semantic()
            for gid in self._goal_ids:
                box = box_from_mask(sem == gid, max(4, (h * w) // 2000))
                if box is not None and sd_from_box(box, h, w) < best_sd:
                    best, best_sd = float(yaws[j]), sd_from_box(box, h, w)
        self._final_heading = (key, float(wrap_angle(best)), float(best_sd))
        return self._final_heading[1], self._final_heading[2]
