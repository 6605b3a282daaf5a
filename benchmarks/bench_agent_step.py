"""Per-step cost of the agent's non-generative stack (map, detector, driving) and of context retrieval.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_agent_step.py               # 150 steps, val_scenes seed 1000
    OMP_NUM_THREADS=1 python benchmarks/bench_agent_step.py --steps 300 --split outdoor

Runs the frontier baseline (``ObjectSearch`` with the shipped detector) closed loop and reports the
mean / p95 wall time of ``act`` per step (the env's own step is excluded), the one-off cost of reading
goal viewpoints off the context video, and the time of one 6-frame context retrieval over the video.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from v4s_agent.agent.context_retrieval import path_points, retrieve_context
from v4s_agent.evaluation.baselines import FrontierAgent
from v4s_agent.evaluation.evaluator_detector import load_or_train
from v4s_agent.evaluation.rollout import make_env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--split", default="val_scenes")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--resolution", type=int, default=128)
    args = ap.parse_args()
    det = load_or_train(None)[0]
    env = make_env("object", args.split, None, (args.resolution,) * 2, ("rgb", "depth"), args.steps)
    agent = FrontierAgent(det)
    obs, info = env.reset(seed=args.seed)
    t0 = time.perf_counter()
    agent.reset(obs, info)
    reset_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        a = agent.act(obs, info)
        times.append(time.perf_counter() - t)
        obs, _, term, trunc, info = env.step(a)
        if term or trunc:
            break
    info_ctx = env.unwrapped.get_context()
    poses = np.asarray(info_ctx["poses"])
    t = time.perf_counter()
    retrieve_context(6, poses, query=path_points(poses[-1]), recent=0, candidates_every=3)
    retr_ms = 1000 * (time.perf_counter() - t)
    env.close()
    ms = 1000 * np.asarray(times)
    print(
        json.dumps(
            {
                "split": args.split,
                "steps": len(times),
                "act_ms_mean": round(float(ms.mean()), 2),
                "act_ms_p95": round(float(np.percentile(ms, 95)), 2),
                "reset_with_context_viewpoints_s": round(reset_s, 2),
                "context_frames": len(info_ctx["frames"]),
                "retrieval_ms": round(retr_ms, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
