"""The scene video: one continuous capture per scene that the env serves as context and training cuts."""

from __future__ import annotations

import numpy as np
import pytest
from v4s_agent.envs.nav_env import V4SNavEnv
from v4s_agent.envs.scene_video import (
    LOOK_AROUND_STEPS,
    SceneVideoConfig,
    category_boxes,
    other_scene_index,
)


@pytest.fixture(scope="module")
def env():
    e = V4SNavEnv(split="val_scenes", resolution=(32, 32), cache_dir=False, scene_repeat=100)
    e.reset(seed=2)  # unseeded resets stay in this scene
    yield e
    e.close()


def test_scene_video_is_a_continuous_action_sequence(env) -> None:
    v = env.get_scene_video()
    n = SceneVideoConfig().max_frames
    assert v["frames"].shape == (n, 32, 32, 3) and v["poses"].shape == (n, 4, 4)
    assert v["actions"][-1] == -1 and set(np.unique(v["actions"][:-1]).tolist()) <= {1, 2, 3}
    # consecutive frames are one action apart: 0.25 m forward (or less: sliding) or a 15 degree turn
    step = np.linalg.norm(np.diff(v["poses"][:, [0, 2], 3], axis=0), axis=1)
    assert step.max() <= 0.25 + 1e-6
    turned = v["actions"][:-1] != 1
    assert np.all(step[turned] < 1e-9)
    # the agent gets frames and poses only (no privileged boxes), and the same arrays every reset
    _, info = env.reset()
    assert set(info["context"]) == {"frames", "poses"}
    np.testing.assert_array_equal(info["context"]["frames"], v["frames"])


def test_visits_end_centred_and_are_followed_by_a_look_around(env) -> None:
    v = env.get_scene_video()
    ok = np.nonzero(v["visit_ok"])[0]
    assert len(ok) >= 3 and v["visit_ok"].mean() >= 0.6
    for e in ok:
        end, cat = int(v["visit_end"][e]), int(v["visit_category"][e])
        assert not np.isnan(v["boxes"][end, cat]).any() and v["visit_sd"][e] < 0.2
        if end + LOOK_AROUND_STEPS < len(v["frames"]):  # the turn in place returns to the same view
            np.testing.assert_allclose(v["poses"][end + LOOK_AROUND_STEPS], v["poses"][end], atol=1e-6)
            np.testing.assert_array_equal(v["frames"][end + LOOK_AROUND_STEPS], v["frames"][end])


def test_reset_start_option(env) -> None:
    v = env.get_scene_video()
    T = v["poses"][100]
    fwd = -T[:3, 2]
    yaw = float(np.arctan2(-fwd[0], -fwd[2]))
    obs, info = env.reset(options={"start": (T[0, 3], T[2, 3], yaw)})
    np.testing.assert_allclose(info["agent_pose"], T, atol=1e-6)
    np.testing.assert_array_equal(obs["rgb"], v["frames"][100])
    with pytest.raises(ValueError, match="walkable"):
        env.reset(options={"start": (1e4, 1e4, 0.0)})
    with pytest.raises(ValueError, match="must be"):
        env.reset(options={"start": "x"})


def test_context_video_modes_and_category_boxes() -> None:
    kw = {"split": "val_scenes", "resolution": (32, 32), "cache_dir": False}
    e = V4SNavEnv(context_video="tour", tour_frames=5, **kw)
    _, info = e.reset(seed=0)
    assert info["context"]["frames"].shape == (5, 32, 32, 3)
    e.close()
    e = V4SNavEnv(context_video="none", **kw)
    _, info = e.reset(seed=0)
    assert "context" not in info
    with pytest.raises(RuntimeError, match="none"):
        e.get_context()
    e.close()
    with pytest.raises(ValueError, match="context_video"):
        V4SNavEnv(context_video="bogus")
    sem = np.zeros((32, 32), np.int32)
    sem[4:10, 20:30] = 7  # instance 7 (category 1): visible
    sem[0, 0] = 9  # instance 9 (category 0): one pixel, below the env's visibility threshold
    boxes = category_boxes(sem, {7: 1, 9: 0}, 3)
    assert np.isnan(boxes[0]).all() and np.isnan(boxes[2]).all()
    np.testing.assert_array_equal(boxes[1], [20, 4, 30, 10])


def test_other_scene_index_picks_the_next_item_of_another_scene() -> None:
    assert other_scene_index([0, 0, 1, 1, 2]) == [2, 2, 4, 4, 0]
    idx = other_scene_index([3, 5, 3, 5, 7, 7])
    assert all(s != [3, 5, 3, 5, 7, 7][j] for s, j in zip([3, 5, 3, 5, 7, 7], idx, strict=True))
    assert other_scene_index([4, 4, 4]) == [1, 2, 0]  # one scene: the next item, never itself
    assert other_scene_index([]) == []
