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

This module is the driver (arguments, the run over splits and sections, the CLI); the open-loop episodes
and scores are in :mod:`.open_loop`, the closed-loop rows in :mod:`.closed_loop`, the tables, sample
sheets and plots in :mod:`.report`. Their names are still importable from here.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import envs as _envs
from ..agent.configuration_agent import CONTEXT_SAMPLING
from ..integrity import dumps_strict
from ..outputs import check_out_dir
from .open_loop import (
    SHEET_EPISODES,
    Episode,
    collect_episodes,
    copy_observation_navigation,
    expert_clip,
    ground_truth_grounding,
    grounding_scores,
    image_scores,
    open_loop_grounding,
    open_loop_navigation,
    wrong_contexts,
)
from .report import PAPER, TARGETS, make_plots, markdown_report, sample_sheet, write_sheets
from .rollout import AtomicDir, json_default, set_threads

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "HABITAT_ASSETS",
    "PAPER",
    "SECTIONS",
    "SHEET_EPISODES",
    "TARGETS",
    "Episode",
    "build_parser",
    "closed_loop_rows",
    "collect_episodes",
    "copy_observation_navigation",
    "expert_clip",
    "ground_truth_grounding",
    "grounding_scores",
    "image_scores",
    "main",
    "make_plots",
    "markdown_report",
    "open_loop_grounding",
    "open_loop_navigation",
    "run",
    "sample_sheet",
    "validate_args",
    "write_sheets",
    "wrong_contexts",
]

logger = logging.getLogger(__name__)


# Habitat's MIT test assets ship inside the package; chair_in_stage.glb (+ .semantic.json) composes its
# chair.glb onto stage_floor1.glb beside other objects (scripts/make_habitat_scene.py): object goals
HABITAT_ASSETS = Path(_envs.__file__).resolve().parent / "assets" / "habitat_test_assets"
ABLATIONS = ("no_aux_box", "contiguous_rope", "text_only_guidance")


def _row_or_error(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One row's result, or ``{"error": ...}`` for a row these episodes cannot serve (the others go on)."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        return {"error": str(e)}


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
    ap.add_argument(
        "--agent-detector",
        default=None,
        help="the closed-loop agents' goal detector folder (default: --detector if given, else the shipped "
        "goal detector); 'oracle': exact semantics of the live frame (a diagnostic: what the detector costs)",
    )
    ap.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default="torch")
    ap.add_argument("--device", default=None)
    ap.add_argument("--steps", type=int, default=None, help="diffusion sampler steps per plan")
    ap.add_argument(
        "--guidance", type=float, default=None, help="CFG scale for every planner (default: each model's)"
    )
    ap.add_argument("--replan-every", type=int, default=None)
    ap.add_argument(
        "--context-sampling",
        choices=CONTEXT_SAMPLING,
        default=None,
        help="how the V4S agent draws its plan's context from memory (default: the agent config's)",
    )
    ap.add_argument(
        "--agent-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a V4SAgentConfig field for every V4S row, e.g. stop_rule=verified (repeatable)",
    )
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
    agent_options(getattr(args, "agent_option", []))
    det = getattr(args, "agent_detector", None)
    if det not in (None, "oracle") and not (Path(det) / "model.safetensors").is_file():
        raise FileNotFoundError(f"--agent-detector: no detector at {det} (a folder or 'oracle')")
    check_out_dir(args.out, getattr(args, "overwrite", False))


def agent_options(items: list[str]) -> dict[str, Any]:
    """``["stop_rule=basic", "stop_views=1"]`` -> V4SAgentConfig overrides, checked by the config itself."""
    import ast
    import dataclasses

    from ..agent.configuration_agent import V4SAgentConfig

    fields = {f.name for f in dataclasses.fields(V4SAgentConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--agent-option {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw  # a bare word: a string option such as stop_rule=basic
    V4SAgentConfig(**out)  # a bad value fails here, before any model loads
    return out


def closed_loop_rows(
    args: argparse.Namespace, ablations: dict[str, str], baselines: set[str], task: str
) -> list[Any]:
    """The closed-loop rows of one run, all on the same episodes (see :mod:`.closed_loop`)."""
    from .closed_loop import RowSpec

    agent_kw: dict[str, Any] = {"seed": args.seed, **agent_options(getattr(args, "agent_option", []))}
    if args.replan_every is not None:
        agent_kw["replan_every"] = args.replan_every
    if getattr(args, "context_sampling", None) is not None:
        agent_kw["context_sampling"] = args.context_sampling
    planner_kw: dict[str, Any] = {"bf16": args.bf16, "backend": args.backend}
    if args.steps is not None:
        planner_kw["num_inference_steps"] = args.steps
    if args.device is not None:
        planner_kw["device"] = args.device

    agent_detector = getattr(args, "agent_detector", None) or args.detector

    def v4s(row: str, kind: str, ckpt: str | None = args.checkpoint) -> RowSpec:
        # the same detector as the frontier row (goal map, verified stop): the rows differ in the plan only
        return RowSpec(row, kind, ckpt, dict(agent_kw), dict(planner_kw), detector=agent_detector)

    specs = [v4s("ours", "v4s")]
    if "no_context" in baselines:
        specs.append(v4s("ours, no context", "v4s_no_context"))
    if "wrong_context" in baselines and task == "object":
        specs.append(v4s("ours, another scene's context", "v4s_wrong_context"))
    specs += [v4s(f"ablation: {name}", "v4s", path) for name, path in ablations.items()]
    if "frontier" in baselines and task == "object":
        specs.append(
            RowSpec("frontier exploration + detector (non-generative)", "frontier", detector=agent_detector)
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
