"""Diagnostic: how often does the context hold a view of where a pose clip goes?

For pose clips cut as training cuts them (``scene_video.clip_window``), the fraction of clip frames that
have a frame within ``view_distance`` <= 1 (0.5 m of position counts 1, 30 degrees of heading counts 1)
(a) in a natural context sample of K frames of the rest of the video, (b) anywhere in the video outside
``margin`` frames either side of the clip (what ``choose_view_context`` draws from), for several
margins::

    python launch/experiments/view_coverage.py [--data data/val_scenes] [--k 12] [--clips 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from v4s_agent.envs.scene_video import clip_window, view_distance
from v4s_agent.training.dataset import load_manifest, load_shard


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/val_scenes")
    p.add_argument("--k", type=int, default=12)
    p.add_argument("--clip", type=int, default=8, help="clip frames (the default model's trajectory)")
    p.add_argument("--clips", type=int, default=20, help="pose clips per scene")
    p.add_argument("--margins", type=int, nargs="+", default=[0, 16, 32])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    data = Path(a.data)
    hits: dict[tuple[int, str], list[float]] = {}
    for s in load_manifest(data)["shards"]:
        z = load_shard(data / s["file"], keys=("video_frames", "video_poses"))
        poses, n = z["video_poses"], len(z["video_poses"])
        for _ in range(a.clips):
            w = clip_window(z, "pose", 0, a.clip, True, rng)
            for m in a.margins:
                keep = np.ones(n, bool)
                keep[max(0, int(w.min()) - m) : int(w.max()) + 1 + m] = False
                cand = np.nonzero(keep)[0]
                natural = np.sort(rng.choice(cand, a.k, replace=False))
                for name, pool in (("video outside the margin", cand), (f"natural sample of {a.k}", natural)):
                    near = [view_distance(poses[pool], poses[t]).min() <= 1.0 for t in w]
                    hits.setdefault((m, name), []).append(float(np.mean(near)))
    print("| margin (frames) | context | clip frames with a view within 0.5 m / 30 deg |")
    print("|---|---|---|")
    for (m, name), v in sorted(hits.items()):
        print(f"| {m} | {name} | {100 * np.mean(v):.1f} % ({len(v)} clips) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
