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
    assert kinds == ["goals"] * 2 + ["navgrid"] * 2 + ["scene"] * 2 + ["tour"] * 2
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
