"""Issue 24's gates on tiny held-out clips: clips cut as training cuts them, every condition measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import tiny_data
from v4s_agent.envs.scene_video import VIEW_MARGIN, other_scene_index, view_distance
from v4s_agent.training.dataset import load_shard
from v4s_agent.training.generate_data import shard_name

from v4s_agent.evaluation.evaluator_detector import EvaluatorDetector
from v4s_agent.evaluation.gates import (
    CONDITIONS,
    NOT_FOUND_SD,
    gate_clips,
    gate_verdicts,
    generate,
    measure_context_gain,
    measure_gates,
)
from v4s_agent.model.configuration_model import get_model_config
from v4s_agent.model.pipeline_v4s import build_pipeline


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_data(tmp_path_factory.getbasetemp())


def test_gate_clips_match_the_training_cut(data_dir: Path) -> None:
    m = get_model_config("tiny")
    clips = gate_clips(data_dir, m, pose_per_scene=2)
    kinds = [c["kind"] for c in clips]
    assert kinds.count("pose") == 4 and kinds.count("obj") >= 2
    for c in clips:
        assert c["context"].shape == (3, m.num_context_frames, 16, 16)
        assert c["target"].shape == (3, m.num_target_frames, 16, 16)
        pos = c["context_positions"].numpy()
        assert np.all(np.diff(pos) >= 0)  # sorted source times in the scene video
        if c["kind"] == "obj":
            assert c["exact_sd"] < 0.2 and c["instruction"] and c["camera_mask"] == 0
        else:
            assert c["camera_mask"] == 1 and torch.count_nonzero(c["camera"]) > 0
        # the context frames' poses relative to the observation, as training gives them
        assert c["context_camera"].shape == (m.num_context_frames, 12)
        assert torch.isfinite(c["context_camera"]).all() and torch.count_nonzero(c["context_camera"]) > 0
    again = gate_clips(data_dir, m, pose_per_scene=2)  # deterministic: the same clips every time
    assert all(torch.equal(a["context"], b["context"]) for a, b in zip(clips, again, strict=True))


def test_measure_gates_reports_every_condition(data_dir: Path) -> None:
    m = get_model_config("tiny")
    pipe = build_pipeline(m, seed=0)
    clips = gate_clips(data_dir, m, pose_per_scene=1, max_scenes=1)
    res = measure_gates(pipe, clips, EvaluatorDetector.from_pretrained(), steps=1)
    for cond in CONDITIONS:
        assert res[cond]["psnr_pose"]["n"] == 1 and np.isfinite(res[cond]["psnr_pose"]["mean"])
        assert res[cond]["if_sd_0.2"]["n"] == res["n_object_clips"] > 0
    assert res["rendered_expert"]["exact_semantics_if_sd_0.2"]["mean"] == 1.0
    per = res["per_object_clip_sd"]  # each object clip's SD per condition, the means' own numbers
    assert len(per["clip"]) == res["n_object_clips"] and len(set(per["clip"])) == len(per["clip"])
    for cond in (*CONDITIONS, "rendered_expert"):
        assert np.mean(per[cond]) == pytest.approx(res[cond]["sd"]["mean"])
    for cond in CONDITIONS:  # found >= found centred; "not found" is the NOT_FOUND_SD miss
        assert res[cond]["found"]["mean"] >= res[cond]["if_sd_0.2"]["mean"]
        assert res[cond]["found"]["mean"] == pytest.approx(np.mean(np.array(per[cond]) < NOT_FOUND_SD))
    v = gate_verdicts(res, {"x0_context_gain_frac_pose@1": 0.3})
    assert v["G1"] is True and v["G2"] is False  # an untrained model gains nothing from its context


def test_generate_gives_a_context_pose_model_its_context_poses(data_dir: Path) -> None:
    """The gates once sampled a ``context_pose`` model without the poses it was trained with."""
    m = get_model_config("tiny", context_pose=True)
    pipe = build_pipeline(m, seed=0)
    clips = gate_clips(data_dir, m, pose_per_scene=1, max_scenes=2)
    seen: list[dict] = []

    def spy(**kw):
        seen.append(kw)
        return pipe(**kw)

    generate(spy, clips, "wrongctx", steps=1, guidance=1.0)
    wrong = other_scene_index([c["scene"] for c in clips])
    want = np.stack([clips[j]["context_camera"].numpy() for j in wrong])
    assert np.array_equal(np.concatenate([kw["context_camera"] for kw in seen]), want)


def test_context_gain_is_zero_with_the_same_context_and_reported_with_an_interval(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = get_model_config("tiny", context_pose=True)
    pipe = build_pipeline(m, seed=0)
    clips = gate_clips(data_dir, m, pose_per_scene=3, max_scenes=2)
    g = measure_context_gain(pipe, clips, draws=2)
    assert g["gain_frac"]["n"] == 6 and g["gain_frac"]["lo"] <= g["gain_frac"]["mean"] <= g["gain_frac"]["hi"]
    assert g["x0_mse_ctx"]["mean"] > 0
    v = gate_verdicts({"context_gain": g, **_measured(pipe, clips)}, {"x0_context_gain_frac_pose@1": 0.9})
    assert v["G1_context_gain_frac_pose@1"] == g["gain_frac"]["mean"]  # the gates' own G1, not the probe's
    # "another scene's" context made the clip's own: the same noise for both, so exactly no gain
    monkeypatch.setattr("v4s_agent.envs.scene_video.other_scene_index", lambda s: list(range(len(s))))
    same = measure_context_gain(pipe, clips, draws=2)
    assert same["gain_frac"]["mean"] == 0.0
    assert same["x0_mse_ctx"]["mean"] == g["x0_mse_ctx"]["mean"]
    # the no-context row: the same target noise, a noise context without poses
    assert g["x0_mse_noctx"]["mean"] != g["x0_mse_ctx"]["mean"]
    assert g["gain_frac_noctx"]["mean"] == pytest.approx(
        (g["x0_mse_noctx"]["mean"] - g["x0_mse_ctx"]["mean"]) / g["x0_mse_ctx"]["mean"]
    )


class _NoGoal:
    """A detector that never sees anything: object clips keep the natural context."""

    categories: list[str] = []


def _measured(pipe, clips) -> dict:
    return measure_gates(pipe, clips, EvaluatorDetector.from_pretrained(), steps=1)


def test_retrieved_context_replaces_only_the_pose_clips_context(data_dir: Path) -> None:
    m = get_model_config("tiny")
    nat = gate_clips(data_dir, m, pose_per_scene=2, max_scenes=1)
    ret = gate_clips(data_dir, m, pose_per_scene=2, max_scenes=1, context="retrieved")
    for a, b in zip(nat, ret, strict=True):
        assert torch.equal(a["target"], b["target"])  # the same clips, only the context differs
        pos = b["context_positions"].numpy()
        assert np.all(np.diff(pos) >= 0) and len(pos) == m.num_context_frames
        if b["kind"] == "obj":
            assert torch.equal(a["context"], b["context"])
    assert any(not torch.equal(a["context"], b["context"]) for a, b in zip(nat, ret, strict=True))
    with pytest.raises(ValueError, match="natural"):
        gate_clips(data_dir, m, context="nearest")


class _CentredEverywhere:
    """A stand-in detector that sees every category centred in every frame: every frame is a goal view,
    so the choice is down to the margin and the distance to the observation."""

    def __init__(self, categories: list[str]) -> None:
        self.categories = categories

    def probs(self, frames: np.ndarray) -> np.ndarray:
        p = np.zeros((len(frames), len(self.categories) + 1, 8, 8), np.float32)
        p[:, 1:, 2:6, 2:6] = 1.0
        return p


def test_views_context_needs_the_detector_and_gives_object_clips_its_goal_views(data_dir: Path) -> None:
    """Object clips under ``context="views"`` get the frames where the detector sees their goal centred
    (outside the margin), the soonest reached from the observation first (ties: the nearest); without a
    detector the call refuses."""
    m = get_model_config("tiny", context_pose=True)
    with pytest.raises(ValueError, match="detector"):
        gate_clips(data_dir, m, pose_per_scene=1, max_scenes=1, context="views")
    z = load_shard(data_dir / shard_name(0))
    det = _CentredEverywhere([str(c) for c in z["categories"]])
    clips = gate_clips(data_dir, m, pose_per_scene=1, max_scenes=1, context="views", detector=det)
    objs = [c for c in clips if c["kind"] == "obj"]
    assert objs
    from v4s_agent.agent.context_views import goal_centred_frames

    one = goal_centred_frames(det, z["video_frames"][:70], objs[0]["category"])
    both = goal_centred_frames(det, z["video_frames"][:70], [objs[0]["category"], "no-such-category"])
    assert np.array_equal(one, np.arange(70)) and np.array_equal(both[objs[0]["category"]], one)
    assert len(both["no-such-category"]) == 0
    n = len(z["video_frames"])
    from v4s_agent.envs.scene_video import reach_steps

    for c in objs:
        w, obs = c["window"], z["video_poses"][c["window"][0]]
        far = np.array([i for i in range(n) if i < w.min() - VIEW_MARGIN or i > w.max() + VIEW_MARGIN])
        steps = reach_steps(obs, z["video_poses"][far])
        soonest = far[steps == steps.min()]
        d = np.linalg.norm(z["video_poses"][soonest][:, [0, 2], 3] - obs[[0, 2], 3], axis=1)
        assert int(soonest[np.argmin(d)]) in c["context_index"].tolist()  # the soonest reached goal view
        assert not set(c["context_index"].tolist()) & set(range(int(w.min()), int(w.max()) + 1))


def test_views_context_matches_the_path_from_another_pass(data_dir: Path) -> None:
    """``context="views"``: pose clips' context holds their path's closest views from outside the margin
    (the context poses of those frames say so); object clips keep the natural context."""
    m = get_model_config("tiny", context_pose=True)
    nat = gate_clips(data_dir, m, pose_per_scene=2, max_scenes=1)
    vw = gate_clips(data_dir, m, pose_per_scene=2, max_scenes=1, context="views", detector=_NoGoal())
    poses = load_shard(data_dir / shard_name(0))["video_poses"]
    for a, b in zip(nat, vw, strict=True):
        assert torch.equal(a["target"], b["target"])
        if b["kind"] == "obj":
            assert torch.equal(a["context"], b["context"])
        else:
            w, cidx = b["window"], b["context_index"]
            rest = np.setdiff1d(np.arange(len(poses)), np.arange(w.min(), w.max() + 1))
            far = rest[(rest < w.min() - VIEW_MARGIN) | (rest > w.max() + VIEW_MARGIN)]
            for ref in w[::-1][: m.num_context_frames - 1]:
                d = view_distance(poses, poses[ref])
                assert d[cidx].min() == pytest.approx(d[far].min())
            assert np.array_equal(b["context_positions"].numpy(), cidx.astype(np.float32))
    assert any(not torch.equal(a["context"], b["context"]) for a, b in zip(nat, vw, strict=True))


def test_goal_views_caps_the_goal_views_an_object_clip_gets(data_dir: Path) -> None:
    """``goal_views=n``: the ``n`` goal views ``nearest_distinct_views`` picks are all in the context, and
    a smaller cap leaves some of them out; ``goal_rank`` picks by its rule; zero or an unknown rule is
    refused."""
    from v4s_agent.envs.scene_video import nearest_distinct_views

    m = get_model_config("tiny", context_pose=True, num_context_frames=6)
    z = load_shard(data_dir / shard_name(0))
    det = _CentredEverywhere([str(c) for c in z["categories"]])
    kw = {"pose_per_scene": 1, "max_scenes": 1, "context": "views", "detector": det}
    with pytest.raises(ValueError, match="goal_views"):
        gate_clips(data_dir, m, goal_views=0, **kw)
    with pytest.raises(ValueError, match="goal_rank"):
        gate_clips(data_dir, m, goal_rank="nearest", **kw)
    n = 3
    many, one = gate_clips(data_dir, m, goal_views=n, **kw), gate_clips(data_dir, m, goal_views=1, **kw)
    floor = gate_clips(data_dir, m, goal_views=1, goal_rank="floor", **kw)
    poses, left_out = z["video_poses"], 0
    for a, b, f in zip(many, one, floor, strict=True):
        if a["kind"] != "obj":
            continue
        w = a["window"]
        idx = np.arange(len(poses))
        far = idx[(idx < w.min() - VIEW_MARGIN) | (idx > w.max() + VIEW_MARGIN)]
        picked = nearest_distinct_views(poses, far, poses[w[0]], n)
        assert len(picked) == n and set(picked) <= set(a["context_index"].tolist())
        assert picked[0] in b["context_index"].tolist()  # the nearest view is kept under any cap
        assert nearest_distinct_views(poses, far, poses[w[0]], 1, "floor")[0] in f["context_index"].tolist()
        left_out += int(not set(picked) <= set(b["context_index"].tolist()))
    assert left_out > 0


def test_set_sampler_switches_the_step_rule_and_shift(data_dir: Path) -> None:
    """The gates' ``--sampler`` / ``--shift``: the scheduler is swapped, the plan samples differently, and
    the report says what was used; a non-positive shift is refused."""
    from v4s_agent.evaluation.gates import set_sampler

    m = get_model_config("tiny")
    pipe = build_pipeline(m, seed=0)
    clips = gate_clips(data_dir, m, pose_per_scene=1, max_scenes=1)[:1]
    base = set_sampler(pipe)  # nothing given: the saved settings, unchanged
    assert base["stochastic"] == m.stochastic_sampling and base["shift"] == m.flow_shift
    before = generate(pipe, clips, "ctx", 2, None, seed=0, bf16=False)
    got = set_sampler(pipe, stochastic=not m.stochastic_sampling, shift=5.0)
    assert got["stochastic"] is (not m.stochastic_sampling) and got["shift"] == 5.0
    assert pipe.sampling_config().shift == 5.0
    after = generate(pipe, clips, "ctx", 2, None, seed=0, bf16=False)
    assert not np.array_equal(before, after)
    with pytest.raises(ValueError, match="shift"):
        set_sampler(pipe, shift=0.0)


class _SlightlyOffCentre(_CentredEverywhere):
    """Every category seen in every frame at SD ~0.22: a goal view under 0.25, not under the agent's 0.2."""

    def probs(self, frames: np.ndarray) -> np.ndarray:
        p = np.zeros((len(frames), len(self.categories) + 1, 16, 16), np.float32)
        p[:, 1:, 4:7, 7:9] = 1.0
        return p


