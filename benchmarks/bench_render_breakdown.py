"""Where a frame of the moderngl renderer goes, on the poses of a random walk in the embedded default
scene, in alternating blocks in one process (so load changes on a shared machine hit every variant
alike). Each variant has its own renderer, so each pose cache sees the same sequence. Against the
shipped frame:

- ``trilinear``: ``LINEAR_MIPMAP_LINEAR`` minification instead of the shipped ``MIN_FILTER`` (with the
  PSNR between the two frames);
- ``buffer_order_uncached``: the scene's draw order and no pose cache (what this renderer did before);
- ``untextured``: no texture lookup (vertex colour only), the lookup's share of a frame;
- ``rgb_only``: no read-back of depth and semantics.

The variants are measurements only; the env never uses them.

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
from v4s_agent.envs.renderer_gl import (
    _FS,
    _VS,
    LIGHT_DIR,
    MIN_FILTER,
    SHADE_AMBIENT,
    SHADE_DIFFUSE,
    GLRenderer,
)

_LOOKUP = "vec3 tex = u_plain0 && v_layer < 0.5 ? vec3(1.0) : texture(u_tex, vec3(v_uv, v_layer)).rgb;"


class _Uniforms:
    """The flat program's uniforms as the renderer writes them (it has no texture uniforms)."""

    def __init__(self, prog) -> None:
        self.prog = prog

    def __getitem__(self, name: str):
        return self.prog[name] if name in self.prog else _Ignored()


class _Ignored:
    value = None

    def write(self, data: bytes) -> None:
        pass


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
    scene, ctx = env.scene, env.renderer.ctx
    if _LOOKUP not in _FS:
        raise SystemExit("the renderer's fragment shader changed; update _LOOKUP in this benchmark")
    r = {k: GLRenderer(scene, res) for k in ("shipped", "trilinear", "untextured", "rgb_only")}
    r["buffer_order_uncached"] = GLRenderer(scene, res, order="buffer")
    r["buffer_order_uncached"].POSE_CACHE = 0
    # trilinear: its own copy of the texture array (the shipped one is shared by every renderer)
    layers = np.ascontiguousarray(scene.texture_layers(), np.uint8)
    tri = ctx.texture_array((layers.shape[2], layers.shape[1], layers.shape[0]), 4, layers.tobytes())
    tri.build_mipmaps()
    tri.filter, tri.repeat_x, tri.repeat_y = (ctx.LINEAR_MIPMAP_LINEAR, ctx.LINEAR), True, True
    r["trilinear"]._tex = tri
    # untextured: the same draw path (culling, multi-draw, void) with a program without the lookup
    flat = ctx.program(vertex_shader=_VS, fragment_shader=_FS.replace(_LOOKUP, "vec3 tex = vec3(1.0);"))
    flat["u_light"].value, flat["u_shade"].value = tuple(LIGHT_DIR), (SHADE_AMBIENT, SHADE_DIFFUSE)
    attrs = ("in_pos", "in_normal", "in_color", "in_id")  # uv and layer are unused without the lookup
    r["untextured"]._vao = ctx.vertex_array(flat, [(r["untextured"]._vbo, "3f 3f 3f 4x 1f 12x", *attrs)])
    r["untextured"]._prog = _Uniforms(flat)
    rgb = np.empty((*res, 3), np.uint8)
    depth, sem = np.empty(res, np.float32), np.empty(res, np.int32)

    def frame(name: str, T: np.ndarray) -> None:
        r[name].draw(T)
        r[name].read_rgb(rgb)
        if name != "rgb_only":
            r[name].read_depth(depth), r[name].read_semantic(sem)

    psnr = []
    for T in poses[:: max(1, len(poses) // 20)]:  # every variant draws the same geometry
        want = r["shipped"].render(T)
        for name in r:
            got = r[name].render(T)
            if any(not np.array_equal(want[k], got[k]) for k in ("depth", "semantic")):
                raise SystemExit(f"the {name} variant drew different geometry; the comparison is void")
            if name == "trilinear":
                mse = float(np.mean((want["rgb"].astype(np.float64) - got["rgb"]) ** 2))
                psnr.append(10 * np.log10(255.0**2 / max(mse, 1e-12)))
    for x in r.values():  # every pose cache starts empty
        x._poses.clear()
    t = dict.fromkeys(r, 0.0)
    block = 100
    for _ in range(args.repeats):
        for start in range(0, len(poses), block):
            for name in r:
                t0 = time.perf_counter()
                for T in poses[start : start + block]:
                    frame(name, T)
                t[name] += time.perf_counter() - t0
    fps = {k: round(args.repeats * len(poses) / v, 1) for k, v in t.items()}
    out = {
        "bench": "render_breakdown",
        "resolution": list(res),
        "min_filter": MIN_FILTER,
        "frames_per_s": fps,
        "ratio_to_shipped": {k: round(v / fps["shipped"], 3) for k, v in fps.items()},
        "trilinear_psnr_db": {"min": round(min(psnr), 1), "mean": round(float(np.mean(psnr)), 1)},
    }
    print(json.dumps(out), flush=True)
    print(json.dumps(bench_draw_sizes(scene, poses[:: max(1, len(poses) // 8)])), flush=True)
    for x in r.values():
        x.close()
    tri.release()
    env.close()


def bench_draw_sizes(scene, poses: list[np.ndarray], pieces: int = 600, n: int = 50) -> dict:
    """ms per frame to submit every vertex of ``scene`` as one draw vs in ``pieces``-vertex draws (one
    multi-draw either way), at 8×8 pixels, alternating on each pose: the mean over the poses and the
    largest per-pose ratio (it depends on the pose)."""
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
