"""A top-down occupancy map from the agent's own depth and odometry, and shortest-path driving on it.

Why: an agent may not read the env's navigation grid (privileged), but a robot has depth and odometry
(Habitat's GPS+compass). Both the non-generative frontier baseline and the planner agent use this stack,
so they are compared with the same sensors and the same low-level driving.

One name for what five modules hold: the map (``occupancy_map``: ``OccupancyMap``), driving on it
(``map_driving``: ``steer``, ``drive_to``, ``drive_on``), the goal as the detector sees it
(``goal_detection``: ``goal_component``, ``backproject``, ``category_from_instruction``), goal viewpoints
from the context video (``context_views``) and the search that ties them together (``object_search``:
``ObjectSearch``). Import from here or from those modules: the names below stay.
"""

from __future__ import annotations

from .context_views import best_dwell_view, context_viewpoints, dwell_runs
from .goal_detection import backproject, box_of, category_from_instruction, centre_offset, goal_component
from .map_driving import drive_on, drive_to, next_waypoint, steer
from .object_search import ObjectSearch
from .occupancy_map import UNKNOWN_COST, OccupancyMap

__all__ = [
    "UNKNOWN_COST",
    "ObjectSearch",
    "OccupancyMap",
    "backproject",
    "best_dwell_view",
    "box_of",
    "category_from_instruction",
    "centre_offset",
    "context_viewpoints",
    "drive_on",
    "drive_to",
    "dwell_runs",
    "goal_component",
    "next_waypoint",
    "steer",
]
