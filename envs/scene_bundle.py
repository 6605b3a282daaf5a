"""What ``V4SNavEnv`` keeps per scene: the renderer, the nav grid, the tour, the scene video and the goals.

Why a bundle: a scene's derived parts cost far more than an episode (a GL context, a nav grid, hundreds of
goal-viewpoint renders), so the env keeps the last ``scene_lru`` scenes' bundles in memory and reads the
rest from the disk cache (``scene_cache``). Also here: the renderer factory, the walkable-floor check,
and the names under which procedural scenes and GL drivers key the disk cache.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from .goal_viewpoints import SemanticProbe
from .navigation import NavGrid
from .scene_cache import SceneCache
from .scenes import Scene, SceneError
from .tour import make_tour

_CATEGORY_MEMO = 4  # per scene: the last categories' full distance fields (expanded from the goals)


class SceneBundle:
    """Everything derived from one scene that episodes reuse: renderer, nav grid, tour (built lazily) and
    the goals of every category (viewpoint masks, distance fields, usability; built together, once). With
    a disk cache (``cache``, for procedural scenes named ``ident``, moderngl only) the tour and the goals
    are read from and written to it; their keys add the GL implementation and the render parameters
    (``render_key``)."""

    def __init__(self, scene: Scene, navgrid: NavGrid, renderer, pitch: float, tour_frames: int,
                 cache: SceneCache | None = None, ident: str | None = None,
                 render_key: dict | None = None) -> None:  # fmt: skip
        self.scene = scene
        self.navgrid = navgrid
        self.renderer = renderer
        self.pitch = pitch
        self.tour_frames = tour_frames
        self._tour: dict[str, np.ndarray] | None = None
        self._video: dict[str, np.ndarray] | None = None
        self._goals: dict[str, dict] | None = None  # {"masks", "fields", "starts", "usable"}
        # the last few categories' full fields and expert fields: same-scene resets reuse them
        self._episodes: OrderedDict[str, tuple] = OrderedDict()
        self._safe_fields: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cells: tuple[np.ndarray, np.ndarray] | None = None
        self.probe: SemanticProbe | None = None  # while the goals are built (moderngl)
        on_disk = cache is not None and ident is not None and render_key is not None
        self._cache = cache if on_disk else None
        self._ident, self._render_key = ident, render_key

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """World (x, z) of every grid cell centre, (H, 1) and (1, W) broadcastable."""
        if self._cells is None:
            H, W = self.navgrid.shape
            self._cells = self.navgrid.to_world(np.arange(H)[:, None], np.arange(W)[None, :])
        return self._cells

    def tour(self) -> dict[str, np.ndarray]:
        if self._tour is None:
            seed = self.scene.seed if self.scene.seed is not None else 0

            def build():
                return make_tour(self.scene, self.renderer, self.tour_frames, seed, self.navgrid, self.pitch)

            if self._cache is None:
                tour = build()
            else:
                h, w = self.renderer.height, self.renderer.width
                params = {**self._render_key, "n_frames": self.tour_frames, "seed": seed}  # type: ignore[dict-item]
                key = self._cache.key("tour", self._ident, ("tour", "renderer_gl"), params)  # type: ignore[arg-type]

                def restore(arrays, meta):
                    frames, poses = arrays["frames"], arrays["poses"]
                    if frames.shape != (self.tour_frames, h, w, 3) or poses.shape != (self.tour_frames, 4, 4):
                        raise ValueError(f"tour arrays of shape {frames.shape}, {poses.shape}")
                    return {"frames": frames, "poses": poses}

                tour = self._cache.cached(key, build, lambda t: (dict(t), None), restore)
            tour["frames"].flags.writeable = False
            tour["poses"].flags.writeable = False
            self._tour = tour
        return self._tour

    def video(self, build) -> dict[str, np.ndarray]:
        """The scene video (``scene_video.record_scene_video``), built once or read from the disk cache."""
        if self._video is None:
            if self._cache is None:
                video = build()
            else:
                seed = self.scene.seed if self.scene.seed is not None else 0
                params = {**self._render_key, "seed": seed}  # type: ignore[dict-item]
                deps = ("scene_video", "nav_env", "expert", "tour", "renderer_gl")
                key = self._cache.key("scene_video", self._ident, deps, params)  # type: ignore[arg-type]
                video = self._cache.cached(key, build, lambda v: (dict(v), None), lambda a, m: dict(a))
            for v in video.values():
                v.flags.writeable = False
            self._video = video
        return self._video

    # ------------------------------------------------------------------------------------------ goals
    def goals(self, build, complete: bool = True) -> dict[str, dict]:
        """The goals of every category of the scene, ``build()`` once (or read from the disk cache):
        ``{"masks": {cat: bool (H, W)}, "fields": {cat: float64 geodesic distance of each navigable cell
        (row-major)}, "starts": {cat: int32 flat indices of the cells an episode may start from},
        "usable": {cat: bool}}``. ``complete=False``: ``build`` returns dicts that the env fills category
        by category, kept in memory only."""
        if self._goals is None:
            if self._cache is None or not complete:  # only complete goals go to the disk cache
                self._goals = build()
            else:
                key = self._cache.key("goals", self._ident, ("nav_env", "renderer_gl"), self._render_key)  # type: ignore[arg-type]
                self._goals = self._cache.cached(key, build, self._dump_goals, self._restore_goals)
        return self._goals

    def _dump_goals(self, goals: dict[str, dict]) -> tuple[dict[str, np.ndarray], Any]:
        """Three arrays (masks (C, H, W), fields (C, N), start cells concatenated) whatever the number of
        categories: each member of a file costs a little to map."""
        cats = sorted(goals["masks"])
        g = self.navgrid
        n = int(np.count_nonzero(g.navigable))
        starts = [goals["starts"][c] for c in cats]
        arrays = {"masks": np.array([goals["masks"][c] for c in cats], bool).reshape(-1, *g.shape),
                  "fields": np.array([goals["fields"][c] for c in cats], np.float64).reshape(-1, n),
                  "starts": np.concatenate([np.zeros(0, np.int32), *starts]).astype(np.int32)}  # fmt: skip
        meta = {"categories": cats, "usable": [bool(goals["usable"][c]) for c in cats],
                "start_ends": np.cumsum([len(s) for s in starts], dtype=np.int64).tolist()}  # fmt: skip
        return arrays, meta

    def _restore_goals(self, arrays: dict[str, np.ndarray], meta: Any) -> dict[str, dict]:
        g = self.navgrid
        cats = [str(c) for c in meta["categories"]]
        usable = [bool(u) for u in meta["usable"]]
        ends = [int(e) for e in meta["start_ends"]]
        masks, fields, starts = arrays["masks"], arrays["fields"], arrays["starts"]
        n, size = int(np.count_nonzero(g.navigable)), g.shape[0] * g.shape[1]
        if cats != self.scene.categories or not len(usable) == len(ends) == len(cats):
            raise ValueError("goal categories do not match the scene")
        if masks.shape != (len(cats), *g.shape) or masks.dtype != bool:
            raise ValueError("goal masks do not match the grid")
        if fields.shape != (len(cats), n) or fields.dtype != np.float64:
            raise ValueError("goal fields do not match the grid")
        if starts.ndim != 1 or starts.dtype != np.int32 or (ends and ends[-1] != len(starts)):
            raise ValueError("start cells do not match the goals")
        if len(starts) and (starts.min() < 0 or starts.max() >= size):
            raise ValueError("start cells out of the grid")
        begins = [0, *ends[:-1]]
        return {"masks": dict(zip(cats, masks, strict=True)), "fields": dict(zip(cats, fields, strict=True)),
                "starts": {c: starts[b:e] for c, b, e in zip(cats, begins, ends, strict=True)},
                "usable": dict(zip(cats, usable, strict=True))}  # fmt: skip

    def episode_setup(self, category: str) -> tuple[np.ndarray, np.ndarray]:
        """(field, starts) of ``category``: the geodesic distance (m) of every cell to its viewpoints (inf
        off the walkable component, as ``NavGrid.distance_field`` gives it; read-only) and the cells an
        episode may start from (``_start_cells``)."""
        hit = self._episodes.get(category)
        if hit is None:
            f = np.full(self.navgrid.shape, np.inf)
            f[self.navgrid.navigable] = self._goals["fields"][category]  # type: ignore[index]
            f.flags.writeable = False
            hit = (f, self._goals["starts"][category])  # type: ignore[index]
            self._episodes[category] = hit
            if len(self._episodes) > _CATEGORY_MEMO:
                self._episodes.popitem(last=False)
        else:
            self._episodes.move_to_end(category)
        return hit

    def safe_field(self, category: str) -> np.ndarray:
        """The expert's distance field to the viewpoints of ``category`` (computed on first use)."""
        f = self._safe_fields.get(category)
        if f is None:
            f = self.navgrid.distance_field(self._goals["masks"][category], safe=True)  # type: ignore[index]
            f.flags.writeable = False
            self._safe_fields[category] = f
            if len(self._safe_fields) > _CATEGORY_MEMO:
                self._safe_fields.popitem(last=False)
        return f

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        self.renderer.close()
        self._tour = None
        self._video = None
        self._goals = None
        self._episodes.clear()
        self._safe_fields.clear()


