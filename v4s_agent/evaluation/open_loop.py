"""Open-loop evaluation: held-out episodes and the scores of the plans imagined for them.

Object grounding (as the paper measures): on held-out episodes the planner imagines the clip that ends at
the goal; an independent detector (:mod:`.evaluator_detector`, trained on rendered frames with the env's
semantic masks, never the model's red box) scores its last trajectory frame: SD, IF, IF(SD<0.2),
IF(SD<0.1). Navigation: PSNR/SSIM of imagined frames against frames rendered along the same camera path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..agent.planner import resize_frames
from .metrics import mean_interval, psnr, sd_from_box, ssim, wilson_interval
from .rollout import make_env, scene_key

SHEET_EPISODES = 4  # episodes per row drawn in the sample sheets


@dataclass
class Episode:
    """A held-out open-loop episode: the clip of the expert that ends at the goal."""

    split: str
    seed: int
    instruction: str
    category: str | None
    context: dict[str, np.ndarray]
    frames: np.ndarray  # rendered expert clip uint8 (T_traj, H, W, 3); frame 0 = the observation
    poses: np.ndarray  # (T_traj, 4, 4)
    final_sd_exact: float  # SD of the goal in the clip's last frame, from the semantic render


# ---------------------------------------------------------------------- episodes


def expert_clip(
    env: Any, seed: int, n_traj: int, max_steps: int = 200
) -> tuple[np.ndarray, np.ndarray, Any, dict]:
    """Roll out the oracle expert; return the last ``n_traj`` frames ending at the goal (padded by
    repeating the start when the path is shorter), their poses, and the reset info."""
    obs, info0 = env.reset(seed=int(seed))
    frames, poses, sds = [obs["rgb"]], [np.asarray(info0["agent_pose"])], [info0.get("goal_sd", float("nan"))]
    for _ in range(max_steps):
        a = int(env.unwrapped.expert_action())
        if a == 0:
            break
        obs, _, term, trunc, info = env.step(a)
        frames.append(obs["rgb"])
        poses.append(np.asarray(info["agent_pose"]))
        sds.append(info.get("goal_sd", float("nan")))
        if term or trunc:
            break
    s = max(0, len(frames) - n_traj)
    frames, poses, sds = frames[s:], poses[s:], sds[s:]
    while len(frames) < n_traj:  # short path: stand still at the goal
        frames.append(frames[-1])
        poses.append(poses[-1])
        sds.append(sds[-1])
    return np.stack(frames), np.stack(poses), (s, sds[-1]), info0


def collect_episodes(
    split: str | None, scene: str | None, task: str, n: int, seed: int, n_traj: int, resolution: int
) -> list[Episode]:
    """Held-out episodes with their expert clips and contexts."""
    env = make_env(task, split=split, scene=scene, resolution=(resolution, resolution))
    eps = []
    try:
        for i in range(n):
            frames, poses, (start, sd), info0 = expert_clip(env, seed + i, n_traj)
            ctx = env.unwrapped.get_context()
            eps.append(
                Episode(
                    split=split or Path(scene or "default").stem,
                    seed=seed + i,
                    instruction=str(info0.get("instruction", "")),
                    category=info0.get("goal_category"),
                    context={"frames": np.asarray(ctx["frames"]), "poses": np.asarray(ctx["poses"])},
                    frames=frames,
                    poses=poses,
                    final_sd_exact=float("nan") if sd is None else float(sd),
                )
            )
    finally:
        env.close()
    return eps


def _relative_camera(poses: np.ndarray, n_target: int) -> np.ndarray:
    from ..agent.agent import relative_camera

    cam = relative_camera(poses)
    if len(cam) < n_target:
        cam = np.concatenate([cam, np.zeros((n_target - len(cam), 12), np.float32)])
    return cam


# ---------------------------------------------------------------------- open loop


def grounding_scores(sds: Sequence[float]) -> dict[str, float]:
    """SD (mean over videos where the goal is found), IF, IF(SD<0.2), IF(SD<0.1) from per-video SDs
    (``nan`` = not found)."""
    a = np.asarray(sds, dtype=np.float64)
    found = ~np.isnan(a)
    n = max(len(a), 1)
    k20 = int((found & (np.nan_to_num(a, nan=9) < 0.2)).sum())
    k10 = int((found & (np.nan_to_num(a, nan=9) < 0.1)).sum())
    return {
        "SD": float(a[found].mean()) if found.any() else float("nan"),
        "IF": float(found.sum() / n),
        "IF(SD<0.2)": k20 / n,
        "IF(SD<0.1)": k10 / n,
        "n": int(len(a)),
        "ci95": {
            "SD": mean_interval(a[found].tolist()),
            "IF": wilson_interval(int(found.sum()), len(a)),
            "IF(SD<0.2)": wilson_interval(k20, len(a)),
            "IF(SD<0.1)": wilson_interval(k10, len(a)),
        },
        "per_episode_sd": [None if math.isnan(x) else float(x) for x in a],
    }


def _detector_sd(det: Any, frame: np.ndarray, category: str | None) -> float:
    if category is None or category not in det.categories:
        return float("nan")
    ((box, _),) = det.detect(frame, category)
    return sd_from_box(box, frame.shape[0], frame.shape[1])


@contextlib.contextmanager
def _no_crosscheck(planner: Any) -> Any:
    """Open loop scores frames, not actions: skip the OpenCV cross-check (about 0.2 s per transition)."""
    old = planner.crosscheck
    planner.crosscheck = "off"
    try:
        yield planner
    finally:
        planner.crosscheck = old


def wrong_contexts(eps: Sequence[Episode]) -> list[dict[str, np.ndarray] | None]:
    """For every episode, the context of the next episode from **another** scene (``None`` if none)."""
    keys = [scene_key(e.context) for e in eps]
    out: list[dict[str, np.ndarray] | None] = []
    for i, k in enumerate(keys):
        js = [j for j in [*range(i + 1, len(eps)), *range(i)] if keys[j] != k]
        out.append(eps[js[0]].context if js else None)
    return out


def _context_for(ep: Episode, i: int, context: str, wrong: list | None) -> dict[str, np.ndarray] | None:
    if context == "none":
        return None
    if context == "wrong":
        if wrong is None or wrong[i] is None:
            raise ValueError("a wrong-scene context needs episodes from at least two scenes")
        return wrong[i]
    return ep.context


def open_loop_grounding(
    planner: Any, eps: Sequence[Episode], det: Any, context: str = "true"
) -> dict[str, Any]:
    """Generate each episode's clip and score its last trajectory frame with the detector.

    ``context``: ``"true"`` (default), ``"none"`` or ``"wrong"`` (another held-out scene's tour).
    """
    wrong = wrong_contexts(eps) if context == "wrong" else None
    sds, own_sds, lat, sheet = [], [], [], []
    for i, ep in enumerate(eps):
        with _no_crosscheck(planner):
            plan = planner.plan(
                _context_for(ep, i, context, wrong), ep.frames[0], ep.instruction, seed=ep.seed,
                observation_pose=ep.poses[0],
            )  # fmt: skip
        if i < SHEET_EPISODES:
            sheet.append((plan.frames, resize_frames(ep.frames, planner.height, planner.width)))
        sds.append(_detector_sd(det, plan.trajectory[-1], ep.category))
        own_sds.append(plan.box_sd)
        lat.append(plan.latency_ms)
    out = grounding_scores(sds)
    out["own_red_box"] = grounding_scores(own_sds)  # for reference only: NOT the evaluation
    out["plan_latency_ms"] = float(np.mean(lat)) if lat else None
    out["_sheet"] = sheet
    return out


def ground_truth_grounding(eps: Sequence[Episode], det: Any) -> dict[str, Any]:
    """The rendered expert clips: by the detector (its ceiling) and exact from the semantic render."""
    out = grounding_scores([_detector_sd(det, ep.frames[-1], ep.category) for ep in eps])
    out["exact_semantic"] = grounding_scores([ep.final_sd_exact for ep in eps])
    return out


def copy_observation_navigation(eps: Sequence[Episode], height: int, width: int) -> dict[str, Any]:
    """The trivial reference: every imagined frame is the current observation (what a model that has
    learned nothing about motion but copies its input would score)."""
    ps, ss = [], []
    for ep in eps:
        real = resize_frames(ep.frames, height, width)
        gen = np.repeat(real[:1], len(real) - 1, axis=0)
        ps.append(psnr(gen, real[1:]))
        ss.append(ssim(gen, real[1:]))
    return image_scores(ps, ss)


def image_scores(ps: Sequence[float], ss: Sequence[float]) -> dict[str, Any]:
    """Mean PSNR/SSIM over episodes with their 95 % intervals."""
    return {
        "PSNR": float(np.mean(ps)) if len(ps) else float("nan"),
        "SSIM": float(np.mean(ss)) if len(ss) else float("nan"),
        "n": len(ps),
        "ci95": {"PSNR": mean_interval(ps), "SSIM": mean_interval(ss)},
    }


def open_loop_navigation(planner: Any, eps: Sequence[Episode], context: str = "true") -> dict[str, Any]:
    """PSNR/SSIM of imagined trajectory frames vs frames rendered along the same camera path."""
    wrong = wrong_contexts(eps) if context == "wrong" else None
    ps, ss, lat, sheet = [], [], [], []
    for i, ep in enumerate(eps):
        cam = _relative_camera(ep.poses, planner.num_target_frames)
        with _no_crosscheck(planner):
            plan = planner.plan(
                _context_for(ep, i, context, wrong), ep.frames[0], ep.instruction, camera=cam, seed=ep.seed,
                observation_pose=ep.poses[0],
            )  # fmt: skip

        real = resize_frames(ep.frames, planner.height, planner.width)
        gt = real[1:]
        gen = plan.trajectory[1 : 1 + len(gt)]
        if i < SHEET_EPISODES:
            sheet.append((plan.frames, real))
        ps.append(psnr(gen, gt[: len(gen)]))
        ss.append(ssim(gen, gt[: len(gen)]))
        lat.append(plan.latency_ms)
    return {
        **image_scores(ps, ss),
        "per_episode_psnr": [float(x) for x in ps],
        "_sheet": sheet,
        "plan_latency_ms": float(np.mean(lat)) if lat else None,
    }
