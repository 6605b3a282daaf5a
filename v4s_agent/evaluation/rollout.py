"""``python -m v4s_agent.rollout``: run the V4S agent closed loop and write videos + a summary.

With no arguments: the embedded default scene and the shipped checkpoint. Every episode becomes an mp4
(real view | imagined plan with its red box | top-down map with the path) and ``DIR/summary.json`` holds
success rate, SPL, final SD and plan latency. Output is written to a temporary folder and renamed into
place only when the run finished, so a failed run never leaves something that looks like a result.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..agent.action_decoding import STOP
from ..integrity import dumps_strict
from ..outputs import AtomicDir, check_out_dir

logger = logging.getLogger(__name__)

SCENE_SUFFIXES = (".glb", ".gltf")


class Policy(Protocol):
    """What the episode runner needs from an agent (``V4SAgent``, or a baseline below)."""

    def reset(self, obs: Any, info: dict[str, Any]) -> None: ...

    def act(self, obs: Any, info: dict[str, Any] | None = None) -> int: ...


class RandomAgent:
    """Baseline: uniformly random moves; STOPs with probability ``p_stop`` per step."""

    def __init__(self, seed: int = 0, p_stop: float = 0.02) -> None:
        self.seed, self.p_stop = seed, p_stop
        self.stats: dict[str, Any] = {}

    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        # seeded by the episode's first view: the same episode gets the same moves in any order or process
        import zlib

        first = np.ascontiguousarray(obs["rgb"] if isinstance(obs, dict) else obs)
        self.rng = np.random.default_rng([self.seed, zlib.crc32(first.tobytes())])

    def act(self, obs: Any, info: dict[str, Any] | None = None) -> int:
        return STOP if self.rng.random() < self.p_stop else int(self.rng.integers(1, 4))


class ExpertAgent:
    """Baseline (upper bound): the environment's shortest-path oracle expert."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.stats: dict[str, Any] = {}

    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        pass

    def act(self, obs: Any, info: dict[str, Any] | None = None) -> int:
        return int(self.env.unwrapped.expert_action())


def scene_key(context: dict[str, Any]) -> bytes:
    """Identity of a scene from its context tour (the same scene gives the same tour): tells another
    scene's context from this one's for the wrong-context rows."""
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(np.asarray(context["frames"])[:4]).tobytes()).digest()


# ---------------------------------------------------------------------- env construction


def validate_scene_args(scene: str | None, split: str | None) -> None:
    """Fail fast (before loading any model) on a scene file that does not exist or an unknown split."""
    if scene is not None:
        p = Path(scene)
        if not p.is_file():
            raise FileNotFoundError(f"scene file not found: {scene}")
        if p.suffix.lower() not in SCENE_SUFFIXES:
            raise ValueError(f"scene must be a GLB/glTF file ({', '.join(SCENE_SUFFIXES)}). Got {scene}")
    if split is not None:
        from ..envs.scenes import SPLITS

        known = sorted(SPLITS)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known splits: {', '.join(known)}")


def make_env(
    task: str = "object",
    split: str | None = None,
    scene: str | None = None,
    resolution: tuple[int, int] = (128, 128),
    obs_keys: Sequence[str] = ("rgb",),
    max_steps: int | None = None,
    annotation: str | None = None,
) -> Any:
    """A ``V4SNav-v0`` env (a scene file wins over a split); ``max_steps`` adds a time limit;
    ``annotation`` is a scene file's semantic annotation (objects with categories, for object goals)."""
    from ..envs import V4SNavEnv

    kwargs: dict[str, Any] = {"task": task, "resolution": tuple(resolution), "obs_keys": tuple(obs_keys)}
    if annotation is not None:
        kwargs["annotation"] = str(annotation)
    if scene is not None:
        kwargs["scene"] = str(scene)
    elif split is not None:
        kwargs["scene"] = split
    env = V4SNavEnv(**kwargs)
    if max_steps is not None:
        from gymnasium.wrappers import TimeLimit

        env = TimeLimit(env, max_episode_steps=int(max_steps))
    return env


# ---------------------------------------------------------------------- episodes


