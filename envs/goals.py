"""Where an object goal can be seen from: the checks behind the env's goal viewpoints.

Why a module of its own: finding the floor cells from which a goal object is seen centred (SD < 0.2)
needs hundreds of views per scene. Most candidates are ranked without rendering (``predicted_sd`` of the
object's 3-D box, ``line_of_sight`` on the nav grid's wall mask) and the best are confirmed by a cheap
render of instance ids (``SemanticProbe``); ``V4SNavEnv`` owns the caching and the fallback to its
renderer.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .actions import TURN_ANGLE_DEG
from .navigation import NavGrid

_TURN = math.radians(TURN_ANGLE_DEG)


_PROBE_VS = """
#version 330
uniform mat4 u_mvp;
in vec3 in_pos; in float in_id;
flat out int v_id;
void main() { gl_Position = u_mvp * vec4(in_pos, 1.0); v_id = int(in_id + 0.5); }
"""
_PROBE_FS = """
#version 330
flat in int v_id;
layout(location = 0) out int f_id;
void main() { f_id = v_id; }
"""


class SemanticProbe:
    """Where an object is visible, for the goal-viewpoint checks (hundreds of views per scene, 7x faster
    than the renderer on llvmpipe): the renderer's geometry, projection and depth test, drawing instance
    ids only (no shading, textures, colour or depth targets, no sky pass), and only the triangles that can
    matter: those whose bounding box meets the box around the object's triangles and all the cameras of its
    views. Any surface in front of the object at a pixel lies on the segment from the camera to the
    object's surface there, inside that (convex) box, and the sky is drawn only where nothing nearer than
    ~90 m is, so the object's pixels are the renderer's up to depth ties between coplanar faces, which the
    renderer's back-face culling and nearest-first order may resolve the other way (one pixel in 2 of the
    first 40 ``val_scenes`` scenes; ``tests/test_env_cache.py`` compares them). The env compares each
    scene's views with the renderer's until one shows the object, and uses the renderer for that scene if
    they differ."""

    _MARGIN = 0.05  # m around the box: keeps every triangle within rounding of it

    def __init__(self, renderer) -> None:
        from .geometry import perspective
        from .renderer_gl import shared_program

        ctx = renderer.ctx
        h, w = renderer.height, renderer.width
        self.ctx = ctx
        v = np.asarray(renderer.scene.vertices)
        self._verts = np.ascontiguousarray(v[:, [0, 1, 2, 10]], dtype=np.float32)  # position, instance id
        tri = self._verts.reshape(-1, 3, 4)
        self._tri_lo, self._tri_hi = tri[:, :, :3].min(axis=1), tri[:, :, :3].max(axis=1)
        self._tri_id = np.rint(tri[:, 0, 3]).astype(np.int64)
        self._prog = shared_program(ctx, _PROBE_VS, _PROBE_FS)
        self._rb = ctx.renderbuffer((w, h), 1, dtype="i4")
        self._depth = ctx.depth_renderbuffer((w, h))
        self._fbo = ctx.framebuffer(color_attachments=[self._rb], depth_attachment=self._depth)
        self._proj = np.diag([1.0, -1.0, 1.0, 1.0]) @ perspective(h, w, renderer.hfov_deg)
        self._out = np.empty((h, w), dtype=np.int32)
        self.checked = False

    def object_masks(self, instance_id: int, box_min, box_max, poses: list[np.ndarray]):
        """Yield, per camera-to-world pose, the bool (H, W) mask of the pixels where the object is seen."""
        own = self._tri_id == int(instance_id)
        cams = np.array([T[:3, 3] for T in poses], dtype=np.float64).reshape(-1, 3)
        pts = [cams, np.asarray(box_min, np.float64)[None], np.asarray(box_max, np.float64)[None]]
        if own.any():
            pts += [self._tri_lo[own], self._tri_hi[own]]
        pts = np.concatenate(pts)
        lo, hi = pts.min(axis=0) - self._MARGIN, pts.max(axis=0) + self._MARGIN
        keep = np.all((self._tri_hi >= lo) & (self._tri_lo <= hi), axis=1)
        data = self._verts.reshape(-1, 3, 4)[keep].tobytes()
        if not data:
            for _ in poses:
                yield np.zeros(self._out.shape, dtype=bool)
            return
        vbo = self.ctx.buffer(data)
        vao = self.ctx.vertex_array(self._prog, [(vbo, "3f 1f", "in_pos", "in_id")])
        try:
            for T in poses:
                yield self._draw(vao, T) == int(instance_id)
        finally:
            vao.release()
            vbo.release()

    def _draw(self, vao, T_wc: np.ndarray) -> np.ndarray:
        view = np.linalg.inv(np.asarray(T_wc, dtype=np.float64))
        self._prog["u_mvp"].write((self._proj @ view).astype("f4").T.tobytes())
        ctx = self.ctx
        self._fbo.use()
        self._fbo.clear(depth=1.0)
        ctx.enable(ctx.DEPTH_TEST)
        ctx.depth_func = "<="
        vao.render()  # the renderer's sky pass after it only touches pixels farther than ~90 m: not needed
        self._fbo.read_into(self._out, components=1, attachment=0, dtype="i4")
        return self._out

    def close(self) -> None:
        for obj in (self._fbo, self._rb, self._depth):  # (the program is shared)
            with contextlib.suppress(Exception):
                obj.release()


def footprint_distance(x, z, obj) -> np.ndarray:
    """Floor distance from (x, z) to the object's box footprint (0 inside)."""
    dx = np.maximum(np.maximum(obj.box_min[0] - x, x - obj.box_max[0]), 0.0)
    dz = np.maximum(np.maximum(obj.box_min[2] - z, z - obj.box_max[2]), 0.0)
    return np.hypot(dx, dz)


