"""Diagnostic: which ranking of goal views puts a view of where an object clip ends first?

For every visit that ends centred in the shards (the clips the gates and training cut, ending at the
visit), the goal views from another pass of the video (frames outside ``VIEW_MARGIN`` whose exact box
shows the goal centred, training's ``exact_goal_frames``) are ranked by each rule of
``nearest_distinct_views``; the score is how often the first ``n`` picked hold a view within view
distance 1 of the clip's final camera (0.5 m of position or 30 degrees of heading count 1)::

    python launch/experiments/goal_view_ranking.py --data data/train --scenes 60 \\
        --out outputs/goal_view_ranking.json

Run on train shards to choose the rule (``envs.scene_video.GOAL_RANK``), not on ``val_scenes``. No model
is involved: it measures how well each rule finds the end view, not what a planner does with it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm
from v4s_agent.envs.scene_video import (
    GOAL_RANKS,
    VIEW_MARGIN,
    clip_window,
    exact_goal_frames,
    nearest_distinct_views,
    view_distance,
)

from v4s_agent.evaluation.metrics import wilson_interval

KEYS = ("video_poses", "video_boxes", "video_frames", "visit_ok", "visit_start", "visit_end",
        "visit_category")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/train", help="scene-video shards (train: choose the rule there)")
    p.add_argument("--scenes", type=int, default=60)
    p.add_argument("--clip-frames", type=int, default=9, help="a clip's trajectory frames (the model's)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    shards = json.loads((Path(a.data) / "manifest.json").read_text())["shards"][: a.scenes]
    counts = (1, 2, 3, 6)
    hits = {r: dict.fromkeys(counts, 0) for r in GOAL_RANKS}
    total = 0
    for s in tqdm(shards, desc="scenes"):
        with np.load(Path(a.data) / s["file"]) as z:
            shard = {k: z[k] for k in KEYS}
        poses = shard["video_poses"]
        for ep in np.nonzero(shard["visit_ok"])[0]:
            w = clip_window(shard, "obj", int(ep), a.clip_frames, True, np.random.default_rng(0))
            g = exact_goal_frames(shard, int(shard["visit_category"][ep]))
            g = g[(g < w.min() - VIEW_MARGIN) | (g > w.max() + VIEW_MARGIN)]
            if len(g) == 0:
                continue
            total += 1
            for r in GOAL_RANKS:
                for n in counts:
                    picked = nearest_distinct_views(poses, g, poses[w[0]], n, r)
                    hits[r][n] += int(view_distance(poses[picked], poses[w[-1]]).min() <= 1.0)
    res = {"clips": total, "data": a.data, "scenes": len(shards)}
    for r in GOAL_RANKS:
        res[r] = {}
        for n in counts:
            lo, hi = wilson_interval(hits[r][n], total)
            res[r][str(n)] = {"rate": hits[r][n] / max(total, 1), "lo": float(lo), "hi": float(hi)}
            print(f"{r:6s} first {n}: {hits[r][n] / max(total, 1):.3f} [{lo:.3f}, {hi:.3f}] of {total}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
