"""Flow-matching training loss of the Video4Spatial planner on the training batch of docs/INTERFACES.md.

Why here and not in the train loop: the method (clean context with t = 0, clean observation frame, joint
CFG dropout, loss on target tokens only) must be identical in training and sampling, so the loss reuses
the pipeline's own pieces (``encode_video``, ``frame_positions``, ``token_timesteps``, ``camera_inputs``,
``predict_velocity``) and the training engineer calls only :func:`flow_matching_loss`.

Convention (diffusers' ``FlowMatchEulerDiscreteScheduler``): ``x_s = (1 - s) x0 + s * noise``,
timestep ``= 1000 s``, the loss is on the velocity ``noise - x0``. With ``prediction_type="sample"`` the
transformer outputs ``x0`` and ``predict_velocity`` turns it into ``(x_s - x0_hat) / max(s, sigma_min)``:
the JiT loss (a velocity loss computed from an x-prediction, i.e. an x-loss weighted by ``1 / s^2``).
"""

from __future__ import annotations

from typing import Any

import torch

from .configuration_model import ModelConfig

BATCH_KEYS = (
    "context",
    "context_positions",
    "target",
    "camera",
    "camera_mask",
    "context_camera",
    "instruction",
    "drop_context",
)


def sample_sigmas(
    batch_size: int,
    shift: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    mean: float = 0.0,
    std: float = 1.0,
) -> torch.Tensor:
    """Per-sample noise levels: logit-normal ``sigmoid(N(mean, std))`` (SD3), then a time shift."""
    u = torch.sigmoid(mean + std * torch.randn(batch_size, generator=generator, device=device))
    return (shift * u / (1 + (shift - 1) * u)).clamp(1e-4, 1.0)


def train_sigmas(
    cfg: ModelConfig, batch_size: int, generator: torch.Generator | None = None, device: Any = "cpu"
) -> torch.Tensor:
    """The training noise levels of ``cfg`` (``train_sigma_*``; shift defaults to the sampler's)."""
    shift = cfg.flow_shift if cfg.train_sigma_shift is None else cfg.train_sigma_shift
    sig = sample_sigmas(batch_size, shift, generator, device, cfg.train_sigma_mean, cfg.train_sigma_std)
    if cfg.train_sigma_high_frac > 0:  # a share of samples at sigma in [0.8, 1]: where context matters
        u = torch.rand(2, batch_size, generator=generator, device=device)
        sig = torch.where(u[0] < cfg.train_sigma_high_frac, 0.8 + 0.2 * u[1], sig)
    return sig


def _components(pipe_or_components: Any, cfg: ModelConfig | None) -> Any:
    if hasattr(pipe_or_components, "predict_velocity"):
        return pipe_or_components
    if isinstance(pipe_or_components, dict):
        from .pipeline_v4s import Video4SpatialPipeline

        if cfg is None:
            raise ValueError("flow_matching_loss needs `cfg` when given a dict of components")
        comps = dict(pipe_or_components)
        comps.setdefault("scheduler", None)
        if comps["scheduler"] is None:
            from .pipeline_v4s import make_scheduler

            comps["scheduler"] = make_scheduler(cfg)
        return Video4SpatialPipeline(**comps, model_config=cfg.to_dict())
    raise TypeError(
        f"expected a Video4SpatialPipeline or a dict of its components. Got {type(pipe_or_components)}"
    )


def check_batch(batch: dict[str, Any], cfg: ModelConfig) -> None:
    """Clear errors for a batch that does not fit the model config."""
    missing = [k for k in ("context", "target", "instruction") if k not in batch]
    if missing:
        raise KeyError(f"training batch is missing {missing}; expected keys {BATCH_KEYS}")
    ctx, tgt = batch["context"], batch["target"]
    b = tgt.shape[0]
    want_c = (b, 3, cfg.num_context_frames, cfg.height, cfg.width)
    want_t = (b, 3, cfg.num_target_frames, cfg.height, cfg.width)
    if tuple(ctx.shape) != want_c:
        raise ValueError(f"batch['context'] must be {want_c} for config {cfg.name!r}. Got {tuple(ctx.shape)}")
    if tuple(tgt.shape) != want_t:
        raise ValueError(f"batch['target'] must be {want_t} for config {cfg.name!r}. Got {tuple(tgt.shape)}")
    if len(batch["instruction"]) != b:
        raise ValueError(f"batch['instruction'] has {len(batch['instruction'])} strings for a batch of {b}")
    cam = batch.get("camera")
    if cam is not None and tuple(cam.shape) != (b, cfg.num_target_frames, 12):
        raise ValueError(f"batch['camera'] must be {(b, cfg.num_target_frames, 12)}. Got {tuple(cam.shape)}")


