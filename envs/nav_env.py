"""``V4SNav-v0``: object-goal and pose-goal navigation in Habitat-style scenes, with a context tour video."""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .actions import ACTION_NAMES, FORWARD_STEP_M, MOVE_FORWARD, STOP, TURN_ANGLE_DEG, TURN_LEFT, TURN_RIGHT
from .geometry import DEFAULT_CAMERA_PITCH_DEG, forward_xz, make_pose, wrap_angle
from .goal_metrics import box_from_mask, sd_from_box
from .goal_viewpoints import (
    START_MIN_GEODESIC,
    SUCCESS_DISTANCE,
    SUCCESS_SD,
    GoalViewpointsMixin,
    _start_cells,
    footprint_distance,
)
from .nav_expert import NavExpertMixin
from .navigation import NavGrid
from .scene_bundle import (
    MIN_WALKABLE_M2,
    SceneBundle,
    _cache_ident,
    _check_walkable,
    _gl_identity,
    _make_renderer,
)
from .scene_cache import (
    NAVGRID_DEPS,
    SCENE_DEPS,
    dump_navgrid,
    dump_scene,
    open_cache,
    restore_navgrid,
    restore_scene,
)
from .scenes import CATEGORIES, SPLITS, TRAIN, Scene, SceneError, load_gltf_scene, make_scene, split_scene
from .topdown import top_down_map
from .tour import make_tour
from .vector import install_fork_hooks, note_gl_context, prefer_fork_safe_llvmpipe

prefer_fork_safe_llvmpipe()  # before any GL context: forked vector-env workers can then render
install_fork_hooks()

OBS_KEYS = ("rgb", "depth", "semantic")
POSE_SUCCESS_DISTANCE = 0.5
POSE_SUCCESS_ANGLE_DEG = 15.0
_TURN = math.radians(TURN_ANGLE_DEG)
_BUNDLE_LRU = 16  # default scene_lru: scenes kept in memory per env (renderer, grid, tour, goals)
CONTEXT_VIDEOS = ("scene", "tour", "none")  # what info["context"] serves: scene video, short tour, nothing
_SceneBundle = SceneBundle  # the name before the bundle had a module of its own
__all__ = [
    "CONTEXT_VIDEOS",
    "MIN_WALKABLE_M2",
    "NAN",
    "OBS_KEYS",
    "POSE_INSTRUCTION",
    "POSE_SUCCESS_ANGLE_DEG",
    "POSE_SUCCESS_DISTANCE",
    "START_MIN_GEODESIC",
    "SUCCESS_DISTANCE",
    "SUCCESS_SD",
    "V4SNavEnv",
    "article",
    "instruction_for",
]


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def instruction_for(category: str) -> str:
    """Object-grounding instruction in the paper's wording."""
    name = category.replace("_", " ")
    return f"Find the {name}. Finally, it focuses on {article(name)} {name} in the center of the frame."


