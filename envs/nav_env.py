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
from scipy import ndimage

from .actions import ACTION_NAMES, FORWARD_STEP_M, MOVE_FORWARD, STOP, TURN_ANGLE_DEG, TURN_LEFT, TURN_RIGHT
from .expert import expert_action, heading_to, lookahead_point, turn_towards
from .geometry import DEFAULT_CAMERA_PITCH_DEG, forward_xz, make_pose, wrap_angle
from .goal_metrics import box_from_mask, sd_from_box
from .navigation import NavGrid
from .scenes import CATEGORIES, SPLITS, TRAIN, Scene, SceneError, load_gltf_scene, make_scene, split_scene
from .tour import make_tour

OBS_KEYS = ("rgb", "depth", "semantic")
SUCCESS_DISTANCE = 1.0
SUCCESS_SD = 0.2
POSE_SUCCESS_DISTANCE = 0.5
POSE_SUCCESS_ANGLE_DEG = 15.0
_TURN = math.radians(TURN_ANGLE_DEG)


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


class _SceneBundle:
    """Everything derived from one scene that episodes reuse: renderer, nav grid, tour (built lazily)."""

    def __init__(self, scene: Scene, resolution, backend: str, pitch: float, tour_frames: int,
                 renderer_kwargs: dict | None = None) -> None:  # fmt: skip
        self.scene = scene
        self.navgrid = NavGrid(scene)
        self.renderer = _make_renderer(scene, resolution, backend, pitch, **(renderer_kwargs or {}))
        self.pitch = pitch
        self.tour_frames = tour_frames
        self._tour: dict[str, np.ndarray] | None = None
        self._goal_cache: dict[str, np.ndarray] = {}

    def tour(self) -> dict[str, np.ndarray]:
        if self._tour is None:
            seed = self.scene.seed if self.scene.seed is not None else 0
            self._tour = make_tour(
                self.scene, self.renderer, self.tour_frames, seed, self.navgrid, self.pitch
            )
            self._tour["frames"].flags.writeable = False
            self._tour["poses"].flags.writeable = False
        return self._tour

    def close(self) -> None:
        self.renderer.close()


def _make_renderer(scene: Scene, resolution, backend: str, pitch: float, **habitat_kwargs):
    if backend == "moderngl":
        from .renderer_gl import GLRenderer

        return GLRenderer(scene, resolution)
    if backend == "habitat_sim":
        from .renderer_habitat import HabitatSimRenderer

        return HabitatSimRenderer(scene, resolution, **habitat_kwargs)  # gpu_device_id, keys
    raise ValueError(f"unknown backend {backend!r}; expected 'moderngl' or 'habitat_sim'")


