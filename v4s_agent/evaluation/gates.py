"""Issue 24's staged gates, measured open loop on held-out scene videos: does the planner read its context?

Why open loop on the scene video: a clip cut from a held-out scene's video has a known truth (the frames
the camera really saw, the goal's exact box), so what the context adds is measured directly, with the
same clips, noise and sampler for every condition:

* **G1, pathway**: on the same pose clips, the one-step error of the target frames at sigma = 1 with
  another held-out scene's context minus with the true one, over the true one (4 noise draws per clip,
  the same for both; paired bootstrap interval over the clips). The context frames come with their poses
  relative to the observation, as training gives them to a ``context_pose`` model.
* **G2, scene navigation**: pose clips (a segment of the video with its camera path; the instruction says
  only "follow the path"): PSNR of the generated trajectory frames against the rendered ones, with the
  true context (K other frames of the same video at their source times), with no context (the null
  branch's noise) and with another held-out scene's context.
* **G3, object grounding**: object clips ending a visit with the goal centred: the evaluator detector
  (``evaluation.evaluator_detector``, never the model's own red box) finds the goal category in the last
  generated trajectory frame -> SD and IF(SD < 0.2); the rendered clip's last frame through the same
  detector is the ceiling (and its exact-semantics SD is reported beside it).

95 % intervals: t-style mean +/- 1.96 s.e. for PSNR and SD, Wilson for rates. ``gates.json`` also keeps
each object clip's SD per condition (``per_object_clip_sd``, 1.0 where the goal is not found) and the rate
at which the goal is found at all, so IF's misses split into "not found" and "found off centre".

    python -m v4s_agent.evaluation.gates --run runs/default --data data/val_scenes --out runs/default/gates

The clips are cut exactly as training cuts them (``envs.scene_video.clip_window`` / ``choose_context``),
from held-out shards written by ``v4s_agent.training.generate_data``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONDITIONS = ("ctx", "noctx", "wrongctx")
# the SD a last frame scores when the detector does not find its goal: the worst, so a miss counts rather
# than being skipped (a found box has its centre inside the frame: SD < 1)
NOT_FOUND_SD = 1.0


def _mean_ci(x: list[float]) -> dict[str, float | None]:
    a = np.asarray([v for v in x if np.isfinite(v)], np.float64)
    if len(a) == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    h = 1.96 * float(a.std(ddof=1)) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
    return {"mean": float(a.mean()), "lo": float(a.mean() - h), "hi": float(a.mean() + h), "n": int(len(a))}


def _rate_ci(k: int, n: int) -> dict[str, float | None]:
    from .metrics import wilson_interval

    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    lo, hi = wilson_interval(k, n)
    return {"mean": k / n, "lo": float(lo), "hi": float(hi), "n": int(n)}


CONTEXTS = ("natural", "retrieved", "views")


def gate_clips(
    data_dir: str | Path,
    mcfg: Any,
    pose_per_scene: int = 5,
    max_scenes: int | None = None,
    seed: int = 4242,
    context: str = "natural",
    detector: Any = None,
    goal_views: int | None = None,
    goal_max_sd: float | None = None,
    goal_rank: str | None = None,
) -> list[dict[str, Any]]:
    """Every visit that ends centred (object clips) and ``pose_per_scene`` pose clips of each held-out
    scene, each with its context and what the metrics need.

    ``context="natural"``: as training cuts it (K frames of the rest of the video, no near copies);
    ``"retrieved"``: pose clips get the agent's use-time choice instead, the K frames of the rest of the
    video that see most of the clip's path (``agent.context_retrieval``, field-of-view overlap on the
    floor; the clip's own frames are never candidates); ``"views"``: pose clips get, for each of their
    frames, the video frame whose view is closest to it from another pass of the video
    (``envs.scene_video.choose_view_context``), the rest natural: a given camera path matched against
    a separately recorded video; and object clips get up to ``GOAL_VIEWS`` views of their goal from
    another pass, those where ``detector`` sees the goal category centred, the first by ``goal_rank``
    (``envs.scene_video.choose_goal_context``): what an agent that was told the category can give its
    plan (the CLI's ``detector`` is the agent's goal detector, as the agent finds its goal views, not the
    evaluator detector that scores them; ``goal_views``: how many at most, default the one constant
    training and the agent use; ``goal_max_sd``: how centred the detector must see the goal, the agent's
    default; ``goal_rank``: how the goal views are ranked, default the one constant training and the agent
    use, ``envs.scene_video.GOAL_RANK``). Otherwise object clips keep the natural context."""
    from v4s_agent.envs.scene_video import GOAL_RANK, GOAL_RANKS, GOAL_VIEWS

    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}. Got {context!r}")
    n_goal = GOAL_VIEWS if goal_views is None else int(goal_views)
    if n_goal < 1:
        raise ValueError(f"goal_views must be >= 1. Got {goal_views}")
    rank = GOAL_RANK if goal_rank is None else goal_rank
    if rank not in GOAL_RANKS:
        raise ValueError(f"goal_rank must be one of {GOAL_RANKS}. Got {goal_rank!r}")
    if context == "views" and detector is None:
        raise ValueError("context='views' needs the detector that finds the goal's views (detector=...)")
    data_dir = Path(data_dir)
    manifest = data_dir / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{data_dir} holds no manifest.json: write it with training.generate_data")
    clips = []
    for si, s in enumerate(json.loads(manifest.read_text())["shards"][:max_scenes]):
        with np.load(data_dir / s["file"]) as z:
            shard = {k: z[k] for k in z.files if not k.startswith("idm_")}
        items = [("obj", int(v)) for v in np.nonzero(shard["visit_ok"])[0]]
        items += [("pose", 0)] * pose_per_scene
        goal: dict[str, np.ndarray] = {}  # category -> frames where the detector sees it centred
        if context == "views":  # one pass of the detector over the video for every goal category
            from v4s_agent.agent.context_views import GOAL_MAX_SD, goal_centred_frames

            max_sd = GOAL_MAX_SD if goal_max_sd is None else goal_max_sd
            names = sorted({_goal_name(shard, ep) for k, ep in items if k == "obj"})
            video = shard["video_frames"]
            goal = goal_centred_frames(detector, video, names, max_sd=max_sd) if names else {}
        for j, (kind, ep) in enumerate(items):
            rng = np.random.default_rng([seed, si, j])
            frames = goal[_goal_name(shard, ep)] if goal and kind == "obj" else None
            clips.append(cut_clip(shard, kind, ep, rng, mcfg, context, frames, n_goal, rank) | {"scene": si})
    return clips


def _goal_name(shard: dict[str, np.ndarray], ep: int) -> str:
    """The goal category of visit ``ep``."""
    return str(shard["categories"][int(shard["visit_category"][ep])])


def cut_clip(shard: dict[str, np.ndarray], kind: str, ep: int, rng: np.random.Generator, mcfg: Any,
             context: str = "natural", goal_frames: np.ndarray | None = None,
             n_goal: int | None = None, goal_rank: str | None = None) -> dict:  # fmt: skip
    """One held-out clip as training cuts it (``clip_and_context``: the clip ending the visit, natural
    context without near copies, or the path's views) in the pipeline's inputs, plus what the metrics
    need (kind, goal category, the env's exact SD)."""
    from v4s_agent.envs.geometry import encode_relative_poses
    from v4s_agent.envs.nav_env import POSE_INSTRUCTION
    from v4s_agent.envs.scene_video import GOAL_RANK, GOAL_VIEWS, clip_and_context
    from v4s_agent.model.pipeline_inputs import to_video_tensor

    K, T, nb = mcfg.num_context_frames, mcfg.num_target_frames, mcfg.num_box_frames
    video, poses = shard["video_frames"], shard["video_poses"]
    views = 1.0 if context == "views" else 0.0  # as training cuts them: path views, goal views
    if views and kind == "obj" and goal_frames is None:  # never the exact boxes: the agent has no such thing
        raise ValueError("context='views' needs the detector's goal_frames for an object clip")
    goals = {"goal_frames": goal_frames, "n_goal": GOAL_VIEWS if n_goal is None else n_goal,
             "goal_rank": GOAL_RANK if goal_rank is None else goal_rank}  # fmt: skip
    widx, cidx, cpos, cat = clip_and_context(
        shard, kind, ep, T - nb, K, True, rng, view_prob=views, goal_prob=views, **goals
    )
    if context == "retrieved" and kind == "pose":
        from v4s_agent.agent.context_retrieval import path_points, retrieve_context

        keep = np.ones(len(video), bool)
        keep[int(widx.min()) : int(widx.max()) + 1] = False
        cand = np.nonzero(keep)[0]
        query = path_points(poses[widx[0]], poses[widx][:, [0, 2], 3])
        cidx = cand[retrieve_context(K, poses[cand], query=query, recent=0)]
        cpos = cidx.astype(np.float32)
    target = np.concatenate([video[widx], np.repeat(video[widx[-1]][None], nb, axis=0)])
    camera = np.zeros((T, 12), np.float32)
    # the context frames' poses relative to the observation, as training gives them (context_pose models)
    context_camera = encode_relative_poses(poses[widx[0]], poses[cidx])
    if kind == "pose":
        camera[: T - nb] = encode_relative_poses(poses[widx[0]], poses[widx])
    clip = {
        "kind": kind,
        "window": widx,  # the clip's and the context's frames in the scene video
        "context_index": cidx,
        "context": to_video_tensor(video[cidx], mcfg.height, mcfg.width),
        "context_positions": torch.from_numpy(cpos),
        "target": to_video_tensor(target, mcfg.height, mcfg.width),
        "camera": torch.from_numpy(camera),
        "camera_mask": torch.tensor(float(kind == "pose")),
        "context_camera": torch.from_numpy(context_camera.astype(np.float32)),
        # the env's own instruction: what the agent is told at use time
        "instruction": str(shard["visit_instructions"][ep][0]) if kind == "obj" else POSE_INSTRUCTION,
    }
    if kind == "obj":
        clip["category"] = str(shard["categories"][cat])
        clip["exact_sd"] = float(shard["visit_sd"][ep])
        clip["visit"] = int(ep)
    return clip


@torch.no_grad()
def generate(pipe: Any, clips: list[dict[str, Any]], cond: str, steps: int | None, guidance: float | None,
             batch_size: int = 16, seed: int = 0, bf16: bool = True) -> np.ndarray:  # fmt: skip
    """uint8 ``(N, T, H, W, 3)`` generated videos of ``clips`` under one condition (same noise for all;
    bf16 autocast on CPU, as the model was trained)."""
    from tqdm import tqdm

    from v4s_agent.envs.scene_video import other_scene_index

    n = len(clips)
    scenes = [c["scene"] for c in clips]
    wrong = other_scene_index(scenes)  # another scene's context (another clip's if all share one)
    out = []
    for a in tqdm(range(0, n, batch_size), desc=f"gates {cond}", leave=False):
        idx = list(range(a, min(n, a + batch_size)))
        src = [wrong[i] for i in idx] if cond == "wrongctx" else idx
        ctx = torch.stack([clips[i]["context"] for i in src])
        pos = np.stack([clips[i]["context_positions"].numpy() for i in src])
        tgt = torch.stack([clips[i]["target"] for i in idx])
        obs = ((tgt[:, :, 0].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        g = torch.Generator().manual_seed(seed + a)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            video = pipe(
                context=ctx,
                context_positions=pos,
                observation=obs,
                prompt=[str(clips[i]["instruction"]) for i in idx],
                camera=np.stack([clips[i]["camera"].numpy() for i in idx]),
                camera_mask=np.stack([clips[i]["camera_mask"].numpy() for i in idx]),
                context_camera=np.stack([clips[i]["context_camera"].numpy() for i in src]),
                num_inference_steps=steps,
                guidance_scale=guidance,
                drop_context=cond == "noctx",
                generator=g,
                output_type="np",
            ).frames
        out.append(np.asarray(video))
    return np.concatenate(out)


def _ratio_ci(num: np.ndarray, den: np.ndarray, seed: int = 0, n_boot: int = 4000) -> dict[str, float]:
    """mean(num) / mean(den) with a 95 % paired bootstrap interval over the items."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(n_boot, len(num)))
    boot = num[idx].mean(axis=1) / den[idx].mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {"mean": float(num.mean() / den.mean()), "lo": float(lo), "hi": float(hi), "n": int(len(num))}


def measure_context_gain(
    pipe: Any, clips: list[dict[str, Any]], sigma: float = 1.0, draws: int = 4, batch_size: int = 16
) -> dict[str, Any]:
    """G1: the one-step error of the target frames on the pose clips with another scene's context minus
    with the true one, over the true one's (``draws`` noise draws per clip, the same for both)."""
    from v4s_agent.envs.scene_video import other_scene_index
    from v4s_agent.model.one_step import one_step_errors

    pose = [i for i, c in enumerate(clips) if c["kind"] == "pose"]
    wrong = other_scene_index([clips[i]["scene"] for i in pose])
    err: dict[str, list[float]] = {"ctx": [], "wrongctx": [], "noctx": []}
    for a in range(0, len(pose), batch_size):
        part = range(a, min(len(pose), a + batch_size))
        for cond in err:
            src = [pose[wrong[j]] if cond == "wrongctx" else pose[j] for j in part]
            own = [clips[pose[j]] for j in part]
            e = one_step_errors(
                pipe,
                torch.stack([clips[i]["context"] for i in src]),
                torch.stack([clips[i]["context_positions"] for i in src]),
                torch.stack([c["target"] for c in own]),
                [c["instruction"] for c in own],
                torch.stack([c["camera"] for c in own]),
                torch.stack([c["camera_mask"] for c in own]),
                torch.stack([clips[i]["context_camera"] for i in src]),
                [sigma],
                seed=a,
                draws=draws,
                drop_context=cond == "noctx",
            )[float(sigma)]
            err[cond] += e.tolist()
    true, other, none = (np.asarray(err[c]) for c in ("ctx", "wrongctx", "noctx"))
    return {
        "sigma": sigma,
        "draws": draws,
        "x0_mse_ctx": _mean_ci(list(true)),
        "x0_mse_wrongctx": _mean_ci(list(other)),
        "x0_mse_noctx": _mean_ci(list(none)),
        "gain_frac": _ratio_ci(other - true, true),
        "gain_frac_noctx": _ratio_ci(none - true, true),
    }


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    return ((x.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def ground(detector: Any, frames: list[np.ndarray], categories: list[str]) -> tuple[list[float], list[bool]]:
    """G3's reading of last frames: each frame's SD of the detector's box of its category (not found:
    ``NOT_FOUND_SD``, the worst, a miss rather than skipped) and whether it counts for IF (found with SD
    < 0.2)."""
    from .metrics import sd_from_box

    sds, hits = [], []
    for f, cat in zip(frames, categories, strict=True):
        ((box, _),) = detector.detect(f, cat)
        sd = sd_from_box(box, *f.shape[:2]) if box is not None else NOT_FOUND_SD
        sds.append(sd)
        hits.append(box is not None and sd < 0.2)
    return sds, hits


def measure_gates(pipe: Any, clips: list[dict[str, Any]], detector: Any, steps: int | None = None,
                  guidance: float | None = None, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """G2 and G3 (see the module docstring) for every condition, with 95 % intervals."""
    from .metrics import psnr

    cfg = pipe.v4s_config
    n_traj = cfg.num_trajectory_frames
    truth = [_to_uint8(c["target"]) for c in clips]
    pose = [i for i, c in enumerate(clips) if c["kind"] == "pose"]
    obj = [i for i, c in enumerate(clips) if c["kind"] == "obj"]

    def grounding(frames: list[np.ndarray]) -> tuple[list[float], int, int]:
        sds, hits = ground(detector, frames, [clips[i]["category"] for i in obj])
        return sds, sum(hits), len(hits)

    res: dict[str, Any] = {"n_pose_clips": len(pose), "n_object_clips": len(obj)}
    sds, hit, n = grounding([truth[i][n_traj - 1] for i in obj])
    # each object clip's last-frame SD per condition (NOT_FOUND_SD: goal not found), so misses split into
    # "not found" and "off centre" and pair with the expert's clip
    per_clip: dict[str, Any] = {
        "clip": [f"{clips[i].get('scene')}/{clips[i]['visit']}" for i in obj],
        "rendered_expert": sds,
    }
    res["rendered_expert"] = {
        "sd": _mean_ci(sds),
        "if_sd_0.2": _rate_ci(hit, n),
        "exact_semantics_sd": _mean_ci([clips[i]["exact_sd"] for i in obj]),
        "exact_semantics_if_sd_0.2": _rate_ci(sum(clips[i]["exact_sd"] < 0.2 for i in obj), len(obj)),
    }
    for cond in CONDITIONS:
        t0 = time.time()
        gen = generate(pipe, clips, cond, steps, guidance, seed=seed)
        ps = [psnr(gen[i][1:n_traj], truth[i][1:n_traj]) for i in pose]
        sds, hit, n = grounding([gen[i][n_traj - 1] for i in obj])
        res[cond] = {
            "psnr_pose": _mean_ci(ps),
            "sd": _mean_ci(sds),
            "if_sd_0.2": _rate_ci(hit, n),
            # found at all: IF's misses split into not found and found off centre
            "found": _rate_ci(sum(v < NOT_FOUND_SD for v in sds), n),
            "seconds": round(time.time() - t0, 1),
        }
        per_clip[cond] = sds
        if cond == "ctx":
            res["_videos_ctx"] = gen
    res["per_object_clip_sd"] = per_clip
    return res


def gate_verdicts(res: dict[str, Any], probe: dict[str, float] | None = None) -> dict[str, Any]:
    """Each gate's numbers and whether it holds (None: not measured)."""
    c, nc, ex = res["ctx"], res["noctx"], res["rendered_expert"]
    out: dict[str, Any] = {}
    if "context_gain" in res:  # on the gates' own pose clips, with an interval
        g = res["context_gain"]["gain_frac"]
        out["G1_context_gain_frac_pose@1"] = g["mean"]
        out["G1_ci95"] = [g["lo"], g["hi"]]
        out["G1"] = bool(g["mean"] >= 0.25)
    elif probe is not None and "x0_context_gain_frac_pose@1" in probe:
        out["G1_context_gain_frac_pose@1"] = probe["x0_context_gain_frac_pose@1"]
        out["G1"] = bool(probe["x0_context_gain_frac_pose@1"] >= 0.25)
    out["G2"] = bool(
        c["psnr_pose"]["lo"] is not None
        and c["psnr_pose"]["lo"] > nc["psnr_pose"]["hi"]
        and c["psnr_pose"]["mean"] >= nc["psnr_pose"]["mean"] + 2.0
        and c["psnr_pose"]["mean"] >= 20.0
    )
    ceiling = ex["if_sd_0.2"]["mean"] or 0.0
    out["G3_sd_disjoint"] = bool(c["sd"]["hi"] is not None and c["sd"]["hi"] < nc["sd"]["lo"])
    out["G3_if_vs_expert"] = (c["if_sd_0.2"]["mean"] or 0.0) / max(ceiling, 1e-9)
    if_ok = out["G3_if_vs_expert"] >= 0.8 and (c["if_sd_0.2"]["mean"] or 0.0) >= 0.65
    out["G3"] = bool(out["G3_sd_disjoint"] and if_ok)
    return out


def set_sampler(pipe: Any, stochastic: bool | None = None, shift: float | None = None) -> dict[str, Any]:
    """Swap the pipeline's scheduler for one with another step rule (``stochastic``: re-noise every step,
    else Euler) or noise-level ``shift`` (``None`` keeps the saved one); returns the settings a plan now
    samples with, for the report. Why: the sampler's defaults were chosen early in training, and the
    gates are where a later choice is measured."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if shift is not None and not shift > 0:
        raise ValueError(f"shift must be > 0. Got {shift}")
    new = {k: v for k, v in (("stochastic_sampling", stochastic), ("shift", shift)) if v is not None}
    if new:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(pipe.scheduler.config), **new)
    s = pipe.sampling_config()
    return {"steps": s.num_inference_steps, "guidance_scale": s.guidance_scale, "stochastic": s.stochastic,
            "shift": s.shift}  # fmt: skip


def load_pipeline(run: str | None, pipeline: str | None) -> tuple[Any, str]:
    """The EMA weights of a run's newest valid checkpoint, or a saved pipeline folder."""
    from v4s_agent.model.configuration_model import ModelConfig
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline, build_pipeline

    if pipeline:
        return Video4SpatialPipeline.from_pretrained(pipeline), pipeline
    from safetensors.torch import load_file

    from v4s_agent.integrity import verify_checksums, verify_safetensors

    found = sorted((Path(run) / "checkpoints").glob("step_*"))
    if not found:
        raise FileNotFoundError(f"no checkpoint in {run}/checkpoints")
    ckpt = found[-1]
    verify_checksums(ckpt)
    verify_safetensors(ckpt / "ema.safetensors")
    state = json.loads((ckpt / "state.json").read_text())
    pipe = build_pipeline(ModelConfig.from_dict(state["model_config"]))
    ema = load_file(str(ckpt / "ema.safetensors"))
    pipe.transformer.load_state_dict({**pipe.transformer.state_dict(), **ema})
    pipe.transformer.eval()
    return pipe, str(ckpt)


def main(argv: list[str] | None = None) -> int:
    """CLI: measure the gates of a run's newest checkpoint (or a pipeline) on held-out data."""
    from v4s_agent.envs.scene_video import GOAL_RANKS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="training run folder (its newest valid checkpoint's EMA weights)")
    src.add_argument("--pipeline", help="a saved pipeline folder")
    p.add_argument("--data", default="data/val_scenes", help="held-out scene-video shards")
    p.add_argument("--out", required=True, help="folder for gates.json and a sample sheet")
    p.add_argument("--pose-per-scene", type=int, default=5)
    p.add_argument("--max-scenes", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model config's)")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument(
        "--sampler",
        choices=["stochastic", "euler"],
        default=None,
        help="the step rule (default: the saved scheduler's): re-noise every step, or deterministic Euler",
    )
    p.add_argument("--shift", type=float, default=None, help="flow-matching shift (default: the saved one)")
    p.add_argument(
        "--goal-views",
        type=int,
        default=None,
        help="--context views: at most this many goal views per object clip "
        "(default: envs.scene_video.GOAL_VIEWS)",
    )
    p.add_argument(
        "--goal-max-sd",
        type=float,
        default=None,
        help="--context views: a goal view is a frame where the detector sees the goal at most this SD "
        "(default: agent.context_views.GOAL_MAX_SD, the agent's)",
    )
    p.add_argument(
        "--goal-detector",
        default="agent",
        help="--context views: the detector that finds the goal views: 'agent' (the agent's goal detector, "
        "as the agent finds them at use time; default), 'evaluator' (the scorer's own, the choice before "
        "the agent got its own detector) or a detector folder",
    )
    p.add_argument(
        "--goal-rank",
        choices=list(GOAL_RANKS),
        default=None,
        help="--context views: which goal views come first: the fewest turn-go-turn actions from the "
        "observation (reach) or the nearest on the floor (floor) (default: envs.scene_video.GOAL_RANK)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--context",
        choices=list(CONTEXTS),
        default="natural",
        help="the context: as training cuts it (natural), the agent's floor retrieval along a pose clip's "
        "path (retrieved), or the use-time choice (views): a pose clip's path's closest views and an object "
        "clip's goal views found by the detector, from another pass of the video",
    )
    a = p.parse_args(argv)
    if a.pose_per_scene < 1:
        p.error("--pose-per-scene must be >= 1")
    if a.goal_views is not None and a.goal_views < 1:
        p.error("--goal-views must be >= 1")
    if a.goal_max_sd is not None and not 0 < a.goal_max_sd <= 1:
        p.error("--goal-max-sd must be in (0, 1]")
    if a.shift is not None and not a.shift > 0:
        p.error("--shift must be > 0")
    named = a.goal_detector in ("agent", "evaluator")
    if not named and not Path(a.goal_detector, "model.safetensors").is_file():
        p.error(f"--goal-detector must be 'agent', 'evaluator' or a detector folder. Got {a.goal_detector!r}")
    torch.set_num_threads(a.threads)
    from .evaluator_detector import EvaluatorDetector, load_goal_detector

    pipe, src_name = load_pipeline(a.run, a.pipeline)
    stochastic = None if a.sampler is None else a.sampler == "stochastic"
    sampling = set_sampler(pipe, stochastic, a.shift)
    sampling.update({k: v for k, v in (("steps", a.steps), ("guidance_scale", a.guidance)) if v is not None})
    det = EvaluatorDetector.from_pretrained()  # scores every generated video
    if a.goal_detector == "evaluator":
        finder = det
    else:  # the shipped goal detector, or the folder given
        finder = load_goal_detector(None if named else a.goal_detector)
    from v4s_agent.agent.context_views import GOAL_MAX_SD
    from v4s_agent.envs.scene_video import GOAL_RANK, GOAL_VIEWS

    n_goal = GOAL_VIEWS if a.goal_views is None else a.goal_views
    rank = GOAL_RANK if a.goal_rank is None else a.goal_rank
    max_sd = GOAL_MAX_SD if a.goal_max_sd is None else a.goal_max_sd
    clips = gate_clips(a.data, pipe.v4s_config, a.pose_per_scene, a.max_scenes, context=a.context,
                       detector=finder, goal_views=n_goal, goal_max_sd=max_sd, goal_rank=rank)  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the model was trained (and generate() runs)
        gain = measure_context_gain(pipe, clips)
    res = measure_gates(pipe, clips, det, a.steps, a.guidance)
    res["context_gain"] = gain
    videos = res.pop("_videos_ctx")
    probe = None
    if a.run:
        lines = (Path(a.run) / "metrics.jsonl").read_text().splitlines()
        recs = [json.loads(x) for x in lines if "val/" in x]
        probe = {k[4:]: v for k, v in recs[-1].items() if k.startswith("val/")} if recs else None
    res["gates"] = gate_verdicts(res, probe)
    res["source"] = src_name
    res["context"] = a.context
    res["sampling"] = sampling
    if a.context == "views":
        res["goal_views"], res["goal_max_sd"], res["goal_detector"] = n_goal, max_sd, a.goal_detector
        res["goal_rank"] = rank
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from v4s_agent.integrity import dumps_strict

    (out / "gates.json").write_text(dumps_strict(res, indent=1))
    _sheet(out / "gates_samples.jpg", clips, videos)
    print(
        dumps_strict(
            {k: res[k] for k in ("gates", "context_gain", "ctx", "noctx", "rendered_expert")}, indent=1
        )
    )
    return 0


def _sheet(path: Path, clips: list[dict[str, Any]], videos: np.ndarray, rows: int = 6) -> None:
    """Rows of (generated | rendered) clips: half pose, half object."""
    import imageio.v2 as imageio

    pick = [i for i, c in enumerate(clips) if c["kind"] == "pose"][: rows // 2]
    pick += [i for i, c in enumerate(clips) if c["kind"] == "obj"][: rows - len(pick)]
    lines = []
    for i in pick:
        real = _to_uint8(clips[i]["target"])
        lines.append(np.concatenate(list(videos[i]), axis=1))
        lines.append(np.concatenate(list(real), axis=1))
    imageio.imwrite(path, np.concatenate(lines, axis=0), quality=90)


if __name__ == "__main__":
    sys.exit(main())
