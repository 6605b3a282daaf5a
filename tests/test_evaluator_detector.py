"""The evaluator detector's box rule, its saved settings, warm starts and its scene-video data/scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from v4s_agent.evaluation import evaluator_detector as ed
from v4s_agent.evaluation.evaluator_detector import EvaluatorDetector, region_box

CATS = ["chair", "table", "sofa"]


def _blobs() -> np.ndarray:
    p = np.zeros((32, 32), np.float32)
    p[2:6, 2:6] = 0.9  # small region, top left
    p[14:30, 16:30] = 0.8  # large region
    return p


def test_region_box_all_largest_and_min_fraction() -> None:
    p = _blobs()
    box, frac = region_box(p, 0.5, 0.001, "all")
    assert box == (2.0, 2.0, 30.0, 30.0) and frac == pytest.approx((16 + 16 * 14) / 1024)
    box, frac = region_box(p, 0.5, 0.001, "largest")
    assert box == (16.0, 14.0, 30.0, 30.0) and frac == pytest.approx(16 * 14 / 1024)
    assert region_box(p, 0.5, 0.5, "largest") == (None, pytest.approx(16 * 14 / 1024))
    assert region_box(p, 0.95, 0.0, "all") == (None, 0.0)  # nothing over the threshold
    with pytest.raises(ValueError):
        region_box(p, 0.5, 0.0, "biggest")


def test_detect_uses_the_saved_box_rule(tmp_path) -> None:
    torch.manual_seed(0)
    det = EvaluatorDetector(
        CATS, input_size=32, width=8, threshold=0.3, min_fraction=0.002, box_mode="largest"
    )
    det.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["box_mode"] == "largest" and cfg["threshold"] == 0.3 and cfg["global_context"] is True
    back = EvaluatorDetector.from_pretrained(tmp_path)
    assert (back.threshold, back.min_fraction, back.box_mode) == (0.3, 0.002, "largest")
    frames = np.random.default_rng(0).integers(0, 255, (2, 40, 40, 3), dtype=np.uint8)
    assert back.detect(frames, "table") == det.eval().detect(frames, "table")
    # explicit arguments still override the saved rule
    probs = det.probs(frames)[:, 2]
    for (box, frac), p in zip(det.detect(frames, "table", 0.0, 0.01, "all"), probs, strict=True):
        ref, ref_frac = region_box(p, 0.01, 0.0, "all")
        assert frac == ref_frac and (box is None) == (ref is None)


def test_legacy_config_loads_and_warm_start_keeps_outputs(tmp_path) -> None:
    """A detector saved before the new keys (no global context, fixed rule) loads as it was; a warm
    start adds the context branch without changing what it computes."""
    torch.manual_seed(0)
    old = EvaluatorDetector(CATS, input_size=32, width=8, global_context=False)
    old.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"categories": CATS, "input_size": 32, "width": 8}))
    (tmp_path / "checksums.json").unlink()  # detectors of then had no checksum list either
    legacy = EvaluatorDetector.from_pretrained(tmp_path)
    assert legacy.context is None and legacy.threshold == ed.THRESHOLD and legacy.box_mode == "all"
    assert legacy.min_fraction == ed.MIN_FRACTION
    warm = ed._warm_start(tmp_path, global_context=True).eval()
    assert warm.context is not None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(warm(x), legacy(x))
    wide = ed._warm_start(tmp_path, global_context=True, width=12)  # grown: the old weights in its corner
    assert wide.width == 12 and wide.enc1[0].weight.shape[0] == 12
    torch.testing.assert_close(wide.enc1[0].weight[:8].detach(), legacy.enc1[0].weight)
    with pytest.raises(ValueError, match="narrower"):
        ed._warm_start(tmp_path, global_context=True, width=4)


def _fake_scene_videos(root, n_scenes: int = 2, n: int = 12) -> None:
    """Shards in ``generate_data``'s layout: random frames, exact boxes of two categories, visits."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "generator.json").write_text(json.dumps({"version": "2.0", "config": {"split": "train"}}))
    for s in range(n_scenes):
        boxes = np.full((n, 2, 4), np.nan, np.float32)
        boxes[:, 0] = (20, 20, 44, 44)  # chair centred in every frame
        boxes[::3, 1] = (0, 0, 10, 10)  # table in a corner now and then
        np.savez(
            root / f"shard_{s:06d}.npz",
            video_frames=rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8),
            video_poses=np.tile(np.eye(4), (n, 1, 1)),
            video_boxes=boxes,
            categories=np.asarray(["chair", "table"]),
            visit_category=np.asarray([0, 0]),
            visit_end=np.asarray([4, 9]),
            visit_ok=np.asarray([True, False]),
            visit_sd=np.asarray([0.0, 0.5], np.float32),
        )
        (root / f"shard_{s:06d}.npz.json").write_text(
            json.dumps({"scene_index": s, "file": f"shard_{s:06d}.npz"})
        )


