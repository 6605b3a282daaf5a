"""The depth + odometry occupancy map: back-projection, frontiers and shortest-path driving."""

from __future__ import annotations

import math

import numpy as np
from v4s_agent.envs.actions import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT
from v4s_agent.envs.geometry import intrinsics, make_pose

from v4s_agent.agent.mapping import (
    ObjectSearch,
    OccupancyMap,
    best_dwell_view,
    drive_to,
    dwell_runs,
    goal_component,
    steer,
)


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


def test_a_bump_blocks_the_way_even_over_seen_floor() -> None:
    """Issue 21: one bump was outvoted by floor evidence and the robot walked into the same spot again."""
    T = make_pose(0.0, 0.0, 0.0)
    m = OccupancyMap(cell=0.1, size_m=6.0)
    m.set_origin(T)
    m.free[:] = 50  # the floor was seen many times everywhere
    assert m.forward_clear(T)
    m.mark_blocked_ahead(T)
    assert not m.forward_clear(T)  # now it is not
    r, c = m.to_cell(0.0, -0.3)
    assert m.occupied()[r, c]
    goal = np.zeros((m.n, m.n), bool)
    goal[m.to_cell(0.0, -2.0)] = True
    a, _, _ = drive_to(m, T, goal)
    assert a in (TURN_LEFT, TURN_RIGHT)  # around the bump, not into it


def test_goal_component_ignores_scattered_pixels() -> None:
    prob = np.zeros((32, 32))
    prob[12:20, 12:20] = 0.9  # the object
    prob[0, 0] = prob[31, 31] = prob[0, 31] = 0.8  # false pixels in the corners
    comp = goal_component(prob, 0.3, min_fraction=0.01)
    assert comp is not None and comp.sum() == 64 and comp[15, 15] and not comp[0, 0]
    assert goal_component(np.full((32, 32), 0.1), 0.3) is None


class _BlobDetector:
    """A detector that sees ``chair`` as a centred blob in every frame."""

    categories = ["chair"]

    def probs(self, frames: np.ndarray) -> np.ndarray:
        p = np.zeros((len(frames), 2, 16, 16))
        p[:, 1, 5:11, 5:11] = 0.9
        p[:, 0] = 1 - p[:, 1]
        return p


def _wall_depth(d: float, h: int = 32, w: int = 32) -> np.ndarray:
    """Depth of a frontal plane ``d`` metres away along the optical axis (pitched camera, crude)."""
    return np.full((h, w), d, np.float32)


def test_object_search_stops_only_when_the_goal_is_verified_close() -> None:
    pitch = math.radians(-30)
    T = make_pose(0.0, 0.0, 0.0, pitch=pitch)
    rgb = np.zeros((32, 32, 3), np.uint8)
    near = ObjectSearch(_BlobDetector(), "chair", scan_turns=0, min_votes=2)
    acts = [near.act(rgb, _wall_depth(1.0), T) for _ in range(4)]
    assert STOP in acts and acts.index(STOP) >= 1  # centred, ~0.9 m away, seen in two frames: stop
    assert "centred" in near.stats["stop_reason"]
    too_close = ObjectSearch(_BlobDetector(), "chair", scan_turns=0, min_votes=2)
    acts = [too_close.act(rgb, _wall_depth(0.3), T) for _ in range(4)]
    assert STOP not in acts  # 0.26 m: a goal centred that close is below the view, a false detection
    blind = ObjectSearch(None, None, scan_turns=0)
    assert STOP not in [blind.act(rgb, _wall_depth(1.0), T) for _ in range(4)]  # no detector: no stop


class _BoxRuleDetector(_BlobDetector):
    """The centred blob, with a fitted box rule (``detect``) that sees the whole object at ``box``."""

    def __init__(self, box: tuple[float, float, float, float] | None) -> None:
        self.box, self.calls = box, 0

    def detect(self, frames: np.ndarray, category: str) -> list:
        self.calls += 1
        return [(self.box, 0.1)]


