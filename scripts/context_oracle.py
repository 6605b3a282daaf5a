"""Diagnostic: how much does the context tour tell about where an object episode ends?

For every object episode of a data split it compares the expert's final frame (the goal in view) with
(a) the episode's first frame, the observation the planner starts from, (b) the closest of K context
frames drawn as training draws them (a random subset of the tour), for several K, (c) the closest frame
of the whole tour, and (d) a random tour frame (the tour's mean). Pixel MSE at the data's resolution. A
planner that picks the right context frame could do as well as (b); one that ignores the context, no
better than (a)::

    python scripts/context_oracle.py [--data data/val_scenes] [--k 6 16] [--draws 20] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from v4s_agent.training.dataset import load_manifest, load_shard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/val_scenes")
    ap.add_argument("--k", type=int, nargs="+", default=[6, 16])
    ap.add_argument("--draws", type=int, default=20, help="random context subsets per episode")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    manifest = load_manifest(args.data)
    keys = ("tour_frames", "obj_frames", "obj_offsets")
    rows: dict[str, list[float]] = {"observation": [], **{f"best of {k} context": [] for k in args.k},
                                    "best of the whole tour": [], "one random tour frame": []}  # fmt: skip
    for entry in manifest["shards"]:
        shard = load_shard(Path(args.data) / entry["file"], keys)
        tour = shard["tour_frames"].astype(np.float32) / 255.0
        frames, off = shard["obj_frames"], shard["obj_offsets"]
        for e in range(len(off) - 1):
            first = frames[off[e]].astype(np.float32) / 255.0
            last = frames[off[e + 1] - 1].astype(np.float32) / 255.0
            d = ((tour - last) ** 2).mean(axis=(1, 2, 3))
            rows["observation"].append(float(((first - last) ** 2).mean()))
            rows["best of the whole tour"].append(float(d.min()))
            # averaged over the random draws, so the interval below is across episodes
            for k in args.k:
                picks = (rng.choice(len(tour), size=k, replace=len(tour) < k) for _ in range(args.draws))
                best = [d[p].min() for p in picks]
                rows[f"best of {k} context"].append(float(np.mean(best)))
            rows["one random tour frame"].append(float(d.mean()))
    n = len(rows["observation"])
    print(f"{args.data}: {n} object episodes; MSE to the expert's final frame (mean [95 % interval], median)")
    for name, v in rows.items():
        a = np.asarray(v)
        half = 1.96 * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
        lo, hi = a.mean() - half, a.mean() + half
        print(f"  {name:24s} {a.mean():.4f} [{lo:.4f}, {hi:.4f}]  median {np.median(a):.4f}")


if __name__ == "__main__":
    main()
