"""Headless moderngl renderer: RGB, metric depth and instance ids from ONE draw (multiple render targets).

Why this shape: the env needs ~1000 steps/s on a 2-core CPU (Mesa llvmpipe), so there is one GL context
per process (created lazily, never shared across a fork), the scene lives in one vertex buffer, and the
three targets are read back with ``read_into`` into arrays without intermediate copies. The projection
flips y so the read-back rows are already in image order (row 0 = top).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict

import numpy as np

from .culling import PortalCuller
from .geometry import HFOV_DEG, perspective
from .primitives import VERTEX_FLOATS
from .scenes import Scene

_VS = """
#version 330
uniform mat4 u_mvp;
uniform mat4 u_view;
uniform vec3 u_light; uniform vec2 u_shade;
in vec3 in_pos; in vec3 in_normal; in vec3 in_color; in float in_id; in vec2 in_uv; in float in_layer;
out vec3 v_color; out float v_depth; out vec2 v_uv;
flat out int v_id; flat out float v_layer;
void main() {
    gl_Position = u_mvp * vec4(in_pos, 1.0);
    // two-sided diffuse shade of the (flat) face normal, per vertex: nothing per fragment but the lookup
    v_color = in_color * (u_shade.x + u_shade.y * abs(dot(normalize(in_normal), u_light)));
    v_uv = in_uv; v_layer = in_layer;
    v_depth = -(u_view * vec4(in_pos, 1.0)).z;
    v_id = int(in_id + 0.5);
}
"""

# base colour = vertex colour x texture (glTF's rule), times the shade
_FS = """
#version 330
in vec3 v_color; in float v_depth; in vec2 v_uv;
flat in int v_id; flat in float v_layer;
layout(location = 0) out vec4 f_color;
layout(location = 1) out float f_depth;
layout(location = 2) out int f_id;
uniform sampler2DArray u_tex;
uniform bool u_plain0;  // layer 0 is plain white: skip its lookup (llvmpipe's trilinear fetch is dear)
void main() {
    vec3 tex = u_plain0 && v_layer < 0.5 ? vec3(1.0) : texture(u_tex, vec3(v_uv, v_layer)).rgb;
    f_color = vec4(clamp(v_color * tex, 0.0, 1.0), 1.0);
    f_depth = v_depth;
    f_id = v_id;
}
"""

_BG_VS = """
#version 330
in vec2 in_pos; out float v_y;
void main() { gl_Position = vec4(in_pos, 0.9999, 1.0); v_y = in_pos.y; }
"""

_BG_FS = """
#version 330
in float v_y; uniform vec3 u_top; uniform vec3 u_bottom; uniform float u_flip;
layout(location = 0) out vec4 f_color;
layout(location = 1) out float f_depth;
layout(location = 2) out int f_id;
void main() {
    float t = 0.5 + 0.5 * v_y * u_flip;
    f_color = vec4(mix(u_bottom, u_top, t), 1.0); f_depth = 0.0; f_id = 0;
}
"""

#: the fixed light: a surface's shade is 0.55 + 0.45 |n . LIGHT_DIR| (two-sided); other renderers match it
LIGHT_DIR = np.array([0.4, 0.8, 0.45]) / np.linalg.norm([0.4, 0.8, 0.45])
SHADE_AMBIENT, SHADE_DIFFUSE = 0.55, 0.45
VOID_RGB = (0.2, 0.2, 0.22)  #: background where nothing is hit, indoors
SKY_TOP_RGB, SKY_BOTTOM_RGB = (0.55, 0.72, 0.95), (0.85, 0.9, 0.95)  #: sky gradient of outdoor scenes

#: minification: bilinear in the nearest mip level. Trilinear (``LINEAR_MIPMAP_LINEAR``) blends two levels
#: per lookup, which llvmpipe pays for in every textured fragment: frames differ from it by 49.6 dB PSNR at
#: worst (mean 57.5 dB) on the benchmark walk and are drawn 1.04-1.18x faster
#: (``benchmarks/bench_render_breakdown.py``). Exported GLBs name the same filter.
MIN_FILTER = "LINEAR_MIPMAP_NEAREST"

_LOCK = threading.Lock()
_CTX: dict[int, object] = {}
_TEXTURES: dict[tuple[int, int], object] = {}  # (pid, id(images)) -> GL texture array of shared images
_PROGRAMS: dict[tuple[int, str, str], object] = {}  # (pid, vertex, fragment source) -> compiled program


def get_context():
    """The process's shared standalone EGL context (created on first use; a forked child makes its own)."""
    import moderngl

    pid = os.getpid()
    with _LOCK:
        ctx = _CTX.get(pid)
        if ctx is None and _CTX:
            raise RuntimeError(
                "this process was forked from one that had already created an OpenGL context; Mesa/EGL "
                "cannot render in such a child (it would hang). Create envs before rendering in the parent, "
                "or start workers with spawn/forkserver: gymnasium.vector.AsyncVectorEnv(fns, "
                "context='forkserver')"
            )
        if ctx is None:
            try:
                ctx = moderngl.create_context(standalone=True, backend="egl")
            except Exception as exc:  # pragma: no cover - depends on the machine
                raise RuntimeError(
                    f"could not create a headless OpenGL 3.3 context via EGL ({exc}); install Mesa EGL "
                    "(apt-get install libegl1 libgl1-mesa-dri) or an NVIDIA driver"
                ) from exc
            _CTX[pid] = ctx
        return ctx


