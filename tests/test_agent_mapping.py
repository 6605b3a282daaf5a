"""The depth + odometry occupancy map: back-projection, frontiers and shortest-path driving."""

from __future__ import annotations

import math

import numpy as np
from v4s_agent.envs.actions import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT
from v4s_agent.envs.geometry import intrinsics, make_pose

from v4s_agent.agent.mapping import OccupancyMap, drive_to, steer


def _depth_of_wall(T: np.ndarray, h: int = 32, w: int = 32, wall_z: float = -2.0) -> np.ndarray:
    """z-depth of a level camera facing -z at a wall plane z = wall_z above a floor at y = 0."""
    K = intrinsics(h, w)
    vs, _ = np.mgrid[0:h, 0:w]
    dy = -(vs + 0.5 - K[1, 2]) / K[1, 1]
    cam_y, cam_z = T[1, 3], T[2, 3]
    d_wall = np.full((h, w), cam_z - wall_z)  # z-depth of the wall plane
    d_floor = np.where(dy < 0, cam_y / np.maximum(-dy, 1e-6), np.inf)  # where the ray meets y = 0
    return np.minimum(d_wall, d_floor).astype(np.float32)


def test_floor_is_free_and_the_wall_is_an_obstacle() -> None:
    T = make_pose(0.0, 0.0, 0.0)  # at the origin, 1.5 m camera, facing -z
    m = OccupancyMap(cell=0.1, size_m=10.0)
    m.integrate(_depth_of_wall(T), T)
    r_wall, c = m.to_cell(0.0, -2.0)
    r_floor, _ = m.to_cell(0.0, -1.75)  # a level camera sees the floor from 1.5 m (45 deg down) on
    assert m.occupied()[r_wall - 1 : r_wall + 1, c].any()  # the wall plane's cell (either side of z = -2)
    assert m.known_free()[r_floor, c] and not m.occupied()[r_floor, c]
    assert not m.occupied()[m.to_cell(0.0, 1.0)]  # behind the camera: never seen, not an obstacle


def test_distance_field_goes_around_an_obstacle() -> None:
    m = OccupancyMap(cell=0.1, size_m=6.0, agent_radius=0.1)
    m.set_origin(make_pose(0.0, 0.0, 0.0))
    m.free[:] = 1  # everything seen as floor ...
    r0, c0 = m.to_cell(-1.0, 0.0)
    r1, c1 = m.to_cell(1.0, 0.0)
    m.occ[r0 - 5 : r0 + 6, m.to_cell(0.0, 0.0)[1]] = 50  # ... but a wall segment between start and goal
    goal = np.zeros((m.n, m.n), bool)
    goal[r1, c1] = True
    d = m.distance_field(goal)
    straight = 2.0
    assert np.isfinite(d[r0, c0]) and d[r0, c0] > straight + 0.3  # the detour is longer than 2 m
    T = make_pose(-1.0, 0.0, -math.pi / 2)  # facing +x, towards the goal and the wall
    a, length, path = drive_to(m, T, goal)
    assert a in (MOVE_FORWARD, TURN_LEFT, TURN_RIGHT) and length == d[r0, c0] and len(path) > 1
    g = np.zeros_like(goal)
    g[r0, c0] = True
    assert drive_to(m, T, g)[0] == STOP  # already on a goal cell


def test_steer_and_frontiers() -> None:
    T = make_pose(0.0, 0.0, 0.0)  # facing -z
    assert steer(T, (0.0, -2.0)) == MOVE_FORWARD
    assert steer(T, (-2.0, 0.0)) == TURN_LEFT  # -x is on the left when facing -z
    assert steer(T, (2.0, 0.0)) == TURN_RIGHT
    m = OccupancyMap(cell=0.1, size_m=10.0)
    m.integrate(_depth_of_wall(T, wall_z=-3.5), T)
    f = m.frontiers()
    assert f.any()
    rows, cols = np.nonzero(f)
    xs, zs = m.to_world(rows, cols)
    assert np.all(zs < 0.6)  # frontiers lie at the edge of what the camera saw, in front of it
