"""Vector envs of V4SNav-v0 in a process that has already rendered (real Mesa/EGL, no mocks).

Mesa cannot draw in a forked child of a process whose llvmpipe has rasteriser threads; the env makes the
fork safe (``envs/vector.py``), so the stock ``make_vec(..., vectorization_mode="async")`` and
``AsyncVectorEnv(fns)`` (fork on Linux) work after ``make`` + ``reset`` in the parent.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import v4s_agent

KW = {"tour_frames": 4, "context_video": "tour"}  # the short tour: vector tests stay fast


def _assert_real_renders(obs, n: int) -> None:
    assert obs["rgb"].shape == (n, 128, 128, 3) and obs["rgb"].dtype == np.uint8
    for i in range(n):
        img = obs["rgb"][i].astype(np.float64)
        assert img.std() > 5.0, f"worker {i} returned a flat image (mean {img.mean():.1f})"
        assert len(np.unique(obs["rgb"][i].reshape(-1, 3), axis=0)) > 20


@pytest.fixture()
def rendered_parent(tmp_path):
    env = gym.make(v4s_agent.ENV_ID, cache_dir=str(tmp_path), **KW)
    obs, _ = env.reset(seed=0)  # the parent now owns an EGL context and has drawn with it
    assert obs["rgb"].std() > 5.0
    yield env, str(tmp_path)
    env.close()


def test_make_vec_async_and_fork_async_vector_env_after_parent_rendered(rendered_parent):
    parent, cache = rendered_parent
    venv = gym.make_vec(v4s_agent.ENV_ID, num_envs=2, vectorization_mode="async", cache_dir=cache, **KW)
    assert isinstance(venv, gym.vector.AsyncVectorEnv)
    obs, info = venv.reset(seed=[0, 1])
    _assert_real_renders(obs, 2)
    assert info["context"]["frames"].shape == (2, 4, 128, 128, 3)
    obs, rew, term, trunc, info = venv.step(np.array([1, 2]))
    _assert_real_renders(obs, 2)
    assert rew.shape == (2,)
    venv.close()

    fns = [lambda: gym.make(v4s_agent.ENV_ID, cache_dir=cache, **KW)] * 2
    venv = gym.vector.AsyncVectorEnv(fns)  # default context: fork on Linux
    obs, _ = venv.reset(seed=[2, 3])
    _assert_real_renders(obs, 2)
    obs, *_ = venv.step(np.array([1, 3]))
    _assert_real_renders(obs, 2)
    venv.close()

    obs, *_ = parent.step(1)  # the parent's own context is untouched
    assert obs["rgb"].std() > 5.0


def test_make_vec_default_uses_forkserver_entry_point(rendered_parent):
    _, cache = rendered_parent
    venv = gym.make_vec(v4s_agent.ENV_ID, num_envs=2, cache_dir=cache, **KW)
    assert isinstance(venv, gym.vector.AsyncVectorEnv)
    assert venv.unwrapped.spec.kwargs["vectorization_mode"] == "vector_entry_point"
    obs, _ = venv.reset(seed=[0, 1])
    _assert_real_renders(obs, 2)
    obs, *_ = venv.step(np.array([2, 1]))
    _assert_real_renders(obs, 2)
    assert venv.get_attr("spec")[0].max_episode_steps == v4s_agent.MAX_EPISODE_STEPS
    venv.close()
