"""Camera pose helpers in Habitat conventions (metres, +y up, the camera looks down -z).

A pose is a 4x4 float64 camera-to-world matrix ``T_wc``. The agent moves on the floor, so its pose is a
translation (x, floor_y + 1.5, z) with a rotation ``yaw`` about +y, optionally followed by a fixed camera
pitch about the camera's x axis (see ``V4SNavEnv.camera_pitch_deg``).
"""

from __future__ import annotations

import math

import numpy as np

CAMERA_HEIGHT = 1.5
HFOV_DEG = 90.0
CAMERA_DIM = 12
#: fixed camera pitch of the env's agent (looking down), so that objects within 1 m can be centred in view
DEFAULT_CAMERA_PITCH_DEG = -30.0
DEFAULT_CAMERA_PITCH = math.radians(DEFAULT_CAMERA_PITCH_DEG)


def rot_y(yaw: float) -> np.ndarray:
    """3x3 rotation about +y by ``yaw`` radians (positive = turn left, counter-clockwise from above)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(pitch: float) -> np.ndarray:
    """3x3 rotation about +x by ``pitch`` radians (positive = look up)."""
    c, s = math.cos(pitch), math.sin(pitch)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def make_pose(
    x: float, z: float, yaw: float, floor_y: float = 0.0, height: float = CAMERA_HEIGHT, pitch: float = 0.0
) -> np.ndarray:
    """Camera-to-world pose of an agent standing at (x, z) on the floor, heading ``yaw`` (rad, 0 = -z)."""
    T = np.eye(4)
    T[:3, :3] = rot_y(yaw) @ rot_x(pitch) if pitch else rot_y(yaw)
    T[:3, 3] = (x, floor_y + height, z)
    return T


def yaw_of(T_wc: np.ndarray) -> float:
    """Heading (rad) of a pose: the angle of its forward (-z) axis projected on the floor, 0 = world -z."""
    fwd = -np.asarray(T_wc)[:3, 2]
    return math.atan2(-fwd[0], -fwd[2])


def forward_xz(yaw: float) -> tuple[float, float]:
    """Unit floor direction (dx, dz) the agent faces at ``yaw``."""
    return -math.sin(yaw), -math.cos(yaw)


def wrap_angle(a: float) -> float:
    """Angle wrapped to (-pi, pi]."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def relative_pose(ref: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Pose of ``T`` in the frame of ``ref``: ``inv(ref) @ T`` (4x4 float64)."""
    return np.linalg.inv(np.asarray(ref, dtype=np.float64)) @ np.asarray(T, dtype=np.float64)


def encode_relative_pose(ref: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Navigation conditioning: top 3x4 block of ``relative_pose`` flattened row-major, float32 (12,)."""
    return relative_pose(ref, T)[:3, :4].reshape(-1).astype(np.float32)


def encode_relative_poses(ref: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """``encode_relative_pose`` of each of ``poses (N, 4, 4)``: ``(N, 12)`` float32 (the camera of a clip's
    frames, or of its context frames, relative to the observation)."""
    return np.stack([encode_relative_pose(ref, T) for T in poses]).astype(np.float32)


def decode_relative_poses(ref: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_relative_poses``: world poses ``(N, 4, 4)`` of ``codes (N, 12)`` given relative
    to ``ref`` (a path given as the planner's ``camera``, back in the world frame of the context's poses)."""
    codes = np.asarray(codes, dtype=np.float64).reshape(-1, 3, 4)
    rel = np.tile(np.eye(4), (len(codes), 1, 1))
    rel[:, :3, :4] = codes
    return np.asarray(ref, dtype=np.float64) @ rel


def intrinsics(height: int, width: int, hfov_deg: float = HFOV_DEG) -> np.ndarray:
    """3x3 pinhole intrinsics (square pixels) for an image of ``height`` x ``width`` with the given HFOV."""
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def perspective(height: int, width: int, hfov_deg: float = HFOV_DEG, near: float = 0.05, far: float = 100.0):
    """OpenGL projection matrix (4x4 float64) matching ``intrinsics``."""
    t = math.tan(math.radians(hfov_deg) / 2.0)
    sx, sy = 1.0 / t, width / (height * t)
    return np.array(
        [
            [sx, 0.0, 0.0, 0.0],
            [0.0, sy, 0.0, 0.0],
            [0.0, 0.0, (far + near) / (near - far), 2.0 * far * near / (near - far)],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )
