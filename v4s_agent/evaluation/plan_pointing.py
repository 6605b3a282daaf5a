"""Does the plan point at the goal? The planner's imagined goal view against the context video's viewpoints.

Why this measurement (issue 21): in closed loop the agent visits the places from which the context video
shows the goal (``ObjectSearch.viewpoints``, found by the detector) before it uses a plan, so a plan can
only raise the success rate if it knows *which* of those places holds the goal better than the detector's
own ranking does. Per episode this compares three choices of the first viewpoint to visit:

* ``detector``: the detector's ranking (what the agent does today);
* ``plan``: the viewpoint whose context frame is most like the imagined goal view of the episode's first
  plan(s) (the same greyscale NCC the agent uses for its ``context_match`` waypoint), true context;
* ``plan, no context``: the same with the context replaced by noise (the control: what the instruction and
  the current view alone give).

A choice is "at the goal" when the viewpoint lies within ``radius`` m of a goal instance's footprint (the
env's ground truth, used for scoring only). A plan that carries the context's information must beat its
no-context control; to earn a role in the agent it must also beat the detector.

    python -m v4s_agent.evaluation.plan_pointing --split val_scenes --episodes 30 --plans 2 \
        --out outputs/plan_pointing
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

CHOICES = ("detector", "plan", "plan, no context")


def viewpoint_scores(agent: Any, rgb: np.ndarray, n_plans: int, seed: int) -> dict[str, np.ndarray]:
    """Similarity of each context viewpoint's frame to the imagined goal view (mean over ``n_plans``)."""
    vps = agent.search.viewpoints
    out = {"plan": np.zeros(len(vps)), "plan, no context": np.zeros(len(vps))}
    idx = [v[4] for v in vps]
    for k in range(n_plans):
        plan = agent.replan(rgb)  # the agent's own plan: its context retrieval, poses and seed
        out["plan"] += agent.goal_view_similarity(plan)[idx]
        blind = agent.planner.plan(None, rgb, agent.instruction, seed=seed * 1000 + k)
        out["plan, no context"] += agent.goal_view_similarity(blind)[idx]
    return {k: v / max(n_plans, 1) for k, v in out.items()}


def measure(
    split: str,
    episodes: int,
    seed: int = 1000,
    n_plans: int = 2,
    radius: float = 1.5,
    checkpoint: str | None = None,
    detector: str | None = None,
    resolution: int = 128,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-episode choices and, per choice, how often it is at the goal (Wilson 95 % interval)."""
    from tqdm import tqdm

    from ..envs.goal_viewpoints import footprint_distance
    from .closed_loop import OBS_KEYS, RowSpec, build_policy
    from .metrics import wilson_interval
    from .rollout import make_env

    if episodes < 1 or n_plans < 1 or radius <= 0:
        raise ValueError(f"episodes and plans must be >= 1, radius > 0. Got {episodes}, {n_plans}, {radius}")
    env_kw = {"obs_keys": OBS_KEYS, "task": "object", "resolution": (resolution, resolution), "split": split}
    env = make_env(**env_kw)
    spec = RowSpec("ours", "v4s", checkpoint, {"seed": seed}, {"backend": "torch"}, detector=detector)
    agent = build_policy(spec, env, env_kw)
    rows: list[dict[str, Any]] = []
    try:
        for s in tqdm(range(seed, seed + episodes), desc="plan pointing", unit="ep", disable=not progress):
            obs, info = env.reset(seed=s)
            agent.reset(obs, info)
            vps = list(agent.search.viewpoints) if agent.search is not None else []
            if not vps:  # viewpoints need the context video's poses, as the goal-view match does
                rows.append({"seed": s, "viewpoints": 0})
                continue
            objs = env.unwrapped._goal_objs
            dist = [
                min(float(footprint_distance(np.float64(v[0]), np.float64(v[1]), o)) for o in objs)
                for v in vps
            ]
            scores = viewpoint_scores(agent, np.asarray(obs["rgb"]), n_plans, s)
            pick = {"detector": 0, **{k: int(np.argmax(v)) for k, v in scores.items()}}
            rows.append(
                {
                    "seed": s,
                    "viewpoints": len(vps),
                    "distance_m": [round(d, 3) for d in dist],
                    "any_at_goal": min(dist) <= radius,
                    **{f"{k}: index": i for k, i in pick.items()},
                    **{f"{k}: at goal": dist[i] <= radius for k, i in pick.items()},
                    **{f"{k}: scores": [round(float(x), 4) for x in v] for k, v in scores.items()},
                }
            )
    finally:
        env.close()
    scored = [r for r in rows if r["viewpoints"]]
    n = len(scored)
    summary: dict[str, Any] = {"episodes": episodes, "with_viewpoints": n}
    for k in ("any_at_goal", *(f"{c}: at goal" for c in CHOICES)):
        hits = sum(bool(r[k]) for r in scored)
        summary[k] = {"count": hits, "rate": hits / n if n else None, "ci95": wilson_interval(hits, n)}
    return {
        "split": split,
        "seed": seed,
        "plans_per_episode": n_plans,
        "radius_m": radius,
        "summary": summary,
        "per_episode": rows,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: write ``plan_pointing.json`` and print the summary table."""
    from ..outputs import OutputDirError, check_out_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="val_scenes", choices=("val_scenes", "val_categories", "outdoor"))
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--seed", type=int, default=1000, help="first episode seed")
    p.add_argument("--plans", type=int, default=2, help="plans per episode (their goal views are averaged)")
    p.add_argument(
        "--radius", type=float, default=1.5, help="'at the goal': within this of its footprint (m)"
    )
    p.add_argument("--checkpoint", default=None, help="planner checkpoint (default: the shipped one)")
    p.add_argument("--detector", default=None, help="evaluator detector folder (default: shipped)")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        out = check_out_dir(a.out, a.overwrite)
        res = measure(a.split, a.episodes, a.seed, a.plans, a.radius, a.checkpoint, a.detector)
    except (ValueError, OutputDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan_pointing.json").write_text(json.dumps(res, indent=1))
    s = res["summary"]
    print(f"| first viewpoint chosen by | at the goal (<= {a.radius} m), of {s['with_viewpoints']} | 95 % |")
    print("|---|---|---|")
    for k in ("any_at_goal", *(f"{c}: at goal" for c in CHOICES)):
        lo, hi = s[k]["ci95"]
        name = "any viewpoint (ceiling)" if k == "any_at_goal" else k.split(":")[0]
        print(f"| {name} | {s[k]['count']} | [{lo:.2f}, {hi:.2f}] |")
    print(f"wrote {Path(out) / 'plan_pointing.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