def test_fitted_stop_needs_the_detectors_own_box_rule_to_agree() -> None:
    """``fitted_stop``: the centred core region is not enough when the detector's fitted box rule puts
    the object off centre (a part of it, or two instances merged); it stops when that box is centred."""
    T = make_pose(0.0, 0.0, 0.0, pitch=math.radians(-30))
    rgb = np.zeros((32, 32, 3), np.uint8)

    def run(det: _BoxRuleDetector, fitted: bool) -> list[int]:
        search = ObjectSearch(det, "chair", scan_turns=0, min_votes=2, fitted_stop=fitted)
        return [search.act(rgb, _wall_depth(1.0), T) for _ in range(4)]

    off = _BoxRuleDetector((0.0, 8.0, 12.0, 24.0))  # centre (6, 16) of a 32 px frame: SD 0.44
    assert STOP in run(off, fitted=False) and off.calls == 0  # the basic stop never asks
    assert STOP not in run(off, fitted=True) and off.calls > 0
    assert STOP not in run(_BoxRuleDetector(None), fitted=True)  # the box rule sees nothing: no stop
    assert STOP in run(_BoxRuleDetector((10.0, 10.0, 22.0, 22.0)), fitted=True)  # centred: SD 0


def test_reproduce_stop_is_an_option_and_the_verified_stop_never_takes_it() -> None:
    """Standing where a context frame of the goal was taken, seeing that frame: the basic stop takes it
    unless ``reproduce_stop=False``; the baseline's verified stop never does."""
    from v4s_agent.agent.verified_search import VerifiedSearch

    T = make_pose(0.0, 0.0, 0.0, pitch=math.radians(-30))
    frame = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)

    def reproduces(search: ObjectSearch) -> bool:
        search._ctx_frames, search._rgb = frame[None], frame
        return search._reproduces(0, T, (0.1, 0.0))

    assert reproduces(ObjectSearch(_BlobDetector(), "chair"))
    assert not reproduces(ObjectSearch(_BlobDetector(), "chair", reproduce_stop=False))
    assert not reproduces(VerifiedSearch(_BlobDetector(), "chair"))
    assert reproduces(VerifiedSearch(_BlobDetector(), "chair", reproduce_stop=True))


def test_scan_first_looks_around_before_driving_to_a_context_viewpoint() -> None:
    """``scan_first``: the start's look-around (free for SPL: turns add no path) also runs when the
    context video gave a viewpoint; without it the robot leaves for the viewpoint at once."""
    T = make_pose(0.0, 0.0, 0.0, pitch=math.radians(-30))
    rgb = np.zeros((32, 32, 3), np.uint8)

    def first_actions(scan_first: bool) -> list[int]:
        search = ObjectSearch(None, None, scan_turns=6, scan_first=scan_first)
        search.viewpoints = [(0.0, -2.0, 0.0, 1.0, 0)]  # 2 m straight ahead
        return [search.act(rgb, _wall_depth(3.0), T) for _ in range(6)]

    assert first_actions(True) == [TURN_LEFT] * 6
    assert first_actions(False) != [TURN_LEFT] * 6