OUTCOMES = ("success", "stopped_short", "stuck", "wandered")


@dataclass
class EpisodeResult:
    """Metrics of one closed-loop episode (+ the composed video frames when recorded)."""

    seed: int
    success: float
    spl: float
    final_sd: float
    distance_to_goal: float
    steps: int
    collisions: int
    plans: int
    plan_latency_ms: list[float]
    cv_disagreements: int
    instruction: str
    goal_category: str | None
    stop_reason: str | None
    stopped: bool = False  # the episode ended on the agent's STOP (else on the step limit)
    frames: list[np.ndarray] = field(default_factory=list, repr=False)
    plan_log: list[tuple[int, np.ndarray, Any]] = field(default_factory=list, repr=False)

    @property
    def outcome(self) -> str:
        """How the episode ended, for counting failure modes: ``success``; ``stopped_short`` (STOP away
        from the goal); ``stuck`` (step limit, at least half the steps blocked by a collision);
        ``wandered`` (step limit, moving freely but never stopping at the goal)."""
        if self.success > 0:
            return "success"
        if self.stopped:
            return "stopped_short"
        return "stuck" if self.collisions >= 0.5 * max(self.steps, 1) else "wandered"

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("frames", "plan_log")}
        d["plan_latency_ms"] = float(np.mean(self.plan_latency_ms)) if self.plan_latency_ms else None
        d["outcome"] = self.outcome
        return d


def _fit_height(img: np.ndarray, h: int) -> np.ndarray:
    import cv2

    img = np.asarray(img, dtype=np.uint8)
    if img.shape[0] == h:
        return img
    w = max(1, round(img.shape[1] * h / img.shape[0]))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_NEAREST)


