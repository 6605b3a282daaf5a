"""The pipeline's denoiser step and the tensors it takes, shared by training, sampling and the ONNX export.

Pure tensor code (traceable): where the context and target latent frames sit on the temporal RoPE axis,
the per-token timesteps (0 on the clean context and observation), the per-frame camera conditioning, one
transformer evaluation turned into a velocity whatever the prediction type, and the conversions between
velocity and clean-sample estimates. :class:`DenoiserMixin` needs ``v4s_config`` and ``transformer``.
"""

from __future__ import annotations

import torch

from .pipeline_inputs import ModelInputError


class DenoiserMixin:
    """``Video4SpatialPipeline``'s method pieces (see the module docstring)."""

    def frame_positions(self, context_positions: torch.Tensor, num_target_latent_frames: int) -> torch.Tensor:
        """Temporal RoPE positions ``(B, K + T')`` of context then target latent frames.

        ``source``: context at ``position_scale * source index``, targets at ``last + 1 + gap, ...``
        (``target_position_gap``);
        ``contiguous``: ``0..K+T'-1`` (diffusers' own RoPE).
        """
        cfg = self.v4s_config
        b, k = context_positions.shape
        dev = context_positions.device
        steps = torch.arange(num_target_latent_frames, device=dev, dtype=torch.float32)
        if cfg.positions == "contiguous":
            return torch.arange(k + num_target_latent_frames, device=dev, dtype=torch.float32).expand(b, -1)
        ctx = context_positions.float() * cfg.position_scale
        tgt = ctx.max(dim=1, keepdim=True).values + 1.0 + cfg.target_position_gap + steps.unsqueeze(0)
        return torch.cat([ctx, tgt], dim=1)

    def token_timesteps(
        self, t: torch.Tensor, num_context: int, num_frames: int, tokens_per_frame: int
    ) -> torch.Tensor:
        """Per-token timesteps ``(B, F * tokens)``: 0 on the context and observation latents, ``t`` after."""
        t = t.float().view(-1, 1)
        clean = num_context + 1
        per_frame = torch.cat(
            [torch.zeros(t.shape[0], clean, device=t.device), t.expand(-1, num_frames - clean)], dim=1
        )
        return per_frame.repeat_interleave(tokens_per_frame, dim=1)

    def camera_inputs(
        self,
        camera: torch.Tensor | None,
        camera_mask: torch.Tensor | None,
        batch: int,
        num_context: int,
        device: torch.device,
        context_camera: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-latent-frame camera ``(B, K + T', 12)`` and mask ``(B, K + T')``.

        Target frames carry the camera path where ``camera`` is given (pose task); context frames carry
        ``context_camera`` (their poses relative to the observation) when the config has
        ``context_pose``, else zeros; ``context_mask`` ``(B,)`` switches it off per sample (a dropped
        context has no poses). ``(None, None)`` when nothing is embedded.
        """
        cfg = self.v4s_config
        use_ctx = bool(cfg.camera_dim) and cfg.context_pose and context_camera is not None
        if not cfg.camera_dim or (camera is None and not use_ctx):
            return None, None
        tl = cfg.num_latent_target_frames
        if camera is None:
            cam = torch.zeros(batch, tl, cfg.camera_dim, device=device)
            tmask = torch.zeros(batch, tl, device=device)
        else:
            cam = camera.to(device=device, dtype=torch.float32)[:, :: cfg.temporal_factor]
            m = (
                torch.ones(batch, device=device)
                if camera_mask is None
                else camera_mask.to(device).float().view(-1)
            )
            tmask = torch.ones(batch, cam.shape[1], device=device) * m.view(-1, 1)
        if use_ctx:
            ctx = context_camera.to(device=device, dtype=torch.float32)
            if tuple(ctx.shape) != (batch, num_context, cfg.camera_dim):
                raise ModelInputError(
                    f"context_camera must be ({num_context}, 12) or ({batch}, {num_context}, 12). "
                    f"Got {tuple(ctx.shape)}"
                )
            cm = torch.ones(batch, device=device) if context_mask is None else context_mask.to(device).float()
            cmask = cm.view(-1, 1).expand(batch, num_context)
        else:
            ctx = torch.zeros(batch, num_context, cam.shape[-1], device=device)
            cmask = torch.zeros(batch, num_context, device=device)
        return torch.cat([ctx, cam], dim=1), torch.cat([cmask, tmask], dim=1)

    def predict_velocity(
        self,
        latents: torch.Tensor,
        timesteps_per_token: torch.Tensor,
        positions: torch.Tensor,
        text_emb: torch.Tensor,
        camera: torch.Tensor | None = None,
        camera_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One denoiser evaluation (pure tensors in/out; what the ONNX exporter traces).

        Args:
            latents: ``(B, C, K + T', h, w)`` context then target latents.
            timesteps_per_token: ``(B, seq_len)``, 0 on clean tokens.
            positions: ``(B, K + T')`` temporal RoPE positions.
            text_emb: ``(B, L, text_dim)`` instruction embeddings (zeros = null).
            camera: ``(B, K + T', 12)`` or ``None``; camera_mask: ``(B, K + T')`` or ``None``.
        """
        out = self.transformer(
            latents,
            timesteps_per_token.float(),  # kept fp32 (bf16 cannot resolve t in [0, 1000])
            text_emb.to(latents.dtype),
            frame_positions=positions,
            camera=camera,
            camera_mask=camera_mask,
            return_dict=False,
        )[0]
        cfg = self.v4s_config
        if cfg.prediction_type == "sample":
            k = cfg.num_context_frames  # latent frame K is the clean current observation
            if cfg.sample_anchor == "observation":
                out = out + latents[:, :, k : k + 1]
            elif cfg.sample_anchor == "blend":
                sig = self.token_sigma_map(timesteps_per_token, latents).to(out.dtype)
                out = out + (1 - sig) * latents.to(out.dtype) + sig * latents[:, :, k : k + 1].to(out.dtype)
            elif cfg.sample_anchor == "sigma_observation":
                sig = self.token_sigma_map(timesteps_per_token, latents).to(out.dtype)
                out = out + sig * latents[:, :, k : k + 1].to(out.dtype)
            out = self.sample_to_velocity(latents, out, timesteps_per_token)
        return out

    def token_sigma_map(self, timesteps_per_token: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Per-token timesteps ``(B, F * tokens)`` -> ``sigma`` on the latent grid ``(B, 1, F, h, w)``.

        Tokens run frame-major, then patch row, then patch column (the transformer's patch order), so a
        reshape and a broadcast put every token's sigma on its ``p_h x p_w`` pixels (traceable, no gather).
        """
        b, _, f, h, w = latents.shape
        _, p_h, p_w = self.v4s_config.patch_size
        hp, wp = h // p_h, w // p_w
        sig = (timesteps_per_token.float() / 1000.0).reshape(b, 1, f, hp, 1, wp, 1)
        return sig.expand(b, 1, f, hp, p_h, wp, p_w).reshape(b, 1, f, h, w)

    def sample_to_velocity(
        self, latents: torch.Tensor, sample: torch.Tensor, timesteps_per_token: torch.Tensor
    ) -> torch.Tensor:
        """x-prediction -> velocity: ``v = (x_t - x0_hat) / max(sigma, sigma_min)`` (exact where
        ``sigma >= sigma_min``, since ``x_t = (1 - sigma) x0 + sigma noise`` and ``v = noise - x0``)."""
        sig = self.token_sigma_map(timesteps_per_token, latents).clamp_min(self.v4s_config.sigma_min)
        return ((latents.float() - sample.float()) / sig).to(sample.dtype)

    def velocity_to_sample(
        self, latents: torch.Tensor, velocity: torch.Tensor, timesteps_per_token: torch.Tensor
    ) -> torch.Tensor:
        """The one-step clean estimate ``x0_hat = x_t - sigma v`` (the inverse of :meth:`sample_to_velocity`
        for either prediction type; used for the per-sigma denoising diagnostics)."""
        sig = self.token_sigma_map(timesteps_per_token, latents)
        if self.v4s_config.prediction_type == "sample":
            sig = sig.clamp_min(self.v4s_config.sigma_min)
        return (latents.float() - sig * velocity.float()).to(velocity.dtype)
