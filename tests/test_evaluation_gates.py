"""Issue 24's gates on tiny held-out clips: clips cut as training cuts them, every condition measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import tiny_data

from v4s_agent.evaluation.evaluator_detector import EvaluatorDetector
from v4s_agent.evaluation.gates import CONDITIONS, gate_clips, gate_verdicts, measure_gates
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
    v = gate_verdicts(res, {"x0_context_gain_frac_pose@1": 0.3})
    assert v["G1"] is True and v["G2"] is False  # an untrained model gains nothing from its context
