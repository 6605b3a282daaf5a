"""How good the evaluator detector is, and the box rule fitted for it.

Measured against the exact semantic render: per (frame, category) pair on rendered episodes
(:func:`validate_detector`), and on generated scene videos (:func:`validate_on_scene_videos`, scored as
the gates score rendered clips). :func:`fit_detection` chooses the threshold, minimum area and box mode
on train-split scene videos the network did not see; held-out ``val_scenes`` only reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .detector_data import _pick, _shard_files
from .detector_network import BOX_MODES, MIN_FRACTION, SD_HIT, Box, EvaluatorDetector, region_box
from .metrics import box_from_mask, sd_from_box


def validate_detector(
    det: EvaluatorDetector, images: np.ndarray, masks: np.ndarray, min_fraction: float = MIN_FRACTION
) -> dict[str, float]:
    """Agreement with the exact semantic render, per (frame, present-or-absent category) pair.

    Returns IF precision/recall (truly visible = at least ``min_fraction`` of the frame; the detector uses
    its own settings), and the mean absolute SD error on frames where both agree the object is visible
    (the truth's box: all of the category's pixels).
    """
    h, w = images.shape[1:3]
    tp = fp = fn = tn = 0
    sd_err: list[float] = []
    for img, m in zip(images, masks, strict=True):
        present = [c for c in np.unique(m) if c > 0]
        absent = [c for c in range(1, len(det.categories) + 1) if c not in present][:2]
        for c in present + absent:
            cat = det.categories[c - 1]
            gt_m = m == c
            gt_vis = gt_m.mean() >= min_fraction
            ((box, _),) = det.detect(img, cat)
            if box is not None and gt_vis:
                tp += 1
                sd_err.append(abs(sd_from_box(box, h, w) - sd_from_box(box_from_mask(gt_m), h, w)))
            elif box is not None:
                fp += 1
            elif gt_vis:
                fn += 1
            else:
                tn += 1
    return {
        "if_precision": tp / max(tp + fp, 1),
        "if_recall": tp / max(tp + fn, 1),
        "if_accuracy": (tp + tn) / max(tp + fp + fn + tn, 1),
        "sd_abs_error": float(np.mean(sd_err)) if sd_err else float("nan"),
        "pairs": tp + fp + fn + tn,
    }


def validate_goal_regions(
    det: Any,
    images: np.ndarray,
    masks: np.ndarray,
    threshold: float = 0.3,
    stop_sd: float = 0.18,
    min_fraction: float = 0.006,
    absent_per_frame: int = 3,
) -> dict[str, float]:
    """The detector as the agent reads it (``agent.goal_detection.goal_component``: the largest region over
    ``threshold``), per (frame, category) pair: each frame's present categories and its first
    ``absent_per_frame`` absent ones, against the exact masks (visible = at least ``min_fraction``).

    Why beside :func:`validate_detector`: the agent's stop reads that region, not the fitted box rule;
    ``centred_precision`` is the share of regions it calls centred (SD <= ``stop_sd``) that are centred in
    the exact render (SD < 0.2), the stop's own precision."""
    from ..agent.goal_detection import box_of, centre_offset, goal_component

    h, w = images.shape[1:3]
    tp = fp = fn = tn = other = centred = centred_ok = 0
    sd_err: list[float] = []
    probs = det.probs(images)
    for p, m in zip(probs, masks, strict=True):
        present = [int(c) for c in np.unique(m) if c > 0]
        absent = [c for c in range(1, len(det.categories) + 1) if c not in present][:absent_per_frame]
        for c in present + absent:
            gt = m == c
            visible = gt.mean() >= min_fraction
            comp = goal_component(p[c], threshold)
            if comp is None:
                fn += int(visible)
                tn += int(not visible)
                continue
            if not visible:
                fp += 1
                continue
            tp += 1
            ry = (np.arange(comp.shape[0]) * h) // comp.shape[0]
            rx = (np.arange(comp.shape[1]) * w) // comp.shape[1]
            other += int((gt[ry[:, None], rx[None, :]] & comp).sum() < 0.5 * comp.sum())
            pred, true = centre_offset(box_of(comp, h, w), h, w), sd_from_box(box_from_mask(gt), h, w)
            sd_err.append(abs(pred - true))
            if pred <= stop_sd:
                centred += 1
                centred_ok += int(true < SD_HIT)
    return {
        "recall": tp / max(tp + fn, 1),
        "precision": tp / max(tp + fp, 1),
        "region_mostly_other": other / max(tp, 1),
        "sd_abs_error": float(np.mean(sd_err)) if sd_err else float("nan"),
        "centred_precision": centred_ok / max(centred, 1),
        "centred_regions": centred,
        "pairs": tp + fp + fn + tn,
    }


