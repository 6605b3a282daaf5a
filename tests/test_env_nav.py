"""Environment tests with the real moderngl/EGL renderer (no mocks): scenes, GLB, renderer, navigation,
expert, tour, V4SNav-v0 (checker, vector env, determinism, bad input), habitat-sim error."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from v4s_agent.envs import V4SNavEnv
from v4s_agent.envs.actions import STOP
from v4s_agent.envs.geometry import encode_relative_pose, make_pose, relative_pose, yaw_of
from v4s_agent.envs.navigation import NavGrid
from v4s_agent.envs.primitives import MeshBuilder, box_tris
from v4s_agent.envs.renderer_gl import GLRenderer
from v4s_agent.envs.scenes import (
    CATEGORIES,
    OUTDOOR,
    ROOM_TYPES,
    SPLITS,
    TRAIN,
    TRAIN_CATEGORIES,
    VAL_CATEGORIES,
    VAL_CATEGORIES_SPLIT,
    VAL_SCENES,
    Scene,
    SceneError,
    SceneObject,
    load_gltf_scene,
    make_scene,
    place_object_file,
    split_scene,
)
from v4s_agent.envs.tour import make_tour

import v4s_agent

ASSETS = Path(v4s_agent.envs.__file__).parent / "assets" / "habitat_test_assets"
KEYS = ("rgb", "depth", "semantic")


@pytest.fixture(scope="module")
def scene0() -> Scene:
    return make_scene(0)


@pytest.fixture(scope="module")
def nav0(scene0) -> NavGrid:
    return NavGrid(scene0)


# ------------------------------------------------------------------------------------------------ scenes
def test_scene_deterministic_and_rich(scene0):
    again = make_scene(0)
    np.testing.assert_array_equal(scene0.vertices, again.vertices)
    assert [o.category for o in scene0.objects] == [o.category for o in again.objects]
    assert not np.array_equal(make_scene(1).vertices[:100], scene0.vertices[:100]) or len(
        make_scene(1).vertices
    ) != len(scene0.vertices)
    assert len(CATEGORIES) >= 24 and len(ROOM_TYPES) >= 4
    assert len(scene0.rooms) >= 4 and len({r["type"] for r in scene0.rooms}) >= 4
    ids = [o.instance_id for o in scene0.objects]
    assert len(ids) == len(set(ids)) and min(ids) >= 1
    assert set(np.unique(scene0.vertices[:, 10]).astype(int)) == {0, *ids}
    # textured: floors and walls carry procedural patterns
    assert len(np.unique(scene0.vertices[scene0.vertices[:, 10] == 0, 9])) >= 2


def test_every_category_builds_with_styles():
    from v4s_agent.envs.categories import CATEGORY_BUILDERS

    for cat, build in CATEGORY_BUILDERS.items():
        a, b = build(np.random.default_rng(1)), build(np.random.default_rng(2))
        assert a, cat
        sa = np.concatenate([p.tris.reshape(-1, 3) for p in a])
        assert sa[:, 1].min() >= -1e-6, cat  # sits on the floor
        ca = np.concatenate([np.asarray(p.color, float).ravel()[:3] for p in a])
        cb = np.concatenate([np.asarray(p.color, float).ravel()[:3] for p in b])
        sb = np.concatenate([p.tris.reshape(-1, 3) for p in b])
        assert (sa.shape != sb.shape) or not np.allclose(sa, sb) or not np.allclose(ca, cb), cat


def test_splits():
    assert set(SPLITS) == {TRAIN, VAL_SCENES, VAL_CATEGORIES_SPLIT, OUTDOOR}
    assert not set(VAL_CATEGORIES) & set(TRAIN_CATEGORIES)
    for i in range(3):
        assert not {o.category for o in split_scene(TRAIN, i).objects} & set(VAL_CATEGORIES)
    assert {o.category for o in split_scene(VAL_CATEGORIES_SPLIT, 0).objects} & set(VAL_CATEGORIES)
    assert SPLITS[VAL_SCENES].seed_offset >= SPLITS[TRAIN].seed_offset + SPLITS[TRAIN].n_scenes
    park, street = make_scene(0, "park"), make_scene(1, "street")
    assert park.sky and street.sky and park.objects and street.objects
    assert {o.category for o in street.objects} & {
        "car",
        "street_lamp",
        "fire_hydrant",
        "mailbox",
        "traffic_cone",
    }
    with pytest.raises(ValueError, match="unknown categories"):
        make_scene(0, categories=("unicorn",))


def test_glb_export_roundtrip(tmp_path, scene0):
    path = scene0.export_glb(tmp_path / "s.glb")
    ann = tmp_path / "s.semantic.json"
    assert path.is_file() and ann.is_file()
    loaded = load_gltf_scene(path)
    assert sorted((o.instance_id, o.category) for o in loaded.objects) == sorted(
        (o.instance_id, o.category) for o in scene0.objects
    )
    for a in scene0.objects[:5]:
        b = loaded.object_by_id(a.instance_id)
        np.testing.assert_allclose(a.center, b.center, atol=1e-3)
        np.testing.assert_allclose(a.extents, b.extents, atol=1e-3)


def test_habitat_assets_zup_stage_and_chair_goal():
    assert (ASSETS / "LICENSE-habitat-sim").is_file()
    room = load_gltf_scene(ASSETS / "simple_room.glb")  # stage config says z-up -> converted to y-up
    lo, hi = room.bounds
    assert hi[1] - lo[1] < 2.5 and hi[0] - lo[0] > 8 and hi[2] - lo[2] > 8
    flat = load_gltf_scene(ASSETS / "simple_room.glb", up=(0, 1, 0), front=(0, 0, -1))  # wrong axes: tall
    assert flat.bounds[1, 1] - flat.bounds[0, 1] > 8
    chair = place_object_file(room, ASSETS / "chair.glb", "chair", (1.0, 0.5), yaw=0.5)
    assert chair.category == "chair" and 0.7 < chair.extents[1] < 1.1
    assert abs(chair.box_min[1] - room.floor_y) < 1e-3
    floor1 = load_gltf_scene(ASSETS / "stage_floor1.glb")
    assert NavGrid(floor1).navigable.sum() > 1000
    env = V4SNavEnv(task="object", scene=room, goal_category="chair")
    obs, info = env.reset(seed=0)
    assert info["goal_category"] == "chair" and "chair" in env.instruction
    for _ in range(200):
        obs, _, term, _, info = env.step(env.expert_action())
        if term:
            break
    assert term and info["goal_visible"] and info["goal_sd"] < 0.25
    env.close()


# ---------------------------------------------------------------------------------------------- renderer
def _box_room() -> Scene:
    mb = MeshBuilder()
    mb.add_triangles(box_tris((0, -0.05, 0), (10, 0.1, 10)), (0.5, 0.5, 0.5))
    mb.add_triangles(box_tris((0, 1.0, -3.0), (1.0, 2.0, 0.2)), (1.0, 0.0, 0.0), instance_id=7)
    v = mb.finish()
    return Scene("box", v, [SceneObject(7, "cabinet", np.array([0, 1.0, -3.0]), np.array([1.0, 2.0, 0.2]))])


def test_renderer_targets_metric_depth_and_ids():
    scene = _box_room()
    r = GLRenderer(scene, (96, 160))
    out = r.render(make_pose(0, 0, 0.0))  # looking down -z at the box front face (z = -2.9)
    assert out["rgb"].shape == (96, 160, 3) and out["rgb"].dtype == np.uint8
    assert out["depth"].dtype == np.float32 and out["semantic"].dtype == np.int32
    assert out["semantic"][48, 80] == 7
    assert abs(out["depth"][48, 80] - 2.9) < 0.02
    assert out["rgb"][48, 80, 0] > 100 and out["rgb"][48, 80, 1] < 30
    assert out["semantic"][90, 80] == 0 and out["depth"][90, 80] > 0  # floor, bottom rows (image order)
    assert out["depth"][2, 80] == 0  # nothing above: background has depth 0
    with pytest.raises(ValueError, match="4x4"):
        r.render(make_pose(0, 0, 0.0)[:3])
    r2 = GLRenderer(scene, (32, 32))  # second renderer shares the process's context
    assert r2.ctx is r.ctx
    r.close()
    r2.close()
    for bad in [(0, 128), (128, 0), (-1, 5)]:
        with pytest.raises(ValueError, match="resolution"):
            GLRenderer(scene, bad)


# -------------------------------------------------------------------------------------------- navigation
def test_navgrid_geodesic_and_paths(scene0, nav0):
    rng = np.random.default_rng(0)
    for _ in range(3):
        a, b = nav0.sample_navigable(rng), nav0.sample_navigable(rng)
        d = nav0.geodesic_distance(a, b)
        assert d + 0.1 >= math.dist(a, b)
        p = nav0.shortest_path(a, b)
        assert np.linalg.norm(p[0] - a) < 0.1 and np.linalg.norm(p[-1] - b) < 0.1
        assert all(nav0.is_navigable(x, z) for x, z in p)
    # walls and furniture are not walkable
    for o in scene0.objects:
        if o.extents[1] > 0.3:
            assert not nav0.is_navigable(o.center[0], o.center[2])


def test_tour_covers_scene(scene0, nav0):
    r = GLRenderer(scene0, (64, 64))
    tour = make_tour(scene0, r, n_frames=32, seed=0, navgrid=nav0)
    assert tour["frames"].shape == (32, 64, 64, 3) and tour["poses"].shape == (32, 4, 4)
    xs, zs = tour["poses"][:, 0, 3], tour["poses"][:, 2, 3]
    rooms_seen = {
        i for i, rm in enumerate(scene0.rooms) for x, z in zip(xs, zs, strict=True)
        if rm["bounds"][0] <= x <= rm["bounds"][2] and rm["bounds"][1] <= z <= rm["bounds"][3]
    }  # fmt: skip
    assert len(rooms_seen) >= len(scene0.rooms) - 1
    steps = np.linalg.norm(np.diff(tour["poses"][:, [0, 2], 3], axis=0), axis=1)
    assert steps.max() < 3 * np.median(steps) + 0.2  # evenly spaced, no jumps
    again = make_tour(scene0, r, n_frames=32, seed=0, navgrid=nav0)
    np.testing.assert_array_equal(tour["frames"], again["frames"])
    r.close()


def test_geometry_helpers():
    T = make_pose(1.0, 2.0, 0.7, pitch=-0.5)
    assert abs(yaw_of(T) - 0.7) < 1e-9 and abs(T[1, 3] - 1.5) < 1e-12
    assert np.allclose(relative_pose(T, T), np.eye(4))
    assert encode_relative_pose(T, T).shape == (12,)


# ---------------------------------------------------------------------------------------------- the env
@pytest.mark.parametrize("task", ["object", "pose"])
def test_check_env(task):
    env = V4SNavEnv(task=task, obs_keys=KEYS)
    check_env(env.unwrapped)
    env.close()


def test_registered_and_info_contract():
    env = gym.make("V4SNav-v0")
    assert env.spec.max_episode_steps == 500
    obs, info = env.reset(seed=3)
    assert set(obs) == {"rgb"} and obs["rgb"].shape == (128, 128, 3)
    ctx = info["context"]
    assert ctx["frames"].dtype == np.uint8 and ctx["frames"].ndim == 4 and ctx["poses"].shape[1:] == (4, 4)
    np.testing.assert_array_equal(env.unwrapped.get_context()["frames"], ctx["frames"])
    obs, rew, term, trunc, info = env.step(1)
    keys = {"instruction", "is_success", "success", "spl", "distance_to_goal", "goal_sd", "goal_box",
            "goal_visible", "agent_pose", "collided", "goal_category"}  # fmt: skip
    assert keys <= set(info) and "context" not in info
    assert info["agent_pose"].shape == (4, 4) and isinstance(env.unwrapped.scene, Scene)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape[0] == 128 and frame.shape[1] > 128
    env.close()
    env2 = gym.make("v4s_agent:V4SNav-v0", task="pose", obs_keys=KEYS)
    obs, info = env2.reset(seed=0)
    assert set(obs) == set(KEYS) and "goal_pose" in info
    env2.close()


@pytest.mark.parametrize("task", ["object", "pose"])
def test_expert_reaches_goal(task):
    env = V4SNavEnv(task=task)
    wins, sds = 0, []
    for ep in range(4):
        env.reset(seed=ep)
        for _ in range(300):
            _, _, term, _, info = env.step(env.expert_action())
            if term:
                break
        wins += info["success"]
        if task == "object":
            sds.append(info["goal_sd"])
            assert info["goal_visible"]
        if info["success"]:
            assert 0 < info["spl"] <= 1
    assert wins >= 3
    if task == "object":
        assert np.nanmedian(sds) < 0.2
    env.close()


def test_determinism_frame_for_frame():
    runs = []
    for _ in range(2):
        env = V4SNavEnv(obs_keys=KEYS)
        obs, info = env.reset(seed=11)
        frames = [obs["rgb"], info["context"]["frames"][5]]
        for _ in range(15):
            obs, *_ = env.step(env.expert_action())
            frames.append(obs["rgb"])
        runs.append(np.stack(frames))
        env.close()
    np.testing.assert_array_equal(runs[0], runs[1])


def test_splits_and_outdoor_env():
    env = V4SNavEnv(scene="val_categories")
    _, info = env.reset(seed=0)
    assert set(env.scene.categories) & set(VAL_CATEGORIES)
    env.close()
    env = V4SNavEnv(scene="outdoor")
    _, info = env.reset(seed=0)
    assert env.scene.kind in ("park", "street") and info["goal_category"]
    env.close()


def test_bad_input_clear_errors_and_process_usable(tmp_path):
    with pytest.raises(SceneError, match="not found"):
        V4SNavEnv(scene=str(tmp_path / "missing.glb"))
    corrupt = tmp_path / "corrupt.glb"
    corrupt.write_bytes(b"glTF\x02\x00\x00\x00garbage-garbage")
    with pytest.raises(SceneError, match="could not read|no triangle"):
        V4SNavEnv(scene=str(corrupt)).reset(seed=0)
    with pytest.raises(ValueError, match="unknown goal_category"):
        V4SNavEnv(goal_category="unicorn")
    with pytest.raises(ValueError, match="resolution"):
        V4SNavEnv(resolution=(0, 128))
    with pytest.raises(ValueError, match="unknown task"):
        V4SNavEnv(task="dance")
    with pytest.raises(ValueError, match="split"):
        V4SNavEnv(split="nope")
    env = V4SNavEnv()
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(1)
    env.reset(seed=0)
    for bad in (7, -1, "left", 1.5):
        with pytest.raises(ValueError, match="invalid action"):
            env.step(bad)
    obs, *_ = env.step(np.int64(2))  # still usable
    assert obs["rgb"].shape == (128, 128, 3)
    env.step(STOP)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)
    env.close()


def test_habitat_sim_backend_error_or_render():
    try:
        import habitat_sim  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="conda install habitat-sim"):
            V4SNavEnv(backend="habitat_sim")
        return
    # with habitat-sim (pragma: no cover in CI): renders on the default device (-1 without an NVIDIA EGL
    # device), in this process's one simulator, beside the moderngl renderers of the other tests
    env = V4SNavEnv(backend="habitat_sim", obs_keys=KEYS, tour_frames=4)  # pragma: no cover
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (128, 128, 3) and obs["semantic"].dtype == np.int32
    assert obs["depth"].dtype == np.float32 and (obs["depth"] > 0).mean() > 0.9
    obs, *_ = env.step(1)
    assert obs["rgb"].shape == (128, 128, 3)
    env.close()
    gl = GLRenderer(make_scene(0), (32, 32))  # moderngl still renders after habitat-sim took a context
    gl.draw(make_pose(0.0, 0.0, 0.0))
    assert (gl.read_depth() > 0).mean() > 0.9
    gl.close()


def test_async_vector_env():
    fns = [lambda: gym.make("v4s_agent:V4SNav-v0", obs_keys=KEYS, tour_frames=8)] * 2
    venv = gym.vector.AsyncVectorEnv(fns, context="forkserver")
    obs, info = venv.reset(seed=[0, 1])
    assert obs["rgb"].shape == (2, 128, 128, 3) and obs["semantic"].shape == (2, 128, 128)
    assert "context" in info
    obs, rew, term, trunc, info = venv.step(np.array([1, 2]))
    assert "context" not in info and rew.shape == (2,)
    names = venv.get_attr("instruction")
    assert all(isinstance(n, str) and n for n in names)
    venv.close()


def test_object_task_on_unannotated_glb_is_a_clear_error():
    """A GLB with no annotated objects cannot host an object goal: say so instead of an IndexError."""
    import os

    import pytest
    import v4s_agent.envs as envs_pkg
    from v4s_agent.envs import V4SNavEnv

    glb = os.path.join(os.path.dirname(envs_pkg.__file__), "assets", "habitat_test_assets", "simple_room.glb")
    env = V4SNavEnv(task="object", scene=glb)
    with pytest.raises(ValueError, match="no annotated objects"):
        env.reset(seed=0)
    env.close()
