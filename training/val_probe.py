"""Held-out diagnostics logged during training: denoising error per noise level, sampled-video error, and
whether the model uses its context.

Why these three: a model can denoise one step from real data well and still sample patch noise (the gap
between the two is the drift the sampler adds), and a planner that ignores its context is not the
Video4Spatial method at all. So every ``sample_every`` steps the EMA weights are scored on a fixed
held-out batch (one object window ending at the goal and one pose window per held-out scene):

* ``val/x0_mse@s``: MSE of the one-step clean estimate ``x_t - s v`` against the truth, per noise level ``s``
  (fixed noise; conditional branch; target frames after the observation);
* ``val/x0_mse_wrongctx@s`` and ``val/x0_context_gain``: the same one-step estimate with another held-out
  scene's context, and how much worse that is on average (> 0: the model uses its context);
* ``val/sample_mse_{ctx,noctx,wrongctx}``, ``val/sample_psnr_*``: full sampled videos (the config's sampler
  steps and guidance) with the true context, with no context (pure noise, the null branch's) and with
  **another held-out scene's** context; trajectory frames only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

PROBE_SIGMAS = (0.05, 0.15, 0.3, 0.5, 0.7, 0.9, 1.0)
CONDITIONS = ("ctx", "noctx", "wrongctx")


def probe_batch(data_dir: str | Path, mcfg: Any, max_scenes: int = 6, seed: int = 777) -> dict[str, Any]:
    """One object window (ending at the goal) and one pose window per scene, from distinct scenes.

    The ``scene`` key (shard index) lets the wrong-context condition take a different scene's context.
    """
    from .dataset import build_sample, collate, load_manifest, load_shard

    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    samples, scenes = [], []
    for si, s in enumerate(manifest["shards"][:max_scenes]):
        shard = load_shard(data_dir / s["file"])
        rng = np.random.default_rng([seed, si])
        for kind in ("obj", "pose"):
            n_ep = len(shard[f"{kind}_offsets"]) - 1
            if n_ep < 1:
                continue
            ep = int(rng.integers(n_ep))
            end = 1.0 if kind == "obj" else 0.0
            samples.append(build_sample(shard, kind, ep, rng, mcfg, p_drop=0.0, end_window_prob=end))
            scenes.append(si)
    if len({*scenes}) < 2:
        raise ValueError(f"{data_dir}: the context probe needs >= 2 scenes, got {len(set(scenes))}")
    batch = collate(samples)
    batch["scene"] = torch.tensor(scenes)
    # another scene's context for every sample: the next sample whose scene differs
    order = []
    for i, sc in enumerate(scenes):
        j = next(j for j in [*range(i + 1, len(scenes)), *range(i)] if scenes[j] != sc)
        order.append(j)
    batch["wrong_index"] = torch.tensor(order)
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
    cfg = pipe.v4s_config
    tr = pipe.transformer
    device, dtype = tr.device, tr.dtype
    ctx = batch["context"].to(device)
    tgt = batch["target"].to(device)
    b, k = tgt.shape[0], ctx.shape[2]
    tl = cfg.num_latent_target_frames
    n_traj = cfg.num_trajectory_frames
    out: dict[str, float] = {}

    # 1. one-step denoising per sigma
    ctx_lat = pipe.encode_video(ctx, per_frame=True).to(dtype)
    x0 = pipe.encode_video(tgt, per_frame=False).to(dtype)
    text, _ = pipe.encode_prompt([str(s) for s in batch["instruction"]], device)
    pos = pipe.frame_positions(batch["context_positions"].to(device).float(), tl)
    wrong = batch["wrong_index"]  # another scene's sample for each one
    ctx_cam = batch.get("context_camera")
    cam, cam_mask = pipe.camera_inputs(batch["camera"], batch["camera_mask"], b, k, device, ctx_cam)
    cam_w, mask_w = pipe.camera_inputs(
        batch["camera"], batch["camera_mask"], b, k, device, None if ctx_cam is None else ctx_cam[wrong]
    )
    pos_w = pipe.frame_positions(batch["context_positions"][wrong].to(device).float(), tl)
    tokens = cfg.tokens_per_frame
    g = torch.Generator(device=device).manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g, device=device, dtype=dtype)
    for s in PROBE_SIGMAS:
        noisy = (1 - s) * x0 + s * noise
        noisy[:, :, :1] = x0[:, :, :1]
        tt = pipe.token_timesteps(torch.full((b,), 1000.0 * s, device=device), k, k + tl, tokens)
        # the same one-step estimate with the true context and with another scene's
        pairs = (
            ("x0_mse", ctx_lat, pos, cam, cam_mask),
            ("x0_mse_wrongctx", ctx_lat[wrong.to(device)], pos_w, cam_w, mask_w),
        )
        for name, c_lat, p, cm, mm in pairs:
            lat = torch.cat([c_lat, noisy], dim=2)
            v = pipe.predict_velocity(lat, tt, p, text, cm, mm)
            x0_hat = pipe.velocity_to_sample(lat, v, tt)[:, :, k + 1 :]
            out[f"{name}@{s:g}"] = float(((x0_hat.float().clamp(-1, 1) - x0[:, :, 1:].float()) ** 2).mean())
    # one held-out loss comparable across prediction types and training sigma distributions
    out["x0_mse_mean"] = float(np.mean([out[f"x0_mse@{s:g}"] for s in PROBE_SIGMAS]))
    # context use in one step: how much worse another scene's context makes the estimate (> 0: used)
    out["x0_context_gain"] = (
        float(np.mean([out[f"x0_mse_wrongctx@{s:g}"] for s in PROBE_SIGMAS])) - out["x0_mse_mean"]
    )

    # 2. sampled videos with the true, no, and another scene's context
    obs = ((tgt[:, :, 0].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().cpu().numpy()
    truth = tgt[:, :, 1:n_traj].float().cpu()
    is_pose = batch["camera_mask"].float() > 0
    for cond in CONDITIONS:
        c = ctx[batch["wrong_index"].to(device)] if cond == "wrongctx" else ctx
        cpos, ccam = batch["context_positions"], batch.get("context_camera")
        if cond == "wrongctx":
            cpos = cpos[batch["wrong_index"]]
            ccam = None if ccam is None else ccam[batch["wrong_index"]]
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