# ---------------------------------------------------------------------- scored on scene videos

Pair = tuple[int, str, Box | None, bool]  # (frame index, category, exact box or None, is a visit's end)


def _box_or_none(b: np.ndarray) -> Box | None:
    return None if np.isnan(b).any() else (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def scene_video_pairs(
    data_dir: str | Path,
    shards: Sequence[int] | slice | None = None,
    frames_per_scene: int = 40,
    seed: int = 0,
) -> tuple[np.ndarray, list[Pair]]:
    """Frames and (frame, category) pairs of generated scene videos, with the exact boxes of the shards
    (the category's most visible instance, from the semantic render).

    Pairs: the end frame of every centred visit (``visit_ok``) with its goal category (what the gates'
    ``rendered_expert`` block scores), and ``frames_per_scene`` random frames of each video with every
    category in view and up to two of the scene's categories not in view.
    """
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    pairs: list[Pair] = []
    files = _shard_files(data_dir)
    for k in _pick(shards, len(files)):
        with np.load(files[k][1]) as d:
            video, boxes, cats = d["video_frames"], d["video_boxes"], [str(c) for c in d["categories"]]
            ok, ends, goal = d["visit_ok"], d["visit_end"], d["visit_category"]

        for v in np.flatnonzero(ok):
            e, c = int(ends[v]), int(goal[v])
            pairs.append((len(frames), cats[c], _box_or_none(boxes[e, c]), True))
            frames.append(video[e])
        for i in sorted(rng.choice(len(video), min(frames_per_scene, len(video)), replace=False).tolist()):
            vis = [c for c in range(len(cats)) if _box_or_none(boxes[i, c]) is not None]
            absent = [c for c in range(len(cats)) if c not in vis][:2]
            pairs += [(len(frames), cats[c], _box_or_none(boxes[i, c]), False) for c in vis + absent]
            frames.append(video[i])
    return (np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)), pairs


def _pair_probs(
    det: EvaluatorDetector, frames: np.ndarray, pairs: Sequence[Pair], chunk: int = 64
) -> np.ndarray:
    """Each pair's category probability map (P, S, S) float16, one network pass per frame."""
    s = det.input_size
    out = np.zeros((len(pairs), s, s), np.float16)
    by_frame: dict[int, list[int]] = {}
    for j, (fi, *_) in enumerate(pairs):
        by_frame.setdefault(fi, []).append(j)
    for a in range(0, len(frames), chunk):
        pr = det.probs(frames[a : a + chunk])
        for fi in range(a, min(a + chunk, len(frames))):
            for j in by_frame.get(fi, []):
                out[j] = pr[fi - a, det.categories.index(pairs[j][1]) + 1]
    return out


def _score_pairs(
    probs: np.ndarray,
    pairs: Sequence[Pair],
    hw: tuple[int, int],
    threshold: float,
    min_fraction: float,
    box_mode: str,
) -> dict[str, Any]:
    """The rendered-expert score and the agreement with the exact semantics, for one box rule."""
    from .metrics import wilson_interval

    h, w = hw
    s = probs.shape[-1]
    end_sd, end_err, frame_err, exact_sd = [], [], [], []
    hits = misses = tp = fp = fn = tn = 0
    agree = {True: [0, 0], False: [0, 0]}  # exact IF(SD<0.2) -> [agreeing, total]
    for p, (_, _, gt, is_end) in zip(probs, pairs, strict=True):
        box, _ = region_box(p.astype(np.float32), threshold, min_fraction, box_mode)
        if box is not None:
            box = (box[0] * w / s, box[1] * h / s, box[2] * w / s, box[3] * h / s)
        sd = sd_from_box(box, h, w) if box is not None else float("nan")
        gt_sd = sd_from_box(gt, h, w) if gt is not None else float("nan")
        det_if, gt_if = bool(box is not None and sd < SD_HIT), bool(gt is not None and gt_sd < SD_HIT)
        agree[gt_if][0] += int(det_if == gt_if)
        agree[gt_if][1] += 1
        if is_end:
            end_sd.append(sd if box is not None else 1.0)  # not found: the worst SD, as the gates count it
            exact_sd.append(gt_sd)
            hits += int(det_if)
            misses += int(box is None)
            if box is not None and gt is not None:
                end_err.append(abs(sd - gt_sd))
            continue
        if box is not None and gt is not None:
            tp += 1
            frame_err.append(abs(sd - gt_sd))
        elif box is not None:
            fp += 1
        elif gt is not None:
            fn += 1
        else:
            tn += 1
    n = len(end_sd)
    lo, hi = wilson_interval(hits, n) if n else (float("nan"), float("nan"))
    ex = np.asarray(exact_sd, np.float64)
    rates = [a / t for a, t in agree.values() if t]
    tpr = agree[True][0] / agree[True][1] if agree[True][1] else float("nan")
    tnr = agree[False][0] / agree[False][1] if agree[False][1] else float("nan")
    return {
        "rendered_expert": {
            "clips": n,
            "if_sd_0.2": hits / n if n else float("nan"),
            "if_sd_0.2_wilson95": [lo, hi],
            "sd_mean": float(np.mean(end_sd)) if n else float("nan"),
            "not_found": misses,
            "sd_abs_error": float(np.mean(end_err)) if end_err else float("nan"),
            "exact_semantics_sd_mean": float(np.nanmean(ex)) if n else float("nan"),
            "exact_semantics_if_sd_0.2": float(np.mean(ex < SD_HIT)) if n else float("nan"),
        },
        "frames": {
            "pairs": tp + fp + fn + tn,
            "if_precision": tp / max(tp + fp, 1),
            "if_recall": tp / max(tp + fn, 1),
            "sd_abs_error": float(np.mean(frame_err)) if frame_err else float("nan"),
            "sd_abs_error_median": float(np.median(frame_err)) if frame_err else float("nan"),
        },
        "if_sd_0.2_balanced_accuracy": float(np.mean(rates)) if rates else float("nan"),
        "if_sd_0.2_true_positive_rate": tpr,
        "if_sd_0.2_true_negative_rate": tnr,
    }


