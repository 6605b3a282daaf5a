"""Culling must never change the image: portal culling of unseen rooms and back-face culling of closed
meshes against a renderer that draws every triangle two-sided, on indoor, held-out and outdoor scenes and
a loaded Habitat GLB, from navigable poses (random heading and pitch) and from outside the rooms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import v4s_agent.envs
from v4s_agent.envs.culling import FULL, PortalCuller, closed_outward
from v4s_agent.envs.geometry import make_pose
from v4s_agent.envs.navigation import NavGrid
from v4s_agent.envs.primitives import box_tris
from v4s_agent.envs.renderer_gl import VOID_RGB, GLRenderer
from v4s_agent.envs.scenes import VAL_CATEGORIES_SPLIT, VAL_SCENES, load_gltf_scene, make_scene, split_scene

SIMPLE_ROOM = Path(v4s_agent.envs.__file__).parent / "assets" / "habitat_test_assets" / "simple_room.glb"


def _poses(scene, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    nav = NavGrid(scene)
    pts = nav.sample_navigable(rng, n)
    poses = [make_pose(x, z, rng.uniform(-math.pi, math.pi), scene.floor_y, pitch=rng.uniform(-0.5, 0.3))
             for x, z in pts]  # fmt: skip
    lo, hi = scene.bounds
    top = np.eye(4)  # above the ceiling, looking down: outside every room, so nothing is culled
    top[:3, :3] = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    top[:3, 3] = ((lo[0] + hi[0]) / 2, hi[1] + 6.0, (lo[2] + hi[2]) / 2)
    return [*poses, top]


@pytest.mark.parametrize(
    "which", ["default", "val_scenes", "val_categories", "park", "street", "simple_room"]
)  # fmt: skip
def test_culled_image_equals_the_full_draw(which):
    scene = {
        "default": lambda: make_scene(0),
        "val_scenes": lambda: split_scene(VAL_SCENES, 3),
        "val_categories": lambda: split_scene(VAL_CATEGORIES_SPLIT, 5),
        "park": lambda: make_scene(7, "park"),
        "street": lambda: make_scene(8, "street"),
        "simple_room": lambda: load_gltf_scene(SIMPLE_ROOM),
    }[which]()
    full, culled = GLRenderer(scene, (64, 64), cull=False), GLRenderer(scene, (64, 64))
    poses = _poses(scene, 40, seed=1)
    same = {"rgb": 0, "depth": 0, "semantic": 0}
    drawn, in_view, through_doors = [], [], 0
    for T in poses:
        a, b = full.render(T), culled.render(T)
        for k in same:
            eq = a[k] == b[k]
            same[k] += int((eq.all(-1) if eq.ndim == 3 else eq).sum())
        mvp = culled._proj @ np.linalg.inv(T)
        runs = culled.culler.ranges(T, mvp)
        drawn.append(sum(c for _, c, *_ in runs))
        cmds, batches = culled.culler.draws(T, mvp)
        assert cmds[:, 0].max() <= culled.culler.chunk and len(cmds) <= culled.culler.max_commands
        assert sum(n for _, _, n in batches) == len(cmds)
        in_view.append(int(cmds[:, 0].sum()))
        seen = culled.culler.visible_rooms(T, mvp)
        through_doors += bool(seen) and any(rect != FULL for rect in seen.values())
    total = len(poses) * 64 * 64
    for k, v in same.items():  # equal up to depth ties between coplanar faces (a handful of pixels)
        assert v / total >= 0.9999, (which, k, v / total)
    assert drawn[-1] == culled.culler.n_vertices  # the top view culls no room
    assert np.mean(in_view) <= np.mean(drawn)
    if which != "simple_room":  # (one mesh, one box: nothing to cull by part)
        assert np.mean(in_view) < 0.9 * np.mean(drawn)  # parts outside the view frustum are skipped too
    if scene.kind == "indoor" and scene.rooms:
        assert culled.culler.active
        assert np.mean(drawn[:-1]) < 0.8 * culled.culler.n_vertices  # rooms behind walls are skipped
        assert through_doors >= 3  # and rooms seen through a door are drawn
    full.close()
    culled.close()


def test_closed_outward_detection():
    box = box_tris((0.0, 0.0, 0.0), (1.0, 2.0, 3.0))
    tri = np.asarray(box, np.float64).reshape(-1, 3, 3)
    assert closed_outward(tri, np.zeros(len(tri))).all()
    assert not closed_outward(tri[:, ::-1], np.zeros(len(tri))).any()  # inward-wound
    assert not closed_outward(tri[:-2], np.zeros(len(tri) - 2)).any()  # one face missing: open
    # groups are judged separately: a closed box next to an open one
    two = np.concatenate([tri, tri[:-2] + 5.0])
    g = np.r_[np.zeros(len(tri)), np.ones(len(tri) - 2)]
    assert closed_outward(two, g).tolist() == [True] * len(tri) + [False] * (len(tri) - 2)
    # an inside-out part glued to a closed one (as a mirrored primitive can be): only the closed one
    glued = np.concatenate([tri, tri[:, ::-1] + [1.0, 0.0, 0.0]])
    assert closed_outward(glued, np.zeros(len(glued))).tolist() == [True] * len(tri) + [False] * len(tri)


def _closed_outward_reference(tri: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The sequential rule ``closed_outward`` vectorises: walk the triangles, pairing each directed edge
    with its reverse; a run ends when no edge is left open."""
    out = np.zeros(len(tri), bool)
    q = np.round(tri / 1e-5).astype(np.int64).reshape(-1, 3)
    vid = np.unique(q, axis=0, return_inverse=True)[1].reshape(-1, 3).tolist()
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    start, open_edges, ok, v = 0, set(), True, 0.0
    for t in range(len(tri)):
        if t > start and groups[t] != groups[t - 1]:
            start, open_edges, ok, v = t, set(), True, 0.0
        i0, i1, i2 = vid[t]
        for e in ((i0, i1), (i1, i2), (i2, i0)):
            if (e[1], e[0]) in open_edges:
                open_edges.remove((e[1], e[0]))
            elif e in open_edges:
                ok = False
            else:
                open_edges.add(e)
        v += vol[t]
        if not open_edges:
            out[start : t + 1] = ok and v > 0
            start, ok, v = t + 1, True, 0.0
    return out


