"""Benchmark V4SNav-v0: env steps/s (single process and vector env) vs the raw renderer's frames/s, and,
when habitat-sim is installed, the moderngl and habitat_sim backends side by side.

Usage::

    python benchmarks/bench_env.py --steps 2000 --resolution 128 --num-envs 2
    OMP_NUM_THREADS=1 python benchmarks/bench_env.py --no-vector --backend-steps 1000   # + habitat_sim

Prints one JSON line per measurement. All figures use RGB + depth + semantics at the given resolution.
The backend comparison runs both backends in ONE process, alternating blocks of the same action
sequence from the same start, so load changes on a shared machine hit both equally; it does so on
Habitat's ``simple_room.glb`` (pose task) and on the embedded default scene (``gym.make("V4SNav-v0")``'s,
exported with ``Scene.export_glb`` and loaded back; object task). The moderngl figures include its
pose cache (a pose drawn again reuses its uniforms and draw commands; habitat-sim has none): the first
line gives the share of steps it served on the walk.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from v4s_agent.envs import V4SNavEnv

import v4s_agent  # noqa: F401  (registers V4SNav-v0)

KEYS = ("rgb", "depth", "semantic")
SIMPLE_ROOM = Path(v4s_agent.envs.__file__).parent / "assets" / "habitat_test_assets" / "simple_room.glb"


def cpu_probe_ms() -> float:
    """ms for a fixed pure-Python loop (best of 3): a yardstick of how fast this shared VM is running
    right now, printed beside the figures so that slow phases show."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        sum(i * i for i in range(200_000))
        best = min(best, time.perf_counter() - t)
    return round(best * 1e3, 2)


def bench_interleaved(env: V4SNavEnv, steps: int, block: int = 100) -> tuple[float, float, float]:
    """(raw renderer frames/s, env steps/s, pose-cache hit fraction), measured in alternating blocks so
    that load changes on a shared machine hit both equally. Env = ``step`` with random moves/turns (no
    STOP); raw = draw + read back rgb, depth and semantics into preallocated arrays, of the same poses in
    the same order, by a second renderer of the scene (its pose cache sees the same sequence as the
    env's). The hit fraction is the share of steps whose pose the renderer's pose cache held (the agent
    turned back to it or bumped a wall)."""
    from v4s_agent.envs.renderer_gl import GLRenderer

    acts = np.random.default_rng(1).integers(1, 4, steps)
    walker = V4SNavEnv(resolution=(env.renderer.height, env.renderer.width), obs_keys=env.obs_keys)
    walker.reset(seed=0)  # records the walk's poses, so that neither timed renderer has seen them
    poses = []
    for a in acts:
        walker.step(int(a))
        poses.append(walker.agent_pose)
    walker.close()
    r = GLRenderer(env.scene, (env.renderer.height, env.renderer.width))
    rgb = np.empty((r.height, r.width, 3), np.uint8)
    depth = np.empty((r.height, r.width), np.float32)
    sem = np.empty((r.height, r.width), np.int32)
    env.reset(seed=0)
    t_raw = t_env = 0.0
    for start in range(0, steps, block):
        t = time.perf_counter()
        for a in acts[start : start + block]:
            env.step(int(a))
        t_env += time.perf_counter() - t
        t = time.perf_counter()
        for T in poses[start : start + block]:
            r.draw(T)
            r.read_rgb(rgb)
            r.read_depth(depth)
            r.read_semantic(sem)
        t_raw += time.perf_counter() - t
    if not np.array_equal(env.agent_pose, poses[-1]):
        raise RuntimeError("the timed env left the recorded walk; the raw comparison is void")
    hits = r.pose_cache_hits  # the raw renderer drew exactly the walk's poses, once each
    r.close()
    return steps / t_raw, steps / t_env, hits / steps


def bench_culling(env: V4SNavEnv, steps: int, block: int = 100) -> tuple[float, float]:
    """(frames/s with culling, frames/s without) on the poses of a random walk, alternating blocks in one
    process: the env's renderer (portal + back-face culling) against one that draws every triangle."""
    from v4s_agent.envs.renderer_gl import GLRenderer

    culled = env.renderer
    full = GLRenderer(env.scene, (culled.height, culled.width), cull=False)
    env.reset(seed=0)
    poses = []
    for a in np.random.default_rng(1).integers(1, 4, steps):
        env.step(int(a))
        poses.append(env.agent_pose)
    rgb = np.empty((culled.height, culled.width, 3), np.uint8)
    depth = np.empty((culled.height, culled.width), np.float32)
    sem = np.empty((culled.height, culled.width), np.int32)
    t = {"cull": 0.0, "full": 0.0}
    for start in range(0, steps, block):
        for name, r in (("cull", culled), ("full", full)):
            t0 = time.perf_counter()
            for T in poses[start : start + block]:
                r.draw(T)
                r.read_rgb(rgb)
                r.read_depth(depth)
                r.read_semantic(sem)
            t[name] += time.perf_counter() - t0
    full.close()
    return steps / t["cull"], steps / t["full"]


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


# ------------------------------------------------------------------------------ moderngl vs habitat_sim
def _raw_block(r, poses, bufs) -> float:
    t = time.perf_counter()
    for T in poses:
        r.draw(T)
        r.read_rgb(bufs[0])
        r.read_depth(bufs[1])
        r.read_semantic(bufs[2])
    return time.perf_counter() - t


