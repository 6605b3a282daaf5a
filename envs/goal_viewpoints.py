"""Where an object goal can be seen from: the env's goal viewpoints and the checks behind them.

A goal viewpoint is a walkable cell within 0.8 m of a goal instance's footprint from which the instance,
at the nearest 15-degree heading, is seen centred (SD < ``SUCCESS_SD``). Finding them needs hundreds of
views per scene. Most candidates are ranked without rendering (``predicted_sd`` of the object's 3-D box,
``line_of_sight`` on the nav grid's wall mask) and the best are confirmed by a cheap render of instance
ids (``SemanticProbe``). :class:`GoalViewpointsMixin` holds ``V4SNavEnv``'s side: the viewpoint masks,
their distance fields and start cells per category (cached by ``scene_bundle.SceneBundle.goals``), and
the fallback from the probe to the env's renderer.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
from scipy import ndimage

from .actions import TURN_ANGLE_DEG
from .expert import heading_to
from .geometry import make_pose
from .goal_metrics import box_from_mask, sd_from_box
from .navigation import NavGrid

SUCCESS_DISTANCE = 1.0
SUCCESS_SD = 0.2
START_MIN_GEODESIC = 1.5  # episodes start at least this far (m) from the goal when the scene allows
_TURN = math.radians(TURN_ANGLE_DEG)
_VIEW_REACH = SUCCESS_DISTANCE - 0.2  # goal viewpoints lie within this floor distance (m) of the object


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


def points_sd(
    points: np.ndarray,
    cx: np.ndarray,
    cz: np.ndarray,
    cam_y: float,
    yaw: np.ndarray,
    pitch: float,
    h: int,
    w: int,
    drop_behind: bool = False,
) -> np.ndarray:
    """SD of the box of ``points`` (N, 3) projected into the 90-degree camera at (``cx``, ``cam_y``,
    ``cz``) with headings ``yaw`` and ``pitch``, one per camera. Points behind a camera are clamped to
    5 cm depth, or with ``drop_behind`` left out (NaN when none is in front)."""
    rel = points[None, :, :] - np.stack([cx, np.full_like(cx, cam_y), cz], axis=1)[:, None, :]
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
    if drop_behind:
        front = -zc > 0.05
        u, v = np.where(front, u, np.nan), np.where(front, v, np.nan)
    with warnings.catch_warnings():  # a camera with no point in front: NaN, by design
        warnings.simplefilter("ignore", RuntimeWarning)
        bx = 0.5 * (np.nanmin(u, axis=1) + np.nanmax(u, axis=1)) - 0.5 * w
        by = 0.5 * (np.nanmin(v, axis=1) + np.nanmax(v, axis=1)) - 0.5 * h
    return np.hypot(bx, by) / (0.5 * math.hypot(h, w))


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
    return points_sd(pts, cx, cz, floor_y + 1.5, yaw, pitch, h, w)


def _start_cells(g: NavGrid, field: np.ndarray) -> np.ndarray:
    """Flat indices (int32, row-major) of the reachable cells an episode may start from: 1.5-12 m
    geodesic from the goal when possible, else anywhere off the goal, else anywhere reachable."""
    rr, cc = np.nonzero(g.navigable & np.isfinite(field))
    dist = field[rr, cc]
    ok = np.nonzero((dist > START_MIN_GEODESIC) & (dist < 12.0))[0]
    if len(ok) == 0:
        ok = np.nonzero(dist > 0)[0] if (dist > 0).any() else np.arange(len(rr))
    return (rr[ok] * g.shape[1] + cc[ok]).astype(np.int32)


def _usable_field(field: np.ndarray, g: NavGrid) -> bool:
    """A goal distance field can host episodes: it has a goal cell, and a cell to start far enough away."""
    f = field[g.navigable]
    return bool(np.isfinite(f).sum() > 0 and (f > START_MIN_GEODESIC).any())


class GoalViewpointsMixin:
    """``V4SNavEnv``'s goal viewpoints (needs the env's ``_bundle``, ``resolution``, ``camera_pitch`` and
    ``backend``): built for every category of a scene at once with the moderngl backend, category by
    category otherwise."""

    def _viewpoint_candidates(self, o):
        """Cells from which object ``o`` may be the goal view: walkable, 0.2-0.8 m from its footprint, with a
        clear line of sight past walls; returns (cand mask, rows, cols, x, z, order) where ``order`` ranks
        the cells to confirm by rendering (best predicted SD first), or None."""
        b = self._bundle
        g = b.navgrid
        wx, wz = b.cell_centres()
        d = footprint_distance(wx, wz, o)
        cand = g.navigable & (d <= _VIEW_REACH) & (d >= 0.2)
        rr, cc = np.nonzero(cand)
        if len(rr) == 0:
            return None
        vis = line_of_sight(g, rr, cc, o)
        rr, cc = rr[vis], cc[vis]
        if len(rr) == 0:
            return None
        # keep the viewpoints from which the goal, at the nearest reachable heading, is best centred:
        # rank by the SD predicted from the 3-D box, then confirm the best ones by rendering (occlusion)
        cx, cz = g.to_world(rr, cc)
        h, w = self.resolution
        sd = predicted_sd(cx, cz, o, b.scene.floor_y, self.camera_pitch, h, w)
        order = np.argsort(sd, kind="stable")[:64:2] if len(sd) > 32 else np.argsort(sd, kind="stable")
        return cand, rr, cc, cx, cz, order

    def _view_pose(self, o, x: float, z: float) -> np.ndarray:
        """The camera at floor point (x, z) facing object ``o`` at the 15-deg heading nearest to it."""
        yaw = round(heading_to(x, z, o.center[0], o.center[2]) / _TURN) * _TURN
        return make_pose(x, z, yaw, self._bundle.scene.floor_y, pitch=self.camera_pitch)

    def _object_masks(self, o, poses: list[np.ndarray]):
        """Per pose, where object ``o`` is seen (bool (H, W)): through the bundle's semantic probe when it
        has one (its first view checked against the renderer; on a mismatch the renderer is used from
        then on), else rendered."""
        b = self._bundle
        r = b.renderer
        probe = b.probe
        if probe is not None:
            views = probe.object_masks(o.instance_id, o.box_min, o.box_max, poses)
            for i, m in enumerate(views):
                if not probe.checked:  # until a view in which the renderer sees the object agrees
                    r.draw(poses[i])
                    ref = r.read_semantic() == o.instance_id
                    if not np.array_equal(m, ref):
                        msg = "the semantic probe differs from the renderer; checking with the renderer"
                        warnings.warn(f"V4SNav: {msg}", RuntimeWarning, stacklevel=2)
                        views.close()
                        probe.close()
                        b.probe = None
                        yield from self._object_masks(o, poses[i:])
                        return
                    probe.checked = bool(ref.any())
                yield m
            return
        for T in poses:
            r.draw(T)
            yield r.read_semantic() == o.instance_id

    def _goal_viewpoints(self, category: str) -> np.ndarray:
        """The goal viewpoint mask of ``category``: walkable cells within 0.8 m of an instance's footprint,
        in line of sight, from which it is rendered centred (the rendered checks are the expensive part)."""
        b = self._bundle
        g = b.navgrid
        h, w = self.resolution
        min_pixels = max(4, (h * w) // 2000)
        mask = np.zeros(g.shape, dtype=bool)
        for o in b.scene.objects_of(category):
            c = self._viewpoint_candidates(o)
            if c is None:
                continue
            cand, rr, cc, cx, cz, order = c
            poses = [self._view_pose(o, cx[j], cz[j]) for j in order]
            real = np.full(len(order), np.inf)
            for i, seen in enumerate(self._object_masks(o, poses)):
                box = box_from_mask(seen, min_pixels)
                if box is not None:
                    real[i] = sd_from_box(box, h, w)
            keep = np.zeros(len(rr), dtype=bool)
            ok = real < SUCCESS_SD - 0.07
            if not ok.any():
                ok = real < SUCCESS_SD
            keep[order[ok]] = True
            good = np.zeros(g.shape, dtype=bool)
            good[rr[keep], cc[keep]] = True
            # 0.25 m steps cannot hit single cells: accept anything within 0.15 m of a good viewpoint
            mask |= ndimage.binary_dilation(good, iterations=1) & cand
        return mask

    def _build_goals(self) -> dict[str, dict]:
        """Goals of every category of the current scene at once (``_SceneBundle.goals``), with the moderngl
        backend: the viewpoint mask, its distance field on the walkable cells, the start cells, and
        whether the category can host episodes (a viewpoint exists and some walkable cell lies more than
        ``START_MIN_GEODESIC`` from all of them). Built when a scene is first used, so a warm cache never
        renders a viewpoint check again. Other backends (no semantic probe: every check is a render) fill
        the same dicts lazily, category by category (``_ensure_goal``, ``_lazy_usable``)."""
        goals: dict[str, dict] = {"masks": {}, "fields": {}, "starts": {}, "usable": {}}
        b = self._bundle
        if not self._goals_at_once():
            return goals
        if b.scene.objects:
            b.probe = SemanticProbe(b.renderer)
        try:
            for cat in b.scene.categories:
                self._ensure_goal(cat, goals)
        finally:
            if b.probe is not None:
                b.probe.close()
                b.probe = None
        return goals

    def _scene_goals(self) -> dict[str, dict]:
        """The current scene's goals (``_SceneBundle.goals``), built by ``_build_goals`` on first use."""
        return self._bundle.goals(self._build_goals, complete=self._goals_at_once())

    def _goals_at_once(self) -> bool:
        """Whether ``_build_goals`` builds every category (moderngl: the semantic probe makes it cheap)."""
        return self.backend == "moderngl"

    def _ensure_goal(self, category: str, goals: dict[str, dict] | None = None) -> None:
        """Compute ``category``'s mask, field, start cells and usability into the scene's goals (if not
        there yet)."""
        b = self._bundle
        goals = goals if goals is not None else self._scene_goals()
        if category in goals["masks"]:
            return
        g = b.navgrid
        mask = self._goal_viewpoints(category)
        field = g.distance_field(mask)
        goals["masks"][category] = mask
        goals["fields"][category] = np.ascontiguousarray(field[g.navigable])
        goals["starts"][category] = _start_cells(g, field)
        goals["usable"][category] = _usable_field(field, g)

    def _goal_usable(self, category: str) -> bool:
        """Whether ``category`` can be an episode's goal in the current scene."""
        goals = self._scene_goals()
        if category not in goals["usable"]:  # lazily filled goals (not moderngl)
            goals["usable"][category] = self._lazy_usable(category)
        return bool(goals["usable"][category])

    def _lazy_usable(self, category: str) -> bool:
        # Exactly the ``usable`` flag ``_ensure_goal`` computes, usually without rendering every viewpoint:
        # viewpoints lie within _VIEW_REACH of a footprint, so a walkable cell farther than
        # START_MIN_GEODESIC + _VIEW_REACH from all footprints is farther than START_MIN_GEODESIC
        # (Euclidean <= geodesic) from any viewpoint; the field's second condition then holds, and the
        # first (a viewpoint exists) is settled by the first rendered check that passes.
        b = self._bundle
        g = b.navgrid
        objs = b.scene.objects_of(category)
        if not objs:
            return False
        wx, wz = b.cell_centres()
        near = np.min([footprint_distance(wx, wz, o) for o in objs], axis=0)
        if not (near[g.navigable] > START_MIN_GEODESIC + _VIEW_REACH + 0.01).any():
            self._ensure_goal(category)
            return bool(self._scene_goals()["usable"][category])
        h, w = self.resolution
        min_pixels = max(4, (h * w) // 2000)
        for o in objs:
            c = self._viewpoint_candidates(o)
            if c is None:
                continue
            _, _, _, cx, cz, order = c
            for seen in self._object_masks(o, [self._view_pose(o, cx[j], cz[j]) for j in order]):
                box = box_from_mask(seen, min_pixels)
                if box is not None and sd_from_box(box, h, w) < SUCCESS_SD:
                    return True
        return False
