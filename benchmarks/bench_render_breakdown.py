"""Where a frame of the moderngl renderer goes: the shipped frame against the same frame without the
texture lookup (vertex colour only) and without reading depth and semantics back, on the poses of a
random walk in the embedded default scene, in alternating blocks in one process (so load changes on a
shared machine hit every variant alike). The variants are measurements only; the env never uses them.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_render_breakdown.py --steps 1000 --resolution 128

Prints one JSON line: frames/s per variant and each one's ratio to the shipped frame. A second line
times llvmpipe's draw module alone (an 8×8 target, so rasterisation is negligible): the whole scene
buffer as one draw against the same vertices in pieces of 600 (what ``culling.PortalCuller`` submits).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from v4s_agent.envs import V4SNavEnv
from v4s_agent.envs.renderer_gl import _FS, _VS, LIGHT_DIR, SHADE_AMBIENT, SHADE_DIFFUSE

_LOOKUP = "vec3 tex = u_plain0 && v_layer < 0.5 ? vec3(1.0) : texture(u_tex, vec3(v_uv, v_layer)).rgb;"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    res = (args.resolution, args.resolution)
    env = V4SNavEnv(resolution=res, obs_keys=("rgb", "depth", "semantic"))
    env.reset(seed=0)
    poses = []
    for a in np.random.default_rng(1).integers(1, 4, args.steps):
        env.step(int(a))
        poses.append(env.agent_pose)
    r, ctx = env.renderer, env.renderer.ctx
    if _LOOKUP not in _FS:
        raise SystemExit("the renderer's fragment shader changed; update _LOOKUP in this benchmark")
    flat = ctx.program(vertex_shader=_VS, fragment_shader=_FS.replace(_LOOKUP, "vec3 tex = vec3(1.0);"))
    flat["u_light"].value, flat["u_shade"].value = tuple(LIGHT_DIR), (SHADE_AMBIENT, SHADE_DIFFUSE)
    attrs = ("in_pos", "in_normal", "in_color", "in_id")  # uv and layer are unused without the lookup
    flat_vao = ctx.vertex_array(flat, [(r._vbo, "3f 3f 3f 4x 1f 12x", *attrs)])
    rgb = np.empty((*res, 3), np.uint8)
    depth, sem = np.empty(res, np.float32), np.empty(res, np.int32)

    def shipped(T: np.ndarray) -> None:
        r.draw(T)
        r.read_rgb(rgb), r.read_depth(depth), r.read_semantic(sem)

    def rgb_only(T: np.ndarray) -> None:
        r.draw(T)
        r.read_rgb(rgb)

    def untextured(T: np.ndarray) -> None:
        vao, view = r._vao, np.linalg.inv(T)
        flat["u_mvp"].write((r._proj @ view).astype("f4").T.tobytes())
        flat["u_view"].write(view.astype("f4").T.tobytes())
        r._vao = flat_vao  # the same draw path (culling, multi-draw, void) with the flat program
        try:
            r.draw(T)
        finally:
            r._vao = vao
        r.read_rgb(rgb), r.read_depth(depth), r.read_semantic(sem)

    for T in poses[:: max(1, len(poses) // 10)]:  # the flat variant draws the same geometry
        shipped(T)
        want = depth.copy(), sem.copy()
        untextured(T)
        if not (np.array_equal(want[0], depth) and np.array_equal(want[1], sem)):
            raise SystemExit("the untextured variant drew different geometry; the comparison is void")
    variants = {"shipped": shipped, "rgb_only": rgb_only, "untextured": untextured}
    t = dict.fromkeys(variants, 0.0)
    block = 100
    for _ in range(args.repeats):
        for start in range(0, len(poses), block):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                for T in poses[start : start + block]:
                    fn(T)
                t[name] += time.perf_counter() - t0
    fps = {k: round(args.repeats * len(poses) / v, 1) for k, v in t.items()}
    out = {"bench": "render_breakdown", "resolution": list(res), "frames_per_s": fps,
           "ratio_to_shipped": {k: round(v / fps["shipped"], 3) for k, v in fps.items()}}  # fmt: skip
    print(json.dumps(out), flush=True)
    print(json.dumps(bench_draw_sizes(env.scene, poses[:: max(1, len(poses) // 8)])), flush=True)
    env.close()


def bench_draw_sizes(scene, poses: list[np.ndarray], pieces: int = 600, n: int = 50) -> dict:
    """ms per frame to submit every vertex of ``scene`` as one draw vs in ``pieces``-vertex draws (one
    multi-draw either way), at 8×8 pixels, alternating on each pose: the mean over the poses and the
    largest per-pose ratio (it depends on the pose)."""
    from v4s_agent.envs.renderer_gl import GLRenderer

    r = GLRenderer(scene, (8, 8), cull=False)
    ctx, nv = r.ctx, r.culler.n_vertices
    bufs = {}
    for name, size in (("one_draw", nv), (f"pieces_of_{pieces}", pieces)):
        starts = np.arange(0, nv, size)
        cmds = np.stack(
            [np.minimum(size, nv - starts), np.ones_like(starts), starts, 0 * starts, 0 * starts], 1
        )
        bufs[name] = (ctx.buffer(cmds.astype(np.uint32).tobytes()), len(cmds))
    t = dict.fromkeys(bufs, 0.0)
    worst = 0.0
    for T in poses:
        view = np.linalg.inv(T)
        tp = dict.fromkeys(bufs, 0.0)
        for _ in range(n):
            for name, (buf, count) in bufs.items():
                r._prog["u_mvp"].write((r._proj @ view).astype("f4").T.tobytes())
                r._prog["u_view"].write(view.astype("f4").T.tobytes())
                r.fbo.use()
                r.fbo.clear(depth=1.0)
                ctx.enable(ctx.DEPTH_TEST)
                ctx.finish()
                t0 = time.perf_counter()
                r._vao.render_indirect(buf, count=count)
                ctx.finish()
                tp[name] += time.perf_counter() - t0
        worst = max(worst, tp["one_draw"] / tp[f"pieces_of_{pieces}"])
        for k in t:
            t[k] += tp[k]
    for buf, _ in bufs.values():
        buf.release()
    r.close()
    return {
        "bench": "draw_sizes",
        "vertices": nv,
        "poses": len(poses),
        "ms_per_frame": {k: round(v / n / len(poses) * 1e3, 3) for k, v in t.items()},
        "largest_pose_ratio": round(worst, 2),
    }


if __name__ == "__main__":
    main()
