"""Disk cache of scenes, nav grids, goal viewpoints and tours (``envs/scene_cache.py``): round trip,
invalidation, identical episodes with and without it, corrupt files rebuilt (real renderer, no mocks)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from v4s_agent.envs import V4SNavEnv, scene_cache
from v4s_agent.envs.navigation import NavGrid
from v4s_agent.envs.scene_cache import (
    NAVGRID_DEPS,
    SCENE_DEPS,
    SceneCache,
    dump_navgrid,
    dump_scene,
    resolve_cache_dir,
    restore_navgrid,
    restore_scene,
)
from v4s_agent.envs.scenes import Scene, split_scene

SPLIT = "val_scenes"
KEYS = ("rgb", "depth", "semantic")


def _same(a, b) -> bool:
    """Deep equality with exact arrays (dtype, shape, values) and NaN == NaN."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))  # fmt: skip
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(
            _same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def scene():
    return split_scene(SPLIT, 3)


def test_scene_and_navgrid_round_trip(tmp_path, scene):
    cache = SceneCache(tmp_path)
    key = cache.key("scene", "split-val_scenes-3", SCENE_DEPS)
    arrays, meta = dump_scene(scene)
    assert cache.save(key, arrays, meta) is not None
    back = restore_scene(*cache.load(key))
    for f in dataclasses.fields(Scene):  # every field, whatever the Scene gains later
        assert _same(getattr(scene, f.name), getattr(back, f.name)), f.name
    assert back.vertices.shape[1] == scene_cache_vertex_floats()

    grid = NavGrid(scene)
    gkey = cache.key("navgrid", "split-val_scenes-3", NAVGRID_DEPS)
    cache.save(gkey, *dump_navgrid(grid))
    g2 = restore_navgrid(*cache.load(gkey))
    assert vars(g2).keys() == vars(grid).keys()
    for k, v in vars(grid).items():
        assert _same(v, getattr(g2, k)), k
    goal = grid.point_mask(*grid.sample_navigable(np.random.default_rng(0)), 0.3)
    np.testing.assert_array_equal(grid.distance_field(goal), g2.distance_field(goal))


def scene_cache_vertex_floats() -> int:
    from v4s_agent.envs.primitives import VERTEX_FLOATS

    return VERTEX_FLOATS


def test_generic_coding_of_extra_fields(scene):
    # a field holding images, nested containers and numpy scalars survives the generic coding
    extra = {
        "images": np.arange(2 * 4 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 4),
        "n": np.int64(3),
        "pair": (1.5, None),
        "rooms": [{"bounds": np.array([0.0, 1.0, 2.0, 3.0])}],
        7: "int key",
    }
    arrays: dict = {}
    assert _same(scene_cache.decode(scene_cache.encode(extra, arrays), arrays), extra)
    with pytest.raises(TypeError, match="cannot cache"):
        scene_cache.encode(object(), {})


def test_key_changes_invalidate(tmp_path, scene, monkeypatch):
    cache = SceneCache(tmp_path)
    key = cache.key("scene", "split-val_scenes-3", SCENE_DEPS)
    cache.save(key, *dump_scene(scene))
    builds = []

    def build():
        builds.append(1)
        return scene

    def get():
        k = cache.key("scene", "split-val_scenes-3", SCENE_DEPS)
        return cache.cached(k, build, dump_scene, restore_scene)

    get()
    assert builds == []  # hit
    monkeypatch.setattr(scene_cache, "SCENE_FORMAT_VERSION", scene_cache.SCENE_FORMAT_VERSION + 1)
    get()
    assert builds == [1]  # a new format version is a miss, rebuilt and stored
    get()
    assert builds == [1]
    monkeypatch.setattr(scene_cache, "source_digest", lambda *deps: "generator-changed")
    get()
    assert builds == [1, 1]  # the generator's source changed
    import v4s_agent.envs.primitives as primitives

    monkeypatch.setattr(primitives, "VERTEX_FLOATS", primitives.VERTEX_FLOATS + 3)
    assert cache.load(cache.key("scene", "split-val_scenes-3", SCENE_DEPS)) is None  # vertex layout changed
    # the digest follows the generator's imports: scenes -> primitives, categories
    monkeypatch.undo()
    assert scene_cache.source_digest("scenes") != scene_cache.source_digest("primitives")


def _episode(env: V4SNavEnv, seed: int, steps: int = 10) -> list:
    obs, info = env.reset(seed=seed)
    out = [obs, info]
    for k in range(steps):
        a = env.expert_action() if k % 3 else 1 + (seed + k) % 3
        obs, rew, term, trunc, info = env.step(a)
        out += [obs, rew, term, info]
        if term:
            break
    return out


def test_same_episodes_with_and_without_cache(tmp_path):
    seeds = (0, 5)
    runs = []
    for cache_dir in (False, tmp_path, tmp_path):  # off, cold (builds and writes), warm (reads)
        env = V4SNavEnv(split=SPLIT, tour_frames=6, obs_keys=KEYS, cache_dir=cache_dir)
        runs.append([_episode(env, s) for s in seeds])
        if cache_dir is not False:
            assert env._cache is not None and env._bundle._cache is not None
        env.close()
    kinds = sorted(p.name.split("-")[0] for p in tmp_path.glob("*.npz"))
    assert kinds == ["goals"] * 2 + ["navgrid"] * 2 + ["scene"] * 2 + ["scene_video"] * 2
    assert _same(runs[0], runs[1]) and _same(runs[0], runs[2])


def test_corrupt_cache_files_are_rebuilt(tmp_path):
    env = V4SNavEnv(split=SPLIT, tour_frames=4, cache_dir=tmp_path)
    obs0, info0 = env.reset(seed=1)
    env.close()
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 4
    files[0].write_bytes(b"not a zip file")
    files[1].write_bytes(files[1].read_bytes()[:100])  # truncated
    files[2].write_bytes(b"")
    env = V4SNavEnv(split=SPLIT, tour_frames=4, cache_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obs, info = env.reset(seed=1)
    env.close()
    assert any("unreadable" in str(w.message) for w in caught)
    np.testing.assert_array_equal(obs["rgb"], obs0["rgb"])
    np.testing.assert_array_equal(info["context"]["frames"], info0["context"]["frames"])
    for f in files:  # rewritten, loadable
        with np.load(f) as z:
            assert "__meta__" in z.files


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("V4S_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "v4s_agent" / "scenes"
    monkeypatch.setenv("V4S_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(None) == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "kw") == tmp_path / "kw"
    assert resolve_cache_dir(False) is None
    monkeypatch.setenv("V4S_CACHE_DIR", "off")
    assert resolve_cache_dir() is None
    assert V4SNavEnv(cache_dir=None)._cache is None


def test_size_cap_evicts_least_recently_used(tmp_path):
    cache = SceneCache(tmp_path, max_bytes=60_000)
    keys = [cache.key("tour", f"seed-{i}", ("tour",)) for i in range(4)]
    rng = np.random.default_rng(0)
    for k in keys:
        cache.save(k, {"frames": rng.integers(0, 255, 25_000, dtype=np.uint8)})
    assert cache.load(keys[0]) is None and cache.load(keys[-1]) is not None
    assert sum(p.stat().st_size for p in tmp_path.glob("*.npz")) <= 60_000


# ------------------------------------------------------------------------------ fast warm path (issue 12)
def test_cache_files_are_uncompressed_aligned_and_mapped(tmp_path):
    cache = SceneCache(tmp_path)
    rng = np.random.default_rng(0)
    arrays = {"frames": rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8), "field": rng.random((17, 9)),
              "mask": rng.random((5, 7)) > 0.5, "empty": np.zeros((0, 3)), "fortran": np.asfortranarray(
              rng.random((6, 4)))}  # fmt: skip
    key = cache.key("tour", "seed-1", ("tour",))
    path = cache.save(key, arrays, {"n": 1})
    back, meta = cache.load(key)
    assert meta == {"n": 1} and back.keys() == arrays.keys()
    for name, a in arrays.items():
        assert _same(back[name], a), name
        assert not back[name].flags.writeable  # views of a read-only map of the file
        if a.size:
            assert back[name].ctypes.data % 64 == 0, name
    with np.load(path) as z:  # still an ordinary .npz
        assert _same({k: z[k] for k in arrays}, arrays)
    import zipfile

    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    path.unlink()  # an open mapping outlives its file (eviction, replacement by another worker)
    assert _same(back["field"], arrays["field"])
    # a compressed .npz of the same layout (another writer) is still read
    head = np.frombuffer(scene_cache.json.dumps({"key": key, "meta": None}).encode(), np.uint8)
    np.savez_compressed(path, field=arrays["field"], __meta__=head)
    assert _same(cache.load(key)[0]["field"], arrays["field"])
    # a damaged head fails its CRC: the file is deleted and rebuilt
    cache.save(key, arrays, {"n": 1})
    data = bytearray(path.read_bytes())
    at = data.rindex(b'"n": 1')
    data[at + 5] = ord("2")
    path.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.load(key) is None
    assert any("CRC" in str(w.message) for w in caught) and not path.exists()


def test_triangle_cells_are_the_sampled_points_cells(scene):
    from v4s_agent.envs.navigation import _sample_triangles, _triangle_cells

    grid = NavGrid(scene)
    tri = scene.vertices[:, :3].reshape(-1, 3, 3).astype(np.float64)
    lo, hi = grid.floor_y + 0.2, grid.floor_y + 1.5
    p, _ = _sample_triangles(tri, grid.cell_size * 0.5)
    p = p[(p[:, 1] > lo) & (p[:, 1] < hi)]
    ref = np.zeros(grid.shape, dtype=bool)
    ref[grid._cells(p[:, 0], p[:, 2])] = True
    got = _triangle_cells(tri, grid.cell_size * 0.5, lambda y: (y > lo) & (y < hi), grid.origin,
                          grid.cell_size, grid.shape)  # fmt: skip
    np.testing.assert_array_equal(got, ref)
    assert ref.sum() > 100


def test_semantic_probe_sees_objects_like_the_renderer():
    from v4s_agent.envs.goal_viewpoints import SemanticProbe

    for split in (SPLIT, "outdoor"):
        env = V4SNavEnv(split=split, tour_frames=2, cache_dir=False)
        env.reset(seed=2)
        probe = SemanticProbe(env.renderer)
        r = env.renderer
        n = 0
        for o in env.scene.objects[:4]:
            c = env._viewpoint_candidates(o)
            if c is None:
                continue
            _, _, _, cx, cz, order = c
            poses = [env._view_pose(o, cx[j], cz[j]) for j in order[:12]]
            views = probe.object_masks(o.instance_id, o.box_min, o.box_max, poses)
            for T, seen in zip(poses, views, strict=True):
                r.draw(T)
                np.testing.assert_array_equal(seen, r.read_semantic() == o.instance_id)
                n += int(seen.any())
        probe.close()
        env.close()
        assert n > 5  # the objects were in view


def _lru_run(env: V4SNavEnv, seeds) -> list:
    return [_episode(env, s, steps=4) for s in seeds]


def test_in_memory_lru_and_warm_cache_give_the_same_episodes(tmp_path, monkeypatch):
    from v4s_agent.envs import nav_env, scene_bundle

    seeds = (3, 8, 3, 5, 8, 3)  # revisits: scenes come back from the in-memory LRU
    kw = {"split": SPLIT, "tour_frames": 3, "obs_keys": KEYS}
    ref = _lru_run(V4SNavEnv(cache_dir=False, **kw), seeds)  # off: in-memory LRU only
    fresh = []
    for s in seeds:  # a new env per episode: nothing in memory, the disk cache cold then warm
        env = V4SNavEnv(cache_dir=tmp_path, **kw)
        fresh += _lru_run(env, [s])
        env.close()
    assert _same(ref, fresh)
    monkeypatch.setattr(scene_bundle, "_CATEGORY_MEMO", 1)
    assert _same(ref, _lru_run(V4SNavEnv(cache_dir=tmp_path, scene_lru=1, **kw), seeds))  # all evicted
    monkeypatch.undo()
    with pytest.raises(ValueError, match="scene_lru"):
        V4SNavEnv(scene_lru=0)

    # a warm cache builds nothing: no scene, grid, goal viewpoint, goal distance field or tour (the
    # expert's own field is computed when the expert is first asked)
    def boom(*a, **k):
        raise AssertionError("built on a warm cache")

    plain_field = nav_env.NavGrid.distance_field

    def expert_field_only(self, mask, safe=False):
        assert safe, "a goal distance field was computed on a warm cache"
        return plain_field(self, mask, safe=True)

    monkeypatch.setattr(nav_env, "split_scene", boom)
    monkeypatch.setattr(nav_env.NavGrid, "__init__", boom)
    monkeypatch.setattr(nav_env.NavGrid, "distance_field", expert_field_only)
    monkeypatch.setattr(nav_env.V4SNavEnv, "_goal_viewpoints", boom)
    monkeypatch.setattr(nav_env, "make_tour", boom)
    monkeypatch.setattr(scene_bundle, "make_tour", boom)
    env = V4SNavEnv(cache_dir=tmp_path, **kw)
    assert _same(ref, _lru_run(env, seeds))
    same = V4SNavEnv(cache_dir=tmp_path, scene_repeat=100, **kw)
    same.reset(seed=5)
    key, cats = same._scene_key, set()
    for _ in range(8):  # the scene's other categories: built with the scene, read with it
        cats.add(same.reset()[1]["goal_category"])
    assert len(cats) > 1 and same._scene_key == key
    same.close()
    # revisits read nothing from the disk either
    bundles = dict(env._bundles)
    monkeypatch.setattr(SceneCache, "load", boom)
    obs, info = env.reset(seed=8)
    assert env._bundle is bundles[env._scene_key]
    assert info["context"]["frames"].flags.writeable  # the documented copy
    env.close()


def test_lazily_filled_goals_give_the_same_episodes(monkeypatch):
    # backends without the semantic probe fill the goals category by category (exact usability check)
    from v4s_agent.envs import nav_env

    kw = {"split": SPLIT, "tour_frames": 3, "obs_keys": KEYS, "cache_dir": False}
    ref = _lru_run(V4SNavEnv(**kw), (0, 5))
    monkeypatch.setattr(nav_env.V4SNavEnv, "_goals_at_once", lambda self: False)
    env = V4SNavEnv(**kw)
    assert _same(ref, _lru_run(env, (0, 5)))
    assert len(env._bundle._goals["masks"]) < len(env.scene.categories)  # only what was needed
