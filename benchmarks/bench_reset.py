"""Benchmark scene-changing resets of V4SNav-v0 (cold vs warm disk cache) and random-action steps/s with
resets included, as an RL user sees them.

Usage::

    python benchmarks/bench_reset.py                      # cold + warm resets, 200 steps on val_scenes
    python benchmarks/bench_reset.py --resets 8 --steps 200 --split val_scenes
    python benchmarks/bench_reset.py --cache-dir /tmp/v4s_cache --warm-all   # steps on a fully warm cache
    python benchmarks/bench_reset.py --scene-repeat 10    # unseeded resets stay 10 episodes per scene

* cold: ``--resets`` seeded resets of ``gym.make("V4SNav-v0", split=...)``, each on a scene not seen
  before, with an empty cache directory (the scene, nav grid, goal viewpoints and tour are built and
  written);
* warm: the same resets in a new env (empty in-memory LRU, same process) reading that directory;
* steps: ``reset(seed=0)`` then ``--steps`` actions from ``action_space.sample()`` (STOP included, so
  episodes are short), ``reset()`` whenever an episode ends; the figure is steps / wall time, resets
  included. Its cache is ``--cache-dir`` (default: the directory the warm run used, so scenes it has not
  seen are built cold); ``--warm-all`` first builds every scene of the split into it (scene, grid, tour
  and the goal viewpoints of one category per scene: a category seen for the first time in a scene still
  costs one goal-viewpoint computation, then it is cached too).

Prints one JSON line. The machine (CPU count, load average) is part of the output: absolute numbers on
a shared machine move with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import gymnasium as gym
from gymnasium.utils import seeding
from v4s_agent.envs.scenes import SPLITS

import v4s_agent  # noqa: F401  (registers V4SNav-v0)


def scene_index(split: str, seed: int) -> int:
    """The scene a seeded reset of a split env draws (its first draw from the seeded generator)."""
    return int(seeding.np_random(seed)[0].integers(SPLITS[split].n_scenes))


def distinct_scene_seeds(split: str, n: int, start: int = 1000, avoid=()) -> list[int]:
    """Seeds whose seeded resets draw ``n`` different scenes of ``split``, none of ``avoid``."""
    seeds, seen, s = [], set(avoid), start
    while len(seeds) < n:
        idx = scene_index(split, s)
        if idx not in seen:
            seen.add(idx)
            seeds.append(s)
        s += 1
    return seeds


def time_resets(env, seeds: list[int]) -> list[float]:
    out = []
    for s in seeds:
        t = time.perf_counter()
        env.reset(seed=s)
        out.append(time.perf_counter() - t)
    return out


def summary(times: list[float]) -> dict:
    return {"median": round(statistics.median(times), 3), "all": [round(x, 3) for x in times]}


def random_steps(env, steps: int, seed: int = 0) -> dict:
    env.action_space.seed(seed)
    scenes = []
    t = time.perf_counter()
    env.reset(seed=seed)
    resets = 1
    scenes.append(env.unwrapped._scene_key)
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
            resets += 1
            scenes.append(env.unwrapped._scene_key)
    dt = time.perf_counter() - t
    switches = sum(a != b for a, b in zip(scenes[:-1], scenes[1:], strict=True)) + 1
    return {"steps": steps, "seconds": round(dt, 3), "steps_per_s": round(steps / dt, 1),
            "resets": resets, "scene_loads": switches}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="val_scenes")
    ap.add_argument("--resets", type=int, default=6, help="scene-changing resets, cold and warm")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--tour-frames", type=int, default=48)
    ap.add_argument("--scene-repeat", type=int, default=1)
    ap.add_argument("--cache-dir", default=None, help="cache of the steps run (default: the warm run's)")
    ap.add_argument("--warm-all", action="store_true", help="build every scene of the split first")
    args = ap.parse_args()
    res = (args.resolution, args.resolution)
    kw = {"split": args.split, "resolution": res, "tour_frames": args.tour_frames}
    out: dict = {
        "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
        "split": args.split,
        "resolution": args.resolution,
        "tour_frames": args.tour_frames,
    }
    tmp = tempfile.mkdtemp(prefix="v4s_bench_reset_")
    try:
        seeds = distinct_scene_seeds(args.split, args.resets, avoid=[scene_index(args.split, 0)])
        env = gym.make("V4SNav-v0", cache_dir=tmp, **kw)
        env.reset(seed=0)  # GL context, shader compile, texture upload: once per process, not per scene
        cold = time_resets(env, seeds)
        env.close()
        env = gym.make("V4SNav-v0", cache_dir=tmp, **kw)
        warm = time_resets(env, seeds)
        env.close()
        out["cold_reset_s"] = summary(cold)
        out["warm_reset_s"] = summary(warm)
        cache = args.cache_dir or tmp
        if args.warm_all:
            env = gym.make("V4SNav-v0", cache_dir=cache, **kw)
            n = SPLITS[args.split].n_scenes
            t = time.perf_counter()
            for s in distinct_scene_seeds(args.split, n, start=0):
                env.reset(seed=s)
            out["warm_all_s"] = round(time.perf_counter() - t, 1)
            env.close()
        cache_state = (
            "every scene built first (--warm-all)"
            if args.warm_all
            else "as found in --cache-dir"
            if args.cache_dir
            else "cold except the scenes of the warm run"
        )
        env = gym.make("V4SNav-v0", cache_dir=cache, scene_repeat=args.scene_repeat, **kw)
        out["random_steps"] = {**random_steps(env, args.steps), "scene_repeat": args.scene_repeat,
                               "cache": cache_state}  # fmt: skip
        env.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
