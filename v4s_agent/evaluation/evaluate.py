"""``python -m v4s_agent.evaluate``: open-loop and closed-loop evaluation, baselines and ablations.

Open loop (as the paper measures): on held-out episodes the planner imagines the clip that ends at the
goal; an independent detector (:mod:`.evaluator_detector`, trained on rendered frames with the
env's semantic masks, never the model's red box) scores its last trajectory frame: SD, IF, IF(SD<0.2),
IF(SD<0.1). Rows: ours, ours without context, ablation checkpoints, and ground truth (the rendered
expert clip, by the same detector and by the exact semantic render). Navigation: PSNR/SSIM of imagined
frames against frames rendered along the same camera path.

Closed loop: success, SPL, final SD (exact, from the semantic render), collisions, plan latency for the
V4S agent, the planner without context, a random agent and the oracle expert.

Writes ``metrics.json``, ``results.md`` and plots (matplotlib) into ``--out`` (atomically).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import envs as _envs
from ..agent.planner import resize_frames
from ..integrity import dumps_strict
from ..outputs import check_out_dir
from .metrics import mean_interval, psnr, sd_from_box, ssim, wilson_interval
from .rollout import (
    AtomicDir,
    json_default,
    make_env,
    scene_key,
    set_threads,
)

logger = logging.getLogger(__name__)

# Habitat's MIT test assets ship inside the package; chair_in_stage.glb (+ .semantic.json) composes its
# chair.glb onto stage_floor1.glb beside other objects (scripts/make_habitat_scene.py): object goals
HABITAT_ASSETS = Path(_envs.__file__).resolve().parent / "assets" / "habitat_test_assets"
ABLATIONS = ("no_aux_box", "contiguous_rope", "text_only_guidance")
PAPER = {"SD": 0.1099, "IF(SD<0.2)": 0.6486, "IF(SD<0.1)": 0.4941, "nav_PSNR": 14.27, "nav_LPIPS": 0.4674}
TARGETS = {"success_rate": 0.8, "spl": 0.6, "IF(SD<0.2)": 0.65, "SD": 0.11}
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


def _row_or_error(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One row's result, or ``{"error": ...}`` for a row these episodes cannot serve (the others go on)."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        return {"error": str(e)}


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


# ---------------------------------------------------------------------- report


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _fmt_ci(v: Any, ci: Sequence[float] | None, nd: int = 3) -> str:
    """``value [lo, hi]`` (95 % interval) or just the value when there is no interval."""
    if ci is None or any(c is None or math.isnan(c) for c in ci):
        return _fmt(v, nd)
    return f"{_fmt(v, nd)} [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def markdown_report(m: dict[str, Any]) -> str:
    """The results tables (ours beside the paper's, labelled)."""
    lines = [
        f"# video4spatial evaluation\n\ncommand: `{m['command']}`  \ncheckpoint: `{m['checkpoint']}`; "
        f"{m['episodes_per_split']} episodes per split; seed {m['seed']}; {m['wall_s']} s wall\n"
    ]
    det = m.get("detector", {})
    if det:
        v = det.get("validation", {})
        lines.append(
            f"Evaluator detector (`{det.get('path')}`): on held-out rendered frames IF precision "
            f"{_fmt(v.get('if_precision'))}, recall {_fmt(v.get('if_recall'))}, "
            f"|SD error| {_fmt(v.get('sd_abs_error'))}.\n"
        )
    if m.get("open_loop"):
        lines.append("## Open loop: object grounding (evaluator detector on the last imagined frame)\n")
        lines.append("| split | row | SD ↓ | IF ↑ | IF(SD<0.2) ↑ | IF(SD<0.1) ↑ | n |")
        lines.append("|---|---|---|---|---|---|---|")
        for split, rows in m["open_loop"].items():
            for row, r in rows.items():
                if "error" in r:
                    lines.append(f"| {split} | {row} | not run: {r['error']} | | | | |")
                    continue
                for name, rr in ((row, r), ("ground truth (exact semantic render)", r.get("exact_semantic"))):
                    if rr is None:
                        continue
                    ci = rr.get("ci95", {})
                    lines.append(
                        f"| {split} | {name} | {_fmt_ci(rr['SD'], ci.get('SD'))} | "
                        f"{_fmt_ci(rr['IF'], ci.get('IF'))} | "
                        f"{_fmt_ci(rr['IF(SD<0.2)'], ci.get('IF(SD<0.2)'))} | "
                        f"{_fmt_ci(rr['IF(SD<0.1)'], ci.get('IF(SD<0.1)'))} | {rr['n']} |"
                    )
        lines.append(
            f"| paper (real scans, 416×256, Wan2.2-5B scale) | ours | {PAPER['SD']} | – | "
            f"{PAPER['IF(SD<0.2)']} | {PAPER['IF(SD<0.1)']} | – |\n"
        )
    if m.get("navigation"):
        lines.append("## Open loop: navigation (imagined vs rendered along the same path)\n")
        lines.append("| split | row | PSNR ↑ | SSIM ↑ | n |\n|---|---|---|---|---|")
        for split, rows in m["navigation"].items():
            for row, r in rows.items():
                if "error" in r:
                    lines.append(f"| {split} | {row} | not run: {r['error']} | | |")
                    continue
                ci = r.get("ci95", {})
                lines.append(
                    f"| {split} | {row} | {_fmt_ci(r['PSNR'], ci.get('PSNR'), 2)} | "
                    f"{_fmt_ci(r['SSIM'], ci.get('SSIM'))} | {r['n']} |"
                )
        lines.append(
            f"| paper (real scans) | ours | {PAPER['nav_PSNR']} | – (LPIPS {PAPER['nav_LPIPS']}) | – |\n"
        )
    if m.get("closed_loop"):
        lines.append("## Closed loop\n")
        lines.append(
            "| split | agent | success ↑ | SPL ↑ | final SD ↓ | collisions/ep | plan latency ms | n | "
            "success / stopped short / stuck / wandered |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for split, rows in m["closed_loop"].items():
            for row, r in rows.items():
                if "error" in r:
                    lines.append(f"| {split} | {row} | not run: {r['error']} | | | | | | |")
                    continue
                ci = r.get("ci95", {})
                lines.append(
                    f"| {split} | {row} | {_fmt_ci(r['success_rate'], ci.get('success_rate'))} | "
                    f"{_fmt_ci(r['spl'], ci.get('spl'))} | "
                    f"{_fmt(r['mean_final_sd'])} | {_fmt(r['collisions_per_episode'], 2)} | "
                    f"{_fmt(r['plan_latency_ms'], 0)} | {r['episodes']} | "
                    + (" / ".join(str(v) for v in r["outcomes"].values()) if "outcomes" in r else "–")
                    + " |"
                )
    if m.get("not_run"):
        lines.append("\n## Rows not run\n")
        lines.extend(f"- {x}" for x in m["not_run"])
    lines.append(
        "\nDifferent data, different scale: the paper's numbers are on real indoor scans with a Wan2.2-5B "
        "backbone at 416×256 and 337 context frames; ours are on procedural scenes with the small CPU "
        "model. They are shown side by side for orientation, not as a like-for-like comparison.\n"
    )
    return "\n".join(lines)


def sample_sheet(pairs: Sequence[tuple[np.ndarray, np.ndarray]], pad: int = 2) -> np.ndarray:
    """One PNG-ready uint8 image: per episode, the imagined frames above the real ones (white gaps)."""
    rows = []
    for gen, real in pairs:
        t = max(len(gen), len(real))
        h, w = gen.shape[1:3]
        blank = np.full((h, w, 3), 255, np.uint8)

        def strip(frames: np.ndarray, t: int = t, blank: np.ndarray = blank) -> np.ndarray:
            cells = [frames[i] if i < len(frames) else blank for i in range(t)]
            gap = np.full((blank.shape[0], pad, 3), 255, np.uint8)
            return np.concatenate([c for f in cells for c in (f, gap)][:-1], axis=1)

        rows += [strip(gen), np.full((pad, strip(gen).shape[1], 3), 255, np.uint8), strip(real)]
        rows.append(np.full((3 * pad, rows[-1].shape[1], 3), 255, np.uint8))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows[:-1], axis=0)


def write_sheets(m: dict[str, Any], out: Path) -> list[str]:
    """``samples_<section>_<split>_<row>.png`` for every open-loop row; pops the frames out of ``m``."""
    import re

    import imageio.v2 as imageio

    files = []
    for section in ("open_loop", "navigation"):
        for split, rows in m.get(section, {}).items():
            for row, r in rows.items():
                pairs = r.pop("_sheet", None) if isinstance(r, dict) else None
                if not pairs:
                    continue
                name = re.sub(r"[^a-z0-9]+", "_", f"samples_{section}_{split}_{row}".lower()).strip("_")
                imageio.imwrite(out / f"{name}.png", sample_sheet(pairs))
                files.append(f"{name}.png")
    return files


def make_plots(m: dict[str, Any], out: Path) -> list[str]:
    """Bar charts of IF(SD<0.2)/SD per row and closed-loop success/SPL per agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    ol = m.get("open_loop", {})
    if ol:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        labels, ifs, sds = [], [], []
        for split, rows in ol.items():
            for row, r in rows.items():
                if "error" not in r:
                    labels.append(f"{split}\n{row}")
                    ifs.append(r["IF(SD<0.2)"])
                    sds.append(r["SD"] if not math.isnan(r["SD"]) else 0.0)
        x = np.arange(len(labels))
        axes[0].bar(x, ifs, color="tab:blue")
        axes[0].axhline(PAPER["IF(SD<0.2)"], color="k", ls="--", lw=1, label="paper")
        axes[0].set_title("IF(SD<0.2) ↑")
        axes[1].bar(x, sds, color="tab:orange")
        axes[1].axhline(PAPER["SD"], color="k", ls="--", lw=1, label="paper")
        axes[1].set_title("SD ↓")
        for ax in axes:
            ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "open_loop.png", dpi=110)
        plt.close(fig)
        files.append("open_loop.png")
    cl = m.get("closed_loop", {})
    if cl:
        fig, ax = plt.subplots(figsize=(9, 3.8))
        labels, sr, spl = [], [], []
        for split, rows in cl.items():
            for row, r in rows.items():
                if "error" not in r:
                    labels.append(f"{split}\n{row}")
                    sr.append(r["success_rate"])
                    spl.append(r["spl"])
        x = np.arange(len(labels))
        ax.bar(x - 0.2, sr, 0.4, label="success")
        ax.bar(x + 0.2, spl, 0.4, label="SPL")
        ax.axhline(TARGETS["success_rate"], color="tab:blue", ls="--", lw=1)
        ax.axhline(TARGETS["spl"], color="tab:orange", ls="--", lw=1)
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        ax.set_title("closed loop (dashed: targets)")
        fig.tight_layout()
        fig.savefig(out / "closed_loop.png", dpi=110)
        plt.close(fig)
        files.append("closed_loop.png")
    return files


# ---------------------------------------------------------------------- driver


def _habitat_scene() -> str | None:
    p = HABITAT_ASSETS / "chair_in_stage.glb"
    return str(p) if p.is_file() else None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m v4s_agent.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="planner checkpoint (default: the shipped one)")
    ap.add_argument(
        "--ablation",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help=f"an ablation checkpoint, NAME in {ABLATIONS}; repeatable",
    )
    ap.add_argument("--episodes", type=int, default=8, help="episodes per split and row")
    ap.add_argument(
        "--closed-episodes", type=int, default=None, help="closed-loop episodes (default --episodes)"
    )
    ap.add_argument(
        "--splits",
        default="val_scenes,val_categories,outdoor,habitat",
        help="comma list of val_scenes, val_categories, outdoor, habitat (Habitat test assets)",
    )
    ap.add_argument("--sections", default="open,nav,closed", help="comma list of open, nav, closed")
    ap.add_argument(
        "--baselines",
        default="no_context,wrong_context,text_only,frontier,random,expert",
        help="comma list of baselines / inference-time variants to run",
    )
    ap.add_argument(
        "--detector", default=None, help="evaluator detector folder (default: shipped, else train)"
    )
    ap.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default="torch")
    ap.add_argument("--device", default=None)
    ap.add_argument("--steps", type=int, default=None, help="diffusion sampler steps per plan")
    ap.add_argument(
        "--guidance", type=float, default=None, help="CFG scale for every planner (default: each model's)"
    )
    ap.add_argument("--replan-every", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=100, help="closed-loop episode step limit")
    ap.add_argument(
        "--resolution", type=int, default=None, help="env frame size (default: the model's resolution)"
    )
    ap.add_argument("--seed", type=int, default=1000, help="first held-out episode seed")
    ap.add_argument("--out", default="outputs/evaluate")
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out folder that holds other files (they are kept, never deleted)",
    )
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the PyTorch planner")
    ap.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); 1 is much faster on an oversubscribed CPU",
    )
    ap.add_argument(
        "--closed-rows",
        default=None,
        help="comma list of closed-loop row kinds to run (v4s, v4s_no_context, v4s_wrong_context, frontier, "
        "random, expert; default: all that --baselines allows)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny run for tests: 1 episode, val_scenes only")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes for the closed-loop episodes (each loads its own planner; 1 torch thread each)",
    )
    return ap


def _load_planner(path: str | None, args: argparse.Namespace) -> Any:
    from ..agent.planner import VideoPlanner

    kw: dict[str, Any] = {"bf16": args.bf16}
    if args.steps is not None:
        kw["num_inference_steps"] = args.steps
    if args.guidance is not None:
        kw["guidance_scale"] = args.guidance
    return VideoPlanner.from_pretrained(path, backend=args.backend, device=args.device, **kw)


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The evaluation (raises on bad input before anything is written)."""
    from tqdm.auto import tqdm

    from ..agent.planner import BackendUnavailableError, CheckpointError
    from .evaluator_detector import load_or_train

    if args.quick:
        args.episodes = min(args.episodes, 1)
        args.splits = "val_scenes"
        args.max_steps = min(args.max_steps, 6)
        args.baselines = "no_context,wrong_context,frontier,random,expert"
    n_closed = args.closed_episodes if args.closed_episodes is not None else args.episodes
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    baselines = {s.strip() for s in args.baselines.split(",") if s.strip()}
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    known = {"val_scenes", "val_categories", "outdoor", "habitat"}
    bad = [s for s in splits if s not in known]
    if bad:
        raise ValueError(f"unknown split(s) {bad}; choose from {sorted(known)}")
    validate_args(args, sections, baselines)
    ablations: dict[str, str] = {}
    for a in args.ablation:
        name, _, path = a.partition("=")
        if name not in ABLATIONS or not path:
            raise ValueError(f"--ablation must be NAME=PATH with NAME in {ABLATIONS}. Got {a!r}")
        ablations[name] = path
    set_threads(args.num_threads)
    planner = _load_planner(args.checkpoint, args)  # fails fast on a bad checkpoint / backend
    if args.resolution is None:  # render at the model's resolution: the training data's distribution
        args.resolution = max(planner.height, planner.width)
    ab_planners: dict[str, Any] = {}
    not_run: list[str] = []
    for name in ABLATIONS:
        if name not in ablations:
            not_run.append(
                f"ablation `{name}`: no checkpoint trained with that switch was given "
                f"(`--ablation {name}=PATH`)"
            )
            continue
        try:
            ab_planners[name] = _load_planner(ablations[name], args)
        except (CheckpointError, BackendUnavailableError) as e:
            not_run.append(f"ablation `{name}`: {e}")
    t0 = time.time()
    m: dict[str, Any] = {
        "command": "python -m v4s_agent.evaluate " + " ".join(argv if argv is not None else sys.argv[1:]),
        "checkpoint": args.checkpoint or "default",
        "backend": args.backend,
        "episodes_per_split": args.episodes,
        "closed_loop_episodes_per_split": n_closed,
        "seed": args.seed,
        "model_config": planner.model_config,
        "open_loop": {},
        "navigation": {},
        "closed_loop": {},
        "not_run": not_run,
        "paper": PAPER,
        "targets": TARGETS,
    }
    with AtomicDir(args.out, overwrite=getattr(args, "overwrite", False)) as tmp:
        det = None
        if "open" in sections:
            det, det_meta = load_or_train(args.detector, out_dir=tmp / "evaluator_detector", quick=args.quick)
            m["detector"] = det_meta
        n_traj = planner.num_target_frames - planner.num_box_frames
        jobs = []
        for split in splits:
            split_arg, scene = (None, _habitat_scene()) if split == "habitat" else (split, None)
            if split == "habitat" and scene is None:
                not_run.append(f"split habitat: assets not found at {HABITAT_ASSETS}")
                continue
            jobs.append((split, split_arg, scene))
        bar = tqdm(total=len(jobs) * len(sections), desc="evaluate", unit="section", file=sys.stderr)
        for split, split_arg, scene in jobs:
            kw = {"split": split_arg, "scene": scene}
            if "open" in sections:
                rows: dict[str, Any] = {}
                try:
                    eps = collect_episodes(
                        task="object",
                        n=args.episodes,
                        seed=args.seed,
                        n_traj=n_traj,
                        resolution=args.resolution,
                        **kw,
                    )
                    rows["ground truth (rendered expert)"] = ground_truth_grounding(eps, det)
                    rows["ours"] = open_loop_grounding(planner, eps, det)
                    if "no_context" in baselines:
                        rows["ours, no context"] = open_loop_grounding(planner, eps, det, context="none")
                    if "wrong_context" in baselines:
                        rows["ours, another scene's context"] = _row_or_error(
                            open_loop_grounding, planner, eps, det, context="wrong"
                        )
                    if "text_only" in baselines:
                        planner.cfg_mode = "text_only"  # inference-time switch on the same checkpoint
                        try:
                            rows["ours, text-only guidance (inference only)"] = open_loop_grounding(
                                planner, eps, det
                            )
                        finally:
                            planner.cfg_mode = None
                    for name, p in ab_planners.items():
                        rows[f"ablation: {name}"] = open_loop_grounding(p, eps, det)
                except Exception as e:  # a split the env cannot serve (e.g. no semantics) is reported
                    logger.exception("open loop on %s failed", split)
                    rows = {"all": {"error": f"{type(e).__name__}: {e}"}}
                m["open_loop"][split] = rows
                bar.update(1)
            if "nav" in sections:
                rows = {}
                try:
                    eps = collect_episodes(
                        task="pose",
                        n=args.episodes,
                        seed=args.seed,
                        n_traj=n_traj,
                        resolution=args.resolution,
                        **kw,
                    )
                    rows["ours"] = open_loop_navigation(planner, eps)
                    rows["copy the observation (no model)"] = copy_observation_navigation(
                        eps, planner.height, planner.width
                    )
                    if "no_context" in baselines:
                        rows["ours, no context"] = open_loop_navigation(planner, eps, context="none")
                    if "wrong_context" in baselines:
                        rows["ours, another scene's context"] = _row_or_error(
                            open_loop_navigation, planner, eps, context="wrong"
                        )
                    for name, p in ab_planners.items():
                        rows[f"ablation: {name}"] = open_loop_navigation(p, eps)
                except Exception as e:
                    logger.exception("navigation on %s failed", split)
                    rows = {"all": {"error": f"{type(e).__name__}: {e}"}}
                m["navigation"][split] = rows
                bar.update(1)
            if "closed" in sections:
                from .closed_loop import run_rows

                task = "object"
                specs = closed_loop_rows(args, ablations, baselines, task)
                env_kw = {
                    "task": task,
                    "resolution": (args.resolution, args.resolution),
                    "max_steps": args.max_steps,
                    **kw,
                }
                seeds = list(range(args.seed, args.seed + n_closed))
                m["closed_loop"][split] = run_rows(specs, env_kw, seeds, workers=args.workers, threads=1)
                for r in m["closed_loop"][split].values():
                    r["task"] = task
                bar.update(1)
        bar.close()
        m["wall_s"] = round(time.time() - t0, 1)
        m["sample_sheets"] = write_sheets(m, tmp)
        m["plots"] = make_plots(m, tmp)
        (tmp / "metrics.json").write_text(dumps_strict(m, indent=2, default=json_default))
        (tmp / "results.md").write_text(markdown_report(m))
    return m


SECTIONS = ("open", "nav", "closed")
BASELINES = ("no_context", "wrong_context", "text_only", "frontier", "random", "expert")


def validate_args(args: argparse.Namespace, sections: set[str], baselines: set[str]) -> None:
    """Refuse arguments that would run nothing or produce empty/NaN metrics (before anything loads)."""
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1. Got {args.episodes}")
    if args.closed_episodes is not None and args.closed_episodes < 1:
        raise ValueError(f"--closed-episodes must be >= 1. Got {args.closed_episodes}")
    if args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1. Got {args.max_steps}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1. Got {args.workers}")
    bad = sorted(sections - set(SECTIONS))
    if bad or not sections:
        raise ValueError(f"--sections: unknown {bad} (or none given); a comma list of {', '.join(SECTIONS)}")
    bad = sorted(baselines - set(BASELINES))
    if bad:
        raise ValueError(f"--baselines: unknown {bad}; a comma list of {', '.join(BASELINES)}")
    check_out_dir(args.out, getattr(args, "overwrite", False))


def closed_loop_rows(
    args: argparse.Namespace, ablations: dict[str, str], baselines: set[str], task: str
) -> list[Any]:
    """The closed-loop rows of one run, all on the same episodes (see :mod:`.closed_loop`)."""
    from .closed_loop import RowSpec

    agent_kw: dict[str, Any] = {"seed": args.seed}
    if args.replan_every is not None:
        agent_kw["replan_every"] = args.replan_every
    planner_kw: dict[str, Any] = {"bf16": args.bf16, "backend": args.backend}
    if args.steps is not None:
        planner_kw["num_inference_steps"] = args.steps
    if args.device is not None:
        planner_kw["device"] = args.device

    def v4s(row: str, kind: str, ckpt: str | None = args.checkpoint) -> RowSpec:
        return RowSpec(row, kind, ckpt, dict(agent_kw), dict(planner_kw))

    specs = [v4s("ours", "v4s")]
    if "no_context" in baselines:
        specs.append(v4s("ours, no context", "v4s_no_context"))
    if "wrong_context" in baselines and task == "object":
        specs.append(v4s("ours, another scene's context", "v4s_wrong_context"))
    specs += [v4s(f"ablation: {name}", "v4s", path) for name, path in ablations.items()]
    if "frontier" in baselines and task == "object":
        specs.append(
            RowSpec("frontier exploration + detector (non-generative)", "frontier", detector=args.detector)
        )
    if "random" in baselines:
        specs.append(RowSpec("random", "random", agent_kwargs={"seed": args.seed}))
    if "expert" in baselines:
        specs.append(RowSpec("oracle expert", "expert"))
    if getattr(args, "closed_rows", None):
        kinds = {k.strip() for k in args.closed_rows.split(",") if k.strip()}
        specs = [s for s in specs if s.kind in kinds]
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit 0 on success, 2 on bad input (nothing written)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from ..agent.planner import BackendUnavailableError, CheckpointError

    try:
        m = run(args, argv)
    except (CheckpointError, BackendUnavailableError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_report(m))
    print(f"wrote {Path(args.out).resolve()}/metrics.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
