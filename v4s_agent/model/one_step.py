"""One-step denoising error of the target frames: the measure of whether the model reads its context.

Why one function: the training loop's held-out probe (``v4s_agent.training.val_probe``) and the gates
(``v4s_agent.evaluation.gates``, issue 24's G1) must score the same estimate, so a gain measured in
training is the gain the gates report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


@torch.no_grad()
def one_step_errors(
    pipe: Any,
    context: torch.Tensor,
    context_positions: torch.Tensor,
    target: torch.Tensor,
    prompts: Sequence[str],
    camera: torch.Tensor,
    camera_mask: torch.Tensor,
    context_camera: torch.Tensor | None,
    sigmas: Sequence[float],
    seed: int = 0,
    draws: int = 1,
    drop_context: bool = False,
) -> dict[float, torch.Tensor]:
    """Per-sample MSE ``(B,)`` of the one-step clean estimate of the target frames after the observation,
    for each noise level in ``sigmas`` (the observation frame stays clean, as in training).

    ``context`` ``(B, 3, K, H, W)`` and ``target`` ``(B, 3, T, H, W)`` in [-1, 1]; the noise is drawn from
    ``seed`` (``draws`` draws, averaged; each draw shared by all sigmas), so two calls with the same seed
    and shapes (e.g. the true context and another scene's) see the same noise. ``drop_context``: the
    no-context condition as training drops it (pure-noise context latents without poses, drawn from a
    generator of their own so the target noise stays the same as the other conditions').
    """
    cfg = pipe.v4s_config
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    b, k = target.shape[0], context.shape[2]
    tl, tokens = cfg.num_latent_target_frames, cfg.tokens_per_frame
    ctx_lat = pipe.encode_video(context.to(device), per_frame=True).to(dtype)
    x0 = pipe.encode_video(target.to(device), per_frame=False).to(dtype)
    text, _ = pipe.encode_prompt([str(p) for p in prompts], device)
    pos = pipe.frame_positions(context_positions.to(device).float(), tl)
    ctx_on = torch.zeros(b) if drop_context else None  # a noise context has no poses
    cam, cam_mask = pipe.camera_inputs(camera, camera_mask, b, k, device, context_camera, ctx_on)
    if drop_context:
        g_ctx = torch.Generator(device=device).manual_seed(seed + 7919)
        ctx_lat = torch.randn(ctx_lat.shape, generator=g_ctx, device=device, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(seed)
    out = {float(s): torch.zeros(b) for s in sigmas}
    for _ in range(draws):
        noise = torch.randn(x0.shape, generator=g, device=device, dtype=dtype)
        for s in sigmas:
            noisy = (1 - s) * x0 + s * noise
            noisy[:, :, :1] = x0[:, :, :1]
            tt = pipe.token_timesteps(torch.full((b,), 1000.0 * s, device=device), k, k + tl, tokens)
            lat = torch.cat([ctx_lat, noisy], dim=2)
            v = pipe.predict_velocity(lat, tt, pos, text, cam, cam_mask)
            x0_hat = pipe.velocity_to_sample(lat, v, tt)[:, :, k + 1 :]
            err = ((x0_hat.float().clamp(-1, 1) - x0[:, :, 1:].float()) ** 2).mean(dim=(1, 2, 3, 4))
            out[float(s)] += err.cpu() / draws
    return out