def bench_backends(name: str, scene: str, task: str, steps: int, resolution: int, block: int = 100) -> dict:
    """Both backends in this process on ``scene``: first reset time, then env steps/s and raw frames/s
    over the same action sequence in alternating blocks (the habitat block runs with habitat-sim's GL
    context current, as in a habitat-only process)."""
    from v4s_agent.envs.renderer_habitat import _SHARED, HabitatSimRenderer

    res = (resolution, resolution)
    out: dict = {"bench": "backends", "scene": name, "task": task, "resolution": resolution, "steps": steps}
    envs, first = {}, {}
    for backend in ("moderngl", "habitat_sim"):
        created = backend == "habitat_sim" and _SHARED.sim is None
        env = V4SNavEnv(task=task, scene=scene, backend=backend, resolution=res, obs_keys=KEYS)
        t = time.perf_counter()
        env.reset(seed=0)  # scene load, renderer (habitat: simulator creation or reconfigure), tour, goal
        first[backend] = time.perf_counter() - t
        envs[backend] = env
        if backend == "habitat_sim":
            out["habitat_simulator"] = "created" if created else "reconfigured"
            out["habitat_gpu_device_id"] = env.renderer.gpu_device_id
    acts = np.random.default_rng(1).integers(1, 4, steps)
    t_env = dict.fromkeys(envs, 0.0)
    t_raw = dict.fromkeys(envs, 0.0)
    bufs = (np.empty((*res, 3), np.uint8), np.empty(res, np.float32), np.empty(res, np.int32))
    for start in range(0, steps, block):
        chunk = acts[start : start + block]
        poses = {}
        for backend, env in envs.items():
            ctx = env.renderer.gl_context() if backend == "habitat_sim" else contextlib.nullcontext()
            with ctx:
                t = time.perf_counter()
                visited = []
                for a in chunk:
                    env.step(int(a))
                    visited.append(env.agent_pose)
                t_env[backend] += time.perf_counter() - t
                poses[backend] = visited
                t_raw[backend] += _raw_block(env.renderer, visited, bufs)
        same = all(np.array_equal(a, b) for a, b in zip(poses["moderngl"], poses["habitat_sim"], strict=True))
        if not same:
            raise RuntimeError("the two backends' envs left the same action sequence at different poses")
    t = time.perf_counter()  # a scene switch alone: another renderer reconfigures the one simulator
    HabitatSimRenderer(envs["habitat_sim"].scene, res, keys=KEYS).close()
    out["habitat_scene_switch_s"] = round(time.perf_counter() - t, 3)
    for backend, env in envs.items():
        key = "moderngl" if backend == "moderngl" else "habitat"
        out[f"{key}_first_reset_s"] = round(first[backend], 3)
        out[f"{key}_env_steps_per_s"] = round(steps / t_env[backend], 1)
        out[f"{key}_raw_render_fps"] = round(steps / t_raw[backend], 1)
        env.close()
    out["habitat_over_moderngl_env"] = round(
        out["habitat_env_steps_per_s"] / out["moderngl_env_steps_per_s"], 3
    )
    out["habitat_over_moderngl_raw"] = round(
        out["habitat_raw_render_fps"] / out["moderngl_raw_render_fps"], 3
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--num-envs", type=int, default=2)
    ap.add_argument("--no-vector", action="store_true")
    ap.add_argument("--backend-steps", type=int, default=1000, help="steps per backend in the comparison")
    ap.add_argument("--no-habitat", action="store_true", help="skip the habitat_sim comparison")
    args = ap.parse_args()
    res = (args.resolution, args.resolution)
    env = V4SNavEnv(resolution=res, obs_keys=KEYS)
    env.reset(seed=0)
    probe = [cpu_probe_ms()]
    raw, single, hit = bench_interleaved(env, args.steps)
    probe.append(cpu_probe_ms())
    out = {
        "bench": "moderngl",
        "resolution": res,
        "raw_render_fps": round(raw, 1),
        "env_steps_per_s": round(single, 1),
        "env_fraction_of_raw": round(single / raw, 3),
        "pose_cache_hit_fraction": round(hit, 3),
        "cpu_probe_ms_before_after": probe,
    }
    fc, ff = bench_culling(env, args.steps)
    out.update(culled_fps=round(fc, 1), unculled_fps=round(ff, 1), culling_speedup=round(fc / ff, 2))
    env.close()
    if not args.no_vector:
        out[f"vector_env_steps_per_s_{args.num_envs}"] = round(
            bench_vec(args.num_envs, args.steps // 2, args.resolution), 1
        )
    print(json.dumps(out), flush=True)
    if args.no_habitat or importlib.util.find_spec("habitat_sim") is None:
        print(json.dumps({"bench": "backends", "skipped": "habitat_sim is not installed"}), flush=True)
        return
    print(json.dumps(bench_backends("habitat simple_room.glb", str(SIMPLE_ROOM), "pose",
                                    args.backend_steps, args.resolution)), flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="v4s_bench_") as tmp:
        default = gym.make("V4SNav-v0")
        default.reset(seed=0)
        glb = default.unwrapped.scene.export_glb(Path(tmp) / "default_scene.glb")
        default.close()
        print(json.dumps(bench_backends("default scene (export_glb -> load_gltf_scene)", str(glb), "object",
                                        args.backend_steps, args.resolution)), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
