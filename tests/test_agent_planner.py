"""VideoPlanner + V4SAgent on the real env with a tiny random checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from agent_helpers import make_tiny_checkpoint
from v4s_agent.envs import V4SNavEnv, actions

import v4s_agent
from v4s_agent.agent.planner import DEFAULT_CHECKPOINT, BackendUnavailableError, CheckpointError, VideoPlanner


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def planner(tiny_ckpt):
    return VideoPlanner.from_pretrained(tiny_ckpt, device="cpu")


@pytest.fixture(scope="module")
def env():
    e = V4SNavEnv(task="object", resolution=(64, 64))
    yield e
    e.close()


def test_action_constants_match_env():
    from v4s_agent import action_decoding as ad

    assert (ad.STOP, ad.MOVE_FORWARD, ad.TURN_LEFT, ad.TURN_RIGHT) == (
        actions.STOP,
        actions.MOVE_FORWARD,
        actions.TURN_LEFT,
        actions.TURN_RIGHT,
    )


def test_plan_shapes_and_determinism(planner, env):
    obs, info = env.reset(seed=0)
    p1 = planner.plan(info["context"], obs["rgb"], info["instruction"], seed=3)
    p2 = planner.plan(info["context"], obs["rgb"], info["instruction"], seed=3)
    t, h, w = planner.num_target_frames, planner.height, planner.width
    assert p1.frames.shape == (t, h, w, 3) and p1.frames.dtype == np.uint8
    n_traj = t - planner.num_box_frames
    assert p1.num_trajectory_frames == n_traj and len(p1.aux_frames) == planner.num_box_frames
    assert p1.actions.shape == (n_traj - 1,) and set(p1.actions.tolist()) <= {1, 2, 3}
    assert p1.action_probs.shape == (n_traj - 1, 4)
    assert len(p1.context_positions) == planner.num_context_frames
    assert np.all(np.diff(p1.context_positions) >= 0)
    assert p1.latency_ms > 0
    np.testing.assert_array_equal(p1.frames, p2.frames)
    # no context (baseline) and the pose task's camera path
    p3 = planner.plan(None, obs["rgb"], info["instruction"], camera=np.zeros((t, 12), np.float32))
    assert p3.frames.shape == p1.frames.shape


def test_agent_loop_from_design_doc(planner):
    """The README loop (with gym.make), a few steps."""
    import gymnasium as gym

    env = gym.make("V4SNav-v0", resolution=(64, 64), max_episode_steps=6)
    agent = v4s_agent.V4SAgent(planner, replan_every=2)
    obs, info = env.reset(seed=0)
    agent.reset(obs, info)
    steps = 0
    while True:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs))
        steps += 1
        if terminated or truncated:
            break
    env.close()
    assert steps <= 6 and agent.stats["plans"] >= 1
    ctx, pos = agent.context()
    assert ctx.shape[0] == planner.num_context_frames and np.all(np.diff(pos) >= 0)


def test_agent_pose_task_and_no_context(planner):
    env = V4SNavEnv(task="pose", resolution=(64, 64))
    obs, info = env.reset(seed=2)
    agent = v4s_agent.V4SAgent(planner, context_mode="none", replan_every=1)
    agent.reset(obs, info)
    cam = agent.camera_path()
    assert cam.shape == (planner.num_target_frames, 12)
    collided = False
    for _ in range(3):
        a = agent.act(obs)
        assert a in (0, 1, 2, 3)
        obs, _, term, _, info = env.step(a)
        collided |= info["collided"]
        if term:
            break
    # dead reckoning follows the real pose when nothing collided
    if not collided:
        np.testing.assert_allclose(agent.pose[[0, 2], 3], info["agent_pose"][[0, 2], 3], atol=1e-6)
    env.close()


def test_bad_checkpoint_and_backend(tmp_path, tiny_ckpt):
    with pytest.raises(CheckpointError, match="not found"):
        VideoPlanner.from_pretrained(tmp_path / "missing")
    (tmp_path / "broken" / "pipeline").mkdir(parents=True)
    (tmp_path / "broken" / "pipeline" / "model_index.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        VideoPlanner.from_pretrained(tmp_path / "broken")
    with pytest.raises(ValueError, match="backend"):
        VideoPlanner.from_pretrained(tiny_ckpt, backend="jax")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="tensorrt"):
            VideoPlanner.from_pretrained(tiny_ckpt, backend="tensorrt")


@pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "pipeline").is_dir(), reason="shipped checkpoint not present")
def test_shipped_default_checkpoint_plans():
    """The real default checkpoint: loads with no argument and plans once on the default scene."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 OpenMP threads on a busy 2-core CPU are ~9x slower
    try:
        _plan_with_default()
    finally:
        torch.set_num_threads(threads)


