# Copyright 2026 The video4spatial authors. Licensed under the Apache License, Version 2.0.
"""The Video4Spatial denoiser: diffusers' ``WanTransformer3DModel`` with explicit frame positions.

Why a subclass and not a copy: the Wan blocks, patch embedding, condition embedder and output head are
reused unchanged (so real Wan2.x weights load into the same parameter names); only three things differ:

1. ``rope`` is :class:`WanFramePosRotaryEmbed`, which takes explicit per-frame temporal positions
   ``(B, F)`` (sparse context frames keep their source indices in the tour). With positions ``0..F-1``
   it returns exactly diffusers' :class:`WanRotaryPosEmbed` output.
2. ``camera_embedder``: a per-frame relative camera pose (12-d) goes through an MLP whose last layer is
   zero-initialised (a no-op at start) and is added to every token of that frame, masked per frame.
3. ``forward`` takes per-token timesteps ``(B, seq_len)`` (Wan 2.2 TI2V style; context tokens get 0).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (DiffusionPipeline's loader looks it up here)
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformer3DModel
from diffusers.utils import logging

logger = logging.get_logger(__name__)


# ---------------------------------------------------------------------------------------------------------
# RoPE with explicit frame positions
# ---------------------------------------------------------------------------------------------------------


class WanFramePosRotaryEmbed(WanRotaryPosEmbed):
    """3-D RoPE whose temporal axis uses explicit (possibly sparse, fractional) per-frame positions.

    Why a subclass: it keeps diffusers' buffers and split sizes, so the spatial axes are identical and the
    temporal axis is computed with the same float64 formula as ``get_1d_rotary_pos_embed``; positions
    ``0..F-1`` reproduce :class:`WanRotaryPosEmbed` bit for bit. ``compute_dtype`` may be set to
    ``torch.float32`` for exporters whose runtimes lack float64 (TensorRT).
    """

    def __init__(
        self,
        attention_head_dim: int,
        patch_size: tuple[int, int, int],
        max_seq_len: int,
        theta: float = 10000.0,
    ) -> None:
        super().__init__(attention_head_dim, patch_size, max_seq_len, theta)
        self.theta = theta
        self.compute_dtype = torch.float32 if torch.backends.mps.is_available() else torch.float64

    def forward(  # type: ignore[override]
        self, hidden_states: torch.Tensor, frame_positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos/sin tables ``(B or 1, F*H'*W', 1, head_dim)`` for latents ``(B, C, F, H, W)``.

        Args:
            hidden_states: latents ``(batch_size, num_channels, num_frames, height, width)``.
            frame_positions: float ``(batch_size, num_frames // p_t)`` temporal positions, or ``None`` for
                ``0..F-1`` (then this is diffusers' own RoPE).
        """
        if frame_positions is None:
            return super().forward(hidden_states)
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.patch_size
        ppf, pph, ppw = num_frames // p_t, height // p_h, width // p_w
        if frame_positions.ndim != 2 or frame_positions.shape[1] != ppf:
            raise ValueError(
                f"frame_positions must have shape (batch, {ppf}). Got {tuple(frame_positions.shape)}"
            )
        bp = frame_positions.shape[0]
        split_sizes = [self.t_dim, self.h_dim, self.w_dim]
        cos_all = self.freqs_cos.split(split_sizes, dim=1)
        sin_all = self.freqs_sin.split(split_sizes, dim=1)

        # temporal axis: same formula as get_1d_rotary_pos_embed(use_real=True, repeat_interleave_real=True)
        dt = self.compute_dtype
        inv_freq = 1.0 / (
            self.theta
            ** (torch.arange(0, self.t_dim, 2, dtype=dt, device=frame_positions.device) / self.t_dim)
        )
        ang = frame_positions.to(dt).unsqueeze(-1) * inv_freq  # (B, F, t_dim/2) == torch.outer per row
        cos_f = ang.cos().repeat_interleave(2, dim=-1).float()
        sin_f = ang.sin().repeat_interleave(2, dim=-1).float()
        cos_f = cos_f.view(bp, ppf, 1, 1, -1).expand(bp, ppf, pph, ppw, -1)
        sin_f = sin_f.view(bp, ppf, 1, 1, -1).expand(bp, ppf, pph, ppw, -1)

        cos_h = cos_all[1][:pph].view(1, 1, pph, 1, -1).expand(bp, ppf, pph, ppw, -1)
        cos_w = cos_all[2][:ppw].view(1, 1, 1, ppw, -1).expand(bp, ppf, pph, ppw, -1)
        sin_h = sin_all[1][:pph].view(1, 1, pph, 1, -1).expand(bp, ppf, pph, ppw, -1)
        sin_w = sin_all[2][:ppw].view(1, 1, 1, ppw, -1).expand(bp, ppf, pph, ppw, -1)

        freqs_cos = torch.cat([cos_f, cos_h.to(cos_f.device), cos_w.to(cos_f.device)], dim=-1)
        freqs_sin = torch.cat([sin_f, sin_h.to(sin_f.device), sin_w.to(sin_f.device)], dim=-1)
        return (
            freqs_cos.reshape(bp, ppf * pph * ppw, 1, -1),
            freqs_sin.reshape(bp, ppf * pph * ppw, 1, -1),
        )