def shared_program(ctx, vertex_shader: str, fragment_shader: str):
    """A shader program compiled once per process and shared by every user (all renderers, the env's
    semantic probe), so a scene switch does not pay llvmpipe's shader compilation again."""
    key = (os.getpid(), vertex_shader, fragment_shader)
    prog = _PROGRAMS.get(key)
    if prog is None:
        prog = _PROGRAMS[key] = ctx.program(vertex_shader=vertex_shader, fragment_shader=fragment_shader)
    return prog


def _programs(ctx):
    """The scene and background programs (shared), with their constant uniforms set."""
    prog = shared_program(ctx, _VS, _FS)
    prog["u_light"].value = tuple(LIGHT_DIR)
    prog["u_shade"].value = (SHADE_AMBIENT, SHADE_DIFFUSE)
    prog["u_tex"].value = 0
    bg = shared_program(ctx, _BG_VS, _BG_FS)
    bg["u_flip"].value = -1.0
    return prog, bg


def _check_resolution(resolution) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in resolution)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"resolution must be (height, width) positive ints, got {resolution!r}") from exc
    if h <= 0 or w <= 0 or h > 8192 or w > 8192:
        raise ValueError(f"resolution must be (height, width) with 0 < size <= 8192, got {resolution!r}")
    return h, w


