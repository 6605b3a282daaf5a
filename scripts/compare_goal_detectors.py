"""Compare goal detectors as the agent reads them, on the same held-out frames.

Renders expert episodes of ``val_scenes`` (with random detours; the evaluator detector's validation
frames) at ``--resolution`` and scores each detector folder with
``evaluation.detector_validation.validate_goal_regions`` (the largest region over p = 0.3, as
``ObjectSearch`` reads it). One JSON line per detector::

    python scripts/compare_goal_detectors.py v4s_agent/checkpoints/evaluator_detector runs/goal_detector128
"""

from __future__ import annotations

import argparse
import json

import torch

from v4s_agent.evaluation.detector_data import collect_frames
from v4s_agent.evaluation.detector_network import EvaluatorDetector
from v4s_agent.evaluation.detector_validation import validate_goal_regions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("detectors", nargs="+", help="detector folders (config.json + model.safetensors)")
    ap.add_argument("--episodes", type=int, default=25)
    ap.add_argument("--resolution", type=int, default=128, help="frame size (the agent's: 128)")
    ap.add_argument("--seed", type=int, default=1, help="episode seeds of the validation frames")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dets = [EvaluatorDetector.from_pretrained(d) for d in args.detectors]  # fail before rendering
    res = (args.resolution, args.resolution)
    images, masks, _ = collect_frames(args.episodes, scene="val_scenes", seed=args.seed, resolution=res)
    for path, det in zip(args.detectors, dets, strict=True):
        scores = validate_goal_regions(det, images, masks)
        print(json.dumps({"detector": path, "input_size": det.input_size, "frames": len(images), **scores}))


if __name__ == "__main__":
    main()