def line_of_sight(g: NavGrid, rr: np.ndarray, cc: np.ndarray, obj, n: int = 24) -> np.ndarray:
    """Which cells see the object's centre without crossing a wall cell (2-D check on the wall mask)."""
    wx, wz = g.to_world(rr, cc)
    t = np.linspace(0.0, 0.85, n)[None, :]
    px = wx[:, None] + (obj.center[0] - wx[:, None]) * t
    pz = wz[:, None] + (obj.center[2] - wz[:, None]) * t
    r, c = g._cells(px, pz)
    return ~g.wall_mask[r, c].any(axis=1)


def predicted_sd(cx, cz, obj, floor_y: float, pitch: float, h: int, w: int, yaw=None) -> np.ndarray:
    """SD of the object's projected 3-D box seen from floor points (cx, cz); by default at the 15-deg heading
    nearest to the object (the agent can only face multiples of 15 deg)."""
    cx, cz = np.atleast_1d(np.asarray(cx, np.float64)), np.atleast_1d(np.asarray(cz, np.float64))
    if yaw is None:
        bearing = np.arctan2(-(obj.center[0] - cx), -(obj.center[2] - cz))
        yaw = np.round(bearing / _TURN) * _TURN
    yaw = np.broadcast_to(np.asarray(yaw, np.float64), cx.shape)
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)
    pts = obj.box_min + corners * (obj.box_max - obj.box_min)  # (8, 3)
    rel = pts[None, :, :] - np.stack([cx, np.full_like(cx, floor_y + 1.5), cz], axis=1)[:, None, :]
    cy, sy = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    # world -> yawed frame (inverse of rot_y), then -> pitched camera frame (inverse of rot_x)
    x1 = cy * rel[..., 0] - sy * rel[..., 2]
    z1 = sy * rel[..., 0] + cy * rel[..., 2]
    y1 = rel[..., 1]
    cp, sp = math.cos(pitch), math.sin(pitch)
    yc = cp * y1 + sp * z1
    zc = -sp * y1 + cp * z1
    depth = np.maximum(-zc, 0.05)
    f = 0.5 * w
    u = np.clip(f * x1 / depth + 0.5 * w, 0, w)
    v = np.clip(-f * yc / depth + 0.5 * h, 0, h)
    bx = 0.5 * (u.min(axis=1) + u.max(axis=1)) - 0.5 * w
    by = 0.5 * (v.min(axis=1) + v.max(axis=1)) - 0.5 * h
    return np.hypot(bx, by) / (0.5 * math.hypot(h, w))