class _NaN(float):
    """``nan`` that equals itself, so two identical episodes give equal ``info`` (``check_env`` compares
    infos with ``==``); it is still a float, ``math.isnan`` is True and it compares False with numbers."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and math.isnan(other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = float.__hash__

    def __reduce__(self):
        return (_NaN, ("nan",))


NAN = _NaN("nan")


POSE_INSTRUCTION = "Move the camera along the given path to the goal pose."


class V4SNavEnv(GoalViewpointsMixin, NavExpertMixin, gym.Env):
    """Navigate a Habitat-style scene to an object (``task="object"``) or a camera pose (``task="pose"``).

    ## Action Space
    ``Discrete(4)`` in Habitat's order: 0 stop, 1 move_forward (0.25 m, sliding along obstacles),
    2 turn_left (15 deg), 3 turn_right (15 deg).

    ## Observation Space
    ``Dict`` with ``"rgb"`` uint8 (H, W, 3) and, when requested in ``obs_keys``, ``"depth"`` float32 (H, W)
    metres (0 = nothing hit) and ``"semantic"`` int32 (H, W) instance ids (0 = structure/background). The
    instruction is the attribute ``instruction`` / ``task_description`` (and ``info["instruction"]``).

    ## Rewards
    Decrease of geodesic distance to the goal minus 0.01 per step, +2.5 on a successful STOP.

    ## Episode End
    Terminates on STOP; truncated by ``max_episode_steps`` (500 when made through ``gym.make``).

    ## Info
    ``is_success``/``success``, ``spl``, ``distance_to_goal`` (geodesic, m), ``goal_sd`` (nan if not
    visible), ``goal_box``, ``goal_visible``, ``agent_pose`` (4x4), ``collided``, ``goal_category``,
    ``instruction``; at reset also ``context`` = ``{"frames", "poses"}`` (the scene video, never per step).
    Object success: STOP within 1.0 m of a goal instance with it visible and SD < 0.2. Pose success: STOP
    within 0.5 m and 15 deg of the goal pose (``info["goal_pose"]``).

    ## Arguments
    task, scene (None = embedded default, an int seed, a split name or a GLB/glTF path), split,
    resolution=(H, W), backend ("moderngl" | "habitat_sim"), obs_keys, render_mode ("rgb_array"),
    goal_category (fix the object goal), context_video ("scene": ``info["context"]`` is the scene video,
    hundreds of frames that visit the objects and look around, ``scene_video.py``; "tour": the short
    covering tour of ``tour_frames`` frames; "none": no context), tour_frames, camera_pitch_deg (fixed
    camera pitch, default -30
    so that objects within 1 m can be centred in view from a 1.5 m camera), gpu_device_id (habitat_sim
    only: CUDA device to render on; None = 0 when an NVIDIA EGL device serves it, else -1 = the default
    EGL device, e.g. Mesa on a CPU machine), cache_dir (disk cache of procedural scenes, nav grids, goal
    viewpoints and tours: None = ``$V4S_CACHE_DIR`` or ``~/.cache/v4s_agent/scenes``, a path, or False =
    off; results are identical with and without it), scene_repeat (split scenes: unseeded resets stay in
    the current scene for this many episodes before drawing a new one, as Habitat groups episodes by
    scene; 1 = a new draw every reset; a seeded reset always draws), scene_lru (scenes kept in memory, 16:
    renderer, grid, tour and goals, about 3 MB each at 128x128 besides the mapped cache files; a scene
    change to one of them costs no load; raise it to the split's size for the fastest resets).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "object",
        scene: int | str | os.PathLike | Scene | None = None,
        split: str | None = None,
        resolution: tuple[int, int] = (128, 128),
        backend: str = "moderngl",
        obs_keys: tuple[str, ...] = ("rgb",),
        render_mode: str | None = "rgb_array",
        goal_category: str | None = None,
        tour_frames: int = 48,
        context_video: str = "scene",
        camera_pitch_deg: float = DEFAULT_CAMERA_PITCH_DEG,
        annotation: str | os.PathLike | dict | None = None,
        gpu_device_id: int | None = None,
        cache_dir: str | os.PathLike | bool | None = None,
        scene_repeat: int = 1,
        scene_lru: int = _BUNDLE_LRU,
    ) -> None:
        if task not in ("object", "pose"):
            raise ValueError(f"unknown task {task!r}; expected 'object' or 'pose'")
        if backend not in ("moderngl", "habitat_sim"):
            raise ValueError(f"unknown backend {backend!r}; expected 'moderngl' or 'habitat_sim'")
        try:
            h, w = (int(v) for v in resolution)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"resolution must be (height, width), got {resolution!r}") from exc
        if h <= 0 or w <= 0:
            raise ValueError(f"resolution must be positive (height, width), got {resolution!r}")
        obs_keys = tuple(obs_keys)
        bad = [k for k in obs_keys if k not in OBS_KEYS]
        if bad or "rgb" not in obs_keys:
            raise ValueError(f"obs_keys must include 'rgb' and be drawn from {OBS_KEYS}, got {obs_keys!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if goal_category is not None and goal_category not in CATEGORIES:
            raise ValueError(f"unknown goal_category {goal_category!r}; known: {', '.join(CATEGORIES)}")
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        if isinstance(scene, str) and scene not in SPLITS and not Path(scene).suffix:
            raise ValueError(f"scene {scene!r} is neither a split {sorted(SPLITS)} nor a .glb/.gltf path")
        if isinstance(scene, (str, os.PathLike)) and scene not in SPLITS and not Path(scene).is_file():
            raise SceneError(f"scene file not found: {str(scene)!r}")
        if backend == "habitat_sim":
            from .renderer_habitat import require_habitat_sim

            require_habitat_sim()  # fail at construction with install instructions, not at the first reset
        if context_video not in CONTEXT_VIDEOS:
            raise ValueError(f"context_video must be one of {CONTEXT_VIDEOS}, got {context_video!r}")
        if tour_frames < 1:
            raise ValueError(f"tour_frames must be >= 1, got {tour_frames}")
        if int(scene_repeat) < 1:
            raise ValueError(f"scene_repeat must be >= 1, got {scene_repeat}")
        if int(scene_lru) < 1:
            raise ValueError(f"scene_lru must be >= 1, got {scene_lru}")
        self.task = task
        self.scene_spec = scene
        self.split = (
            split if split is not None else (scene if isinstance(scene, str) and scene in SPLITS else None)
        )
        self.resolution = (h, w)
        self.backend = backend
        self.obs_keys = obs_keys
        self.render_mode = render_mode
        self.goal_category_fixed = goal_category
        self.tour_frames = int(tour_frames)
        self.context_video = context_video
        self.camera_pitch_deg = float(camera_pitch_deg)
        self.camera_pitch = math.radians(self.camera_pitch_deg)
        self.annotation = annotation
        self.gpu_device_id = gpu_device_id
        self.cache_dir = cache_dir
        self._cache = open_cache(cache_dir)
        self.scene_repeat = int(scene_repeat)
        self.scene_lru = int(scene_lru)
        self._scene_key: Any = None
        self._scene_episodes = 0
        self.action_space = spaces.Discrete(len(ACTION_NAMES))
        obs = {"rgb": spaces.Box(0, 255, (h, w, 3), np.uint8)}
        if "depth" in obs_keys:
            obs["depth"] = spaces.Box(0.0, np.inf, (h, w), np.float32)
        if "semantic" in obs_keys:
            obs["semantic"] = spaces.Box(0, np.iinfo(np.int32).max, (h, w), np.int32)
        self.observation_space = spaces.Dict(obs)
        self._bundles: OrderedDict[Any, SceneBundle] = OrderedDict()
        self._bundle: SceneBundle | None = None
        self._episode_ready = False
        self._pose_key: tuple | None = None
        self._pose = np.eye(4)
        self.instruction = ""
        self.task_description = ""
        self.goal_category = ""
        self._last_semantic: np.ndarray | None = None
        self._safe_field_value: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------ scenes
    @property
    def scene(self) -> Scene:
        if self._bundle is None:
            raise RuntimeError("call reset() first: the scene is loaded lazily on the first reset")
        return self._bundle.scene

    @property
    def navgrid(self) -> NavGrid:
        if self._bundle is None:
            raise RuntimeError("call reset() first")
        return self._bundle.navgrid

    @property
    def renderer(self):
        if self._bundle is None:
            raise RuntimeError("call reset() first")
        return self._bundle.renderer

    def _scene_key_for_episode(self, seeded: bool = True) -> Any:
        spec = self.scene_spec
        if isinstance(spec, Scene):
            return ("obj", id(spec))
        if spec is None and self.split is None:
            return ("seed", 0)
        if isinstance(spec, (int, np.integer)):
            return ("seed", int(spec))
        split = self.split if self.split is not None else spec
        if isinstance(split, str) and split in SPLITS:
            cur = self._scene_key
            stay = not seeded and cur is not None and cur[:2] == ("split", split)
            if stay and self._scene_episodes < self.scene_repeat:
                return cur
            return ("split", split, int(self.np_random.integers(SPLITS[split].n_scenes)))
        return ("file", str(spec))

    def _load_scene(self, key) -> Scene:
        kind = key[0]
        if kind == "obj":
            return self.scene_spec  # type: ignore[return-value]
        if kind == "seed":
            return make_scene(key[1], "indoor", SPLITS[TRAIN].categories)
        if kind == "split":
            return split_scene(key[1], key[2])
        return load_gltf_scene(key[1], self.annotation)

    def _get_bundle(self, key) -> SceneBundle:
        if key in self._bundles:
            self._bundles.move_to_end(key)
            return self._bundles[key]
        ident = _cache_ident(key) if self._cache is not None else None
        if ident is None:
            scene = self._load_scene(key)
            navgrid = NavGrid(scene)
        else:
            cache = self._cache
            scene = cache.cached(cache.key("scene", ident, SCENE_DEPS), lambda: self._load_scene(key),
                                 dump_scene, restore_scene)  # fmt: skip
            navgrid = cache.cached(cache.key("navgrid", ident, NAVGRID_DEPS), lambda: NavGrid(scene),
                                   dump_navgrid, restore_navgrid)  # fmt: skip
        _check_walkable(scene, navgrid)
        kw = {}
        if self.backend == "habitat_sim":  # one sensor per target read: rgb, depth if observed, semantic if
            keys = ["rgb"] + [k for k in ("depth",) if k in self.obs_keys]  # observed or object goals
            keys += ["semantic"] if self.task == "object" or "semantic" in self.obs_keys else []
            kw = {"gpu_device_id": self.gpu_device_id, "keys": tuple(keys)}
        renderer = _make_renderer(scene, self.resolution, self.backend, self.camera_pitch, **kw)
        if self.backend == "moderngl":
            note_gl_context(renderer.ctx)  # forked vector-env workers may then inherit it (vector.py)
        render_key = None
        if ident is not None and self.backend == "moderngl":
            render_key = {"gl": _gl_identity(renderer), "resolution": list(self.resolution),
                          "pitch": self.camera_pitch}  # fmt: skip
        bundle = SceneBundle(scene, navgrid, renderer, self.camera_pitch, self.tour_frames, self._cache,
                              ident, render_key)  # fmt: skip
        self._bundles[key] = bundle
        while len(self._bundles) > self.scene_lru:
            _, old = self._bundles.popitem(last=False)
            old.close()
        return bundle

    # --------------------------------------------------------------------------------------- episodes
    def get_context(self) -> dict[str, np.ndarray]:
        """The current scene's context video ``{"frames": uint8 (N,H,W,3), "poses": float64 (N,4,4)}``
        (read-only arrays shared by the scene's episodes; copy before modifying): the scene video
        (``context_video="scene"``, hundreds of frames) or the short covering tour (``"tour"``)."""
        if self._bundle is None:
            raise RuntimeError("call reset() first: the context belongs to the scene chosen at reset")
        if self.context_video == "none":
            raise RuntimeError("this env was made with context_video='none': it serves no context")
        if self.context_video == "tour":
            return self._bundle.tour()
        v = self.get_scene_video()
        return {"frames": v["frames"], "poses": v["poses"]}

    def get_tour(self) -> dict[str, np.ndarray]:
        """The short covering tour (``tour_frames`` frames) of the current scene."""
        if self._bundle is None:
            raise RuntimeError("call reset() first: the tour belongs to the scene chosen at reset")
        return self._bundle.tour()

    def get_scene_video(self) -> dict[str, np.ndarray]:
        """The full scene video of the current scene (``scene_video.record_scene_video``'s arrays:
        frames, poses, actions, per-category boxes and the visit table; read-only). Training data is cut
        from it; the boxes and visits are privileged (an agent gets only ``get_context()``)."""
        if self._bundle is None:
            raise RuntimeError("call reset() first: the video belongs to the scene chosen at reset")
        return self._bundle.video(self._record_scene_video)

    def _record_scene_video(self) -> dict[str, np.ndarray]:
        """Drive a private object-task env that shares this scene's bundle (renderer, grid, goals)."""
        from .scene_video import SceneVideoConfig, record_scene_video, tour_as_video

        b = self._bundle
        cfg = SceneVideoConfig()
        seed = b.scene.seed if b.scene.seed is not None else 0

        def tour() -> dict[str, np.ndarray]:
            frames = cfg.fallback_frames
            return tour_as_video(make_tour(b.scene, b.renderer, frames, seed, b.navgrid, b.pitch))

        if not b.scene.objects or self.backend != "moderngl":
            return tour()
        rec = V4SNavEnv(task="object", scene=b.scene, resolution=self.resolution,
                        obs_keys=("rgb", "semantic"), render_mode=None,
                        camera_pitch_deg=self.camera_pitch_deg, context_video="none",
                        cache_dir=False)  # fmt: skip
        rec._bundles[("obj", id(b.scene))] = b
        try:
            return record_scene_video(rec, seed, cfg)
        except ValueError as e:  # no reachable object anywhere: the covering tour
            if "no reachable goal" not in str(e):
                raise
            return tour()
        finally:
            rec._bundles.clear()
            rec._bundle = None

    def _context_copy(self) -> dict[str, np.ndarray]:
        """``info["context"]`` at reset: a writable copy of the tour that callers may keep and modify."""
        ctx = self.get_context()
        return {"frames": ctx["frames"].copy(), "poses": ctx["poses"].copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if options is not None and not isinstance(options, dict):
            raise TypeError(
                f"reset(options=...) must be a dict such as {{'goal_category': 'chair'}} or None; "
                f"got {type(options).__name__}"
            )
        super().reset(seed=seed)
        options = options or {}
        self._closed = False
        self._episode_ready = False
        key = self._scene_key_for_episode(seeded=seed is not None)
        self._scene_episodes = self._scene_episodes + 1 if key is self._scene_key else 1
        self._scene_key = key
        self._bundle = self._get_bundle(key)
        scene, g = self._bundle.scene, self._bundle.navgrid
        rng = self.np_random
        self.goal_pose = None
        if self.task == "object":
            cats = [options.get("goal_category") or self.goal_category_fixed] if (
                options.get("goal_category") or self.goal_category_fixed) else scene.categories  # fmt: skip
            if not cats:
                raise ValueError(
                    "task='object' needs goal objects, but this scene has no annotated objects; pass an "
                    "annotation file (annotation=...), place one with place_object_file(), or use task='pose'"
                )
            if cats[0] not in CATEGORIES and cats[0] not in scene.categories:
                raise ValueError(f"unknown goal category {cats[0]!r}; known: {', '.join(CATEGORIES)}")
            if scene.objects and len(cats) == 1 and cats[0] not in scene.categories:
                raise ValueError(
                    f"goal category {cats[0]!r} is not present in scene {scene.name!r}: its "
                    f"{len(scene.objects)} annotated objects are {', '.join(scene.categories)}; choose one "
                    "of those, or annotate an object of that category"
                )
            usable = [c for c in cats if self._goal_usable(c)]
            if not usable:
                if scene.objects:
                    raise ValueError(
                        f"no reachable goal of category {cats} in scene {scene.name!r}; "
                        f"present: {scene.categories}"
                    )
                raise ValueError(
                    f"scene {scene.name!r} has no annotated objects: use task='pose' or an annotation"
                )
            self.goal_category = usable[int(rng.integers(len(usable)))]
            self._goal_ids = np.array([o.instance_id for o in scene.objects_of(self.goal_category)], np.int32)
            self._goal_objs = scene.objects_of(self.goal_category)
            self._ensure_goal(self.goal_category)  # built already, except on lazily filled goals
            self._goal_mask = self._scene_goals()["masks"][self.goal_category]
            self._field, starts = self._bundle.episode_setup(self.goal_category)
            self.instruction = instruction_for(self.goal_category)
        else:
            self.goal_category = ""
            self._goal_ids = np.zeros(0, np.int32)
            self._goal_objs = []
            gx, gz = g.sample_navigable(rng)
            gyaw = wrap_angle(int(rng.integers(24)) * _TURN)
            self.goal_pose = make_pose(gx, gz, gyaw, scene.floor_y, pitch=self.camera_pitch)
            self._goal_xz, self._goal_yaw = (gx, gz), gyaw
            self._goal_mask = g.point_mask(gx, gz, 0.3)
            self._field = g.distance_field(self._goal_mask)
            starts = _start_cells(g, self._field)
            self.instruction = POSE_INSTRUCTION
        self._safe_field_value: np.ndarray | None = None  # the expert's field, on first use
        self.task_description = self.instruction
        start = options.get("start")
        if start is None:
            r, c = divmod(int(starts[int(rng.integers(len(starts)))]), g.shape[1])
            sx, sz = g.to_world(r, c)
            self._x, self._z = float(sx), float(sz)
            self._yaw_steps = int(rng.integers(24))
        else:  # a given start (x, z, yaw): chained episodes, e.g. the scene video's visits
            self._x, self._z, self._yaw_steps = self._parse_start(start)
            r, c = g.to_cell(self._x, self._z)
        self._start_distance = float(self._field[r, c])
        self._path_length = 0.0
        self._trajectory = [(self._x, self._z)]
        self._steps = 0
        self._done = False
        self._last_success = False
        self._final_heading = None
        self._replans = 0
        self._expert_visits: dict[tuple, int] = {}
        self._excluded = np.zeros(g.shape, dtype=bool)
        self._episode_ready = True
        obs = self._observe()
        info = self._info(collided=False, stopped=False)
        if self.context_video != "none":
            info["context"] = self._context_copy()
        if self.goal_pose is not None:
            info["goal_pose"] = self.goal_pose.copy()
        return obs, info

    def _parse_start(self, start: Any) -> tuple[float, float, int]:
        """``options["start"] = (x, z, yaw_radians)`` on walkable floor -> (x, z, yaw lattice step)."""
        try:
            x, z, yaw = (float(v) for v in start)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"options['start'] must be (x, z, yaw_radians), got {start!r}") from exc
        if not all(map(math.isfinite, (x, z, yaw))):
            raise ValueError(f"options['start'] must be finite, got {start!r}")
        g = self._bundle.navgrid
        r, c = g.to_cell(x, z)
        if not g.is_navigable(x, z) or not np.isfinite(self._field[r, c]):
            raise ValueError(f"options['start'] {start!r} is not on walkable floor that reaches the goal")
        return x, z, int(round(yaw / _TURN)) % 24

    # ------------------------------------------------------------------------------------------ step
    @property
    def yaw(self) -> float:
        return wrap_angle(self._yaw_steps * _TURN)

    @property
    def agent_pose(self) -> np.ndarray:
        """Camera-to-world pose (4x4 float64, a fresh array). The last one is kept: a step asks for it
        twice (render, info), and turning back or bumping a wall returns to a pose just seen."""
        key = (self._x, self._z, self._yaw_steps, self._bundle.scene.floor_y, self.camera_pitch)
        if self._pose_key != key:
            self._pose = make_pose(self._x, self._z, self.yaw, key[3], pitch=self.camera_pitch)
            self._pose_key = key
        return self._pose.copy()

    def _try_forward(self) -> tuple[float, float, bool]:
        """Forward step with Habitat-like sliding; returns new (x, z) and whether it collided."""
        g = self._bundle.navgrid
        dx, dz = forward_xz(self.yaw)
        dx, dz = dx * FORWARD_STEP_M, dz * FORWARD_STEP_M
        x, z = self._x, self._z

        def free(nx, nz):
            return g.is_navigable(nx, nz) and g.is_navigable(x + (nx - x) / 2, z + (nz - z) / 2)

        if free(x + dx, z + dz):
            return x + dx, z + dz, False
        best = (x, z)
        for sx, sz in ((dx, 0.0), (0.0, dz)):
            longer = abs(sx) + abs(sz) > max(0.02, abs(best[0] - x) + abs(best[1] - z))
            if longer and free(x + sx, z + sz):
                best = (x + sx, z + sz)
        return best[0], best[1], True

    def step(self, action):
        if not self._episode_ready:
            if getattr(self, "_closed", False):
                raise RuntimeError("step() called after close(): call env.reset() (or make a new env) first")
            raise RuntimeError("step() called before reset(): call env.reset() to start an episode")
        if self._done:
            raise RuntimeError("episode is over (STOP was called): call env.reset()")
        if type(action) is int:  # the common case, without gymnasium's generic check
            valid = 0 <= action < self.action_space.n
        else:
            try:
                valid = self.action_space.contains(action)
            except Exception:
                valid = False
        if not valid:
            raise ValueError(
                f"invalid action {action!r}: expected an int in 0..3 ({', '.join(ACTION_NAMES)})"
            )
        a = int(action)
        prev = self._distance()
        collided = False
        if a == MOVE_FORWARD:
            nx, nz, collided = self._try_forward()
            self._path_length += math.hypot(nx - self._x, nz - self._z)
            self._x, self._z = nx, nz
            self._trajectory.append((nx, nz))
        elif a == TURN_LEFT:
            self._yaw_steps = (self._yaw_steps + 1) % 24
        elif a == TURN_RIGHT:
            self._yaw_steps = (self._yaw_steps - 1) % 24
        self._steps += 1
        obs = self._observe()
        stopped = a == STOP
        info = self._info(collided=collided, stopped=stopped)
        reward = float(prev - info["distance_to_goal"]) if np.isfinite(prev) else 0.0
        reward -= 0.01
        if stopped:
            self._done = True
            if info["success"]:
                reward += 2.5
        return obs, reward, stopped, False, info

    # ------------------------------------------------------------------------------------ observation
    def _observe(self) -> dict[str, np.ndarray]:
        r = self._bundle.renderer
        r.draw(self.agent_pose)
        obs = {"rgb": r.read_rgb()}
        if "depth" in self.obs_keys:
            obs["depth"] = r.read_depth()
        sem = r.read_semantic() if self.task == "object" or "semantic" in self.obs_keys else None
        if "semantic" in self.obs_keys:
            obs["semantic"] = sem
        self._last_semantic = sem
        self._last_rgb = obs["rgb"]
        return obs

    def _distance(self) -> float:
        r, c = self._bundle.navgrid.to_cell(self._x, self._z)
        f = self._field
        if 0 <= r < f.shape[0] and 0 <= c < f.shape[1]:
            return float(f[r, c])
        return float("inf")

    def _goal_view(self) -> tuple[tuple[float, float, float, float] | None, float]:
        sem = self._last_semantic
        if sem is None or len(self._goal_ids) == 0:
            return None, float("nan")
        h, w = sem.shape
        best, best_n = None, 0
        for gid in self._goal_ids:
            m = sem == gid
            n = np.count_nonzero(m) if len(self._goal_ids) > 1 else -1
            if len(self._goal_ids) == 1 or n > best_n:
                box = box_from_mask(m, min_pixels=max(4, (h * w) // 2000))
                if box is not None:
                    best, best_n = box, n
        return best, (sd_from_box(best, h, w) if best is not None else float("nan"))

    def _near_goal_object(self) -> bool:
        return any(
            float(footprint_distance(np.float64(self._x), np.float64(self._z), o)) <= SUCCESS_DISTANCE
            for o in self._goal_objs
        )

    def _info(self, collided: bool, stopped: bool) -> dict[str, Any]:
        dist = self._distance()
        if self.task == "object":
            box, sd = self._goal_view()
            visible = box is not None
            reached = visible and sd < SUCCESS_SD and self._near_goal_object()
        else:
            box, sd, visible = None, float("nan"), False
            gx, gz = self._goal_xz
            dpos = math.hypot(self._x - gx, self._z - gz)
            dyaw = abs(wrap_angle(self.yaw - self._goal_yaw))
            reached = dpos <= POSE_SUCCESS_DISTANCE and dyaw <= math.radians(POSE_SUCCESS_ANGLE_DEG) + 1e-6
        success = bool(stopped and reached)
        spl = 0.0
        if success:
            spl = self._start_distance / max(self._start_distance, self._path_length, 1e-9)
        self._last_success = success
        info = {
            "instruction": self.instruction,
            "is_success": success,
            "success": success,
            "spl": float(spl),
            "distance_to_goal": float(dist),
            "goal_sd": float(sd) if math.isfinite(sd) else NAN,
            "goal_box": box,
            "goal_visible": bool(visible),
            "agent_pose": self.agent_pose,
            "collided": bool(collided),
            "goal_category": self.goal_category,
        }
        return info

    # ---------------------------------------------------------------------------------------- render
    def render(self):
        """``rgb_array``: the current view beside a top-down map with the path, the agent and the goal."""
        if self.render_mode is None:
            return None
        if not self._episode_ready:
            raise RuntimeError("render() needs an episode: call reset() first")
        goal_xz = self._goal_xz if self.goal_pose is not None else None
        m = top_down_map(self._bundle.navgrid, self.resolution[0], self._goal_objs, goal_xz,
                         self._trajectory, self._x, self._z, self.yaw)  # fmt: skip
        return np.ascontiguousarray(np.concatenate([self._last_rgb, m], axis=1))

    def close(self) -> None:
        for b in self._bundles.values():
            b.close()
        self._bundles.clear()
        self._bundle = None
        self._episode_ready = False
        self._closed = True
