"""Gymnasium environments, scenes, renderers and navigation for video4spatial (``v4s_agent.envs``).

Heavy parts (the GL context) are created lazily on the first ``reset()``, so importing is cheap and safe
before a fork.
"""

from __future__ import annotations

from .actions import ACTION_NAMES, MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT
from .geometry import CAMERA_DIM, encode_relative_pose, make_pose, relative_pose
from .nav_env import V4SNavEnv
from .navigation import NavGrid
from .scenes import (
    CATEGORIES,
    SPLITS,
    TRAIN_CATEGORIES,
    VAL_CATEGORIES,
    Scene,
    SceneError,
    SceneObject,
    load_gltf_scene,
    make_scene,
)
from .tour import make_tour

__all__ = [
    "ACTION_NAMES",
    "CAMERA_DIM",
    "CATEGORIES",
    "MOVE_FORWARD",
    "SPLITS",
    "STOP",
    "TRAIN_CATEGORIES",
    "TURN_LEFT",
    "TURN_RIGHT",
    "VAL_CATEGORIES",
    "NavGrid",
    "Scene",
    "SceneError",
    "SceneObject",
    "V4SNavEnv",
    "encode_relative_pose",
    "load_gltf_scene",
    "make_pose",
    "make_scene",
    "make_tour",
    "relative_pose",
]
