"""``python -m v4s_agent.rollout``: outputs, exit codes, nothing half-written on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v2 as imageio
import pytest
from agent_helpers import make_tiny_checkpoint

from v4s_agent.evaluation.rollout import EpisodeResult, main, summarize


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_rollout_writes_videos_and_summary(tmp_path, tiny_ckpt):
    out = tmp_path / "run"
    rc = main(["--checkpoint", str(tiny_ckpt), "--episodes", "2", "--max-steps", "4", "--resolution", "64",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    for k in ("episodes", "success_rate", "spl", "mean_final_sd", "plan_latency_ms"):
        assert k in s
    assert s["episodes"] == 2 and len(s["per_episode"]) == 2
    assert sum(s["outcomes"].values()) == 2
    assert [e["outcome"] for e in s["per_episode"]].count("success") == s["outcomes"]["success"]
    assert s["plan_latency_ms"] > 0
    for v in s["videos"]:
        assert (out / v).stat().st_size > 1000
        sheet = imageio.imread(out / v.replace(".mp4", "_plans.png"))  # one plan sheet per episode
        assert sheet.ndim == 3 and sheet.shape[1] >= 64 * 3 and sheet.std() > 5  # real | imagined | goal
    assert s["threads"] >= 1  # picked by the rollout itself when --num-threads is not given
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temp folder left behind


def test_outcome_classes():
    """Each failed episode is counted once, by how it ended: STOP away from the goal, pinned against
    obstacles, or moving freely until the step limit."""

    def ep(**kw):
        kw = {"success": 0.0, "steps": 150, "collisions": 10, "stopped": False, **kw}
        return EpisodeResult(seed=0, spl=0.0, final_sd=float("nan"), distance_to_goal=3.0, plans=1,
                             plan_latency_ms=[], cv_disagreements=0, instruction="", goal_category="chair",
                             stop_reason=None, **kw)  # fmt: skip

    assert ep(success=1.0, stopped=True, steps=40).outcome == "success"
    assert ep(stopped=True, steps=12).outcome == "stopped_short"
    assert ep(collisions=75).outcome == "stuck"
    assert ep(collisions=74).outcome == "wandered"
    s = summarize([ep(collisions=140), ep(stopped=True), ep(success=1.0, stopped=True)])
    assert s["outcomes"] == {"success": 1, "stopped_short": 1, "stuck": 1, "wandered": 0}


@pytest.mark.parametrize("agent", ["expert", "random"])
def test_rollout_baselines(tmp_path, agent):
    out = tmp_path / agent
    rc = main(["--agent", agent, "--episodes", "1", "--max-steps", "200", "--no-video", "--resolution", "64",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    if agent == "expert":
        assert s["success_rate"] == 1.0 and s["spl"] > 0.5


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--scene", "/definitely/not/here.glb"], "scene file not found"),
        (["--split", "nope"], "unknown split"),
        (["--checkpoint", "/definitely/not/here"], "checkpoint folder not found"),
        (["--backend", "tensorrt"], "tensorrt"),
        (["--annotation", "/definitely/not/here.json"], "--scene"),
    ],
)
def test_rollout_bad_input(tmp_path, tiny_ckpt, args, msg):
    out = tmp_path / "run"
    if "--checkpoint" not in args:
        args = [*args, "--checkpoint", str(tiny_ckpt)]
    if "--backend" in args:
        try:
            import tensorrt  # noqa: F401

            pytest.skip("tensorrt is installed here")
        except ImportError:
            pass
    p = subprocess.run([sys.executable, "-m", "v4s_agent.evaluation.rollout", *args, "--out", str(out)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode != 0
    assert msg in p.stderr and "Traceback" not in p.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