def compose_frame(
    rgb: np.ndarray, plan: Any, plan_step: int, top_down: np.ndarray | None, height: int = 256
) -> np.ndarray:
    """real view | imagined frame of the current plan (+ its goal frame with the red box) | top-down map."""
    import cv2

    real = _fit_height(rgb, height)
    if plan is not None:
        traj = plan.trajectory
        imag = _fit_height(traj[min(plan_step, len(traj) - 1)], height).copy()
        goal = plan.goal_frame.copy()
        if plan.box is not None:  # outline the box we read back (the model drew the red one)
            x0, y0, x1, y1 = (int(round(v)) for v in plan.box)
            cv2.rectangle(goal, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 0), 1)
        inset = _fit_height(goal, height // 3)
        imag[: inset.shape[0], imag.shape[1] - inset.shape[1] :] = inset
        cv2.putText(imag, "imagined", (4, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    else:
        imag = np.zeros_like(real)
        cv2.putText(imag, "no plan", (4, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    cv2.putText(real, "real", (4, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    panels = [real, imag]
    if top_down is not None:
        h, w = rgb.shape[:2]
        if top_down.shape[0] == h and top_down.shape[1] > w and np.array_equal(top_down[:, :w], rgb):
            top_down = top_down[:, w:]  # env.render() is "view | map": keep the map only
        panels.append(_fit_height(top_down, height))
    out = np.concatenate(panels, axis=1)
    pad_w = (-out.shape[1]) % 16
    if pad_w:
        out = np.pad(out, ((0, 0), (0, pad_w), (0, 0)))
    return out


def run_episode(
    env: Any,
    policy: Policy,
    seed: int,
    record: bool = False,
    on_step: Callable[[], None] | None = None,
) -> EpisodeResult:
    """One closed-loop episode; ``info`` is passed to ``act`` (for the agent's pose, a GPS+compass)."""
    obs, info = env.reset(seed=int(seed))
    policy.reset(obs, info)
    frames: list[np.ndarray] = []
    plan_log: list[tuple[int, np.ndarray, Any]] = []
    steps = collisions = 0
    stopped = False
    while True:
        a = policy.act(obs, info)
        plan = getattr(policy, "last_plan", None)
        if record and plan is not None and (not plan_log or plan_log[-1][2] is not plan):
            plan_log.append((steps, np.asarray(obs["rgb"]), plan))
        if record:
            frames.append(
                compose_frame(
                    obs["rgb"],
                    getattr(policy, "last_plan", None),
                    getattr(policy, "plan_step", 1) - 1,
                    env.render(),
                )
            )
        obs, _, term, trunc, info = env.step(int(a))
        stopped = int(a) == STOP
        steps += 1
        collisions += int(bool(info.get("collided", False)))
        if on_step is not None:
            on_step()
        if term or trunc:
            break
    if record:
        frames.append(compose_frame(obs["rgb"], getattr(policy, "last_plan", None), 10**6, env.render()))
    stats = getattr(policy, "stats", {}) or {}
    sd = info.get("goal_sd", float("nan"))
    return EpisodeResult(
        seed=int(seed),
        success=float(info.get("success", info.get("is_success", 0.0))),
        spl=float(info.get("spl", 0.0)),
        final_sd=float("nan") if sd is None else float(sd),
        distance_to_goal=float(info.get("distance_to_goal", float("nan"))),
        steps=steps,
        collisions=collisions,
        plans=int(stats.get("plans", 0)),
        plan_latency_ms=list(stats.get("plan_latency_ms", [])),
        cv_disagreements=int(stats.get("cv_disagreements", 0)),
        instruction=str(info.get("instruction", "")),
        goal_category=info.get("goal_category"),
        stop_reason=stats.get("stop_reason"),
        stopped=stopped,
        frames=frames,
        plan_log=plan_log,
    )


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Aggregate metrics over episodes (final SD averaged over episodes where the goal is in view)."""
    lat = [x for r in results for x in r.plan_latency_ms]
    sds = [r.final_sd for r in results if not math.isnan(r.final_sd)]
    n = len(results)
    return {
        "episodes": n,
        "success_rate": float(np.mean([r.success for r in results])) if n else float("nan"),
        "spl": float(np.mean([r.spl for r in results])) if n else float("nan"),
        "mean_final_sd": float(np.mean(sds)) if sds else float("nan"),
        "final_goal_visible_rate": len(sds) / n if n else float("nan"),
        "mean_distance_to_goal": float(np.mean([r.distance_to_goal for r in results])) if n else float("nan"),
        "collisions_per_episode": float(np.mean([r.collisions for r in results])) if n else float("nan"),
        "mean_steps": float(np.mean([r.steps for r in results])) if n else float("nan"),
        "plan_latency_ms": float(np.mean(lat)) if lat else None,
        "plan_latency_ms_p50": float(np.percentile(lat, 50)) if lat else None,
        "plan_latency_ms_p95": float(np.percentile(lat, 95)) if lat else None,
        "plans": int(sum(r.plans for r in results)),
        "cv_disagreements": int(sum(r.cv_disagreements for r in results)),
        "outcomes": {k: sum(r.outcome == k for r in results) for k in OUTCOMES},
    }


def plan_sheet(
    plans: Sequence[tuple[int, np.ndarray, Any]], max_rows: int = 12, cell: int = 64
) -> np.ndarray:
    """One PNG-ready image per episode: a row per plan (real view when planning | imagined frames | goal
    frame with the red box read back outlined in yellow), labelled with the step and the box SD."""
    import cv2

    if not plans:
        img = np.full((cell, 4 * cell, 3), 255, np.uint8)
        cv2.putText(img, "no plans", (4, cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        return img
    pick = np.unique(np.linspace(0, len(plans) - 1, min(max_rows, len(plans))).round().astype(int))
    rows = []
    for i in pick:
        step, real, plan = plans[i]
        cells = [_fit_height(real, cell)[:, :cell]]
        cells += [_fit_height(f, cell)[:, :cell] for f in plan.trajectory[1:]]
        goal = _fit_height(plan.goal_frame, cell)[:, :cell].copy()
        if plan.box is not None:
            sy, sx = cell / plan.goal_frame.shape[0], cell / plan.goal_frame.shape[1]
            x0, y0, x1, y1 = plan.box
            cv2.rectangle(
                goal, (int(x0 * sx), int(y0 * sy)), (int(x1 * sx) - 1, int(y1 * sy) - 1), (255, 255, 0), 1
            )
        cells.append(goal)
        gap = np.full((cell, 2, 3), 255, np.uint8)
        row = np.concatenate([c for x in cells for c in (x, gap)][:-1], axis=1)
        label = np.full((12, row.shape[1], 3), 255, np.uint8)
        sd = "none" if plan.box is None else f"{plan.box_sd:.2f}"
        text = f"step {step}: real | imagined x{len(plan.trajectory) - 1} | goal box (SD {sd})"
        cv2.putText(label, text, (2, 9), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1)
        rows += [label, row, np.full((4, row.shape[1], 3), 255, np.uint8)]
    w = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = 6) -> None:
    """H.264 mp4 via imageio-ffmpeg."""
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), fps=fps, codec="libx264", macro_block_size=1, quality=7) as w:
        for f in frames:
            w.append_data(f)


# ---------------------------------------------------------------------- atomic output


# AtomicDir (``--out``) lives in v4s_agent.outputs: it never deletes files a run did not write


# ---------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m v4s_agent.rollout", description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=3, help="number of episodes (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first episode (episode i uses seed+i)")
    ap.add_argument("--task", choices=("object", "pose"), default="object")
    ap.add_argument("--split", default=None, help="scene split, e.g. val_scenes, val_categories, outdoor")
    ap.add_argument("--scene", default=None, metavar="PATH", help="a GLB/glTF scene file (wins over --split)")
    ap.add_argument(
        "--annotation",
        default=None,
        metavar="JSON",
        help="the scene file's semantic annotation (objects + categories), for object goals",
    )
    ap.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default="torch")
    ap.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--out", default="outputs/rollout", metavar="DIR")
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out folder that holds other files (they are kept, never deleted)",
    )
    ap.add_argument(
        "--checkpoint", default=None, metavar="PATH", help="planner checkpoint (default: shipped)"
    )
    ap.add_argument("--agent", choices=("v4s", "random", "expert"), default="v4s")
    ap.add_argument("--replan-every", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="diffusion sampler steps per plan")
    ap.add_argument(
        "--max-steps",
        type=int,
        default=500,
        help="episode step limit (default 500: Habitat ObjectNav's budget, as in the closed-loop results)",
    )
    ap.add_argument(
        "--resolution", type=int, default=None, help="env frame size (default 128; the planner resizes)"
    )
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the PyTorch planner")
    ap.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the idle cores now, 1 to 4); 1 is fastest on a busy CPU",
    )
    ap.add_argument("--fps", type=int, default=6)
    ap.add_argument(
        "--detector",
        default=None,
        help="goal detector folder for the stop (default: the shipped goal detector); 'oracle': exact "
        "semantics of the live frame (a diagnostic)",
    )
    ap.add_argument(
        "--no-detector", action="store_true", help="no detector: stop on the plan's imagined goal box only"
    )
    return ap


def auto_threads() -> int:
    """A sane torch thread count: the cores that are idle now (1 on a busy machine, at most 4).

    Why not torch's default (all cores): on a loaded 2-core CPU idle OpenMP threads spin against the
    other processes (a plan took 45 s with 2 threads and 5 s with 1, measured here).
    """
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return int(max(1, min(4, cpus - round(load))))


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)``; ``n=None`` picks :func:`auto_threads`."""
    if n is None:
        n = auto_threads()
    if n < 1:
        raise ValueError(f"--num-threads must be >= 1. Got {n}")
    import torch

    torch.set_num_threads(n)


def build_policy(args: argparse.Namespace, env: Any, planner: Any = None) -> Any:
    """The agent named by ``--agent`` (the V4S agent needs ``planner``)."""
    if args.agent == "random":
        return RandomAgent(seed=args.seed)
    if args.agent == "expert":
        return ExpertAgent(env)
    from ..agent.agent import V4SAgent

    kw: dict[str, Any] = {"seed": args.seed}
    if args.replan_every is not None:
        kw["replan_every"] = args.replan_every
    if args.steps is not None:
        kw["num_inference_steps"] = args.steps
    detector = None
    if args.task == "object" and not getattr(args, "no_detector", False):
        from .evaluator_detector import load_goal_detector
        from .oracle_detector import ORACLE, OracleGoalDetector

        path = getattr(args, "detector", None)
        if path == ORACLE:
            detector = OracleGoalDetector(load_goal_detector(), env)
        else:
            detector = load_goal_detector(path)
    return V4SAgent(planner, detector=detector, **kw)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The rollout itself (raises on bad input; ``main`` turns that into an exit code)."""
    from tqdm.auto import tqdm

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1. Got {args.episodes}")
    if args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1. Got {args.max_steps}")
    check_out_dir(args.out, getattr(args, "overwrite", False))  # before any work: no run is lost to it
    validate_scene_args(args.scene, args.split)
    if args.annotation is not None:
        if args.scene is None:
            raise ValueError("--annotation belongs to a scene file: give --scene PATH too")
        if not Path(args.annotation).is_file():
            raise FileNotFoundError(f"annotation file not found: {args.annotation}")
    set_threads(args.num_threads)
    planner = None
    if args.agent == "v4s":
        from ..agent.planner import VideoPlanner

        planner = VideoPlanner.from_pretrained(
            args.checkpoint, backend=args.backend, device=args.device, bf16=args.bf16
        )
    # 128 px by default: the planner resizes its inputs to the model's size, and the depth map and the
    # detector need the finer frames (at 64 px the detector misses goals it sees at 128)
    r = args.resolution or 128
    res = (r, r)
    env = make_env(
        args.task,
        args.split,
        args.scene,
        resolution=res,
        obs_keys=("rgb", "depth"),  # depth + odometry: the map the plan's waypoints are driven on
        max_steps=args.max_steps,
        annotation=args.annotation,
    )
    policy = build_policy(args, env, planner)
    results: list[EpisodeResult] = []
    t0 = time.time()
    with AtomicDir(args.out, overwrite=getattr(args, "overwrite", False)) as tmp:
        bar = tqdm(total=args.episodes, desc=f"rollout {args.agent}", unit="ep", file=sys.stderr)
        try:
            for i in range(args.episodes):
                r = run_episode(env, policy, args.seed + i, record=not args.no_video)
                if not args.no_video:
                    write_video(tmp / f"episode_{i:03d}.mp4", r.frames, fps=args.fps)
                    if r.plan_log:
                        import imageio.v2 as imageio

                        imageio.imwrite(tmp / f"episode_{i:03d}_plans.png", plan_sheet(r.plan_log))
                r.frames, r.plan_log = [], []
                results.append(r)
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([x.success for x in results]):.2f}", steps=r.steps)
        finally:
            bar.close()
            env.close()
        summary = summarize(results)
        summary.update(
            {
                "agent": args.agent,
                "task": args.task,
                "split": args.split,
                "scene": args.scene or ("default" if args.split is None else None),
                "checkpoint": str(args.checkpoint) if args.checkpoint else "default",
                "backend": args.backend,
                "seed": args.seed,
                "wall_s": round(time.time() - t0, 1),
                "agent_config": policy.config.to_dict() if hasattr(policy, "config") else None,
                "per_episode": [r.to_dict() for r in results],
                "videos": [] if args.no_video else [f"episode_{i:03d}.mp4" for i in range(len(results))],
                "threads": torch_threads(),
            }
        )
        (tmp / "summary.json").write_text(dumps_strict(summary, indent=2, default=json_default))
    return summary


def torch_threads() -> int | None:
    """The torch thread count in use (for the summary), ``None`` without torch."""
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars/arrays (summaries hold numpy values)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit 0 on success, 2 on bad input (clear message, nothing written)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from ..agent.planner import BackendUnavailableError, CheckpointError

    try:
        summary = run(args)
    except (CheckpointError, BackendUnavailableError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = ("episodes", "success_rate", "spl", "mean_final_sd", "plan_latency_ms", "outcomes", "wall_s")
    print(dumps_strict({k: summary[k] for k in keys}))
    print(f"wrote {Path(args.out).resolve()}/summary.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
