"""The plan-pointing measurement: which context viewpoint the detector and the plans would visit first."""

from __future__ import annotations

from pathlib import Path

import pytest

from v4s_agent.evaluation.plan_pointing import CHOICES, main, measure


def test_one_episode_scores_every_viewpoint() -> None:
    res = measure("val_scenes", episodes=1, n_plans=1, progress=False)
    (row,) = res["per_episode"]
    s = res["summary"]
    assert s["episodes"] == 1 and s["with_viewpoints"] in (0, 1)
    if row["viewpoints"]:
        n = row["viewpoints"]
        assert len(row["distance_m"]) == n and min(row["distance_m"]) >= 0.0
        assert row["detector: index"] == 0  # the agent's own order: the detector's first
        for c in CHOICES:
            assert 0 <= row[f"{c}: index"] < n
            assert row[f"{c}: at goal"] == (row["distance_m"][row[f"{c}: index"]] <= res["radius_m"])
            assert s[f"{c}: at goal"]["count"] == int(row[f"{c}: at goal"])
        for c in CHOICES[1:]:
            scores = row[f"{c}: scores"]
            assert len(scores) == n and all(0.0 <= x <= 1.0 for x in scores)
            assert scores[row[f"{c}: index"]] == max(scores)  # the best-matching viewpoint is chosen


@pytest.mark.parametrize("args", [["--episodes", "0"], ["--plans", "0"], ["--radius", "-1"]])
def test_bad_arguments_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture, args: list) -> None:
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "must be" in capsys.readouterr().err
