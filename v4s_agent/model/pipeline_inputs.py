"""What ``Video4SpatialPipeline`` accepts: its model config and transformer, and the checks of a call's
inputs (frames as uint8 or [-1, 1] floats, context and camera shapes), with :class:`ModelInputError`
messages that say which input is wrong and how."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .configuration_model import ModelConfig, get_model_config


class ModelInputError(ValueError):
    """A pipeline input has the wrong shape, count, dtype or range (the message says which)."""


def as_model_config(model_config: ModelConfig | dict[str, Any] | str | None) -> ModelConfig:
    if isinstance(model_config, ModelConfig):
        return model_config
    if isinstance(model_config, str):
        return get_model_config(model_config)
    if isinstance(model_config, dict):
        return ModelConfig.from_dict(model_config)
    raise ValueError("Video4SpatialPipeline needs a model_config (ModelConfig, dict or config name)")


def check_transformer_matches(cfg: ModelConfig, transformer: torch.nn.Module) -> None:
    """Raise if the transformer's config disagrees with the model config (e.g. a mismatched checkpoint)."""
    tcfg = transformer.config
    want = cfg.transformer_kwargs()
    bad = []
    for k, v in want.items():
        have = tcfg.get(k) if hasattr(tcfg, "get") else getattr(tcfg, k, None)
        if k == "patch_size":
            have, v = tuple(have or ()), tuple(v)
        if have != v:
            bad.append(f"{k}: transformer has {have!r}, model config wants {v!r}")
    if bad:
        raise ValueError(
            f"checkpoint/transformer does not match model config {cfg.name!r}: " + "; ".join(bad)
        )


def to_video_tensor(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (F,H,W,3) -> float32 (3,F,height,width) in [-1, 1] (area-resized when the frames differ).

    One conversion for the training samples, the held-out probe and the gates, so they feed the model
    the same pixels."""
    # numpy, single-threaded: on a busy shared CPU torch's intra-op threads only add contention here
    x = torch.from_numpy(
        np.ascontiguousarray(np.asarray(frames, np.float32).transpose(3, 0, 1, 2)) / 127.5 - 1.0
    )
    if x.shape[-2:] != (height, width):
        x = torch.nn.functional.interpolate(x.permute(1, 0, 2, 3), size=(height, width), mode="area")
        x = x.permute(1, 0, 2, 3).contiguous()
    return x


def video_to_tensor(x: Any, name: str, single: bool, cfg: ModelConfig) -> torch.Tensor:
    """uint8 ``(F,H,W,3)``/``(B,F,H,W,3)`` (or ``(H,W,3)``/``(B,H,W,3)`` when ``single``) or float
    ``(B,3,F,H,W)`` / ``(B,3,H,W)`` in [-1, 1] -> float ``(B, 3, F, H, W)``, checked against
    ``cfg``'s frame size."""
    if x is None:
        raise ModelInputError(f"`{name}` is required")
    is_uint8 = (isinstance(x, np.ndarray) and x.dtype == np.uint8) or (
        isinstance(x, torch.Tensor) and x.dtype == torch.uint8
    )
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if is_uint8:
        if t.shape[-1] != 3:
            raise ModelInputError(f"`{name}` uint8 frames must be (..., H, W, 3). Got {tuple(t.shape)}")
        want = 3 if single else 4
        if t.ndim == want:
            t = t.unsqueeze(0)
        if t.ndim != want + 1:
            raise ModelInputError(
                f"`{name}` has {t.ndim} dims; expected {want} or {want + 1}. Got {tuple(t.shape)}"
            )
        t = t.float() / 127.5 - 1.0
        t = t.unsqueeze(1) if single else t
        t = t.permute(0, 4, 1, 2, 3)
    else:
        t = t.float()
        if single and t.ndim == 4:
            t = t.unsqueeze(2)
        if t.ndim != 5 or t.shape[1] != 3:
            raise ModelInputError(
                f"`{name}` float input must be (B, 3, F, H, W){' or (B, 3, H, W)' if single else ''} "
                "in [-1, 1]. "
                f"Got {tuple(t.shape)}"
            )
        if t.numel() and (t.min() < -1.001 or t.max() > 1.001):
            raise ModelInputError(f"`{name}` float input must be in [-1, 1] (uint8 frames are also accepted)")
    if t.shape[2] == 0:
        raise ModelInputError(f"`{name}` is empty: at least one frame is needed")
    if tuple(t.shape[-2:]) != (cfg.height, cfg.width):
        raise ModelInputError(
            f"`{name}` frames are {t.shape[-2]}x{t.shape[-1]} but model config {cfg.name!r} expects "
            f"{cfg.height}x{cfg.width} (H x W); resize them first"
        )
    return t


def check_call_inputs(
    cfg: ModelConfig,
    context: torch.Tensor,
    context_positions: torch.Tensor,
    observation: torch.Tensor,
    prompts: list[str],
    camera: torch.Tensor | None,
    callback_on_step_end_tensor_inputs: list[str] | None,
    allowed_callback_inputs: list[str],
) -> None:
    """Shapes and callback names of one pipeline call (the sampling settings are checked by
    ``Video4SpatialPipeline.sampling_config``)."""
    k = context.shape[2]
    if k != cfg.num_context_frames:
        raise ModelInputError(
            f"got {k} context frames; model config {cfg.name!r} expects num_context_frames="
            f"{cfg.num_context_frames}"
        )
    if context_positions.shape != (context.shape[0], k):
        raise ModelInputError(
            f"context_positions must be ({k},) or ({context.shape[0]}, {k}). "
            f"Got {tuple(context_positions.shape)}"
        )
    if observation.shape[2] != 1:
        raise ModelInputError(f"observation must be a single frame. Got {observation.shape[2]} frames")
    if len(prompts) != context.shape[0]:
        raise ModelInputError(f"got {len(prompts)} prompts for a batch of {context.shape[0]}")
    if camera is not None and tuple(camera.shape[1:]) != (cfg.num_target_frames, cfg.camera_dim or 12):
        raise ModelInputError(
            f"camera must be ({cfg.num_target_frames}, 12) or (B, {cfg.num_target_frames}, 12). "
            f"Got {tuple(camera.shape)}"
        )
    bad = [k for k in callback_on_step_end_tensor_inputs or [] if k not in allowed_callback_inputs]
    if bad:
        raise ModelInputError(f"callback tensor inputs {bad} not in {allowed_callback_inputs}")