# ---------------------------------------------------------------------------------------------------------
# camera-path conditioning
# ---------------------------------------------------------------------------------------------------------


class CameraPoseEmbedding(nn.Module):
    """Per-frame relative pose (12-d) -> token-width vector; the last layer starts at zero (a no-op)."""

    def __init__(self, camera_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(camera_dim, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, camera: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(camera)))


# ---------------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------------


class V4STransformer3DModel(WanTransformer3DModel):
    r"""Wan transformer with explicit frame positions, per-token timesteps and camera-path conditioning.

    Args:
        camera_dim (`int`, defaults to `12`): width of the per-frame relative pose; 0 disables it.
        All other arguments: see [`WanTransformer3DModel`] (same names, same defaults, so a Wan2.x
        ``transformer/config.json`` loads; the missing ``camera_embedder`` then starts as a no-op).
    """

    _keep_in_fp32_modules = [*WanTransformer3DModel._keep_in_fp32_modules]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        camera_dim: int = 12,
    ) -> None:
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        inner_dim = num_attention_heads * attention_head_dim
        # 1. RoPE with explicit frame positions (same attribute name: Wan checkpoints still load)
        self.rope = WanFramePosRotaryEmbed(attention_head_dim, tuple(patch_size), rope_max_seq_len)
        # 2. camera-path conditioning (zero-initialised output: starts as a no-op)
        self.camera_embedder = CameraPoseEmbedding(camera_dim, inner_dim) if camera_dim else None

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> V4STransformer3DModel:  # type: ignore[override]
        """Load like diffusers; a Wan2.x checkpoint lacks ``camera_embedder``: it is created fresh (no-op)."""
        model = super().from_pretrained(*args, **kwargs)
        emb = model.camera_embedder
        if emb is not None and any(p.is_meta for p in emb.parameters()):
            ref = model.proj_out.weight
            logger.info("camera_embedder not in the checkpoint: initialised as a no-op")
            model.camera_embedder = CameraPoseEmbedding(model.config.camera_dim, ref.shape[1]).to(
                device=ref.device, dtype=ref.dtype
            )
        return model

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        frame_positions: torch.Tensor | None = None,
        camera: torch.Tensor | None = None,
        camera_mask: torch.Tensor | None = None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        r"""Predict the flow-matching velocity of every latent.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, num_channels, num_frames, height, width)`):
                context latents followed by target latents along frames.
            timestep (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, seq_len)`):
                diffusion timesteps, per sample or per token (0 on clean context/observation tokens).
            encoder_hidden_states (`torch.Tensor` of shape `(batch_size, text_len, text_dim)`):
                instruction embeddings (zeros = null instruction).
            frame_positions (`torch.Tensor` of shape `(batch_size, num_frames)`, *optional*):
                temporal RoPE positions per latent frame; `None` means `0..num_frames-1`.
            camera (`torch.Tensor` of shape `(batch_size, num_frames, camera_dim)`, *optional*):
                per-frame relative camera pose.
            camera_mask (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, num_frames)`, *optional*):
                1 where the camera embedding is added (pose task, target frames), 0 elsewhere.
            return_dict (`bool`, defaults to `True`): return a `Transformer2DModelOutput` or a tuple.
        """
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        ppf, pph, ppw = num_frames // p_t, height // p_h, width // p_w
        seq_len = ppf * pph * ppw
        if timestep.ndim == 2 and timestep.shape[1] != seq_len:
            raise ValueError(f"per-token timestep must be (batch, {seq_len}). Got {tuple(timestep.shape)}")

        rotary_emb = self.rope(hidden_states, frame_positions)

        hidden_states = self.patch_embedding(hidden_states)
        hidden_states = hidden_states.flatten(2).transpose(1, 2).contiguous()

        if camera is not None and self.camera_embedder is not None:
            if camera.shape[:2] != (batch_size, ppf):
                raise ValueError(
                    f"camera must have shape (batch, {ppf}, {self.config.camera_dim}). "
                    f"Got {tuple(camera.shape)}"
                )
            cam = self.camera_embedder(camera.to(hidden_states.dtype))  # (B, F, D)
            if camera_mask is not None:
                mask = camera_mask.to(cam.dtype)
                mask = mask.view(batch_size, 1) if mask.ndim == 1 else mask
                cam = cam * mask.unsqueeze(-1)
            hidden_states = hidden_states + cam.repeat_interleave(pph * ppw, dim=1)

        if timestep.ndim == 2:
            ts_seq_len = timestep.shape[1]
            timestep = timestep.flatten()
        else:
            ts_seq_len = None

        temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=ts_seq_len
        )
        if ts_seq_len is not None:
            timestep_proj = timestep_proj.unflatten(2, (6, -1))  # (B, seq_len, 6, D)
        else:
            timestep_proj = timestep_proj.unflatten(1, (6, -1))  # (B, 6, D)
        if encoder_hidden_states_image is not None:
            encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb
                )
            else:
                hidden_states = block(hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)

        if temb.ndim == 3:
            shift, scale = (self.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)).chunk(
                2, dim=2
            )
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.to(hidden_states.device), scale.to(hidden_states.device)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = self.proj_out(hidden_states)

        hidden_states = hidden_states.reshape(batch_size, ppf, pph, ppw, p_t, p_h, p_w, -1)
        hidden_states = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6)
        output = hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
