"""The closed-loop agent: receding-horizon planning with a context memory and an imagined-goal stop rule.

Why this shape: a video plan is expensive (one diffusion sample) and drifts from reality the further it
looks ahead, so the agent executes only the first ``replan_every`` actions and then plans again from
what it actually sees (receding horizon, as in UniPi). What it sees is also added to its context memory,
so later plans are conditioned on the tour *and* the agent's own views, sampled sparsely with their
source positions (the paper's non-contiguous context).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any, NamedTuple

import numpy as np

from .action_decoding import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT
from .configuration_agent import V4SAgentConfig
from .planner import Plan, VideoPlanner, sample_context_indices

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
        **overrides: Any,
    ) -> None:
        cfg = config.to_dict() if config is not None else {}
        cfg.update(overrides)
        if replan_every is not None:
            cfg["replan_every"] = replan_every
        self.config = V4SAgentConfig(**cfg)
        self.planner = planner
        if self.config.num_inference_steps is not None:
            planner.num_inference_steps = self.config.num_inference_steps
        if self.config.guidance_scale is not None:
            planner.guidance_scale = self.config.guidance_scale
        planner.crosscheck = self.config.crosscheck
        planner.cv_min_inliers = self.config.cv_min_inliers
        planner.crosscheck_steps = self.config.replan_every
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
        rgb = self._rgb(obs)
        if info is not None and "agent_pose" in info:
            self.pose = info["agent_pose"]
        if self.steps > 0:
            self._observe(rgb)
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

    def _dead_reckon(self, action: int) -> None:
        """Odometry from the agent's own actions (collisions ignored); ``act(obs, info)`` corrects it."""
        if self.pose is None:
            return
        self.pose = step_pose(self.pose, action)
