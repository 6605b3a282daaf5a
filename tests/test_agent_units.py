"""Unit tests of the agent's parts that need neither the env nor a trained model."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from v4s_agent.agent.action_decoding import (
    MOVE_FORWARD,
    STOP,
    TURN_LEFT,
    TURN_RIGHT,
    decode_actions,
    essential_forward,
    estimate_motion,
    intrinsics,
)
from v4s_agent.agent.agent import _yaw, discrete_path, frame_similarity, relative_camera
from v4s_agent.agent.configuration_agent import V4SAgentConfig
from v4s_agent.agent.planner import sample_context_indices
from v4s_agent.evaluation.evaluate import grounding_scores
from v4s_agent.evaluation.rollout import AtomicDir


def _canvas(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    big = np.full((384, 384, 3), 128, np.uint8)
    for _ in range(300):
        x, y = (int(v) for v in rng.integers(0, 384, 2))
        w, h = (int(v) for v in rng.integers(5, 40, 2))
        cv2.rectangle(big, (x, y), (x + w, y + h), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return big


def _view(big: np.ndarray, yaw_left_deg: float = 0.0, zoom: float = 1.0) -> np.ndarray:
    """A 128x128 pinhole view (90 deg HFOV) of a far textured plane; turning left moves the scene right."""
    t = math.radians(-yaw_left_deg)
    K = np.array([[64, 0, 192], [0, 64, 192], [0, 0, 1.0]])
    R = np.array([[math.cos(t), 0, -math.sin(t)], [0, 1, 0], [math.sin(t), 0, math.cos(t)]])
    S = np.diag([zoom, zoom, 1.0])
    H = K @ S @ R @ np.linalg.inv(K)
    return cv2.warpPerspective(big, H, (384, 384))[128:256, 128:256]


def test_config_validates():
    V4SAgentConfig()
    for bad in (
        {"replan_every": 0},
        {"context_sampling": "x"},
        {"stop_sd": 2.0},
        {"crosscheck": "no"},
        {"stop_rule": "x"},
    ):
        with pytest.raises(ValueError, match="Got"):
            V4SAgentConfig(**bad)


@pytest.mark.parametrize("mode", ["stratified", "uniform", "contiguous"])
def test_context_sampling_sorted_and_sparse(mode):
    idx = sample_context_indices(200, 8, mode, np.random.default_rng(0), recent=1)
    assert len(idx) == 8 and np.all(np.diff(idx) > 0) and idx[-1] == 199
    if mode != "contiguous":
        assert idx[-1] - idx[0] > 100  # spread over the tour, not a contiguous window
    short = sample_context_indices(3, 8, mode)
    assert len(short) == 8 and set(short) == {0, 1, 2}


def test_cv_crosscheck_signs():
    big = _canvas()
    f0 = _view(big)
    assert estimate_motion(f0, _view(big, 15)).action == TURN_LEFT
    assert estimate_motion(f0, _view(big, -15)).action == TURN_RIGHT
    assert estimate_motion(f0, _view(big, zoom=1.1)).action == MOVE_FORWARD
    assert estimate_motion(f0, f0).action == STOP
    m = estimate_motion(f0, _view(big, 15))
    assert abs(m.yaw_deg - 15) < 2
    # the essential-matrix sign where the solver can decide (parallax: the camera moved along its axis) ...
    assert estimate_motion(f0, _view(big, zoom=1.1)).forward == 1
    assert estimate_motion(f0, _view(big, zoom=0.9)).forward == -1
    # ... and "no estimate" on degenerate pairs: no motion (OpenCV 5.x's solver raises there), pure rotation
    assert estimate_motion(f0, f0).forward == 0
    assert estimate_motion(f0, _view(big, 3)).forward == 0


def _points(seed: int = 0, n: int = 60):
    """Pixels of ``n`` random 3-D points (depth 2-6, non-planar) and a projector for a moved camera."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.uniform(-2, 2, (n, 2)), rng.uniform(2, 6, n)]
    K = intrinsics(128, 128)

    def proj(yaw_deg: float = 0.0, tz: float = 0.0) -> np.ndarray:
        c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
        p = (X @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T + [0, 0, tz]) @ K.T
        return p[:, :2] / p[:, 2:]

    return K, proj