class GLRenderer:
    """Render a ``Scene`` from camera-to-world poses.

    Args:
        scene: the scene to draw (uploaded once as one vertex buffer).
        resolution: (height, width) in pixels.
        hfov_deg: horizontal field of view.
        cull: skip the rooms a camera inside a closed room cannot see (``culling.PortalCuller``; the
            image is the same up to depth ties, the frame about 2x cheaper indoors). Scenes without doors
            draw all.
        order: the culler's draw order, ``"front_to_back"`` or ``"buffer"`` (``PortalCuller``).
    """

    POSE_CACHE = 256  #: recent poses whose uniforms and draw commands are kept (agents turn in place)

    def __init__(self, scene: Scene, resolution=(128, 128), hfov_deg: float = HFOV_DEG,
                 near: float = 0.05, far: float = 100.0, cull: bool = True,
                 order: str = "front_to_back") -> None:  # fmt: skip
        self.height, self.width = _check_resolution(resolution)
        self.scene = scene
        self.hfov_deg = float(hfov_deg)
        self.ctx = get_context()
        ctx = self.ctx
        self._prog, self._bg_prog = _programs(ctx)
        self._sky = (SKY_TOP_RGB, SKY_BOTTOM_RGB) if scene.sky else None  # None: a plain void colour
        data = np.ascontiguousarray(scene.vertices, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != VERTEX_FLOATS:
            raise ValueError(f"scene.vertices must be (N, {VERTEX_FLOATS}) float32, got {data.shape}")
        self._vbo = ctx.buffer(data.tobytes())
        self._vao = ctx.vertex_array(
            self._prog,
            [
                (
                    self._vbo,
                    "3f 3f 3f 4x 1f 2f 1f",
                    "in_pos",
                    "in_normal",
                    "in_color",
                    "in_id",
                    "in_uv",
                    "in_layer",
                )
            ],  # fmt: skip
        )
        self._tex, self._own_tex = self._texture_array(scene)
        self._plain0 = bool((scene.texture_layers()[0] == 255).all())
        self._tex.use(location=0)
        self._bg_vbo = ctx.buffer(np.array([-1, -1, 3, -1, -1, 3], dtype=np.float32).tobytes())
        self._bg_vao = ctx.vertex_array(self._bg_prog, [(self._bg_vbo, "2f", "in_pos")])
        size = (self.width, self.height)
        self._rb = [ctx.renderbuffer(size, 4, dtype="f1"), ctx.renderbuffer(size, 1, dtype="f4"),
                    ctx.renderbuffer(size, 1, dtype="i4")]  # fmt: skip
        self._depth_rb = ctx.depth_renderbuffer(size)
        self.fbo = ctx.framebuffer(color_attachments=self._rb, depth_attachment=self._depth_rb)
        self._rgb_fbo = ctx.framebuffer(color_attachments=self._rb[:1])  # to clear RGB alone to the void
        flip = np.diag([1.0, -1.0, 1.0, 1.0])  # rows come back top-first
        self._proj = flip @ perspective(self.height, self.width, self.hfov_deg, near, far)
        self.culler = PortalCuller(data, scene.rooms, enabled=cull, order=order)
        # one multi-draw command per run; rewritten when the commands change (llvmpipe reads it on the CPU)
        self._indirect = ctx.buffer(reserve=self.culler.max_commands * 20)
        self._in_indirect: bytes | None = None
        self._poses: OrderedDict[bytes, tuple[bytes, bytes, bytes, list]] = OrderedDict()
        self.pose_cache_hits = 0  #: draws served by the pose cache (benchmarks report the share)
        self._released = False

    def _texture_array(self, scene: Scene):
        """The scene's images as a mipmapped, repeat-wrapped texture array. The procedural pattern
        images are shared by every procedural scene, so they are uploaded once per process."""
        images = scene.texture_layers()
        shared = scene.textures is None
        key = (os.getpid(), id(images))
        if shared and key in _TEXTURES:
            return _TEXTURES[key], False
        n, h, w = images.shape[:3]
        tex = self.ctx.texture_array((w, h, n), 4, np.ascontiguousarray(images, np.uint8).tobytes())
        tex.build_mipmaps()
        tex.filter = (getattr(self.ctx, MIN_FILTER), self.ctx.LINEAR)
        tex.repeat_x = tex.repeat_y = True
        if shared:
            _TEXTURES[key] = tex
        return tex, not shared

    # -------------------------------------------------------------------------------------------------
    def draw(self, T_wc: np.ndarray) -> None:
        """Rasterise the scene from rigid camera-to-world pose ``T_wc`` into the framebuffer (no
        read-back)."""
        if self._released:
            raise RuntimeError("GLRenderer was closed")
        T_wc = np.ascontiguousarray(T_wc, dtype=np.float64)
        if T_wc.shape != (4, 4):
            raise ValueError(f"T_wc must be a 4x4 camera-to-world pose, got shape {T_wc.shape}")
        key = T_wc.tobytes()
        hit = self._poses.get(key)
        if hit is None:
            view = np.eye(4)  # inverse of a rigid pose, without a general inversion
            view[:3, :3] = T_wc[:3, :3].T
            view[:3, 3] = -view[:3, :3] @ T_wc[:3, 3]
            mvp64 = self._proj @ view
            cmds, batches = self.culler.draws(T_wc, mvp64)
            hit = (mvp64.astype("f4").T.tobytes(), view.astype("f4").T.tobytes(), cmds.tobytes(), batches)
            self._poses[key] = hit
            while len(self._poses) > self.POSE_CACHE:
                self._poses.popitem(last=False)
        else:
            self._poses.move_to_end(key)
            self.pose_cache_hits += 1
        mvp_bytes, view_bytes, cmd_bytes, batches = hit
        self._prog["u_mvp"].write(mvp_bytes)
        self._prog["u_view"].write(view_bytes)
        ctx = self.ctx
        self._prog["u_plain0"].value = self._plain0  # programs are shared by every renderer
        self._tex.use(location=0)
        self.fbo.clear(depth=1.0)  # depth 0 (no hit), id 0 and RGB 0 on every target
        if self._sky is None:  # indoors the background is one colour: a clear, not a full-screen pass
            self._rgb_fbo.clear(*VOID_RGB, 1.0)
        self.fbo.use()
        ctx.enable(ctx.DEPTH_TEST)
        ctx.depth_func = "<="
        ctx.front_face = "cw"  # the y flip of the projection mirrors the winding on screen
        if cmd_bytes and cmd_bytes != self._in_indirect:
            self._indirect.write(cmd_bytes)
            self._in_indirect = cmd_bytes
        culling = False
        for backface, first, count in batches:
            if backface != culling:
                (ctx.enable if backface else ctx.disable)(ctx.CULL_FACE)
                culling = backface
            self._vao.render_indirect(self._indirect, count=count, first=first)
        ctx.disable(ctx.CULL_FACE)
        if self._sky is not None:
            # sky last, at the far plane: the depth test rejects covered pixels before shading them
            self._bg_prog["u_top"].value, self._bg_prog["u_bottom"].value = self._sky
            self._bg_vao.render()

    def read_rgb(self, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((self.height, self.width, 3), dtype=np.uint8) if out is None else out
        self.fbo.read_into(out, components=3, attachment=0, dtype="f1")
        return out

    def read_depth(self, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((self.height, self.width), dtype=np.float32) if out is None else out
        self.fbo.read_into(out, components=1, attachment=1, dtype="f4")
        return out

    def read_semantic(self, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((self.height, self.width), dtype=np.int32) if out is None else out
        self.fbo.read_into(out, components=1, attachment=2, dtype="i4")
        return out

    def render(self, T_wc: np.ndarray, keys=("rgb", "depth", "semantic")) -> dict[str, np.ndarray]:
        """Draw once and read the requested targets: rgb uint8 (H,W,3), depth float32 metres (H,W) (0 = no
        hit), semantic int32 instance ids (H,W) (0 = structure/background). Arrays are fresh each call."""
        self.draw(T_wc)
        out: dict[str, np.ndarray] = {}
        for k in keys:
            if k == "rgb":
                out["rgb"] = self.read_rgb()
            elif k == "depth":
                out["depth"] = self.read_depth()
            elif k == "semantic":
                out["semantic"] = self.read_semantic()
            else:
                raise ValueError(f"unknown render target {k!r}; expected 'rgb', 'depth' or 'semantic'")
        return out

    def close(self) -> None:
        """Free this renderer's GPU objects (the shared context stays)."""
        if self._released:
            return
        self._released = True
        own = [self._tex] if self._own_tex else []
        for obj in (self._vao, self._bg_vao, self._vbo, self._bg_vbo, self._indirect, self.fbo, self._rgb_fbo,
                    *self._rb, self._depth_rb, *own):  # fmt: skip
            with contextlib.suppress(Exception):
                obj.release()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if os.getpid() in _CTX:
                self.close()
        except Exception:
            pass
