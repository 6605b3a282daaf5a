"""Held-out diagnostics logged during training: denoising error per noise level, sampled-video error, and
whether the model uses its context.

Why these: a model can denoise one step from real data well and still sample patch noise (the gap between
the two is the drift the sampler adds), and a planner that ignores its context is not the Video4Spatial
method at all. So every ``sample_every`` steps the EMA weights are scored on a fixed held-out batch (per
held-out scene one object clip ending a visit and one pose clip, cut from the scene video, with the
video's natural context: no near-copy curriculum):

* ``val/x0_mse@s``: MSE of the one-step clean estimate against the truth, per noise level ``s`` (fixed
  noise; conditional branch; target frames after the observation); ``_pose`` / ``_obj`` per clip kind;
* ``val/x0_mse_wrongctx@s``: the same with **another held-out scene's** context; ``val/x0_context_gain@s``
  = wrong - true (> 0: the model uses its context), ``val/x0_context_gain_frac_pose@1`` = that gain on
  pose clips at s = 1 over the true-context error (issue 24's G1 gate);
* ``val/x0_mse_oracle@s``: the context's first frames replaced by exact copies of the clip's own
  trajectory frames at their source times (the answer in front of the model: the gain a model that
  copies would show);
* ``val/x0_mse_views_{pose,obj}@1`` (and ``_wrongctx``, ``val/x0_context_gain_frac_views_*@1``): the
  use-time context at s = 1 (the gates' ``--context views``): pose clips with their path's closest views
  from another pass of the video, object clips with views of their goal from another pass (exact boxes
  here; the detector's in the gates);
* ``val/sample_mse_{ctx,noctx,wrongctx}``, ``val/sample_psnr_*``: full sampled videos (the config's sampler
  steps and guidance) with the true context, with no context (pure noise, the null branch's) and with
  another held-out scene's context; trajectory frames only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

PROBE_SIGMAS = (0.05, 0.15, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0)
CONDITIONS = ("ctx", "noctx", "wrongctx")
ONE_STEP = ("x0_mse", "x0_mse_wrongctx", "x0_mse_oracle")


def probe_batch(data_dir: str | Path, mcfg: Any, max_scenes: int = 12, seed: int = 777) -> dict[str, Any]:
    """One object clip (ending a visit, goal centred) and one pose clip per scene, from distinct scenes.

    The ``scene`` key (shard index) lets the wrong-context condition take a different scene's context;
    ``oracle_context`` / ``oracle_positions`` hold the oracle condition's context, ``views_*`` the
    use-time context's (pose clips: ``choose_view_context``; object clips: ``choose_goal_context``).
    """
    from v4s_agent.envs.geometry import encode_relative_poses
    from v4s_agent.envs.scene_video import (
        choose_goal_context,
        choose_view_context,
        exact_goal_frames,
        other_scene_index,
    )

    from v4s_agent.model.pipeline_inputs import to_video_tensor

    from .dataset import build_sample, clip_window, collate, load_manifest, load_shard

    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    samples, scenes, oracle, oracle_pos, oracle_cam = [], [], [], [], []
    views, views_pos, views_cam = [], [], []
    t_traj = mcfg.num_target_frames - mcfg.num_box_frames
    for si, s in enumerate(manifest["shards"][:max_scenes]):
        shard = load_shard(data_dir / s["file"])
        ok = np.nonzero(shard["visit_ok"])[0]
        rng = np.random.default_rng([seed, si])
        for kind in ("obj", "pose"):
            if kind == "obj" and len(ok) == 0:
                continue
            ep = int(ok[int(rng.integers(len(ok)))]) if kind == "obj" else 0
            state = rng.bit_generator.state
            smp = build_sample(shard, kind, ep, rng, mcfg, p_drop=0.0, end_window_prob=1.0, near_prob=0.0)
            # the same clip again (same rng draws) to know its frames' source times
            rng2 = np.random.default_rng()
            rng2.bit_generator.state = state
            rng2.random()  # build_sample's end_window draw
            widx = clip_window(shard, kind, ep, t_traj, True, rng2)
            n_copy = min(mcfg.num_context_frames, t_traj - 1)
            ctx_idx = np.asarray(smp["context_positions"].numpy(), np.int64)
            copies = widx[1 : 1 + n_copy]
            idx = np.sort(np.concatenate([copies, ctx_idx[: mcfg.num_context_frames - n_copy]]))
            oracle.append(to_video_tensor(shard["video_frames"][idx], mcfg.height, mcfg.width))
            oracle_pos.append(torch.from_numpy(idx.astype(np.float32)))
            # the oracle frames' own poses (a context-pose model must not be told the replaced frames')
            obs_pose = shard["video_poses"][widx[0]]
            oracle_cam.append(torch.from_numpy(encode_relative_poses(obs_pose, shard["video_poses"][idx])))
            # the use-time context (its own generator: the other conditions stay as they were): a pose
            # clip's path views, an object clip's goal views (exact boxes here, the detector's in the gates)
            vrng = np.random.default_rng([seed, si, 3])
            if kind == "pose":
                vidx, _ = choose_view_context(shard, widx, mcfg.num_context_frames, vrng)
            else:
                cat = int(shard["visit_category"][ep])
                goal = exact_goal_frames(shard, cat)
                vidx, _ = choose_goal_context(shard, widx, mcfg.num_context_frames, vrng, goal, cat)
            views.append(to_video_tensor(shard["video_frames"][vidx], mcfg.height, mcfg.width))
            views_pos.append(torch.from_numpy(vidx.astype(np.float32)))
            views_cam.append(torch.from_numpy(encode_relative_poses(obs_pose, shard["video_poses"][vidx])))
            samples.append(smp)
            scenes.append(si)
    if len({*scenes}) < 2:
        raise ValueError(f"{data_dir}: the context probe needs >= 2 scenes, got {len(set(scenes))}")
    batch = collate(samples)
    batch["scene"] = torch.tensor(scenes)
    batch["oracle_context"] = torch.stack(oracle)
    batch["oracle_positions"] = torch.stack(oracle_pos)
    batch["oracle_camera"] = torch.stack(oracle_cam)
    batch["views_context"] = torch.stack(views)
    batch["views_positions"] = torch.stack(views_pos)
    batch["views_camera"] = torch.stack(views_cam)
    batch["wrong_index"] = torch.tensor(other_scene_index(scenes))  # another scene's context
    return batch


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] videos (as uint8 images would have it: range 2)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(4.0 / mse))


@torch.no_grad()
def run_probe(
    pipe: Any, batch: dict[str, Any], steps: int, guidance: float, seed: int = 0
) -> dict[str, float]:
    """The diagnostics above for the pipeline's current weights (callers swap in the EMA weights)."""
    from v4s_agent.model.one_step import one_step_errors

    device = pipe.transformer.device
    ctx = batch["context"].to(device)
    tgt = batch["target"].to(device)
    n_traj = pipe.v4s_config.num_trajectory_frames
    out: dict[str, float] = {}

    # 1. one-step denoising per sigma: the true context, another scene's, and the oracle's (same noise)
    wrong = batch["wrong_index"]  # another scene's sample for each one
    ctx_cam = batch.get("context_camera")
    conds = (
        (batch["context"], batch["context_positions"], ctx_cam),
        (
            batch["context"][wrong],
            batch["context_positions"][wrong],
            None if ctx_cam is None else ctx_cam[wrong],
        ),
        (
            batch["oracle_context"],
            batch["oracle_positions"],
            batch.get("oracle_camera") if ctx_cam is not None else None,
        ),
    )
    is_pose = batch["camera_mask"].float() > 0
    kinds = {"pose": is_pose, "obj": ~is_pose}
    for name, (c, p, cc) in zip(ONE_STEP, conds, strict=True):
        errs = one_step_errors(
            pipe, c, p, batch["target"], batch["instruction"], batch["camera"], batch["camera_mask"], cc,
            PROBE_SIGMAS, seed=seed,
        )  # fmt: skip
        for s, err in errs.items():
            out[f"{name}@{s:g}"] = float(err.mean())
            for kind, sel in kinds.items():
                if bool(sel.any()):
                    out[f"{name}_{kind}@{s:g}"] = float(err[sel].mean())
    for s in PROBE_SIGMAS:
        out[f"x0_context_gain@{s:g}"] = out[f"x0_mse_wrongctx@{s:g}"] - out[f"x0_mse@{s:g}"]
        for kind in kinds:
            if f"x0_mse_{kind}@{s:g}" in out:
                gain = out[f"x0_mse_wrongctx_{kind}@{s:g}"] - out[f"x0_mse_{kind}@{s:g}"]
                out[f"x0_context_gain_{kind}@{s:g}"] = gain
                out[f"x0_context_gain_frac_{kind}@{s:g}"] = gain / max(out[f"x0_mse_{kind}@{s:g}"], 1e-12)
    if "views_context" in batch:  # the use-time context (path views / goal views), at s = 1
        views = {}
        for name, src in (("x0_mse_views", torch.arange(len(wrong))), ("x0_mse_views_wrongctx", wrong)):
            views[name] = one_step_errors(
                pipe, batch["views_context"][src], batch["views_positions"][src], batch["target"],
                batch["instruction"], batch["camera"], batch["camera_mask"],
                batch["views_camera"][src] if ctx_cam is not None else None, [1.0], seed=seed,
            )[1.0]  # fmt: skip
        for kind, sel in kinds.items():
            if bool(sel.any()):
                true, other = (float(views[n][sel].mean()) for n in ("x0_mse_views", "x0_mse_views_wrongctx"))
                out[f"x0_mse_views_{kind}@1"], out[f"x0_mse_views_wrongctx_{kind}@1"] = true, other
                out[f"x0_context_gain_frac_views_{kind}@1"] = (other - true) / max(true, 1e-12)
    # one held-out loss comparable across prediction types and training sigma distributions
    out["x0_mse_mean"] = float(np.mean([out[f"x0_mse@{s:g}"] for s in PROBE_SIGMAS]))
    out["x0_context_gain"] = float(np.mean([out[f"x0_context_gain@{s:g}"] for s in PROBE_SIGMAS]))

    # 2. sampled videos with the true, no, and another scene's context
    obs = ((tgt[:, :, 0].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().cpu().numpy()
    truth = tgt[:, :, 1:n_traj].float().cpu()
    for cond in CONDITIONS:
        c = ctx[wrong.to(device)] if cond == "wrongctx" else ctx
        cpos, ccam = batch["context_positions"], ctx_cam
        if cond == "wrongctx":
            cpos = cpos[wrong]
            ccam = None if ccam is None else ccam[wrong]
        g = torch.Generator(device=device).manual_seed(seed + 1)
        video = pipe(
            context=c,
            context_positions=cpos.numpy(),
            observation=obs,
            prompt=[str(s) for s in batch["instruction"]],
            camera=batch["camera"].numpy(),
            camera_mask=batch["camera_mask"].numpy(),
            context_camera=None if ccam is None else ccam.numpy(),
            num_inference_steps=steps,
            guidance_scale=guidance,
            drop_context=cond == "noctx",
            generator=g,
            output_type="pt",
        ).frames
        gen = video[:, :, 1:n_traj].float().cpu()
        out[f"sample_mse_{cond}"] = float(((gen - truth) ** 2).mean())
        out[f"sample_psnr_{cond}"] = _psnr(gen, truth)
        if bool(is_pose.any()):
            out[f"sample_psnr_pose_{cond}"] = _psnr(gen[is_pose], truth[is_pose])
        if bool((~is_pose).any()):
            out[f"sample_mse_obj_{cond}"] = float(((gen[~is_pose] - truth[~is_pose]) ** 2).mean())
    return out


TABLE_KEYS = (
    ("x0_mse_pose@1", "pose err σ=1, true ctx"),
    ("x0_mse_wrongctx_pose@1", "another scene's"),
    ("x0_mse_oracle_pose@1", "oracle"),
    ("x0_context_gain_frac_pose@1", "gain/err pose (G1)"),
    ("x0_context_gain_frac_obj@1", "gain/err object"),
    ("x0_mse_views_pose@1", "pose err σ=1, path's views"),
    ("x0_context_gain_frac_views_pose@1", "gain/err pose, views"),
    ("x0_context_gain_frac_views_obj@1", "gain/err object, goal views"),
    ("sample_psnr_pose_ctx", "sampled PSNR pose, true ctx"),
    ("sample_psnr_pose_noctx", "no ctx"),
)


def probe_table(runs: list[str], step: int | None = None) -> str:
    """A markdown table of the logged probe of each run (at ``step``, else its newest probe)."""
    import json

    head = "| run | step | " + " | ".join(h for _, h in TABLE_KEYS) + " |"
    lines = [head, "|---|---|" + "---|" * len(TABLE_KEYS)]
    for run in runs:
        recs = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines() if '"val/' in x]
        recs = [r for r in recs if step is None or r["step"] == step]
        if not recs:
            lines.append(f"| {run} | – |" + " – |" * len(TABLE_KEYS))
            continue
        r = recs[-1]
        cells = [f"{r.get('val/' + k, float('nan')):.4f}" for k, _ in TABLE_KEYS]
        lines.append(f"| {run} | {r['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m v4s_agent.training.val_probe RUN [RUN ...] [--step N]``: logged probes side by side."""
    import argparse

    p = argparse.ArgumentParser(description="The held-out probe of training runs, side by side.")
    p.add_argument("runs", nargs="+")
    p.add_argument("--step", type=int, default=None, help="compare at this step (default: each run's newest)")
    a = p.parse_args(argv)
    print(probe_table(a.runs, a.step))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
