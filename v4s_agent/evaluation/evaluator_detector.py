"""Independent evaluator for generated videos: a small detector trained on rendered ground truth.

Why: the paper scores generated videos with an external detector, never with the model's own red box
(a model could draw a centred box on anything). Ours is a tiny fully-convolutional segmenter trained on
frames rendered by the environment, labelled with its exact semantic masks (instance id -> category).
At evaluation time the goal category's predicted region gives the box (-> SD) and its presence (-> IF).
Its own accuracy against the exact semantic render is measured and reported beside the scores.

Training data: frames of the train split's scene videos (``data/train`` shards, the distribution the
gates score), whose category masks are re-rendered at the shards' poses, plus expert episodes in
detector-only scenes (outdoor and held-out categories too). How probabilities become a box (threshold,
minimum area, all pixels or the largest region) is fitted on train scenes the network did not see and
saved in ``config.json``; held-out ``val_scenes`` only reports.

``python -m v4s_agent.evaluation.evaluator_detector --out DIR`` trains one (about 20 minutes of one CPU
core with ``data/train``; ``--video-data ''`` for episodes only). The shipped detector's exact recipe (two
warm-started stages) is in its ``validation.json`` and ``docs/RESULTS.md``; ``--validate-only`` recomputes
a detector's held-out figures.

This module ties the parts together and is the CLI: the network and its box rule are in
:mod:`.detector_network`, the training data in :mod:`.detector_data`, training in
:mod:`.detector_training`, validation and the fitted box rule in :mod:`.detector_validation`. Their
names are still importable from here.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .detector_data import (
    DETECTOR_SEED_OFFSET,
    SCENE_KINDS,
    category_mask,
    collect_frames,
    collect_video_frames,
    detector_scene,
)
from .detector_data import _id_to_class_of as _id_to_class_of  # re-exported (tests use it)
from .detector_network import (
    BOX_MODES,
    DEFAULT_DETECTOR,
    DEFAULT_GOAL_DETECTOR,
    MIN_FRACTION,
    SD_HIT,
    THRESHOLD,
    Box,
    EvaluatorDetector,
    region_box,
)
from .detector_training import _warm_start, train_detector
from .detector_validation import (
    Pair,
    fit_detection,
    scene_video_pairs,
    validate_detector,
    validate_goal_regions,
    validate_on_scene_videos,
)

__all__ = [
    "BOX_MODES",
    "DEFAULT_DETECTOR",
    "DEFAULT_GOAL_DETECTOR",
    "load_goal_detector",
    "DETECTOR_SEED_OFFSET",
    "MIN_FRACTION",
    "SCENE_KINDS",
    "SD_HIT",
    "THRESHOLD",
    "Box",
    "EvaluatorDetector",
    "Pair",
    "category_mask",
    "collect_frames",
    "collect_video_frames",
    "detector_scene",
    "fit_detection",
    "held_out_validation",
    "load_or_train",
    "main",
    "region_box",
    "scene_video_pairs",
    "train_and_save",
    "train_detector",
    "validate_detector",
    "validate_goal_regions",
    "validate_on_scene_videos",
]

logger = logging.getLogger(__name__)


def _slice(spec: str | None) -> slice | None:
    """``"a:b"`` -> ``slice(a, b)`` (either side may be empty); ``None`` -> ``None``."""
    if spec is None:
        return None
    a, _, b = spec.partition(":")
    return slice(int(a) if a else None, int(b) if b else None)


def load_or_train(
    path: str | Path | None = None, out_dir: str | Path | None = None, quick: bool = False, seed: int = 0
) -> tuple[EvaluatorDetector, dict[str, Any]]:
    """The detector at ``path`` (default: the shipped one); otherwise train one and save it to ``out_dir``."""
    p = Path(path) if path is not None else DEFAULT_DETECTOR
    if (p / "model.safetensors").is_file():
        det = EvaluatorDetector.from_pretrained(p)
        meta = json.loads((p / "validation.json").read_text()) if (p / "validation.json").is_file() else {}
        return det, {"path": str(p), **meta}
    if path is not None:
        raise FileNotFoundError(f"no evaluator detector at {p}")
    logger.warning("no evaluator detector at %s: training one%s", p, " (quick)" if quick else "")
    det, meta = train_and_save(out_dir or p, episodes=6 if quick else 60, epochs=2 if quick else 8, seed=seed)
    return det, meta


def load_goal_detector(path: str | Path | None = None) -> EvaluatorDetector:
    """The detector an agent stops on: ``path``, else the shipped goal detector, else the evaluator's.

    Why a second one: the evaluator detector must stay fixed (it scores every generated video and the
    gates); the agent's only has to find goals in rendered views, and a wider network trained on does
    that better (docs/RESULTS_CLOSED_LOOP.md)."""
    if path is not None:
        return load_or_train(path)[0]
    if (DEFAULT_GOAL_DETECTOR / "model.safetensors").is_file():
        return EvaluatorDetector.from_pretrained(DEFAULT_GOAL_DETECTOR)
    return load_or_train(None)[0]


def train_and_save(
    out_dir: str | Path,
    episodes: int = 60,
    epochs: int = 8,
    seed: int = 0,
    val_episodes: int | None = None,
    width: int = 16,
    init: str | Path | None = None,
    lr: float = 3e-3,
    video_data: str | Path | None = None,
    video_shards: slice | None = None,
    tail: int = 6,
    random_frames: int = 30,
    tune_shards: slice | None = None,
    val_data: str | Path | None = None,
    global_context: bool = True,
    bottleneck: int = 4,
    input_size: int = 64,
) -> tuple[EvaluatorDetector, dict[str, Any]]:
    """Collect renders (expert episodes in detector scenes, and with ``video_data`` frames of train-split
    scene videos), train, fit the box rule on ``tune_shards`` of ``video_data`` (scenes not trained on),
    validate on held-out val scenes, save with validation.json.

    ``input_size`` other than 64 (the evaluator's, the planner's frame size) renders every training and
    validation frame at that size: a goal detector for the agent's own 128 px frames."""
    t0 = time.time()
    res = (int(input_size), int(input_size))
    fine = None if input_size == 64 else res
    parts = []
    if episodes > 0:
        parts.append(collect_frames(episodes, scene=None, seed=seed, resolution=res)[:2])
    n_episode_frames = len(parts[0][0]) if parts else 0
    if video_data is not None:
        parts.append(
            collect_video_frames(video_data, video_shards, tail, random_frames, seed, resolution=fine)[:2]
        )
    if not parts:
        raise ValueError("nothing to train on: episodes=0 and no video_data")
    imgs = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    from ..envs.scenes import CATEGORIES

    cats = list(CATEGORIES)
    t_data = time.time() - t0
    start = _warm_start(init, global_context, bottleneck, width) if init else None
    if start is not None:
        start.input_size = int(input_size)  # fully convolutional: the weights run at any size
    det = train_detector(
        imgs,
        masks,
        cats,
        epochs=epochs,
        seed=seed,
        width=width,
        init=start,
        lr=lr,
        global_context=global_context,
        bottleneck=bottleneck,
        input_size=input_size,
    )
    t_train = time.time() - t0 - t_data
    fit = (
        fit_detection(det, video_data, tune_shards, seed=seed)
        if video_data is not None and tune_shards
        else None
    )
    meta: dict[str, Any] = {
        "trained_on": {
            "scenes": "detector scenes (seeds 7e6+, indoor + outdoor)"
            + (f" + scene videos of {video_data} shards {video_shards}" if video_data is not None else ""),
            "episodes": episodes,
            "episode_frames": n_episode_frames,
            "video_frames": len(imgs) - n_episode_frames,
            "frames": len(imgs),
            "epochs": epochs,
            "width": width,
            "global_context": global_context,
            "bottleneck": bottleneck,
            "input_size": input_size,
            "warm_start": str(init) if init else None,
        },
        "detect": {"threshold": det.threshold, "min_fraction": det.min_fraction, "box_mode": det.box_mode},
        "fit": fit,
        "train_seconds": round(t_train, 1),
        "data_seconds": round(t_data, 1),
        **held_out_validation(det, val_episodes or max(2, episodes // 6), val_data, seed, res),
    }
    out = Path(out_dir)
    det.save_pretrained(out)
    _write_validation(out, meta)
    return det, {"path": str(out), **meta}


def held_out_validation(
    det: EvaluatorDetector,
    val_episodes: int,
    val_data: str | Path | None = None,
    seed: int = 0,
    resolution: tuple[int, int] = (64, 64),
) -> dict[str, Any]:
    """``validation``: :func:`validate_detector` on ``val_episodes`` expert episodes in ``val_scenes``
    (episode seeds from ``seed + 1``); ``validation_scene_videos``: :func:`validate_on_scene_videos` on
    ``val_data`` when that folder exists."""
    vi, vm, _ = collect_frames(val_episodes, scene="val_scenes", seed=seed + 1, resolution=resolution)
    res: dict[str, Any] = {
        "validation": {
            "scene": "val_scenes",
            "resolution": list(resolution),
            "episodes": val_episodes,
            "frames": len(vi),
            **validate_detector(det, vi, vm),
        }
    }
    if val_data is not None and Path(val_data).is_dir():
        res["validation_scene_videos"] = validate_on_scene_videos(det, val_data, seed=seed)
    return res


def _write_validation(out: Path, meta: dict[str, Any]) -> None:
    from ..integrity import dumps_strict

    tmp = out / "validation.json.tmp"
    tmp.write_text(dumps_strict(meta, indent=2))
    tmp.replace(out / "validation.json")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: train the evaluator detector."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--episodes", type=int, default=40, help="expert episodes in detector-only scenes")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=16, help="channels of the first stage")
    ap.add_argument("--no-global-context", action="store_true", help="the network without pooled context")
    ap.add_argument("--bottleneck", type=int, default=4, help="coarsest stage's channels / width")
    ap.add_argument(
        "--input-size",
        type=int,
        default=64,
        help="frame size it sees, is trained and validated at (64: the evaluator; 128: the agent's frames)",
    )
    ap.add_argument("--num-threads", type=int, default=1, help="torch threads (1: fastest on a busy CPU)")
    ap.add_argument("--init", default=None, help="warm-start from this detector folder")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--video-data", default="data/train", help="train-split scene-video shards ('' : none)")
    ap.add_argument("--video-shards", default=":216", help="shards trained on (python slice 'a:b')")
    ap.add_argument("--tune-shards", default="216:", help="shards the box rule is fitted on ('' : none)")
    ap.add_argument("--tail", type=int, default=6, help="frames kept at the end of every visit")
    ap.add_argument("--random-frames", type=int, default=30, help="other frames kept per scene video")
    ap.add_argument("--val-data", default="data/val_scenes", help="held-out scene videos (report only)")
    ap.add_argument("--val-episodes", type=int, default=None, help="expert episodes in val_scenes (report)")
    ap.add_argument(
        "--validate-only",
        action="store_true",
        help="no training: recompute the held-out figures of the detector at --out (its validation.json)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    if args.validate_only:
        out = Path(args.out)
        det = EvaluatorDetector.from_pretrained(out)
        meta = (
            json.loads((out / "validation.json").read_text()) if (out / "validation.json").is_file() else {}
        )
        val_episodes = args.val_episodes or meta.get("validation", {}).get("episodes") or 25
        res = (det.input_size, det.input_size)
        meta.update(held_out_validation(det, val_episodes, args.val_data or None, args.seed, res))
        _write_validation(out, meta)
        print(json.dumps(meta, indent=2, default=str))
        return 0
    video = args.video_data or None
    if video is not None and not Path(video).is_dir():
        ap.error(f"--video-data {video}: no such folder (generate it, or pass --video-data '')")
    if args.input_size < 16 or args.input_size % 8:
        ap.error(f"--input-size must be a multiple of 8, at least 16. Got {args.input_size}")
    _, meta = train_and_save(
        args.out,
        args.episodes,
        args.epochs,
        args.seed,
        val_episodes=args.val_episodes,
        width=args.width,
        init=args.init,
        lr=args.lr,
        video_data=video,
        video_shards=_slice(args.video_shards),
        tail=args.tail,
        random_frames=args.random_frames,
        tune_shards=_slice(args.tune_shards) if args.tune_shards else None,
        val_data=args.val_data or None,
        global_context=not args.no_global_context,
        bottleneck=args.bottleneck,
        input_size=args.input_size,
    )
    print(json.dumps(meta, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