@pytest.mark.parametrize("which", ["default", "park", "simple_room", "chair_in_stage"])
def test_closed_outward_matches_the_sequential_rule(which):
    scene = {
        "default": lambda: make_scene(0),
        "park": lambda: make_scene(7, "park"),
        "simple_room": lambda: load_gltf_scene(SIMPLE_ROOM),
        "chair_in_stage": lambda: load_gltf_scene(SIMPLE_ROOM.parent / "chair_in_stage.glb"),
    }[which]()
    v = scene.vertices
    tri = np.asarray(v[:, :3], np.float64).reshape(-1, 3, 3)
    groups = np.asarray(v[::3, 10])
    got = closed_outward(tri, groups)
    np.testing.assert_array_equal(got, _closed_outward_reference(tri, groups))
    assert got.any() and (which in ("default", "simple_room") or not got.all())  # both kinds occur


def test_culler_without_doors_draws_everything_once():
    scene = make_scene(0)
    c = PortalCuller(scene.vertices, [{"bounds": r["bounds"]} for r in scene.rooms])
    assert not c.active
    runs = c.ranges(np.eye(4), np.eye(4))
    assert sum(n for _, n, *_ in runs) == len(scene.vertices)


@pytest.mark.parametrize("which", ["default", "simple_room"])
def test_fast_paths_leave_the_image_unchanged(which):
    """Indoors the void is a clear, not a full-screen pass, and plain-white layer 0 skips its texture
    lookup: both must give exactly the frames of the slow path (void pass, every lookup)."""
    scene = make_scene(0) if which == "default" else load_gltf_scene(SIMPLE_ROOM)
    fast, slow = GLRenderer(scene, (64, 64)), GLRenderer(scene, (64, 64))
    assert fast._sky is None and (fast._plain0 or which == "simple_room")
    slow._sky, slow._plain0 = (VOID_RGB, VOID_RGB), False
    void = 0
    for T in _poses(scene, 12, seed=2):
        a, b = fast.render(T), slow.render(T)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        void += int((a["depth"] == 0).sum())
    assert void > 0  # the views do show the void
    fast.close()
    slow.close()


def test_draw_order_door_frustum_and_pose_cache_leave_the_image_unchanged():
    """Nearest-first order, the frustum narrowed to doors and the pose cache are speed-ups only: frames
    equal the scene's order without a cache (up to depth ties), the same visible vertices are drawn, a
    cached pose gives the same frame, and the cache stays bounded."""
    from v4s_agent.envs.culling import _meets, _planes

    scene = make_scene(0)
    fast = GLRenderer(scene, (64, 64))
    ref = GLRenderer(scene, (64, 64), order="buffer")
    ref.POSE_CACHE = 0
    c = fast.culler
    poses = _poses(scene, 30, seed=3)[:-1]
    same, reordered, narrowed = 0, 0, 0
    for T in poses:
        a, b = fast.render(T), ref.render(T)
        same += sum(int((a[k] == b[k]).all(-1).sum() if a[k].ndim == 3 else (a[k] == b[k]).sum()) for k in a)
        again = fast.render(T)  # from the pose cache
        for k in a:
            np.testing.assert_array_equal(again[k], a[k], err_msg=k)
        mvp = fast._proj @ np.linalg.inv(T)
        runs, runs_ref = c.ranges(T, mvp, frustum=True), ref.culler.ranges(T, mvp, frustum=True)
        cover = sorted(v for f, n, _ in runs for v in range(f, f + n))
        assert cover == sorted(v for f, n, _ in runs_ref for v in range(f, f + n))
        reordered += [f for f, *_ in runs] != sorted(f for f, *_ in runs)
        # the door frustum keeps a subset of "a visible room's part, in the view"
        seen = c.visible_rooms(T, mvp)
        keep = c.keep(T, mvp)
        if seen is not None:
            in_view = _meets(c._seg_boxes, _planes(mvp, [FULL]))[:, 0]
            wide = c._member[:, [*seen, len(c.rooms)]].any(1) & in_view
            assert not (keep & ~wide).any()
            narrowed += int((wide & ~keep).sum() > 0)
    assert fast.pose_cache_hits == len(poses) and ref.pose_cache_hits == 0  # each pose drawn again once
    assert same / (len(poses) * 3 * 64 * 64) >= 0.9999
    assert reordered > 0 and narrowed > 0
    fast.POSE_CACHE = 8
    for T in _poses(scene, 20, seed=4):
        fast.draw(T)
    assert len(fast._poses) == 8
    with pytest.raises(ValueError, match="order"):
        PortalCuller(scene.vertices, scene.rooms, order="random")
    fast.close()
    ref.close()
