"""Habitat's discrete action set, in Habitat's order (shared by the env, the expert and the IDM)."""

from __future__ import annotations

STOP = 0
MOVE_FORWARD = 1
TURN_LEFT = 2
TURN_RIGHT = 3
ACTION_NAMES: tuple[str, ...] = ("stop", "move_forward", "turn_left", "turn_right")
NUM_ACTIONS = len(ACTION_NAMES)

FORWARD_STEP_M = 0.25
TURN_ANGLE_DEG = 15.0
