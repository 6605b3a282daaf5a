"""Benchmark V4SNav-v0: env steps/s (single process and vector env) vs the raw renderer's frames/s.

Usage::

    python benchmarks/bench_env.py --steps 2000 --resolution 128 --num-envs 2

All figures use the same scene and resolution in the same run, with RGB + depth + semantics.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
from v4s_agent.envs import V4SNavEnv

import v4s_agent  # noqa: F401  (registers V4SNav-v0)

KEYS = ("rgb", "depth", "semantic")


def bench_interleaved(env: V4SNavEnv, steps: int, block: int = 100) -> tuple[float, float]:
    """(raw renderer frames/s, env steps/s), measured in alternating blocks so that load changes on a
    shared machine hit both equally. Raw = draw + read back rgb, depth and semantics into preallocated
    arrays from the poses the env visits; env = ``step`` with random moves/turns (no STOP)."""
    r = env.renderer
    rgb = np.empty((r.height, r.width, 3), np.uint8)
    depth = np.empty((r.height, r.width), np.float32)
    sem = np.empty((r.height, r.width), np.int32)
    acts = np.random.default_rng(1).integers(1, 4, steps)
    env.reset(seed=0)
    poses = [env.agent_pose]
    t_raw = t_env = 0.0
    for start in range(0, steps, block):
        t = time.perf_counter()
        for a in acts[start : start + block]:
            env.step(int(a))
        t_env += time.perf_counter() - t
        poses.append(env.agent_pose)
        t = time.perf_counter()
        for i in range(block):
            r.draw(poses[i % len(poses)])
            r.read_rgb(rgb)
            r.read_depth(depth)
            r.read_semantic(sem)
        t_raw += time.perf_counter() - t
    n = len(range(0, steps, block)) * block
    return n / t_raw, steps / t_env


def bench_vec(num_envs: int, steps: int, resolution: int) -> float:
    """AsyncVectorEnv steps/s (total env steps over all workers)."""
    fns = [
        lambda: gym.make("v4s_agent:V4SNav-v0", resolution=(resolution, resolution), obs_keys=KEYS)
    ] * num_envs
    venv = gym.vector.AsyncVectorEnv(fns, context="forkserver")
    venv.reset(seed=list(range(num_envs)))
    acts = np.random.default_rng(2).integers(1, 4, (steps, num_envs))
    t = time.perf_counter()
    for a in acts:
        venv.step(a)
    dt = time.perf_counter() - t
    venv.close()
    return steps * num_envs / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--num-envs", type=int, default=2)
    ap.add_argument("--no-vector", action="store_true")
    args = ap.parse_args()
    res = (args.resolution, args.resolution)
    env = V4SNavEnv(resolution=res, obs_keys=KEYS)
    env.reset(seed=0)
    raw, single = bench_interleaved(env, args.steps)
    out = {
        "resolution": res,
        "raw_render_fps": round(raw, 1),
        "env_steps_per_s": round(single, 1),
        "env_fraction_of_raw": round(single / raw, 3),
    }
    env.close()
    if not args.no_vector:
        out[f"vector_env_steps_per_s_{args.num_envs}"] = round(
            bench_vec(args.num_envs, args.steps // 2, args.resolution), 1
        )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