def validate_on_scene_videos(
    det: EvaluatorDetector,
    data_dir: str | Path,
    shards: Sequence[int] | slice | None = None,
    frames_per_scene: int = 40,
    seed: int = 0,
) -> dict[str, Any]:
    """The detector with its own box rule on scene-video shards (e.g. held-out ``data/val_scenes``):

    * ``rendered_expert``: the end frame of every centred visit, goal category -> IF(SD < 0.2) with its
      95 % Wilson interval, mean SD (not found = 1.0), as ``training/gates.py`` scores the rendered clips,
      beside the exact-semantics SD;
    * ``frames``: ``frames_per_scene`` random frames per scene -> IF precision/recall and the mean
      |SD error| against the exact box where both see the object;
    * ``if_sd_0.2_balanced_accuracy``: agreement of the IF(SD<0.2) decision with the exact one, all pairs.
    """
    frames, pairs = scene_video_pairs(data_dir, shards, frames_per_scene, seed)
    probs = _pair_probs(det, frames, pairs)
    res = _score_pairs(probs, pairs, frames.shape[1:3], det.threshold, det.min_fraction, det.box_mode)
    return {"data": str(data_dir), "scenes": len(_pick(shards, len(_shard_files(data_dir)))), **res}


def fit_detection(
    det: EvaluatorDetector,
    data_dir: str | Path,
    shards: Sequence[int] | slice | None = None,
    frames_per_scene: int = 40,
    thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    min_fractions: Sequence[float] = (0.003, 0.005, 0.0075, 0.01, 0.015),
    box_modes: Sequence[str] = BOX_MODES,
    seed: int = 0,
) -> dict[str, Any]:
    """Choose the box rule (threshold, min_fraction, box_mode) on scene videos the network did not train
    on (train-split scenes held out of training; never the evaluation split): the highest balanced
    accuracy of the IF(SD<0.2) decision against the exact semantics (centred visit ends and random
    frames, present and absent categories), ties to the lower |SD error|. Sets it on ``det``."""
    frames, pairs = scene_video_pairs(data_dir, shards, frames_per_scene, seed)
    probs = _pair_probs(det, frames, pairs)
    hw = frames.shape[1:3]
    rows = []
    for bm in box_modes:
        for t in thresholds:
            for mf in min_fractions:
                r = _score_pairs(probs, pairs, hw, t, mf, bm)
                key = (round(r["if_sd_0.2_balanced_accuracy"], 3), -r["frames"]["sd_abs_error"])
                rows.append((key, {"threshold": t, "min_fraction": mf, "box_mode": bm}, r))
    before = _score_pairs(probs, pairs, hw, det.threshold, det.min_fraction, det.box_mode)
    _, best, r = max(rows, key=lambda x: x[0])
    det.threshold, det.min_fraction, det.box_mode = (
        float(best["threshold"]),
        float(best["min_fraction"]),
        best["box_mode"],
    )
    return {
        "data": str(data_dir),
        "pairs": len(pairs),
        "chosen": best,
        "chosen_scores": r,
        "default_scores": before,
    }
