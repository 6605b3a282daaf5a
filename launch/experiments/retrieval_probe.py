"""Diagnostic: does the planner's imagined final frame find the goal's place in the context tour?

For held-out ``val_scenes`` object episodes it plans (with and without the context), takes the last
imagined frame, retrieves the nearest context-tour frame (MSE on 16x16 colour thumbnails) and reports how
far that frame's pose lies from where the expert ended (floor distance). References: the expert's true
final frame (the best this retrieval can do), the observation, and a random tour frame. An agent design
that walks to the retrieved tour pose is only worth building when "ctx" beats "random" clearly::

    python launch/experiments/retrieval_probe.py [CHECKPOINT] [EPISODES]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from v4s_agent.agent.planner import VideoPlanner, resize_frames
from v4s_agent.evaluation.evaluate import collect_episodes


def thumbs(x: np.ndarray) -> np.ndarray:
    x = resize_frames(x[None] if x.ndim == 3 else x, 16, 16).astype(np.float32) / 255.0
    return x.reshape(len(x), -1)


def retrieved_distance(frame: np.ndarray, tour: np.ndarray, where: np.ndarray, goal: np.ndarray) -> float:
    """Floor distance from ``goal`` to the pose of the tour frame nearest to ``frame``."""
    j = int(np.argmin(((tour - thumbs(frame)) ** 2).mean(axis=1)))
    return float(np.linalg.norm((where[j] - goal)[[0, 2]]))


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    planner = VideoPlanner.from_pretrained(argv[0]) if argv and argv[0] else VideoPlanner.from_pretrained()
    n = int(argv[1]) if len(argv) > 1 else 24
    n_traj = planner.num_target_frames - planner.num_box_frames
    eps = collect_episodes("val_scenes", None, "object", n, 5000, n_traj, planner.height)
    rng = np.random.default_rng(0)
    res: dict[str, list[float]] = {k: [] for k in ("ctx", "noctx", "true_final", "obs", "random")}
    for ep in eps:
        tour, where = thumbs(ep.context["frames"]), ep.context["poses"][:, :3, 3]
        goal = ep.poses[-1][:3, 3]

        def dist(frame: np.ndarray, tour=tour, where=where, goal=goal) -> float:
            return retrieved_distance(frame, tour, where, goal)

        res["ctx"].append(
            dist(planner.plan(ep.context, ep.frames[0], ep.instruction, seed=ep.seed).trajectory[-1])
        )
        res["noctx"].append(
            dist(planner.plan(None, ep.frames[0], ep.instruction, seed=ep.seed).trajectory[-1])
        )
        res["true_final"].append(dist(ep.frames[-1]))
        res["obs"].append(dist(ep.frames[0]))
        res["random"].append(float(np.linalg.norm((where[rng.integers(len(where))] - goal)[[0, 2]])))
    for k, v in res.items():
        a = np.asarray(v)
        print(
            f"{k:10s} median {np.median(a):.2f} m  mean {a.mean():.2f} m  within 1.5 m {np.mean(a < 1.5):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