def test_scene_video_validation_and_fit(tmp_path) -> None:
    _fake_scene_videos(tmp_path / "videos")
    frames, pairs = ed.scene_video_pairs(tmp_path / "videos", frames_per_scene=5)
    assert len(frames) == 2 * (1 + 5)
    ends = [p for p in pairs if p[3]]
    assert len(ends) == 2 and all(p[1] == "chair" for p in ends)
    torch.manual_seed(0)
    det = EvaluatorDetector(CATS, input_size=32, width=8)
    res = ed.validate_on_scene_videos(det, tmp_path / "videos", frames_per_scene=5)
    ex = res["rendered_expert"]
    assert ex["clips"] == 2 and 0.0 <= ex["if_sd_0.2"] <= 1.0 and ex["exact_semantics_if_sd_0.2"] == 1.0
    lo, hi = ex["if_sd_0.2_wilson95"]
    assert 0.0 <= lo <= ex["if_sd_0.2"] <= hi <= 1.0
    assert 0.0 <= res["if_sd_0.2_balanced_accuracy"] <= 1.0 and res["scenes"] == 2
    fit = ed.fit_detection(
        det, tmp_path / "videos", slice(1, None), frames_per_scene=5, thresholds=(0.1, 0.5)
    )
    assert fit["chosen"]["threshold"] in (0.1, 0.5) and det.threshold == fit["chosen"]["threshold"]
    assert det.box_mode == fit["chosen"]["box_mode"] in ed.BOX_MODES
    assert ed._slice("3:") == slice(3, None) and ed._slice(":5") == slice(None, 5) and ed._slice(None) is None


def test_collect_video_frames_rerenders_exact_masks(tmp_path) -> None:
    """Masks re-rendered at a shard's poses line up with its frames (the RGB re-render must match)."""
    from v4s_agent.envs import V4SNavEnv
    from v4s_agent.envs.scenes import CATEGORIES, split_scene

    scene = split_scene("train", 0)
    env = V4SNavEnv(task="object", scene=scene, resolution=(32, 32), obs_keys=("rgb", "semantic"),
                    context_video="none")  # fmt: skip
    try:
        obs, info = env.reset(seed=0)
        frames, poses, sems = [obs["rgb"]], [info["agent_pose"]], [obs["semantic"]]
        for a in (2, 2, 1):
            obs, _, _, _, info = env.step(a)
            frames.append(obs["rgb"])
            poses.append(info["agent_pose"])
            sems.append(obs["semantic"])
    finally:
        env.close()
    root = tmp_path / "videos"
    root.mkdir()
    (root / "generator.json").write_text(json.dumps({"config": {"split": "train"}}))
    frames[2] = 255 - frames[2]  # a frame that no longer matches its pose: left out
    np.savez(root / "shard_000000.npz", video_frames=np.stack(frames), video_poses=np.stack(poses),
             visit_end=np.asarray([3]))  # fmt: skip
    (root / "shard_000000.npz.json").write_text(json.dumps({"scene_index": 0, "file": "shard_000000.npz"}))
    imgs, masks, cats = ed.collect_video_frames(root, tail=2, n_random=5)
    assert cats == list(CATEGORIES) and len(imgs) == 3
    lut = ed._id_to_class_of(scene, cats)
    keep = [0, 1, 3]
    assert np.array_equal(imgs, np.stack(frames)[keep])
    for m, i in zip(masks, keep, strict=True):
        assert np.array_equal(m, ed.category_mask(sems[i], lut))
    # at a finer size: the same frames kept (the stored ones are still the check), rendered at 64 x 64
    fine, fmasks, _ = ed.collect_video_frames(root, tail=2, n_random=5, resolution=(64, 64))
    assert fine.shape == (3, 64, 64, 3) and fmasks.shape == (3, 64, 64)
    for f, m, i in zip(fine, fmasks, keep, strict=True):
        small = f.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
        assert np.abs(small - np.stack(frames)[i].astype(float)).mean() < 12  # the same view, finer
        coarse = ed.category_mask(sems[i], lut) > 0
        assert ((m[::2, ::2] > 0) != coarse).mean() < 0.05  # the same objects, finer


def test_goal_regions_score_a_perfect_and_a_blind_detector() -> None:
    """``validate_goal_regions``: exact masks as probabilities score 1 everywhere; a detector that sees
    nothing finds nothing (recall 0) and is never wrong about presence."""
    masks = np.zeros((2, 32, 32), np.uint8)
    masks[0, 12:20, 12:20] = 1  # a chair, centred
    masks[1, 0:8, 0:10] = 2  # a table in the corner
    images = np.zeros((2, 32, 32, 3), np.uint8)

    class Exact:
        categories = CATS

        def probs(self, frames: np.ndarray) -> np.ndarray:
            return np.eye(len(CATS) + 1, dtype=np.float32)[masks].transpose(0, 3, 1, 2)

    class Blind(Exact):
        def probs(self, frames: np.ndarray) -> np.ndarray:
            p = np.zeros((len(frames), len(CATS) + 1, 16, 16), np.float32)
            p[:, 0] = 1.0
            return p

    r = ed.validate_goal_regions(Exact(), images, masks)
    assert r["recall"] == 1.0 and r["precision"] == 1.0 and r["region_mostly_other"] == 0.0
    assert r["sd_abs_error"] < 0.05 and r["centred_regions"] == 1 and r["centred_precision"] == 1.0
    assert r["pairs"] == 2 + 2 * 2  # each frame: its category and the 2 others absent
    b = ed.validate_goal_regions(Blind(), images, masks)
    assert b["recall"] == 0.0 and b["centred_regions"] == 0 and b["pairs"] == r["pairs"]
