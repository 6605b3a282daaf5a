"""The closed-loop agent: receding-horizon planning with a context memory, executed by a map-based controller.

Why this shape: a video plan is expensive (one diffusion sample) and drifts from reality the further it
looks ahead, so the agent executes only the first ``replan_every`` actions and then plans again from
what it actually sees (receding horizon, as in UniPi). What it sees is also added to its context memory,
so later plans are conditioned on the tour *and* the agent's own views, sampled sparsely with their
source positions (the paper's non-contiguous context), picked by field-of-view overlap with the path
ahead (``context_retrieval.py``).

Why a controller under the plan (issue 21): executing the inverse-dynamics actions of an imagined video
walked the agent into walls (it imagines the wall, the IDM keeps decoding forward: 25 of 30 episodes
stuck). With depth and odometry the plan only says *where* to go: a waypoint (the pose of the context
frame that best matches the imagined goal view, else the dead reckoning of the decoded actions); the
depth + odometry map (``object_search.ObjectSearch``) drives there without collisions, recovers from a
blocked move by marking it and turning, and re-plans on a fixed horizon or when the view departs from the
plan.
A detector, when given, verifies the goal up close before STOP (the same one as the frontier baseline).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any, NamedTuple

import numpy as np

from .action_decoding import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT
from .configuration_agent import V4SAgentConfig
from .context_retrieval import path_points, retrieve_context
from .object_search import ObjectSearch
from .planner import Plan, VideoPlanner, sample_context_indices
from .verified_search import FrameCache, VerifiedSearch

logger = logging.getLogger(__name__)

STEP_M = 0.25
TURN_DEG = 15.0


def frame_similarity(a: np.ndarray, b: np.ndarray, size: int = 32, ignore_red: bool = True) -> float:
    """Similarity in [0, 1] of two views: normalised cross-correlation of small grey images.

    Red-box pixels in ``b`` (the imagined goal frame) are masked out so the drawn box does not count.
    """
    import cv2

    def prep(x: np.ndarray) -> np.ndarray:
        return cv2.resize(np.ascontiguousarray(x, dtype=np.uint8), (size, size), interpolation=cv2.INTER_AREA)

    sa, sb = prep(a).astype(np.float32), prep(b).astype(np.float32)
    valid = np.ones(sa.shape[:2], dtype=bool)
    if ignore_red:
        r, g, bl = sb[..., 0], sb[..., 1], sb[..., 2]
        valid &= ~((r > 150) & (g < 90) & (bl < 90))
    ga, gb = sa.mean(-1)[valid], sb.mean(-1)[valid]
    if ga.size < 8:
        return 0.0
    ga, gb = ga - ga.mean(), gb - gb.mean()
    den = float(np.sqrt((ga * ga).sum() * (gb * gb).sum()))
    if den < 1e-6:
        return 1.0 if float(np.abs(ga - gb).mean()) < 2.0 else 0.0
    return float(np.clip(0.5 * (1.0 + (ga * gb).sum() / den), 0.0, 1.0))


def _yaw(T: np.ndarray) -> float:
    """Heading (radians) of a camera-to-world pose; the camera looks down -z, yaw about +y."""
    fwd = -T[:3, 2]
    return math.atan2(-fwd[0], -fwd[2])


def _pose(x: float, z: float, yaw: float, y: float = 1.5) -> np.ndarray:
    T = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    T[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    T[:3, 3] = (x, y, z)
    return T


def step_pose(T: np.ndarray, action: int) -> np.ndarray:
    """Pose after one Habitat action without collision (keeps any fixed camera pitch of ``T``)."""
    T = np.array(T, dtype=np.float64, copy=True)
    if action == MOVE_FORWARD:
        yaw = _yaw(T)
        T[0, 3] -= STEP_M * math.sin(yaw)
        T[2, 3] -= STEP_M * math.cos(yaw)
    elif action in (TURN_LEFT, TURN_RIGHT):
        a = math.radians(TURN_DEG) * (1 if action == TURN_LEFT else -1)
        T[:3, :3] = _pose(0, 0, a)[:3, :3] @ T[:3, :3]
    return T


def discrete_path(start: np.ndarray, goal: np.ndarray, n_frames: int) -> tuple[np.ndarray, list[int]]:
    """Poses ``(n_frames, 4, 4)`` of a turn-go-turn path of Habitat actions from ``start`` to ``goal``.

    Why: the pose task conditions the model on the camera path it should imagine; the model was trained
    on paths made of the env's discrete actions, so the agent builds one (ignoring obstacles: the model
    and the receding horizon handle those) and pads it by standing still at the end.
    """
    T = np.array(start, dtype=np.float64)
    gx, gz, gyaw = float(goal[0, 3]), float(goal[2, 3]), _yaw(goal)
    poses, actions = [T], []
    half = math.radians(TURN_DEG) / 2

    def wrap(a: float) -> float:
        return (a + math.pi) % (2 * math.pi) - math.pi

    while len(poses) < n_frames:
        x, z, yaw = T[0, 3], T[2, 3], _yaw(T)
        dx, dz = gx - x, gz - z
        dist = math.hypot(dx, dz)
        err = wrap(math.atan2(-dx, -dz) - yaw) if dist > STEP_M / 2 else wrap(gyaw - yaw)
        if abs(err) > half:
            a = TURN_LEFT if err > 0 else TURN_RIGHT
        elif dist > STEP_M / 2:
            a = MOVE_FORWARD
        else:
            a = STOP
        T = step_pose(T, a)
        actions.append(a)
        poses.append(T)
    return np.stack(poses), actions


def relative_camera(poses: np.ndarray) -> np.ndarray:
    """``(T, 4, 4)`` world poses -> ``(T, 12)`` poses relative to the first (top 3x4, row-major)."""
    ref_inv = np.linalg.inv(poses[0])
    return np.stack([(ref_inv @ T)[:3, :].reshape(-1) for T in poses]).astype(np.float32)


def _small_grey(frames: np.ndarray, size: int = 24) -> np.ndarray:
    """``(N, size*size)`` zero-mean, unit-norm grey thumbnails, for fast NCC against an imagined view."""
    import cv2

    out = np.stack(
        [
            cv2.resize(np.ascontiguousarray(f, dtype=np.uint8), (size, size), interpolation=cv2.INTER_AREA)
            .astype(np.float32)
            .mean(-1)
            .ravel()
            for f in np.asarray(frames)
        ]
    )
    out -= out.mean(1, keepdims=True)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def _similarities(small: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Similarity in [0, 1] of one frame to every thumbnail of :func:`_small_grey` (0.5 (1 + NCC))."""
    q = _small_grey(np.asarray(frame)[None])[0]
    return 0.5 * (1.0 + small @ q)