@pytest.mark.parametrize("seed", [0, 1])
def test_essential_forward_sign_or_no_estimate(seed, monkeypatch):
    K, proj = _points(seed)
    a = proj()
    # OpenCV: x2 = R x1 + t; the camera moving forward brings the points closer (t_z < 0): +1
    assert essential_forward(a, proj(tz=-0.25), K) == 1
    assert essential_forward(a, proj(tz=0.25), K) == -1
    assert essential_forward(a, proj(yaw_deg=2, tz=-0.25), K) == 1
    # degenerate pairs: no estimate, not a crash (OpenCV 5.x raises in solvePoly on the first two)
    assert essential_forward(a, a, K) == 0  # no motion
    assert essential_forward(a, proj(yaw_deg=3), K) == 0  # pure rotation: translation undefined
    b = proj(tz=-0.25)
    assert essential_forward(np.repeat(a[:4], 15, 0), np.repeat(b[:4], 15, 0), K) == 0  # 4 distinct points
    assert essential_forward(a[:7], b[:7], K) == 0

    # a solver failure on a pair that passes the checks is "no estimate" too, in the agent's decoder as well
    def fail(*args, **kw):
        raise cv2.error("OpenCV(5.1.0) (-215:Assertion failed) in function 'solvePoly'")

    monkeypatch.setattr(cv2, "findEssentialMat", fail)
    assert essential_forward(a, b, K) == 0
    big = _canvas(seed)
    m = estimate_motion(_view(big), _view(big, zoom=1.1))
    assert m.forward == 0 and m.action == MOVE_FORWARD  # the expansion still decides


def test_decode_actions_never_stop():
    p = np.array([[0.9, 0.05, 0.03, 0.02], [0.1, 0.1, 0.7, 0.1]])
    assert decode_actions(p).tolist() == [MOVE_FORWARD, TURN_LEFT]
    assert decode_actions(p, allow_stop=True).tolist() == [STOP, TURN_LEFT]


def test_discrete_path_reaches_goal():
    from v4s_agent.agent.agent import _pose

    start, goal = _pose(0, 0, 0.0), _pose(-1.0, -1.0, math.radians(90))
    poses, actions = discrete_path(start, goal, 30)
    assert poses.shape == (30, 4, 4)
    assert math.hypot(poses[-1][0, 3] + 1, poses[-1][2, 3] + 1) < 0.2
    assert abs(math.degrees(_yaw(poses[-1])) - 90) <= 7.5
    cam = relative_camera(poses)
    assert cam.shape == (30, 12) and np.allclose(cam[0], np.eye(4)[:3].reshape(-1))


def test_frame_similarity_ignores_red_box():
    big = _canvas(1)
    a = _view(big)
    b = a.copy()
    cv2.rectangle(b, (40, 40), (80, 80), (255, 0, 0), 2)
    assert frame_similarity(a, b) > 0.95
    assert frame_similarity(a, _view(big, 40)) < frame_similarity(a, b)


def test_grounding_scores():
    s = grounding_scores([0.05, 0.15, float("nan"), 0.5])
    assert s["IF"] == 0.75 and s["IF(SD<0.2)"] == 0.5 and s["IF(SD<0.1)"] == 0.25
    assert s["SD"] == pytest.approx((0.05 + 0.15 + 0.5) / 3)


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), AtomicDir(out) as tmp:
        (tmp / "summary.json").write_text("{}")
        raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with AtomicDir(out) as tmp:
        (tmp / "summary.json").write_text("{}")
    assert (out / "summary.json").is_file()


def test_lerobot_style_policy(tmp_path):
    from agent_helpers import make_tiny_checkpoint
    from v4s_agent.envs import V4SNavEnv

    from v4s_agent.agent.modeling_agent import V4SPolicy

    policy = V4SPolicy.from_pretrained(make_tiny_checkpoint(tmp_path), device="cpu")
    env = V4SNavEnv(resolution=(32, 32))
    obs, info = env.reset(seed=0)
    policy.reset(info)
    img = obs["rgb"].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    a = policy.select_action({"observation.image": img})
    assert a.shape == (1,) and int(a) in (0, 1, 2, 3)
    chunk = policy.predict_action_chunk({"observation.image": img})
    assert chunk.shape == (1, policy.planner.num_target_frames - policy.planner.num_box_frames - 1)
    env.close()
