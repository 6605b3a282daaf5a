"""Soak test of V4SNav-v0: many steps and scene-changing resets in one process; fails on a memory or GL leak.

Usage::

    python benchmarks/bench_soak.py                                   # 10,000 steps, 200 resets, val_scenes
    python benchmarks/bench_soak.py --steps 2000 --resets 40 --sample-every 100   # a quick run
    python benchmarks/bench_soak.py --cache-dir ~/.cache/v4s_agent/scenes         # on a warm cache

Runs ``--steps`` random move/turn actions (no STOP) on ``gym.make("V4SNav-v0", split=...)``, with a
seeded reset every ``steps / resets`` steps (seed k draws a random scene of the split, so most resets load
a scene and evict one from the env's small in-memory LRU). Every ``--sample-every`` steps it records:

* ``rss_mb``: resident memory (``/proc/self/statm``, after ``gc.collect()`` and glibc's ``malloc_trim``);
* ``gl_objects``: moderngl objects alive and not released (buffers, vertex arrays, programs,
  framebuffers, renderbuffers, textures), found with ``gc.get_objects()`` (moderngl keeps no registry
  of live objects: ``Context.objects`` only queues dead ones in ``gc_mode="context_gc"``);
* ``renderers``: ``GLRenderer`` instances not closed; ``bundles``: scenes the env holds;
* ``py_blocks``: ``sys.getallocatedblocks()`` (Python heap blocks).

The first ``--warmup`` fraction of the steps (at least until the env's scene LRU is full) is warm-up
(allocator pools, caches filling). It reports the first and last samples, the RSS growth after warm-up
(mean of the last quarter of the samples minus the mean of the first quarter after warm-up: the resident
scenes differ in size, so single samples move by tens of MB) and the least-squares slope, and exits 1 if
that growth exceeds ``--max-growth-mb``, if the live GL objects or renderers at the end exceed the warm-up
maximum, or if any outlive ``env.close()`` (beyond the process-wide texture atlas). Prints one JSON line
(``--samples`` adds every sample).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import shutil
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np

import v4s_agent

_MGL_TYPES = ("Buffer", "VertexArray", "Program", "Framebuffer", "Renderbuffer", "Texture", "TextureArray",
              "Texture3D", "TextureCube", "Sampler", "Query", "Scope", "ComputeShader")  # fmt: skip


def rss_mb() -> float:
    """Resident memory after returning free heap pages to the OS (glibc ``malloc_trim``), so that the
    figure follows live memory rather than how fragmented the allocator's free lists happen to be."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_gl() -> tuple[int, int]:
    """(moderngl objects not released, GLRenderer instances not closed) reachable by the collector."""
    import moderngl
    from v4s_agent.envs.renderer_gl import GLRenderer

    types = tuple(getattr(moderngl, n) for n in _MGL_TYPES if hasattr(moderngl, n))
    n_obj = n_rend = 0
    for o in gc.get_objects():
        if isinstance(o, types):
            mglo = getattr(o, "mglo", None)
            if mglo is not None and type(mglo).__name__ != "InvalidObject":
                n_obj += 1
        elif isinstance(o, GLRenderer) and not o._released:
            n_rend += 1
    return n_obj, n_rend


