"""Diagnostic: how well does the planner ground an object when its context shows the way?

The gates' object clips (every held-out visit that ends centred), with a context that holds the scene
video's closest views of the clip's frames (``scene_video.choose_context`` with ``near_prob=1``: the last
frame first, then every other one back, up to ``--near-frames``) from outside ``--margin`` frames either
side of the clip, the rest natural. ``--margin 16 --near-frames 1``: the clip's final (goal-centred) view
from another pass of the video, about what an agent's detector can supply; ``--margin 0 --near-frames 4``:
training's near copies (frames next to the clip, which an agent does not have). G3's measurements (SD
and IF(SD<0.2) by the evaluator detector) with that context, no context and another scene's::

    python launch/experiments/grounding_near_views.py --pipeline v4s_agent/checkpoints/default/pipeline \\
        --margin 16 --near-frames 1 --out outputs/grounding_m16_nf1.json

Not a gate: the near views are chosen by the clip's own (privileged) end pose.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from v4s_agent.envs import scene_video as sv

from v4s_agent.evaluation import gates
from v4s_agent.evaluation.evaluator_detector import EvaluatorDetector


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="training run folder (newest checkpoint's EMA weights)")
    src.add_argument("--pipeline", help="a saved pipeline folder")
    p.add_argument("--data", default="data/val_scenes")
    p.add_argument("--margin", type=int, default=16)
    p.add_argument("--near-frames", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON file for the measurements")
    a = p.parse_args()
    if a.margin < 0 or a.near_frames < 1:
        p.error("--margin must be >= 0 and --near-frames >= 1")
    torch.set_num_threads(a.threads)
    orig = sv.clip_and_context

    def near_views(shard, kind, ep, n, k, at_end, rng, *args, **kw):  # the gates' cutter, object clips
        if kind != "obj":
            return orig(shard, kind, ep, n, k, at_end, rng, *args, **kw)
        widx = sv.clip_window(shard, kind, ep, n, at_end, rng)
        cat = int(shard["visit_category"][ep])
        cidx, cpos = sv.choose_context(shard, widx, k, "sparse", rng, 1.0, cat, a.near_frames, a.margin)
        return widx, cidx, cpos, cat

    sv.clip_and_context = near_views
    try:
        pipe, name = gates.load_pipeline(a.run, a.pipeline)
        clips = [c for c in gates.gate_clips(a.data, pipe.v4s_config, 1) if c["kind"] == "obj"]
        res = gates.measure_gates(pipe, clips, EvaluatorDetector.from_pretrained())
    finally:
        sv.clip_and_context = orig
    res.pop("_videos_ctx", None)
    res.update(source=name, margin=a.margin, near_frames=a.near_frames)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    for cond in ("ctx", "noctx", "wrongctx", "rendered_expert"):
        row = {k: v for k, v in res[cond].items() if isinstance(v, dict) and v.get("mean") is not None}
        print(cond, {k: (round(v["mean"], 3), round(v["lo"], 3), round(v["hi"], 3)) for k, v in row.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