def _plan_with_default():
    planner = VideoPlanner.from_pretrained(device="cpu")
    env = V4SNavEnv()
    obs, info = env.reset(seed=0)
    plan = planner.plan(info["context"], obs["rgb"], info["instruction"])
    env.close()
    assert plan.frames.shape[0] == planner.num_target_frames
    assert len(plan.actions) == plan.num_trajectory_frames - 1


def test_context_pose_planner_and_agent_pass_relative_poses(tmp_path, planner, env):
    """With a ``context_pose`` model, the planner turns the tour's poses and the agent's odometry into
    each chosen context frame's pose relative to the observation; other models get none."""
    from v4s_agent.envs.geometry import encode_relative_pose

    from v4s_agent.agent.agent import V4SAgent

    cp = VideoPlanner.from_pretrained(make_tiny_checkpoint(tmp_path, context_pose=True), device="cpu")
    obs, info = env.reset(seed=1)
    ctx, pose = info["context"], info["agent_pose"]
    frames, pos = cp.prepare_context(ctx, None, np.random.default_rng(0))
    idx = pos.astype(int)  # a tour dict without positions: the source positions are the frame indices
    cam = cp.context_camera(ctx, idx, pose)
    want = np.stack([encode_relative_pose(pose, ctx["poses"][i]) for i in idx])
    np.testing.assert_array_equal(cam, want)
    assert planner.context_camera(ctx, idx, pose) is None  # the tiny default has no context_pose
    assert cp.context_camera(ctx, idx, None) is None  # no odometry: no poses
    seen = []
    orig = cp.pipeline.__call__

    def spy(**kw):
        seen.append(kw.get("context_camera"))
        return orig(**kw)

    cp.pipeline = type("Spy", (), {"__call__": staticmethod(spy), "v4s_config": cp.pipeline.v4s_config})()
    agent = V4SAgent(cp, replan_every=1)
    agent.reset(obs, info)
    agent.act(obs)
    assert seen and seen[-1] is not None and seen[-1].shape == (cp.num_context_frames, 12)
    _, p2, poses = agent.context_with_poses()
    assert poses.shape == (cp.num_context_frames, 4, 4)


def test_views_sampling_takes_each_path_pose_closest_context_view(tmp_path, env):
    """``sampling="views"``: a plan along a given camera path gets, for each path pose, the context frame
    seen from closest to it (as training gave path plans their context); without a path it refuses."""
    from v4s_agent.envs.geometry import decode_relative_poses, encode_relative_poses
    from v4s_agent.envs.scene_video import view_distance

    ckpt = make_tiny_checkpoint(tmp_path, context_pose=True, num_context_frames=3)  # K - 1 = 2 path views
    cp = VideoPlanner.from_pretrained(ckpt, device="cpu")
    obs, info = env.reset(seed=2)
    ctx, pose = info["context"], info["agent_pose"]
    path = ctx["poses"][[5, 9]]  # a path through places the tour has seen
    camera = encode_relative_poses(pose, path)
    np.testing.assert_allclose(decode_relative_poses(pose, camera), path, atol=1e-5)
    camera = np.concatenate([camera, np.zeros((2, 12), np.float32)])  # rows without a pose: not the path
    seen = []
    orig = cp.pipeline.__call__

    def spy(**kw):
        seen.append(kw)
        return orig(**kw)

    cp.pipeline = type("Spy", (), {"__call__": staticmethod(spy), "v4s_config": cp.pipeline.v4s_config})()
    plan = cp.plan(
        ctx, obs["rgb"], "Follow the path.", camera=camera, observation_pose=pose, sampling="views"
    )
    idx = plan.context_positions.astype(int)
    assert len(idx) == cp.num_context_frames and np.all(np.diff(idx) >= 0)
    assert {5, 9} <= set(idx.tolist())  # each path pose's own view is its closest
    for p in path:
        assert view_distance(ctx["poses"][idx], p).min() < 1e-3  # float32 camera round trip
    np.testing.assert_allclose(
        np.asarray(seen[-1]["context_camera"]).reshape(-1, 12),
        encode_relative_poses(pose, ctx["poses"][idx]),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="views"):
        cp.plan(ctx, obs["rgb"], "Follow the path.", sampling="views")
