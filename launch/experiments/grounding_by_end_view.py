"""Diagnostic: does an object plan end on its goal when its goal views include the clip's final view?

The gates' object clips with the use-time views context (goal views found by the agent's goal detector,
as ``gates --context views``), split by whether a context frame was taken from the clip's final
viewpoint (``scene_video.view_distance`` <= ``--near``: 0.5 m of position counts 1, 30 degrees of heading
counts 1); IF(SD<0.2) and SD by the evaluator detector in each group, with 95 % intervals::

    python launch/experiments/grounding_by_end_view.py --pipeline v4s_agent/checkpoints/default/pipeline \\
        --out outputs/grounding_by_end_view.json

Not a gate: the split uses the clip's own (privileged) end pose.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from v4s_agent.envs.scene_video import view_distance

from v4s_agent.evaluation import gates
from v4s_agent.evaluation.evaluator_detector import EvaluatorDetector, load_goal_detector


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", required=True, help="a saved pipeline folder")
    p.add_argument("--data", default="data/val_scenes")
    p.add_argument("--near", type=float, default=1.0, help="view distance that counts as the final view")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON file for the measurements")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    pipe, _ = gates.load_pipeline(None, a.pipeline)
    scorer = EvaluatorDetector.from_pretrained()
    clips = gates.gate_clips(
        a.data, pipe.v4s_config, pose_per_scene=1, context="views", detector=load_goal_detector()
    )
    obj = [c for c in clips if c["kind"] == "obj"]
    manifest = json.loads((Path(a.data) / "manifest.json").read_text())["shards"]
    poses = {}
    for c in obj:
        if c["scene"] not in poses:
            with np.load(Path(a.data) / manifest[c["scene"]]["file"]) as z:
                poses[c["scene"]] = z["video_poses"]
    near = []
    for c in obj:
        vp = poses[c["scene"]]
        d = view_distance(vp[np.asarray(c["context_index"])], vp[int(c["window"][-1])])
        near.append(bool(np.min(d) <= a.near))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        videos = gates.generate(pipe, obj, "ctx", None, None)
    last = [v[pipe.v4s_config.num_trajectory_frames - 1] for v in videos]
    sds, hits = gates.ground(scorer, last, [c["category"] for c in obj])
    res = {"clips": len(obj), "near": a.near}
    for name, sel in (("final_view_in_context", True), ("no_final_view", False), ("all", None)):
        idx = [i for i, x in enumerate(near) if sel is None or x == sel]
        res[name] = {
            "n": len(idx),
            "sd": gates._mean_ci([sds[i] for i in idx]),
            "if_sd_0.2": gates._rate_ci(sum(hits[i] for i in idx), len(idx)),
        }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