def sample(step: int, env) -> dict:
    gc.collect()
    n_obj, n_rend = live_gl()
    return {"step": step, "rss_mb": round(rss_mb(), 1), "gl_objects": n_obj, "renderers": n_rend,
            "bundles": len(env.unwrapped._bundles), "py_blocks": sys.getallocatedblocks()}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--resets", type=int, default=200)
    ap.add_argument("--split", default="val_scenes")
    ap.add_argument("--sample-every", type=int, default=250)
    ap.add_argument("--warmup", type=float, default=0.25, help="fraction of the steps that is warm-up")
    ap.add_argument("--max-growth-mb", type=float, default=32.0, help="RSS growth allowed after warm-up")
    ap.add_argument("--tour-frames", type=int, default=48)
    ap.add_argument("--cache-dir", default=None, help="scene cache (default: a new temporary directory)")
    ap.add_argument("--samples", action="store_true", help="print every sample")
    args = ap.parse_args()
    tmp = None if args.cache_dir else tempfile.mkdtemp(prefix="v4s_soak_")
    env = gym.make(v4s_agent.ENV_ID, split=args.split, tour_frames=args.tour_frames,
                   cache_dir=args.cache_dir or tmp)  # fmt: skip
    every = max(1, args.steps // max(1, args.resets))
    acts = np.random.default_rng(0).integers(1, 4, args.steps)  # move / turn, never STOP
    samples, scenes, resets = [], set(), 0
    t0 = time.perf_counter()
    try:
        for i, a in enumerate(acts):
            if i % every == 0 and resets < args.resets:
                env.reset(seed=resets)
                resets += 1
                scenes.add(env.unwrapped._scene_key)
            _, _, term, trunc, _ = env.step(int(a))
            if term or trunc:
                env.reset()
            if (i + 1) % args.sample_every == 0 or i == 0:
                samples.append(sample(i + 1, env))
        wall = time.perf_counter() - t0
    finally:
        env.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    gc.collect()
    after_close = live_gl()
    from v4s_agent.envs import nav_env, renderer_gl

    # shared by every renderer of the process and kept on purpose (the procedural texture atlas and the
    # compiled shader programs)
    kept = [*getattr(renderer_gl, "_TEXTURES", {}), *getattr(renderer_gl, "_PROGRAMS", {})]
    shared = sum(1 for k in kept if k[0] == os.getpid())
    # warm-up covers the in-memory scene LRU filling up
    warm_step = max(args.warmup * args.steps, (nav_env._BUNDLE_LRU + 1) * every)
    post = [s for s in samples if s["step"] >= warm_step]
    base = post[0]
    x = np.array([s["step"] for s in post], float)
    y = np.array([s["rss_mb"] for s in post], float)
    slope = float(np.polyfit(x, y, 1)[0] * 1000) if len(post) > 1 else 0.0
    warm = [s for s in samples if s["step"] <= base["step"]]
    # RSS moves with the scenes the LRU happens to hold: compare the means of the first and last quarters
    q = max(1, len(post) // 4)
    growth = float(np.mean(y[-q:]) - np.mean(y[:q]))
    fails = []
    if growth > args.max_growth_mb:
        fails.append(f"RSS grew {growth:.1f} MB after warm-up (limit {args.max_growth_mb} MB)")
    for k in ("gl_objects", "renderers"):
        if samples[-1][k] > max(s[k] for s in warm):
            fails.append(f"{k} {samples[-1][k]} at the end > {max(s[k] for s in warm)} during warm-up")
    if after_close[0] > shared or after_close[1]:
        fails.append(f"after env.close(): {after_close[0]} GL objects ({shared} shared by the process), "
                     f"{after_close[1]} renderers alive")  # fmt: skip
    out = {
        "steps": args.steps, "resets": resets, "distinct_scenes": len(scenes), "split": args.split,
        "wall_s": round(wall, 1), "steps_per_s_incl_resets": round(args.steps / wall, 1),
        "first": samples[0], "after_warmup": base, "last": samples[-1],
        "rss_growth_after_warmup_mb": round(growth, 1), "rss_slope_mb_per_1k_steps": round(slope, 2),
        "max_gl_objects": max(s["gl_objects"] for s in samples),
        "after_close": after_close, "shared_gl_objects": shared,
        "max_growth_mb": args.max_growth_mb, "ok": not fails, "failures": fails,
        "machine": {"cpus": os.cpu_count(), "loadavg": [round(v, 2) for v in os.getloadavg()]},
    }  # fmt: skip
    if args.samples:
        out["samples"] = samples
    print(json.dumps(out))
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(main())