class V4SNavEnv(gym.Env):
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
    ``instruction``; at reset also ``context`` = ``{"frames", "poses"}`` (the scene tour, never per step).
    Object success: STOP within 1.0 m of a goal instance with it visible and SD < 0.2. Pose success: STOP
    within 0.5 m and 15 deg of the goal pose (``info["goal_pose"]``).

    ## Arguments
    task, scene (None = embedded default, an int seed, a split name or a GLB/glTF path), split,
    resolution=(H, W), backend ("moderngl" | "habitat_sim"), obs_keys, render_mode ("rgb_array"),
    goal_category (fix the object goal), tour_frames, camera_pitch_deg (fixed camera pitch, default -30
    so that objects within 1 m can be centred in view from a 1.5 m camera), gpu_device_id (habitat_sim
    only: CUDA device to render on; None = 0 when an NVIDIA EGL device serves it, else -1 = the default
    EGL device, e.g. Mesa on a CPU machine).
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
        camera_pitch_deg: float = DEFAULT_CAMERA_PITCH_DEG,
        annotation: str | os.PathLike | dict | None = None,
        gpu_device_id: int | None = None,
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
        if tour_frames < 1:
            raise ValueError(f"tour_frames must be >= 1, got {tour_frames}")
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
        self.camera_pitch_deg = float(camera_pitch_deg)
        self.camera_pitch = math.radians(self.camera_pitch_deg)
        self.annotation = annotation
        self.gpu_device_id = gpu_device_id
        self.action_space = spaces.Discrete(len(ACTION_NAMES))
        obs = {"rgb": spaces.Box(0, 255, (h, w, 3), np.uint8)}
        if "depth" in obs_keys:
            obs["depth"] = spaces.Box(0.0, np.inf, (h, w), np.float32)
        if "semantic" in obs_keys:
            obs["semantic"] = spaces.Box(0, np.iinfo(np.int32).max, (h, w), np.int32)
        self.observation_space = spaces.Dict(obs)
        self._bundles: OrderedDict[Any, _SceneBundle] = OrderedDict()
        self._bundle: _SceneBundle | None = None
        self._episode_ready = False
        self.instruction = ""
        self.task_description = ""
        self.goal_category = ""
        self._last_semantic: np.ndarray | None = None

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

    def _scene_key_for_episode(self) -> Any:
        spec = self.scene_spec
        if isinstance(spec, Scene):
            return ("obj", id(spec))
        if spec is None and self.split is None:
            return ("seed", 0)
        if isinstance(spec, (int, np.integer)):
            return ("seed", int(spec))
        split = self.split if self.split is not None else spec
        if isinstance(split, str) and split in SPLITS:
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

    def _get_bundle(self, key) -> _SceneBundle:
        if key in self._bundles:
            self._bundles.move_to_end(key)
            return self._bundles[key]
        scene = self._load_scene(key)
        kw = None
        if self.backend == "habitat_sim":  # one sensor per target read: rgb, depth if observed, semantic if
            keys = ["rgb"] + [k for k in ("depth",) if k in self.obs_keys]  # observed or object goals
            keys += ["semantic"] if self.task == "object" or "semantic" in self.obs_keys else []
            kw = {"gpu_device_id": self.gpu_device_id, "keys": tuple(keys)}
        bundle = _SceneBundle(scene, self.resolution, self.backend, self.camera_pitch, self.tour_frames, kw)
        self._bundles[key] = bundle
        while len(self._bundles) > 4:
            _, old = self._bundles.popitem(last=False)
            old.close()
        return bundle

    # --------------------------------------------------------------------------------------- episodes
    def get_context(self) -> dict[str, np.ndarray]:
        """The current scene's context tour ``{"frames": uint8 (N,H,W,3), "poses": float64 (N,4,4)}``
        (read-only arrays shared by the scene's episodes; copy before modifying)."""
        if self._bundle is None:
            raise RuntimeError("call reset() first: the context belongs to the scene chosen at reset")
        return self._bundle.tour()

    def _object_goal_field(self, category: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distance field to the viewpoints of ``category``: walkable cells within 0.9 m of an instance's
        footprint with a clear line of sight past walls."""
        b = self._bundle
        assert b is not None
        if category in b._goal_cache:
            return b._goal_cache[category]
        g = b.navgrid
        objs = b.scene.objects_of(category)
        H, W = g.shape
        wx, wz = g.to_world(np.arange(H)[:, None], np.arange(W)[None, :])
        mask = np.zeros(g.shape, dtype=bool)
        h, w = self.resolution
        for o in objs:
            d = _footprint_distance(wx, wz, o)
            cand = g.navigable & (d <= SUCCESS_DISTANCE - 0.2) & (d >= 0.2)
            rr, cc = np.nonzero(cand)
            if len(rr) == 0:
                continue
            vis = _line_of_sight(g, rr, cc, o)
            rr, cc = rr[vis], cc[vis]
            if len(rr) == 0:
                continue
            # keep the viewpoints from which the goal, at the nearest reachable heading, is best centred:
            # rank by the SD predicted from the 3-D box, then confirm the best ones by rendering (occlusion)
            cx, cz = g.to_world(rr, cc)
            sd = _predicted_sd(cx, cz, o, b.scene.floor_y, self.camera_pitch, h, w)
            order = np.argsort(sd, kind="stable")[:64:2] if len(sd) > 32 else np.argsort(sd, kind="stable")
            real = np.full(len(order), np.inf)
            for i, j in enumerate(order):
                yaw = round(heading_to(cx[j], cz[j], o.center[0], o.center[2]) / _TURN) * _TURN
                b.renderer.draw(make_pose(cx[j], cz[j], yaw, b.scene.floor_y, pitch=self.camera_pitch))
                box = box_from_mask(b.renderer.read_semantic() == o.instance_id, max(4, (h * w) // 2000))
                real[i] = sd_from_box(box, h, w) if box is not None else np.inf
            keep = np.zeros(len(sd), dtype=bool)
            ok = real < SUCCESS_SD - 0.07
            if not ok.any():
                ok = real < SUCCESS_SD
            keep[order[ok]] = True
            good = np.zeros(g.shape, dtype=bool)
            good[rr[keep], cc[keep]] = True
            # 0.25 m steps cannot hit single cells: accept anything within 0.15 m of a good viewpoint
            mask |= ndimage.binary_dilation(good, iterations=1) & cand
        fields = (g.distance_field(mask), g.distance_field(mask, safe=True), mask)
        b._goal_cache[category] = fields
        return fields

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        self._episode_ready = False
        key = self._scene_key_for_episode()
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
            usable = []
            for c in cats:
                f = self._object_goal_field(c)[0]
                if np.isfinite(f[g.navigable]).sum() > 0 and (f[g.navigable] > 1.5).any():
                    usable.append(c)
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
            self._field, self._safe_field, self._goal_mask = self._object_goal_field(self.goal_category)
            self.instruction = instruction_for(self.goal_category)
        else:
            self.goal_category = ""
            self._goal_ids = np.zeros(0, np.int32)
            self._goal_objs = []
            gx, gz = g.sample_navigable(rng)
            gyaw = wrap_angle(int(rng.integers(24)) * _TURN)
            self.goal_pose = make_pose(gx, gz, gyaw, scene.floor_y, pitch=self.camera_pitch)
            self._goal_xz, self._goal_yaw = (gx, gz), gyaw
            goal_mask = g.point_mask(gx, gz, 0.3)
            self._field, self._safe_field = (
                g.distance_field(goal_mask),
                g.distance_field(goal_mask, safe=True),
            )
            self.instruction = POSE_INSTRUCTION
        self.task_description = self.instruction
        # start: reachable, 1.5-12 m geodesic from the goal when possible
        rr, cc = np.nonzero(g.navigable & np.isfinite(self._field))
        dist = self._field[rr, cc]
        ok = np.nonzero((dist > 1.5) & (dist < 12.0))[0]
        if len(ok) == 0:
            ok = np.nonzero(dist > 0)[0] if (dist > 0).any() else np.arange(len(rr))
        k = ok[int(rng.integers(len(ok)))]
        sx, sz = g.to_world(rr[k], cc[k])
        self._x, self._z = float(sx), float(sz)
        self._yaw_steps = int(rng.integers(24))
        self._start_distance = float(self._field[rr[k], cc[k]])
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
        ctx = self.get_context()
        info["context"] = {
            "frames": ctx["frames"].copy(),
            "poses": ctx["poses"].copy(),
        }  # callers may keep it
        if self.goal_pose is not None:
            info["goal_pose"] = self.goal_pose.copy()
        return obs, info

    # ------------------------------------------------------------------------------------------ step
    @property
    def yaw(self) -> float:
        return wrap_angle(self._yaw_steps * _TURN)

    @property
    def agent_pose(self) -> np.ndarray:
        return make_pose(self._x, self._z, self.yaw, self._bundle.scene.floor_y, pitch=self.camera_pitch)

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
            raise RuntimeError("step() called before reset(): call env.reset() to start an episode")
        if self._done:
            raise RuntimeError("episode is over (STOP was called): call env.reset()")
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
            n = int(m.sum()) if len(self._goal_ids) > 1 else -1
            if len(self._goal_ids) == 1 or n > best_n:
                box = box_from_mask(m, min_pixels=max(4, (h * w) // 2000))
                if box is not None:
                    best, best_n = box, n
        return best, (sd_from_box(best, h, w) if best is not None else float("nan"))

    def _near_goal_object(self) -> bool:
        return any(
            float(_footprint_distance(np.float64(self._x), np.float64(self._z), o)) <= SUCCESS_DISTANCE
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

    # ---------------------------------------------------------------------------------------- expert
    def expert_action(self) -> int:
        """The shortest-path expert's next action: walk to a goal viewpoint (or the goal pose), turn until
        the goal is centred (or the goal heading is reached), then STOP."""
        if not self._episode_ready:
            raise RuntimeError("expert_action() needs an episode: call reset() first")
        g = self._bundle.navgrid
        state = (round(self._x, 2), round(self._z, 2), self._yaw_steps)
        self._expert_visits[state] = self._expert_visits.get(state, 0) + 1
        if self._expert_visits[state] > 3:
            # cycling (the 0.25 m / 15 deg lattice cannot reach the remaining viewpoints): settle here
            if self.task == "object" and self._near_goal_object():
                return turn_towards(self.yaw, self._goal_heading()[0])
            return STOP
        final_yaw = self._goal_yaw if self.task == "pose" else self.yaw
        if self.task == "object" and lookahead_point(g, self._safe_field, self._x, self._z) is None:
            final_yaw, best_sd = self._goal_heading()
            if best_sd >= SUCCESS_SD - 0.01 and self._replans < 3:
                # this spot cannot centre the goal well enough (occlusion, too close): drop it and walk on
                self._replans += 1
                self._excluded |= g.point_mask(self._x, self._z, 0.35)
                mask = self._goal_mask & ~self._excluded
                if (mask & g.navigable).any():
                    self._safe_field = g.distance_field(mask, safe=True)
                    return self.expert_action()
        return expert_action(g, self._safe_field, self._x, self._z, self.yaw, final_yaw,
                             forward_result=lambda: self._try_forward()[:2])  # fmt: skip

    def _goal_heading(self) -> tuple[float, float]:
        """The 15-deg heading from which the nearest goal instance looks best centred (predicted from its
        3-D box, so the expert never dithers between two headings)."""
        o = min(self._goal_objs, key=lambda o: float(_footprint_distance(self._x, self._z, o)))
        yaws = np.arange(24) * _TURN
        h, w = self.resolution
        sd = _predicted_sd(np.full(24, self._x), np.full(24, self._z), o, self._bundle.scene.floor_y,
                           self.camera_pitch, h, w, yaw=yaws)  # fmt: skip
        bearing = heading_to(self._x, self._z, float(o.center[0]), float(o.center[2]))
        facing = np.cos(yaws - bearing) > 0.5
        sd = np.where(facing, sd, np.inf)
        key = (round(self._x, 3), round(self._z, 3))
        if self._final_heading is not None and self._final_heading[0] == key:
            return self._final_heading[1], self._final_heading[2]
        best, best_sd = float(yaws[int(np.argmin(sd))]), np.inf
        r = self._bundle.renderer
        for j in np.argsort(sd)[:4]:
            if not np.isfinite(sd[j]):
                break
            r.draw(
                make_pose(
                    self._x, self._z, float(yaws[j]), self._bundle.scene.floor_y, pitch=self.camera_pitch
                )
            )
            sem = r.read_semantic()
            for gid in self._goal_ids:
                box = box_from_mask(sem == gid, max(4, (h * w) // 2000))
                if box is not None and sd_from_box(box, h, w) < best_sd:
                    best, best_sd = float(yaws[j]), sd_from_box(box, h, w)
        self._final_heading = (key, float(wrap_angle(best)), float(best_sd))
        return self._final_heading[1], self._final_heading[2]

    # ---------------------------------------------------------------------------------------- render
    def render(self):
        """``rgb_array``: the current view beside a top-down map with the path, the agent and the goal."""
        if self.render_mode is None:
            return None
        if not self._episode_ready:
            raise RuntimeError("render() needs an episode: call reset() first")
        import cv2

        h, w = self.resolution
        g = self._bundle.navgrid
        base = np.full((*g.shape, 3), 40, np.uint8)
        base[g.floor_mask] = (110, 110, 110)
        base[g.navigable] = (200, 200, 200)
        base[g.obstacle_mask] = (60, 60, 70)
        m = cv2.resize(base, (h * g.shape[1] // max(g.shape[0], 1) or 1, h), interpolation=cv2.INTER_NEAREST)
        sx = m.shape[1] / (g.shape[1] * g.cell_size)
        sz = m.shape[0] / (g.shape[0] * g.cell_size)

        def px(x, z):
            return int((x - g.origin[0]) * sx), int((z - g.origin[1]) * sz)

        for o in self._goal_objs:
            cv2.rectangle(
                m, px(o.box_min[0], o.box_min[2]), px(o.box_max[0], o.box_max[2]), (220, 40, 40), -1
            )
        if self.goal_pose is not None:
            cv2.circle(m, px(*self._goal_xz), 3, (220, 40, 40), -1)
        pts = np.array([px(x, z) for x, z in self._trajectory], np.int32)
        if len(pts) > 1:
            cv2.polylines(m, [pts], False, (30, 90, 230), 1)
        ax, az = px(self._x, self._z)
        dx, dz = forward_xz(self.yaw)
        cv2.circle(m, (ax, az), 3, (20, 160, 20), -1)
        cv2.line(m, (ax, az), (int(ax + dx * 8), int(az + dz * 8)), (20, 160, 20), 1)
        return np.ascontiguousarray(np.concatenate([self._last_rgb, m], axis=1))

    def close(self) -> None:
        for b in self._bundles.values():
            b.close()
        self._bundles.clear()
        self._bundle = None
        self._episode_ready = False


def _footprint_distance(x, z, obj) -> np.ndarray:
    """Floor distance from (x, z) to the object's box footprint (0 inside)."""
    dx = np.maximum(np.maximum(obj.box_min[0] - x, x - obj.box_max[0]), 0.0)
    dz = np.maximum(np.maximum(obj.box_min[2] - z, z - obj.box_max[2]), 0.0)
    return np.hypot(dx, dz)


def _line_of_sight(g: NavGrid, rr: np.ndarray, cc: np.ndarray, obj, n: int = 24) -> np.ndarray:
    """Which cells see the object's centre without crossing a wall cell (2-D check on the wall mask)."""
    wx, wz = g.to_world(rr, cc)
    t = np.linspace(0.0, 0.85, n)[None, :]
    px = wx[:, None] + (obj.center[0] - wx[:, None]) * t
    pz = wz[:, None] + (obj.center[2] - wz[:, None]) * t
    r, c = g._cells(px, pz)
    return ~g.wall_mask[r, c].any(axis=1)


def _predicted_sd(cx, cz, obj, floor_y: float, pitch: float, h: int, w: int, yaw=None) -> np.ndarray:
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
