"""``python -m v4s_agent.evaluate --quick`` with a tiny random planner and a tiny detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
from agent_helpers import make_tiny_checkpoint, make_tiny_detector

from v4s_agent.evaluation.evaluate import main
from v4s_agent.evaluation.evaluator_detector import EvaluatorDetector, category_mask


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    return make_tiny_checkpoint(root / "ckpt"), make_tiny_detector(root / "det")


def test_detector_roundtrip_and_masks(assets):
    _, det_dir = assets
    det = EvaluatorDetector.from_pretrained(det_dir)
    det2 = EvaluatorDetector.from_pretrained(det_dir)
    frames = np.random.default_rng(0).integers(0, 255, (2, 40, 50, 3), dtype=np.uint8)
    assert np.array_equal(det.segment(frames), det2.segment(frames))
    res = det.detect(frames, det.categories[0])
    assert len(res) == 2
    for box, frac in res:
        assert box is None or (0 <= box[0] <= box[2] <= 50 and 0 <= box[1] <= box[3] <= 40)
        assert 0.0 <= frac <= 1.0
    sem = np.array([[0, 5], [7, 9]])
    assert category_mask(sem, {5: 1, 7: 3}).tolist() == [[0, 1], [3, 0]]


def test_evaluate_quick(tmp_path, assets):
    ckpt, det = assets
    out = tmp_path / "eval"
    rc = main(["--quick", "--checkpoint", str(ckpt), "--detector", str(det), "--out", str(out),
               "--resolution", "32", "--ablation", f"no_aux_box={ckpt}"])  # fmt: skip
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    ol = m["open_loop"]["val_scenes"]
    for row in ("ground truth (rendered expert)", "ours", "ours, no context", "ablation: no_aux_box"):
        assert {"SD", "IF", "IF(SD<0.2)", "IF(SD<0.1)"} <= set(ol[row])
    assert {"PSNR", "SSIM"} <= set(m["navigation"]["val_scenes"]["ours"])
    copy = m["navigation"]["val_scenes"]["copy the observation (no model)"]
    assert copy["n"] == 1 and copy["PSNR"] > 5.0  # a real comparison frame, not a constant
    assert set(ol["ours"]["ci95"]) == {"SD", "IF", "IF(SD<0.2)", "IF(SD<0.1)"}
    wrong = ol["ours, another scene's context"]  # 1 episode = 1 scene: a clear error, not a crash
    assert "SD" in wrong or "two scenes" in wrong["error"]
    cl = m["closed_loop"]["val_scenes"]
    rows = ("ours", "ours, no context", "ours, another scene's context", "random", "oracle expert")
    for row in (*rows, "frontier exploration + detector (non-generative)"):
        assert {"success_rate", "spl", "mean_final_sd", "collisions_per_episode"} <= set(cl[row]), cl[row]
        lo, hi = cl[row]["ci95"]["success_rate"]
        assert 0.0 <= lo <= cl[row]["success_rate"] <= hi <= 1.0
    assert any(p.startswith("samples_open_loop_val_scenes_ours") for p in m["sample_sheets"])
    assert any("contiguous_rope" in x for x in m["not_run"])
    assert (out / "results.md").read_text().count("|") > 20
    assert (out / "open_loop.png").is_file() and (out / "closed_loop.png").is_file()


def test_evaluate_bad_ablation_arg(tmp_path, assets):
    ckpt, det = assets
    assert (
        main(["--quick", "--checkpoint", str(ckpt), "--ablation", "bogus", "--out", str(tmp_path / "e")]) == 2
    )
    assert not (tmp_path / "e").exists()


def test_closed_loop_rows_do_not_depend_on_workers():
    """Episodes are split by seed: 2 worker processes give the same per-episode results as 1."""
    from v4s_agent.evaluation.closed_loop import RowSpec, run_rows

    specs = [RowSpec("random", "random", agent_kwargs={"seed": 3}), RowSpec("oracle expert", "expert")]
    env_kw = {"task": "object", "resolution": (32, 32), "max_steps": 8}
    one = run_rows(specs, env_kw, [0, 1, 2], workers=1)
    two = run_rows(specs, env_kw, [0, 1, 2], workers=2)

    def strip(res: dict) -> str:  # as JSON, so that nan == nan
        return json.dumps([{k: v for k, v in e.items() if "latency" not in k} for e in res], sort_keys=True)

    for row in ("random", "oracle expert"):
        assert strip(one[row]["per_episode"]) == strip(two[row]["per_episode"])
        assert [e["seed"] for e in one[row]["per_episode"]] == [0, 1, 2]


def test_wilson_interval_and_mean_interval():
    from v4s_agent.evaluation.metrics import mean_interval, wilson_interval

    lo, hi = wilson_interval(0, 30)
    assert lo == 0.0 and 0.10 < hi < 0.12  # the rule of three, roughly
    lo, hi = wilson_interval(24, 30)
    assert lo < 0.8 < hi and hi - lo < 0.3
    lo, hi = mean_interval([1.0, 2.0, 3.0, float("nan")])
    assert lo < 2.0 < hi
    assert np.isnan(mean_interval([1.0])[0])


def test_closed_rows_filter_and_shared_detector() -> None:
    """``--closed-rows`` keeps only the named row kinds; every row gets the same detector."""
    from v4s_agent.evaluation.evaluate import build_parser, closed_loop_rows

    args = build_parser().parse_args(["--closed-rows", "v4s,frontier", "--detector", "/x/det"])
    baselines = {"no_context", "wrong_context", "frontier", "random", "expert"}
    specs = closed_loop_rows(args, {}, baselines, "object")
    assert [s.kind for s in specs] == ["v4s", "frontier"]
    assert {s.detector for s in specs} == {"/x/det"}
    every = closed_loop_rows(build_parser().parse_args([]), {}, baselines, "object")
    kinds = {"v4s", "v4s_no_context", "v4s_wrong_context", "frontier", "random", "expert"}
    assert {s.kind for s in every} == kinds


def test_context_sampling_reaches_every_v4s_row_only() -> None:
    from v4s_agent.agent.agent import V4SAgentConfig
    from v4s_agent.evaluation.evaluate import build_parser, closed_loop_rows

    baselines = {"no_context", "wrong_context", "frontier", "random", "expert"}
    args = build_parser().parse_args(["--context-sampling", "stratified"])
    specs = closed_loop_rows(args, {}, baselines, "object")
    for s in specs:
        assert (s.agent_kwargs.get("context_sampling") == "stratified") == s.kind.startswith("v4s")
    assert V4SAgentConfig(**specs[0].agent_kwargs).context_sampling == "stratified"
    default = closed_loop_rows(build_parser().parse_args([]), {}, baselines, "object")
    assert all("context_sampling" not in s.agent_kwargs for s in default)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--context-sampling", "nearest"])


def test_agent_detector_option_reaches_the_closed_rows_and_is_checked(tmp_path) -> None:
    """``--agent-detector`` replaces ``--detector`` for the closed-loop agents only; a missing folder
    is refused before anything runs."""
    from v4s_agent.evaluation.evaluate import build_parser, closed_loop_rows

    baselines = {"frontier", "random"}
    args = build_parser().parse_args(["--detector", "/x/det", "--agent-detector", "oracle"])
    specs = closed_loop_rows(args, {}, baselines, "object")
    assert {s.detector for s in specs if s.kind in ("v4s", "frontier")} == {"oracle"}
    assert main(["--quick", "--agent-detector", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]) == 2
    assert not (tmp_path / "e").exists()


def test_oracle_detector_is_exact_on_the_live_frame_only() -> None:
    """The oracle answers the env's current view from its semantic render (one-hot, the goal's pixels
    where the goal is) and any other frame with the learned detector's own output."""
    import torch
    from v4s_agent.envs import V4SNavEnv

    from v4s_agent.evaluation.detector_data import _id_to_class_of, category_mask
    from v4s_agent.evaluation.evaluator_detector import EvaluatorDetector
    from v4s_agent.evaluation.oracle_detector import OracleGoalDetector

    torch.manual_seed(0)
    from v4s_agent.envs.scenes import CATEGORIES

    env = V4SNavEnv(task="object", resolution=(64, 64), obs_keys=("rgb",))
    try:
        learned = EvaluatorDetector(CATEGORIES, input_size=32, width=8).eval()
        oracle = OracleGoalDetector(learned, env)  # built before the first reset, as the rows build it
        obs, info = env.reset(seed=3)
        p = oracle.probs(obs["rgb"][None])
        assert p.shape == learned.probs(obs["rgb"][None]).shape and oracle.live_frames == 1
        assert np.allclose(p.sum(1), 1.0) and set(np.unique(p)) <= {0.0, 1.0}
        sem = env.unwrapped._last_semantic
        cm = category_mask(sem, _id_to_class_of(env.unwrapped.scene, oracle.categories))
        assert np.array_equal(p[0].argmax(0), cm[::2, ::2])  # nearest resize 64 -> 32
        assert cm.max() > 0  # the scene's objects are in view: the check above is not all background
        other = np.ascontiguousarray(obs["rgb"][::-1])  # not the live frame
        assert np.allclose(oracle.probs(other[None]), learned.probs(other[None]), atol=1e-6)
        assert oracle.live_frames == 1
        cat = oracle.categories[int(cm.max()) - 1]
        box, frac = oracle.detect(obs["rgb"], cat, min_fraction=0.0, threshold=0.5, box_mode="all")[0]
        assert box is not None and frac == pytest.approx((cm[::2, ::2] == cm.max()).mean())
    finally:
        env.close()
    with pytest.raises(ValueError, match="V4SNav-v0"):
        OracleGoalDetector(learned, object())


def test_agents_stop_on_the_shipped_goal_detector_and_the_evaluator_stays() -> None:
    """With no detector named, the agents load the shipped goal detector (checksums verified); the
    evaluator detector (the gates' scorer) is another folder and another network."""
    from v4s_agent.evaluation import closed_loop
    from v4s_agent.evaluation.evaluator_detector import (
        DEFAULT_DETECTOR,
        DEFAULT_GOAL_DETECTOR,
        load_goal_detector,
        load_or_train,
    )

    goal = load_goal_detector()
    assert DEFAULT_GOAL_DETECTOR != DEFAULT_DETECTOR and (DEFAULT_GOAL_DETECTOR / "checksums.json").is_file()
    assert goal.width == 32 and load_or_train(None)[0].width == 16
    assert closed_loop._detector(None).width == 32
    assert load_goal_detector(DEFAULT_DETECTOR).width == 16  # a named folder wins