def test_dwell_runs_and_the_stand_out_look_around() -> None:
    """A video that walks, looks around twice; the look-around whose frames show the goal is chosen."""
    poses = [make_pose(0.1 * i, 0.0, 0.0) for i in range(5)]  # walking
    poses += [make_pose(0.4, 0.0, math.radians(15 * k)) for k in range(1, 25)]  # look-around 1
    poses += [make_pose(0.4, -0.1 * i, 0.0) for i in range(1, 5)]
    poses += [make_pose(0.4, -0.4, math.radians(15 * k)) for k in range(1, 25)]  # look-around 2
    poses = np.stack(poses)
    runs = dwell_runs(poses)
    assert len(runs) == 2 and runs[0][0] == 4 and len(runs[0]) == 25

    class _Det:
        categories = ["chair"]

        def __init__(self, hit: int) -> None:
            self.hit = hit

        def probs(self, frames: np.ndarray) -> np.ndarray:
            p = np.zeros((len(frames), 2, 16, 16))
            for i, f in enumerate(frames):
                if int(f[0, 0, 0]) == self.hit:
                    p[i, 1, 6:10, 6:10] = 0.9  # the goal, centred
            return p

    frames = np.zeros((len(poses), 8, 8, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(len(poses)) % 256  # frame i is recognisable by its first pixel
    goal_frame = int(runs[1][7])
    assert best_dwell_view(_Det(goal_frame), frames, poses, "chair") == goal_frame
    assert best_dwell_view(_Det(-1), frames + 1, poses, "chair") is None  # nothing stands out: no view


def test_standpoint_prediction_matches_the_render_and_backs_away_from_a_low_goal() -> None:
    """``points_sd`` (the standpoints' prediction) of the goal's back-projected pixels, from the pose that
    saw them, is the SD of the goal's box in the render; from just in front of the goal (low in the
    pitched view) the standpoints lie farther away and the robot's cell is not one of them."""
    from v4s_agent.envs import V4SNavEnv
    from v4s_agent.envs.geometry import yaw_of
    from v4s_agent.envs.goal_metrics import box_from_mask, sd_from_box
    from v4s_agent.envs.goal_viewpoints import points_sd

    from v4s_agent.agent.goal_detection import backproject
    from v4s_agent.agent.occupancy_map import OccupancyMap
    from v4s_agent.agent.standpoints import camera_pitch, facing_yaw, standpoint_cells

    env = V4SNavEnv(task="object", resolution=(64, 64), obs_keys=("rgb", "depth", "semantic"))
    try:
        obs, info = env.reset(seed=5)
        for _ in range(150):  # the expert's path ends looking at the goal
            a = env.unwrapped.expert_action()
            if a == STOP:
                break
            obs, _, term, trunc, info = env.step(a)
        mask = np.isin(obs["semantic"], env.unwrapped._goal_ids)
        assert mask.sum() > 20
        T = np.asarray(info["agent_pose"])
        pts = backproject(obs["depth"], T, mask)
        true_sd = sd_from_box(box_from_mask(mask), 64, 64)
        x, z, yaw = np.array([T[0, 3]]), np.array([T[2, 3]]), np.array([yaw_of(T)])
        pred = points_sd(pts, x, z, T[1, 3], yaw, camera_pitch(T), 64, 64, drop_behind=True)
        assert abs(camera_pitch(T) - math.radians(-30)) < 1e-6
        assert abs(pred[0] - true_sd) < 0.05, (pred, true_sd)
    finally:
        env.close()
    # a 0.9 m tall box, 0.4 m wide and deep, 0.6 m ahead (camera 1.5 m up): low in the view from here
    T = make_pose(0.0, 0.0, 0.0, pitch=math.radians(-30))
    g = np.linspace(0.0, 1.0, 6)
    xs, ys, zs = np.meshgrid(-0.2 + 0.4 * g, 0.9 * g, -0.6 - 0.4 * g)
    obj = np.stack([xs.ravel(), ys.ravel(), zs.ravel()], axis=1)
    origin = np.zeros(1)
    here = points_sd(obj, origin, origin, 1.5, origin, math.radians(-30), 64, 64, drop_behind=True)[0]
    assert here > 0.25
    grid = OccupancyMap(cell=0.1, size_m=8.0)
    grid.set_origin(T)
    cells = standpoint_cells(grid, obj, T, (64, 64))
    assert cells.any()
    r, c = grid.to_cell(0.0, 0.0)
    assert not cells[int(r), int(c)]
    gx, gz = grid.to_world(*np.nonzero(cells))
    near = np.min(np.hypot(gx[:, None] - obj[None, :, 0], gz[:, None] - obj[None, :, 2]), axis=1)
    assert near.min() > 0.75 and near.max() <= 0.95  # farther back than now (0.6 m), within the stop reach
    yaw = facing_yaw(gx, gz, 0.0, -0.8, 0.0)
    sd = points_sd(obj, gx, gz, 1.5, yaw, math.radians(-30), 64, 64, drop_behind=True)
    assert sd.max() < here - 0.05, (sd.max(), here)