def _make_renderer(scene: Scene, resolution, backend: str, pitch: float, **habitat_kwargs):
    if backend == "moderngl":
        from .renderer_gl import GLRenderer

        return GLRenderer(scene, resolution)
    if backend == "habitat_sim":
        from .renderer_habitat import HabitatSimRenderer

        return HabitatSimRenderer(scene, resolution, **habitat_kwargs)  # gpu_device_id, keys
    raise ValueError(f"unknown backend {backend!r}; expected 'moderngl' or 'habitat_sim'")


MIN_WALKABLE_M2 = 2.0  #: a scene needs at least this much walkable floor (m^2) to host episodes


def _check_walkable(scene: Scene, g: NavGrid) -> None:
    """Refuse a scene without a usable floor (e.g. a GLB with no floor gave a pose task on 4 cells)."""
    n = int(g.navigable.sum())
    area = n * g.cell_size**2
    if area < MIN_WALKABLE_M2:
        raise SceneError(
            f"scene {scene.name!r} has {area:.2f} m^2 of walkable floor ({n} cells at y = "
            f"{scene.floor_y:.2f}); at least {MIN_WALKABLE_M2:g} m^2 is needed. The scene needs a floor "
            "(upward-facing triangles) with room for the agent: check that the file has one and that its up "
            "axis is right (up=, or 'up' in its stage_config.json)"
        )


def _cache_ident(key) -> str | None:
    """Name of a procedural scene in the disk cache (None: scenes from files or objects are not cached)."""
    if key[0] == "seed":
        return f"seed-{int(key[1])}"
    if key[0] == "split":
        return f"split-{key[1]}-{int(key[2])}"
    return None


_GL_IDS: dict[int, str] = {}


def _gl_identity(renderer) -> str:
    """The GL implementation a moderngl renderer draws with (rendered artifacts are cached per driver)."""
    ctx = renderer.ctx
    if id(ctx) not in _GL_IDS:
        import moderngl

        info = ctx.info
        _GL_IDS[id(ctx)] = f"{info['GL_RENDERER']} | {info['GL_VERSION']} | moderngl {moderngl.__version__}"
    return _GL_IDS[id(ctx)]
