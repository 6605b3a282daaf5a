"""Plan latency and imagined frames/s of the Video4Spatial pipeline (random weights: speed only).

Usage::

    python benchmarks/bench_plan.py                      # tiny + default on CPU, 2 threads
    python benchmarks/bench_plan.py --configs default --threads 1 --repeats 5
    python benchmarks/bench_plan.py --device cuda        # on a GPU machine
    python benchmarks/bench_plan.py --checkpoint v4s_agent/checkpoints/default/pipeline
    python benchmarks/bench_plan.py --configs default --threads 1 --context-frames 6 12 16   # latency vs K

One plan = one pipeline call: encode the (cached) instruction, ``num_inference_steps`` sampler steps with
joint CFG (both branches in one batch), decode, read the red box back. Reports the wall time and, on CPU,
the process CPU time (a fairer figure on a shared machine), and imagined frames/s = (T - 1) / wall.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline


def bench(pipe: Video4SpatialPipeline, repeats: int, guidance_scale: float | None, steps: int | None) -> dict:
    cfg = pipe.v4s_config
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, 256, (cfg.num_context_frames, cfg.height, cfg.width, 3), dtype=np.uint8)
    kw = {
        "context": ctx,
        "context_positions": np.arange(cfg.num_context_frames) * 5,
        "observation": ctx[-1],
        "prompt": "go to the chair",
        "guidance_scale": guidance_scale,
        "num_inference_steps": steps,
    }
    pipe(**kw, generator=torch.Generator().manual_seed(0))  # warm-up (+ MiniLM load and cache)
    walls, cpus = [], []
    for i in range(repeats):
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        c0, w0 = time.process_time(), time.perf_counter()
        pipe(**kw, generator=torch.Generator().manual_seed(i))
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    wall = statistics.median(walls)
    return {
        "config": cfg.name,
        "context_frames": cfg.num_context_frames,
        "device": str(pipe.device),
        "params_M": round(sum(p.numel() for p in pipe.transformer.parameters()) / 1e6, 3),
        "tokens": cfg.seq_len,
        "steps": steps or cfg.num_inference_steps,
        "guidance_scale": cfg.guidance_scale if guidance_scale is None else guidance_scale,
        "plan_wall_s_median": round(wall, 4),
        "plan_wall_s_min": round(min(walls), 4),
        "plan_cpu_s_median": round(statistics.median(cpus), 4),
        "imagined_frames_per_s": round((cfg.num_target_frames - 1) / wall, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "default"])
    ap.add_argument("--checkpoint", default=None, help="a saved pipeline folder instead of random weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--guidance-scale", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument(
        "--context-frames", nargs="+", type=int, default=None, help="K values to time (default: the config's)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"torch {torch.__version__}, threads {args.threads}, load avg {os.getloadavg()}"
    )
    if args.checkpoint:
        pipes = [Video4SpatialPipeline.from_pretrained(args.checkpoint)]
    elif args.context_frames:
        from v4s_agent.model.configuration_model import get_model_config

        pipes = [
            Video4SpatialPipeline.from_model_config(get_model_config(n, num_context_frames=k))
            for n in args.configs
            for k in args.context_frames
        ]
    else:
        pipes = [Video4SpatialPipeline.from_config_name(n) for n in args.configs]
    for pipe in pipes:
        pipe = pipe.to(args.device)
        pipe.set_progress_bar_config(disable=True)
        print(json.dumps(bench(pipe, args.repeats, args.guidance_scale, args.steps)), flush=True)


if __name__ == "__main__":
    main()