class _Seen(NamedTuple):
    """One of the agent's own views kept as context: the frame, its RoPE source position (after the
    tour's), and its odometry pose (None when the env gives none)."""

    frame: np.ndarray
    position: int
    pose: np.ndarray | None


class V4SAgent:
    """Receding-horizon agent around a :class:`VideoPlanner`.

    Args:
        planner: the video planner.
        replan_every: execute this many actions of each plan, then re-plan (overrides ``config``).
        detector: optional goal detector (``categories``, ``probs``) for the goal map and a verified stop.
        config: a :class:`V4SAgentConfig`; keyword ``overrides`` replace its fields.

    Use ``agent.reset(obs, info)`` at the start of an episode (``info`` must carry ``"context"`` and
    ``"instruction"``, as ``V4SNav-v0`` does at reset) and ``agent.act(obs)`` every step.
    ``agent.last_plan`` is the current plan; ``agent.stats`` counts plans, latencies, disagreements.
    """

    def __init__(
        self,
        planner: VideoPlanner,
        replan_every: int | None = None,
        config: V4SAgentConfig | None = None,
        detector: Any = None,
        **overrides: Any,
    ) -> None:
        cfg = config.to_dict() if config is not None else {}
        cfg.update(overrides)
        if replan_every is not None:
            cfg["replan_every"] = replan_every
        self.config = V4SAgentConfig(**cfg)
        # the agent's own view of the planner (same pipeline and IDM): the one it was given may be shared,
        # and keeps its settings
        sampling = {k: getattr(self.config, k) for k in ("num_inference_steps", "guidance_scale")}
        self.planner = planner.with_settings(
            crosscheck=self.config.crosscheck,
            cv_min_inliers=self.config.cv_min_inliers,
            crosscheck_steps=self.config.replan_every,
            **{k: v for k, v in sampling.items() if v is not None},
        )
        self.detector = detector
        self._search_detector = None if detector is None else FrameCache(detector)
        self.search: ObjectSearch | None = None
        self.waypoint: tuple[float, float] | None = None
        self.last_plan: Plan | None = None
        self.plan_step = 0  # index of the next action in last_plan
        self._queue: deque[int] = deque()
        self.reset_stats()

    # ------------------------------------------------------------------ episode
    def reset_stats(self) -> None:
        """Zero the per-episode counters."""
        self.stats: dict[str, Any] = {
            "plans": 0,
            "plan_latency_ms": [],
            "cv_disagreements": 0,
            "cv_checked": 0,
            "stop_reason": None,
            "waypoints": {"context_match": 0, "odometry": 0},
            "replans_departed": 0,
        }

    def reset(self, obs: dict[str, np.ndarray] | np.ndarray, info: dict[str, Any]) -> None:
        """Start an episode: the tour becomes the context memory; read instruction and (pose) goal."""
        ctx = info.get("context")
        if ctx is None:
            raise ValueError(
                "info has no 'context': pass the info returned by env.reset (or env.get_context())"
            )
        self._tour_frames = np.asarray(ctx["frames"])
        self._tour_len = len(self._tour_frames)
        poses = ctx.get("poses") if isinstance(ctx, dict) else None
        self._tour_poses = None if poses is None else np.asarray(poses, dtype=np.float64)
        self._seen: deque[_Seen] = deque(maxlen=max(self.config.memory_max_seen, 0))
        self.instruction = str(info.get("instruction", ""))
        self.goal_pose = info.get("goal_pose")
        self.pose = info.get("agent_pose")
        self.steps = 0
        self._rng = np.random.default_rng(self.config.seed)
        self._plan_seed = self.config.seed * 100_003
        self._queue.clear()
        self.last_plan = None
        self.plan_step = 0
        self.reset_stats()
        self.search, self.waypoint, self._since_plan = None, None, 0
        depth = obs.get("depth") if isinstance(obs, dict) else None
        if self.config.navigation == "map" and depth is not None and self.pose is not None:
            from .goal_detection import category_from_instruction

            cats = list(getattr(self.detector, "categories", []))
            cat = category_from_instruction(self.instruction, cats) if cats else None
            cfg = self.config
            common = {
                "scan_turns": cfg.scan_turns,
                "scan_first": cfg.scan_first,
                "standpoint": cfg.standpoint,
            }
            if cfg.stop_rule == "verified":
                self.search = VerifiedSearch(
                    self._search_detector,
                    cat,
                    consistent_k=cfg.stop_views,
                    parallax_m=cfg.stop_parallax_m,
                    **common,
                )
            else:
                self.search = ObjectSearch(
                    self._search_detector,
                    cat,
                    fitted_stop=cfg.stop_rule == "fitted",
                    reproduce_stop=cfg.reproduce_stop,
                    **common,
                )
            if self.config.context_viewpoints and self.config.context_mode != "none":
                self.search.use_context(ctx)
            self.stats["navigation"] = self.search.stats
        self._small_ctx = _small_grey(self._tour_frames) if self._tour_poses is not None else None
        self._observe(self._rgb(obs))

    @staticmethod
    def _rgb(obs: dict[str, np.ndarray] | np.ndarray) -> np.ndarray:
        return np.asarray(obs["rgb"] if isinstance(obs, dict) else obs)

    def _observe(self, rgb: np.ndarray) -> None:
        """Add the current view to the context memory (every ``memory_every`` steps)."""
        if self.config.memory_max_seen == 0 or self.steps % self.config.memory_every:
            return
        pose = None if self.pose is None else np.array(self.pose, dtype=np.float64)
        self._seen.append(_Seen(rgb, self._tour_len + self.steps // self.config.memory_every, pose))

    def context(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The K memory frames (and their source positions) the next plan is conditioned on."""
        frames, pos, _ = self.context_with_poses()
        return frames, pos

    def context_with_poses(self) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``context()`` plus each frame's pose (the tour's recorded poses, odometry for the agent's own
        views), ``(K, 4, 4)``; poses are ``None`` when any is unknown."""
        if self.config.context_mode == "none":
            return None, None, None
        k = self.config.num_context_frames or self.planner.num_context_frames
        n = self._tour_len + len(self._seen)
        if self.config.context_sampling == "coverage":
            idx = self._retrieve(k, n)
        elif self.config.context_sampling == "views":
            idx = self._use_time_views(k, n)
        else:
            idx = sample_context_indices(
                n, k, self.config.context_sampling, self._rng, self.config.recent_context
            )
        frames, pos, poses = [], [], []
        for i in idx:
            if i < self._tour_len:
                frames.append(self._tour_frames[i])
                pos.append(float(i))
                poses.append(None if self._tour_poses is None else self._tour_poses[i])
            else:
                seen = self._seen[i - self._tour_len]
                frames.append(seen.frame)
                pos.append(float(seen.position))
                poses.append(seen.pose)
        p = np.asarray(pos, dtype=np.float32)
        span = max(self._tour_len - 1, 1)
        if self.config.position_mode == "tour_range" and p.size and p.max() > span:
            # the model only saw positions inside the tour during training: keep the order and relative
            # spacing of memory frames but squeeze the whole memory (tour + seen) into the tour's range
            total = self._tour_len + (self._seen[-1].position - self._tour_len + 1 if self._seen else 0)
            p = p * (span / max(total - 1, 1))
        known = all(x is not None for x in poses)
        return np.stack(frames), p, (np.stack(poses) if known else None)

    def _retrieve(self, k: int, n: int) -> np.ndarray:
        """K memory indices by field-of-view overlap with the path ahead (poses known) else even in time."""
        seen_poses = [x.pose for x in self._seen]
        known = self._tour_poses is not None and all(p is not None for p in seen_poses)
        if not known or self.pose is None:
            return retrieve_context(k, None, n=n, recent=self.config.recent_context)
        poses = np.concatenate([self._tour_poses, np.asarray(seen_poses).reshape(-1, 4, 4)])
        wp = None if self.waypoint is None else np.asarray([self.waypoint])
        query = path_points(np.asarray(self.pose), wp)
        every = max(1, self._tour_len // 240)
        return retrieve_context(
            k, poses, query=query, recent=self.config.recent_context, candidates_every=every
        )

    def _use_time_views(self, k: int, n: int) -> np.ndarray:
        """``context_sampling="views"``: the pose task's path views, or the object task's goal views put
        into the coverage choice (both as training cut them; the goal views are the detector's)."""
        from ..envs.scene_video import GOAL_VIEWS, closest_views, nearest_distinct_views

        seen_poses = [x.pose for x in self._seen]
        known = self._tour_poses is not None and self.pose is not None
        if not known or any(p is None for p in seen_poses):
            return self._retrieve(k, n)
        poses = np.concatenate([self._tour_poses, np.asarray(seen_poses).reshape(-1, 4, 4)])
        if self.goal_pose is not None:  # pose task: the path's closest views
            n_traj = self.planner.num_target_frames - self.planner.num_box_frames
            path, _ = discrete_path(np.asarray(self.pose), np.asarray(self.goal_pose), n_traj)
            return closest_views(poses, path, k, self._rng)
        idx = self._retrieve(k, n)
        goal = [int(v[4]) for v in getattr(self.search, "viewpoints", None) or []]
        if not goal:
            return idx
        here = np.asarray(self.pose)  # the soonest reached goal views first (envs.scene_video.GOAL_RANK)
        picked = nearest_distinct_views(poses, np.asarray(goal), here, min(GOAL_VIEWS, k - 1))
        keep = set(range(n - self.config.recent_context, n))  # the latest views stay
        slots = [j for j in range(k) if int(idx[j]) not in keep and int(idx[j]) not in picked]
        for i in picked:
            if i not in idx and slots:
                idx[slots.pop()] = i
        return np.sort(idx)

    # ------------------------------------------------------------------ acting
    def camera_path(self) -> np.ndarray | None:
        """Pose task: relative camera poses ``(T, 12)`` of a discrete path to the goal pose."""
        if self.goal_pose is None or self.pose is None:
            return None
        n = self.planner.num_target_frames
        n_traj = n - self.planner.num_box_frames
        poses, _ = discrete_path(np.asarray(self.pose), np.asarray(self.goal_pose), n_traj)
        cam = relative_camera(poses)
        return np.concatenate([cam, np.zeros((n - n_traj, 12), np.float32)]) if n > n_traj else cam

    def replan(self, rgb: np.ndarray) -> Plan:
        """Make a new plan from the current view and memory; refill the action queue."""
        ctx, pos, poses = self.context_with_poses()
        self._plan_seed += 1
        plan = self.planner.plan(
            ctx,
            rgb,
            self.instruction,
            camera=self.camera_path(),
            context_positions=pos,
            seed=self._plan_seed,
            observation_pose=self.pose,
            context_poses=poses,
        )
        self.last_plan = plan
        self.plan_step = 0
        self.stats["plans"] += 1
        self.stats["plan_latency_ms"].append(plan.latency_ms)
        self.stats["cv_disagreements"] += plan.cv_disagreements
        self.stats["cv_checked"] += sum(m.action not in (None, STOP) for m in plan.cv_motion)
        self._queue = deque(int(a) for a in plan.actions[: self.config.replan_every])
        return plan

    def should_stop(self, rgb: np.ndarray, plan: Plan | None) -> str | None:
        """The stop rule; returns the reason or ``None``.

        Object task: the imagined goal box is confident and centred (SD <= ``stop_sd``) and either the
        current view already looks like the imagined goal view or, right after planning, the IDM reads
        the first imagined transition as "no motion" (the model imagines having arrived).
        Pose task: odometry (the env's agent pose, like a GPS+compass sensor) says the goal pose is reached.
        """
        cfg = self.config
        if self.steps < cfg.min_steps_before_stop:
            return None
        if self.goal_pose is not None and self.pose is not None:
            T, G = np.asarray(self.pose), np.asarray(self.goal_pose)
            d = math.hypot(T[0, 3] - G[0, 3], T[2, 3] - G[2, 3])
            dyaw = abs((math.degrees(_yaw(T) - _yaw(G)) + 180) % 360 - 180)
            if d <= cfg.pose_stop_distance and dyaw <= cfg.pose_stop_yaw_deg:
                return "pose reached"
            return None
        if plan is None or plan.box is None:
            return None
        if plan.box_confidence < cfg.stop_box_confidence or not plan.box_sd <= cfg.stop_sd:
            return None
        sim = frame_similarity(rgb, plan.goal_frame)
        if sim >= cfg.stop_similarity:
            return f"goal box centred (SD {plan.box_sd:.3f}) and view matches imagined goal ({sim:.2f})"
        if self.plan_step == 0 and len(plan.action_probs) and plan.action_probs[0, STOP] >= cfg.stop_idm_prob:
            return f"goal box centred (SD {plan.box_sd:.3f}) and the imagined video stands still"
        return None

    def act(self, obs: dict[str, np.ndarray] | np.ndarray, info: dict[str, Any] | None = None) -> int:
        """Next discrete action for observation ``obs`` (``info``, if given, updates the pose)."""
        if not hasattr(self, "_tour_frames"):  # the episode's context and instruction come from reset
            raise RuntimeError(
                "act() called before reset(): call agent.reset(obs, info) with env.reset()'s output"
            )
        rgb = self._rgb(obs)
        if info is not None and "agent_pose" in info:
            self.pose = info["agent_pose"]
        if self.steps > 0:
            self._observe(rgb)
        depth = obs.get("depth") if isinstance(obs, dict) else None
        if self.search is not None and depth is not None and self.pose is not None:
            return self._act_on_map(rgb, np.asarray(depth))
        if not self._queue:
            self.replan(rgb)
        reason = self.should_stop(rgb, self.last_plan)
        if reason is not None:
            self.stats["stop_reason"] = reason
            logger.info("STOP at step %d: %s", self.steps, reason)
            self.steps += 1
            return STOP
        if not self._queue:  # an empty plan (no trajectory frames): turn to look around
            self._queue.append(TURN_LEFT)
        a = self._queue.popleft()
        self.plan_step += 1
        self.steps += 1
        self._dead_reckon(a)
        return a

    def _act_on_map(self, rgb: np.ndarray, depth: np.ndarray) -> int:
        """Plan -> waypoint -> collision-free action on the depth + odometry map (see the module doc)."""
        assert self.search is not None
        cfg = self.config
        self._since_plan += 1
        plan = self.last_plan
        departed = False
        if plan is not None and 2 <= self._since_plan <= len(plan.trajectory) - 1:
            imagined = plan.trajectory[min(self._since_plan, len(plan.trajectory) - 1)]
            departed = frame_similarity(rgb, imagined, ignore_red=False) < cfg.depart_similarity
        reached = (
            self.waypoint is not None
            and math.hypot(self.waypoint[0] - self.pose[0, 3], self.waypoint[1] - self.pose[2, 3]) < 0.5
        )
        # while the map stack has its own goal evidence (a goal seen often, a context viewpoint to check,
        # the final approach) a new plan would not change the action: skip its cost
        busy = self.search.candidate is not None or self.search.stats.get("mode") in (
            "final",
            "recovery",
            "approach",
            "context viewpoint",
        )
        if not busy and (plan is None or self._since_plan >= cfg.replan_every or reached or departed):
            if departed:
                self.stats["replans_departed"] += 1
            plan = self.replan(rgb)
            self._since_plan = 0
            self.waypoint = self.plan_waypoint(plan)
        a = self.search.act(rgb, depth, np.asarray(self.pose), self.waypoint)
        if a == STOP:
            self.stats["stop_reason"] = self.search.stats.get("stop_reason")
        elif self.detector is None and plan is not None:  # no detector: the plan's own stop rule
            reason = self.should_stop(rgb, plan)
            if reason is not None:
                self.stats["stop_reason"] = reason
                a = STOP
        self.plan_step = self._since_plan + 1
        self.steps += 1
        return a

    def goal_view_similarity(self, plan: Plan) -> np.ndarray | None:
        """Similarity in [0, 1] of every context-video frame to ``plan``'s imagined goal view (grey NCC of
        thumbnails); ``None`` when the context video has no poses (nothing to point at)."""
        return None if self._small_ctx is None else _similarities(self._small_ctx, plan.goal_frame)

    def plan_waypoint(self, plan: Plan) -> tuple[float, float] | None:
        """Where the plan points (world x, z): the pose of the context frame most like the imagined goal
        view (if similar enough), else where the decoded actions lead (dead reckoning, 1 m on if they
        only turn)."""
        cfg = self.config
        sims = self.goal_view_similarity(plan) if cfg.waypoint in ("auto", "context_match") else None
        if sims is not None:
            i = int(np.argmax(sims))
            # a match must stand out: a blurry imagined view is "similar" to hundreds of frames
            distinct = sims[i] - float(np.median(sims)) >= 0.15
            if (sims[i] >= cfg.match_similarity and distinct) or cfg.waypoint == "context_match":
                self.stats["waypoints"]["context_match"] += 1
                T = self._tour_poses[i]  # type: ignore[index]
                return float(T[0, 3]), float(T[2, 3])
        if self.pose is None:
            return None
        T = np.asarray(self.pose, dtype=np.float64)
        start = T.copy()
        for a in plan.actions:
            T = step_pose(T, int(a))
        if math.hypot(T[0, 3] - start[0, 3], T[2, 3] - start[2, 3]) < 0.3:
            for _ in range(4):
                T = step_pose(T, MOVE_FORWARD)
        self.stats["waypoints"]["odometry"] += 1
        return float(T[0, 3]), float(T[2, 3])

    def _dead_reckon(self, action: int) -> None:
        """Odometry from the agent's own actions (collisions ignored); ``act(obs, info)`` corrects it."""
        if self.pose is None:
            return
        self.pose = step_pose(self.pose, action)