def test_goal_max_sd_decides_which_frames_are_goal_views(data_dir: Path) -> None:
    m = get_model_config("tiny", context_pose=True, num_context_frames=6)
    z = load_shard(data_dir / shard_name(0))
    det = _SlightlyOffCentre([str(c) for c in z["categories"]])
    kw = {"pose_per_scene": 1, "max_scenes": 1}
    nat = gate_clips(data_dir, m, **kw)
    loose = gate_clips(data_dir, m, context="views", detector=det, goal_max_sd=0.25, **kw)
    strict = gate_clips(data_dir, m, context="views", detector=det, goal_max_sd=0.2, **kw)
    default = gate_clips(data_dir, m, context="views", detector=det, **kw)  # the agent's bar, as IF scores
    objs = [i for i, c in enumerate(nat) if c["kind"] == "obj"]
    assert objs and all(torch.equal(nat[i]["context"], strict[i]["context"]) for i in objs)  # no goal views
    assert all(torch.equal(default[i]["context"], strict[i]["context"]) for i in objs)
    assert any(not torch.equal(nat[i]["context"], loose[i]["context"]) for i in objs)


@pytest.mark.parametrize(("choice", "width"), [(None, 32), ("evaluator", 16)])
def test_gates_cli_finds_goal_views_with_the_agents_detector(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, choice: str | None, width: int
) -> None:
    """The views context is what the agent gives its plan, so its goal views come from the agent's goal
    detector (width 32) unless asked otherwise; the evaluator detector (width 16) only scores."""
    import v4s_agent.evaluation.gates as gates

    class StopError(Exception):
        pass

    seen = {}

    def clips(*args: object, detector: EvaluatorDetector, **kw: object) -> None:
        seen["detector"] = detector
        raise StopError

    pipe = build_pipeline(get_model_config("tiny"), seed=0)
    monkeypatch.setattr(gates, "gate_clips", clips)
    monkeypatch.setattr(gates, "load_pipeline", lambda run, pipeline: (pipe, "tiny"))
    argv = ["--pipeline", "unused", "--out", str(tmp_path), "--context", "views"]
    with pytest.raises(StopError):
        gates.main(argv + (["--goal-detector", choice] if choice else []))
    assert seen["detector"].width == width
    assert EvaluatorDetector.from_pretrained().width == 16  # the scorer stays the evaluator's


def test_gates_cli_rejects_an_unknown_goal_detector(tmp_path: Path) -> None:
    from v4s_agent.evaluation.gates import main

    with pytest.raises(SystemExit):  # before any pipeline is loaded ("unused" is not one)
        main(["--pipeline", "unused", "--out", str(tmp_path), "--goal-detector", str(tmp_path)])
