"""Benchmark scene-changing resets of V4SNav-v0 (cold vs warm disk cache, in-memory revisits, same-scene
resets, where a reset's time goes) and random-action steps/s with resets included, as an RL user sees them.

Usage::

    python benchmarks/bench_reset.py                      # cold + warm resets, 200 steps on val_scenes
    python benchmarks/bench_reset.py --resets 8 --steps 200 --split val_scenes
    python benchmarks/bench_reset.py --cache-dir /tmp/v4s_cache --warm-all   # steps on a fully warm cache
    python benchmarks/bench_reset.py --cache-dir /tmp/v4s_cache --skip-resets --repeat 3   # steps only
    python benchmarks/bench_reset.py --scene-repeat 10    # unseeded resets stay 10 episodes per scene
    python benchmarks/bench_reset.py --task pose          # pose goals: a Dijkstra per episode
    python benchmarks/bench_reset.py --skip-resets --cache-dir /tmp/v4s_cache --scene-lru 128 --preload

* cold: ``--resets`` seeded resets of ``gym.make("V4SNav-v0", split=...)``, each on a scene not seen
  before, with an empty cache directory (the scene, nav grid, goals of every category and tour are built
  and written);
* warm: the same resets in a new env (empty in-memory LRU, same process) reading that directory;
  ``warm_breakdown_ms`` is where their time goes (mean per reset, timers around the env's parts; the
  parts nest: ``get_bundle`` holds the loads and the renderer);
* revisit: the same resets again in that env: the scenes are in its in-memory LRU (up to 16);
* same_scene: ``--same`` unseeded resets that stay in one scene (``scene_repeat`` large);
* renderer: draw + read-back of what a step renders (rgb + semantic) from the tour poses of one scene;
* steps: ``reset(seed=0)`` then ``--steps`` actions from ``action_space.sample()`` (STOP included, so
  episodes are short: about one reset per 4 steps), ``reset()`` whenever an episode ends; the figure is
  steps / wall time, resets included, with the time in ``step`` and in ``reset`` apart. Its cache is
  ``--cache-dir`` (default: the directory the warm run used, so scenes it has not seen are built cold);
  ``--warm-all`` first builds every scene of the split into it (a scene's first reset builds the goals
  of all its categories, so afterwards no reset builds anything). ``--repeat`` runs it that many times
  (new env each time, seeds 0, 1, ...), after a first reset in the process (the GL context, shader
  compiles and texture atlas are a process's one-time cost, not a reset's). ``--scene-lru N`` sets the
  env's in-memory LRU; ``--preload`` first visits every scene of the split in the run's env, so with
  ``--scene-lru`` at least the split's size every scene change is a revisit (an RL run's steady state).

Prints one JSON line. The machine (CPU count, load average) is part of the output: absolute numbers on
a shared machine move with its load.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import tempfile
import time

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from v4s_agent.envs import nav_env, scene_cache
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


def time_resets(env, seeds: list[int | None]) -> list[float]:
    out = []
    for s in seeds:
        t = time.perf_counter()
        env.reset(seed=s)
        out.append(time.perf_counter() - t)
    return out


def summary(times: list[float], digits: int = 4) -> dict:
    return {"median": round(statistics.median(times), digits), "mean": round(statistics.mean(times), digits),
            "all": [round(x, digits) for x in times]}  # fmt: skip


# the parts of a reset, timed by wrapping them: (owner, attribute, label); indented labels are inside the
# part above them. SceneCache.load is split by artifact (the file of the scene, grid, goals or tour).
PARTS = [
    (nav_env.V4SNavEnv, "_get_bundle", "get_bundle (LRU miss: scene, grid, renderer)"),
    ("load", "scene", "  scene file: open, zip directory, mmap"),
    (nav_env, "restore_scene", "  scene decode (JSON -> Scene)"),
    ("load", "navgrid", "  grid file: open, zip directory, mmap"),
    (nav_env, "restore_navgrid", "  grid decode"),
    (nav_env, "_make_renderer", "  GL renderer (programs, vertex upload)"),
    (nav_env._SceneBundle, "goals", "goals of every category"),
    ("load", "goals", "  goals file: open, zip directory, mmap"),
    (nav_env._SceneBundle, "episode_setup", "goal field + start cells"),
    (nav_env.NavGrid, "distance_field", "distance field (pose task: Dijkstra per episode)"),
    (nav_env.NavGrid, "_build_graph", "  grid graph (pose task: once per scene in memory)"),
    (nav_env.V4SNavEnv, "_observe", "first observation (draw + read-back)"),
    (nav_env.V4SNavEnv, "_info", "info"),
    (nav_env.V4SNavEnv, "_context_copy", "info['context']: tour + copy"),
    ("load", "tour", "  tour file: open, zip directory, mmap"),
]


@contextlib.contextmanager
def timed_parts():
    """Wrap PARTS with perf_counter timers; yields {label: [seconds, calls]}."""
    acc: dict[str, list] = {label: [0.0, 0] for _, _, label in PARTS}
    by_artifact = {name: label for owner, name, label in PARTS if owner == "load"}

    def add(label, t):
        acc[label][0] += time.perf_counter() - t
        acc[label][1] += 1

    saved = []
    for owner, name, label in PARTS:
        if owner == "load":
            continue
        fn = getattr(owner, name)
        saved.append((owner, name, fn))

        def wrap(fn=fn, label=label):
            @functools.wraps(fn)
            def timed(*a, **kw):
                t = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    add(label, t)

            return timed

        setattr(owner, name, wrap())
    load = scene_cache.SceneCache.load
    saved.append((scene_cache.SceneCache, "load", load))

    @functools.wraps(load)
    def timed_load(self, key):
        t = time.perf_counter()
        try:
            return load(self, key)
        finally:
            add(by_artifact.get(key["artifact"], by_artifact["scene"]), t)

    scene_cache.SceneCache.load = timed_load
    try:
        yield acc
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def renderer_fps(env, n: int = 240) -> float:
    """Frames/s of what a step renders (draw + rgb + semantic read-back), over the current scene's tour
    poses (views differ a lot in cost: one pose is not representative)."""
    u = env.unwrapped
    r, poses = u.renderer, u.get_context()["poses"]
    rgb = np.empty((*u.resolution, 3), np.uint8)
    sem = np.empty(u.resolution, np.int32)
    t = time.perf_counter()
    for i in range(n):
        r.draw(poses[i % len(poses)])
        r.read_rgb(rgb)
        r.read_semantic(sem)
    return n / (time.perf_counter() - t)


def random_steps(env, steps: int, seed: int = 0) -> dict:
    env.action_space.seed(seed)
    scenes = []
    t_reset = t_step = 0.0
    t0 = time.perf_counter()
    env.reset(seed=seed)
    t_reset += time.perf_counter() - t0
    resets = 1
    scenes.append(env.unwrapped._scene_key)
    for _ in range(steps):
        t = time.perf_counter()
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        t_step += time.perf_counter() - t
        if term or trunc:
            t = time.perf_counter()
            env.reset()
            t_reset += time.perf_counter() - t
            resets += 1
            scenes.append(env.unwrapped._scene_key)
    dt = time.perf_counter() - t0
    switches = sum(a != b for a, b in zip(scenes[:-1], scenes[1:], strict=True)) + 1
    return {"steps": steps, "seconds": round(dt, 3), "steps_per_s": round(steps / dt, 1),
            "resets": resets, "scene_loads": switches, "step_ms_mean": round(1e3 * t_step / max(steps, 1), 2),
            "reset_ms_mean": round(1e3 * t_reset / resets, 2),
            "time_in_resets": round(t_reset / dt, 3)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="val_scenes")
    ap.add_argument("--task", default="object", choices=("object", "pose"))
    ap.add_argument("--resets", type=int, default=6, help="scene-changing resets, cold and warm")
    ap.add_argument("--same", type=int, default=20, help="same-scene resets")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="random-steps runs")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--tour-frames", type=int, default=48)
    ap.add_argument("--scene-repeat", type=int, default=1)
    ap.add_argument("--scene-lru", type=int, default=None, help="the env's scene_lru (default: its own, 16)")
    ap.add_argument(
        "--preload",
        action="store_true",
        help="steps runs: visit every scene of the split in the env first (its LRU holds them)",
    )
    ap.add_argument("--cache-dir", default=None, help="cache of the steps run (default: the warm run's)")
    ap.add_argument("--warm-all", action="store_true", help="build every scene of the split first")
    ap.add_argument("--skip-resets", action="store_true", help="only the random-steps run(s)")
    args = ap.parse_args()
    res = (args.resolution, args.resolution)
    kw = {"split": args.split, "resolution": res, "tour_frames": args.tour_frames, "task": args.task}
    out: dict = {
        "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
        "split": args.split,
        "task": args.task,
        "resolution": args.resolution,
        "tour_frames": args.tour_frames,
    }
    tmp = tempfile.mkdtemp(prefix="v4s_bench_reset_")
    try:
        if not args.skip_resets:
            seeds = distinct_scene_seeds(args.split, args.resets, avoid=[scene_index(args.split, 0)])
            env = gym.make("V4SNav-v0", cache_dir=tmp, **kw)
            env.reset(seed=0)  # GL context, shader compile, texture upload: once per process, not per scene
            out["cold_reset_s"] = summary(time_resets(env, seeds), 3)
            env.close()
            env = gym.make("V4SNav-v0", cache_dir=tmp, **kw)
            env.reset(seed=0)  # scene 0 is warm too: the process's GL set-up is not a reset's cost
            with timed_parts() as acc:
                warm = time_resets(env, seeds)
            out["warm_reset_s"] = summary(warm)
            n = len(seeds)
            parts = {label: round(1e3 * t / n, 2) for label, (t, c) in acc.items() if c}
            parts["total"] = round(1e3 * sum(warm) / n, 2)
            out["warm_breakdown_ms"] = parts
            out["revisit_reset_s"] = summary(time_resets(env, seeds))  # all in the in-memory LRU
            env.close()
            env = gym.make("V4SNav-v0", cache_dir=tmp, scene_repeat=10**9, **kw)
            env.reset(seed=seeds[0])
            with timed_parts() as acc:
                same = time_resets(env, [None] * args.same)
            out["same_scene_reset_s"] = summary(same)
            n = len(same)
            parts = {label: round(1e3 * t / n, 2) for label, (t, c) in acc.items() if c}
            parts["total"] = round(1e3 * sum(same) / n, 2)
            out["same_scene_breakdown_ms"] = parts
            out["renderer_frames_per_s"] = round(renderer_fps(env), 1)
            env.close()
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
        env = gym.make("V4SNav-v0", cache_dir=cache, **kw)
        env.reset(seed=0)  # once per process (GL context, shaders, texture atlas), not the runs' cost
        env.close()
        runs = []
        lru = {} if args.scene_lru is None else {"scene_lru": args.scene_lru}
        for i in range(args.repeat):
            env = gym.make("V4SNav-v0", cache_dir=cache, scene_repeat=args.scene_repeat, **lru, **kw)
            if args.preload:
                for s in distinct_scene_seeds(args.split, SPLITS[args.split].n_scenes, start=0):
                    env.reset(seed=s)
            runs.append({**random_steps(env, args.steps, seed=i), "scene_repeat": args.scene_repeat,
                         "scene_lru": env.unwrapped.scene_lru, "preloaded": args.preload,
                         "cache": cache_state})  # fmt: skip
            env.close()
        out["random_steps"] = runs[0] if len(runs) == 1 else runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