def flow_matching_loss(
    pipe_or_components: Any,
    batch: dict[str, Any],
    cfg: ModelConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Flow-matching loss on the target tokens (trajectory + box frames; not context, not the observation).

    Args:
        pipe_or_components: a ``Video4SpatialPipeline`` (or a dict ``{"transformer": ..., "vae": ...}``).
        batch: the training batch of docs/INTERFACES.md (tensors on any device; moved to the transformer's).
        cfg: the model config (default: the pipeline's).
        generator: optional ``torch.Generator`` for the noise and noise levels (on the transformer's device).

    Returns:
        ``(loss, logs)``: a scalar tensor with grad, and floats ``loss``, ``loss_traj``, ``loss_box``,
        ``sigma``, ``drop_frac``.
    """
    pipe = _components(pipe_or_components, cfg)
    cfg = cfg or pipe.v4s_config
    check_batch(batch, cfg)
    tr = pipe.transformer
    device, dtype = tr.device, tr.dtype

    context = batch["context"].to(device)
    target = batch["target"].to(device)
    b, k = target.shape[0], context.shape[2]
    with torch.no_grad():
        ctx_lat = pipe.encode_video(context, per_frame=True).to(dtype)
        x0 = pipe.encode_video(target, per_frame=False).to(dtype)  # (B, C, T', h, w); frame 0 = observation
        text_emb, _ = pipe.encode_prompt([str(s) for s in batch["instruction"]], device)

    # joint CFG dropout: the context of dropped samples becomes pure noise (the instruction is "" already)
    drop = batch.get("drop_context")
    drop_frac = 0.0
    if drop is not None and cfg.cfg_mode == "joint":
        drop = torch.as_tensor(drop, device=device).bool().view(b)
        drop_frac = float(drop.float().mean())
        if drop.any():
            z = torch.randn(ctx_lat.shape, generator=generator, device=device, dtype=dtype)
            ctx_lat = torch.where(drop.view(b, 1, 1, 1, 1), z, ctx_lat)

    sigma = train_sigmas(cfg, b, generator, device).to(dtype)
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
    s = sigma.view(b, 1, 1, 1, 1)
    noisy = (1 - s) * x0 + s * noise
    noisy[:, :, :1] = x0[:, :, :1]  # the observation frame stays clean conditioning
    latents = torch.cat([ctx_lat, noisy], dim=2)

    tl = x0.shape[2]
    _, p_h, p_w = cfg.patch_size
    tokens = (x0.shape[3] // p_h) * (x0.shape[4] // p_w)
    tt = pipe.token_timesteps(sigma * 1000.0, k, k + tl, tokens)
    pos = batch.get("context_positions")
    pos = torch.arange(k, device=device).float().expand(b, -1) if pos is None else pos.to(device).float()
    positions = pipe.frame_positions(pos, tl)
    # a dropped (pure-noise) context carries no poses; ``drop`` is a (B,) bool tensor in joint mode
    keep = (~drop).float() if drop is not None and cfg.context_pose and cfg.cfg_mode == "joint" else None
    cam, cam_mask = pipe.camera_inputs(
        batch.get("camera"), batch.get("camera_mask"), b, k, device, batch.get("context_camera"), keep
    )

    pred = pipe.predict_velocity(latents, tt, positions, text_emb, cam, cam_mask)
    v_target = noise - x0
    if cfg.prediction_type == "sample":  # the same sigma clamp as the prediction's conversion (JiT)
        v_target = (noisy - x0) / s.clamp_min(cfg.sigma_min)
    err = (pred[:, :, k + 1 :].float() - v_target[:, :, 1:].float()) ** 2  # (B, C, T'-1, h, w)
    nb = -(-cfg.num_box_frames // cfg.temporal_factor) if cfg.num_box_frames else 0
    frame_err = err.mean(dim=(0, 1, 3, 4))  # (T'-1,): the loss per target frame
    if cfg.end_frame_loss_weight == 1.0:
        loss = err.mean()
    else:  # the last trajectory frame (the one the agent drives to) weighs more; same overall scale
        w = torch.ones(err.shape[2], device=err.device)
        w[err.shape[2] - nb - 1] = cfg.end_frame_loss_weight
        loss = (frame_err * w).sum() / w.sum()
    per_frame = frame_err.detach()
    logs = {
        "loss": float(loss.detach()),
        "loss_traj": float(per_frame[: per_frame.numel() - nb].mean()) if per_frame.numel() > nb else 0.0,
        "loss_box": float(per_frame[per_frame.numel() - nb :].mean()) if nb else 0.0,
        "sigma": float(sigma.mean()),
        "drop_frac": drop_frac,
    }
    return loss, logs


__all__ = ["flow_matching_loss", "sample_sigmas", "train_sigmas", "check_batch", "BATCH_KEYS"]
