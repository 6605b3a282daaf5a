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
    cl = m["closed_loop"]["val_scenes"]
    for row in ("ours", "random", "oracle expert"):
        assert {"success_rate", "spl", "mean_final_sd", "collisions_per_episode"} <= set(cl[row])
    assert any("contiguous_rope" in x for x in m["not_run"])
    assert (out / "results.md").read_text().count("|") > 20
    assert (out / "open_loop.png").is_file() and (out / "closed_loop.png").is_file()


def test_evaluate_bad_ablation_arg(tmp_path, assets):
    ckpt, det = assets
    assert (
        main(["--quick", "--checkpoint", str(ckpt), "--ablation", "bogus", "--out", str(tmp_path / "e")]) == 2
    )
    assert not (tmp_path / "e").exists()
