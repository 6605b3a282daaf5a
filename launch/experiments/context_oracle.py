"""Diagnostic: how much does the context tell about where an object clip ends?

For every visit of a scene-video data split (the object clips training cuts: the clip ends at the
visit's end frame, the goal centred) it compares that end frame with (a) the clip's first frame, the
observation the planner starts from, (b) the closest of K context frames drawn as training draws them
(``scene_video.choose_context``: other frames of the same video, one showing the goal when the video has
one), for several K, (c) the closest frame of the whole video outside the clip, and (d) a random frame
outside the clip (their mean). Pixel MSE at the data's resolution. A planner that picks the right
context frame could do as well as (b); one that ignores the context, no better than (a)::

    python launch/experiments/context_oracle.py [--data data/val_scenes] [--k 6 12] [--clip 9] [--draws 20]

Reads the scene-video shards of ``generate_data`` (``video_*`` / ``visit_*`` keys). The figures in
docs/RESULTS.md ("Approaches to context use") were measured with its first version on the earlier data
design (a short tour as context, separate expert episodes), so they are not comparable one to one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from v4s_agent.envs.scene_video import choose_context, clip_window
from v4s_agent.training.dataset import load_manifest, load_shard

KEYS = ("video_frames", "video_poses", "video_boxes", "visit_start", "visit_end", "visit_category",
        "visit_ok")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/val_scenes")
    ap.add_argument("--k", type=int, nargs="+", default=[6, 12], help="context sizes")
    ap.add_argument("--clip", type=int, default=9, help="clip length (the default model's T - box frames)")
    ap.add_argument("--draws", type=int, default=20, help="random context draws per clip")
    ap.add_argument("--near-prob", type=float, default=0.0, help="choose_context's near-view probability")
    ap.add_argument("--all-visits", action="store_true", help="also visits that do not end centred")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    manifest = load_manifest(args.data)
    rows: dict[str, list[float]] = {"observation": [], **{f"best of {k} context": [] for k in args.k},
                                    "best of the video": [], "one random video frame": []}  # fmt: skip
    for entry in manifest["shards"]:
        shard = load_shard(Path(args.data) / entry["file"], KEYS)
        if "video_frames" not in shard:
            raise SystemExit(f"{args.data}/{entry['file']} is not a scene-video shard: regenerate the data")
        video = shard["video_frames"].astype(np.float32) / 255.0
        for e in range(len(shard["visit_end"])):
            if not (args.all_visits or shard["visit_ok"][e]):
                continue
            widx = clip_window(shard, "obj", e, args.clip, True, rng)  # the clip that ends the visit
            last = video[widx[-1]]
            d = ((video - last) ** 2).mean(axis=(1, 2, 3))  # every video frame's MSE to the end frame
            outside = np.ones(len(video), bool)
            outside[int(widx.min()) : int(widx.max()) + 1] = False
            rows["observation"].append(float(d[widx[0]]))
            rows["best of the video"].append(float(d[outside].min()))
            rows["one random video frame"].append(float(d[outside].mean()))
            cat = int(shard["visit_category"][e])
            # averaged over the random draws, so the interval below is across clips
            for k in args.k:
                best = [d[choose_context(shard, widx, k, "sparse", rng, args.near_prob, cat)[0]].min()
                        for _ in range(args.draws)]  # fmt: skip
                rows[f"best of {k} context"].append(float(np.mean(best)))
    n = len(rows["observation"])
    print(f"{args.data}: {n} object clips; MSE to the visit's end frame (mean [95 % interval], median)")
    for name, v in rows.items():
        a = np.asarray(v)
        half = 1.96 * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
        lo, hi = a.mean() - half, a.mean() + half
        print(f"  {name:24s} {a.mean():.4f} [{lo:.4f}, {hi:.4f}]  median {np.median(a):.4f}")


if __name__ == "__main__":
    main()
