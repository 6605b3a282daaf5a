"""Context retrieval (issue 24): K frames by field-of-view overlap with the path ahead, and coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from v4s_agent.envs.geometry import make_pose

from v4s_agent.agent.context_retrieval import path_points, retrieve_context, view_masks


def _ring(n: int = 24, radius: float = 0.0) -> np.ndarray:
    """A look-around: ``n`` poses at the origin, heading ``2 pi i / n`` (0 = facing -z)."""
    return np.stack([make_pose(radius, 0.0, 2 * math.pi * i / n) for i in range(n)])


def test_view_masks_cone() -> None:
    pts = np.array([[0.0, -2.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -6.0]])
    m = view_masks(make_pose(0.0, 0.0, 0.0)[None], pts)  # facing -z
    assert m.tolist() == [[True, False, False, False]]  # ahead yes; behind, side (at 90 deg), too far no


def test_retrieval_prefers_frames_that_see_the_path_ahead() -> None:
    poses = _ring(24)
    ahead = path_points(make_pose(0.0, 0.0, math.pi / 2))  # the agent faces -x (yaw 90 deg = left)
    idx = retrieve_context(3, poses, query=ahead, recent=0)
    assert len(idx) == 3 and np.all(np.diff(idx) > 0)
    yaws = np.degrees([2 * math.pi * i / 24 for i in idx])
    # the first pick sees the path ahead: a frame within 45 deg of the agent's heading is chosen
    assert np.any(np.abs(((yaws - 90) + 180) % 360 - 180) <= 45)
    # coverage spreads the rest: not all three from the same 45-degree sector
    assert np.ptp(yaws) > 45


def test_retrieval_keeps_recent_and_falls_back_without_poses() -> None:
    poses = _ring(30)
    idx = retrieve_context(6, poses, query=None, recent=2)
    assert {28, 29} <= set(idx.tolist()) and len(idx) == 6  # the agent's latest views come last
    even = retrieve_context(4, None, n=100, recent=1)
    assert even.tolist() == [0, 49, 98, 99]  # no geometry: even over the rest in time + the latest view
    small = retrieve_context(6, None, n=3)
    assert len(small) == 6 and set(small.tolist()) == {0, 1, 2}  # repeats only when memory < K
    with pytest.raises(ValueError, match="non-empty"):
        retrieve_context(3, None, n=0)


def test_agent_uses_retrieval_for_its_context() -> None:
    """The agent's context positions come from retrieval: the chosen video frames face the path ahead."""
    from v4s_agent.agent.agent import V4SAgent

    class _Stub:
        num_context_frames, num_target_frames, num_box_frames = 4, 5, 0

        def with_settings(self, **_: object) -> _Stub:
            return self

    frames = np.zeros((24, 16, 16, 3), np.uint8)
    agent = V4SAgent(_Stub(), context_sampling="coverage", recent_context=0)  # type: ignore[arg-type]
    start = make_pose(0.0, 0.0, math.pi)  # facing +z
    agent.reset(frames[0], {"context": {"frames": frames, "poses": _ring(24)}, "agent_pose": start})
    _, pos, poses = agent.context_with_poses()
    assert pos is not None and poses is not None and len(pos) == 4
    fwd = -poses[:, [0, 2], 2]
    assert (fwd[:, 1] > 0.7).any()  # at least one chosen frame looks along +z, where the agent goes


def test_agent_views_sampling_puts_the_goal_views_nearest_it_in_the_context() -> None:
    """``context_sampling="views"`` on the object task: the detector's goal viewpoints of the scene video
    (here set by hand) go into the coverage choice, the soonest reached from the agent first; on the pose
    task the context is the path's closest views."""
    from v4s_agent.agent.agent import V4SAgent

    class _Stub:
        num_context_frames, num_target_frames, num_box_frames = 4, 5, 0

        def with_settings(self, **_: object) -> _Stub:
            return self

    # a straight walk along -z, one frame every 0.25 m, all facing -z
    poses = np.stack([make_pose(0.0, -0.25 * i, 0.0) for i in range(40)])
    frames = np.zeros((40, 16, 16, 3), np.uint8)
    agent = V4SAgent(_Stub(), context_sampling="views", recent_context=0)  # type: ignore[arg-type]
    agent.reset(frames[0], {"context": {"frames": frames, "poses": poses}, "agent_pose": poses[30]})
    base = agent.context_with_poses()[1].astype(int)

    class _Search:  # the detector's goal viewpoints (x, z, yaw, score, frame), as ObjectSearch keeps them
        viewpoints = [(0.0, -0.5, 0.0, 0.5, 2), (0.0, -7.0, 0.0, 0.4, 28), (0.0, -7.25, 0.0, 0.3, 29)]

    agent.search = _Search()
    pos = agent.context_with_poses()[1].astype(int)
    assert 29 in pos.tolist() and 2 in pos.tolist() and len(pos) == 4  # nearest the agent first, then
    assert 28 not in pos.tolist() or 28 in base.tolist()  # the nearest other view (28: the same view)
    # pose task: the path's closest views (the walk passes through the path's poses)
    agent.goal_pose = poses[35]
    pos = agent.context_with_poses()[1].astype(int)
    assert len({31, 32, 33, 34, 35} & set(pos.tolist())) >= 3, pos
