"""The Wan-VAE latent space (``latent_space="wan_vae"``, the paper config): autoencoder encoder/decoder
graphs at parity and the ONNX Runtime plan equal to PyTorch's, on a tiny random ``AutoencoderKLWan``.

Slow (~60 s of export): run with RUN_SLOW=1. The shipped default works in pixel space (no VAE graphs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.mark.slow
def test_wan_vae_graphs_and_plan(tmp_path: Path) -> None:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler
    from v4s_agent.export.graphs import export_planner
    from v4s_agent.export.runtime_ort import OrtPlannerBackend

    from v4s_agent.model.configuration_model import get_model_config
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline
    from v4s_agent.model.transformer_v4s import V4STransformer3DModel

    cfg = get_model_config(
        "tiny",
        latent_space="wan_vae",
        vae_z_dim=4,
        vae_scale_factor_spatial=4,
        vae_scale_factor_temporal=2,
        num_target_frames=5,
        num_box_frames=1,
        patch_size=(1, 2, 2),
    )
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.1, -0.1, 0.0, 0.2],
        latents_std=[1.5, 0.5, 1.0, 2.0],
    ).eval()
    pipe = Video4SpatialPipeline(
        transformer=V4STransformer3DModel(**cfg.transformer_kwargs()),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=cfg.flow_shift),
        vae=vae,
        model_config=cfg.to_dict(),
    )
    pipe.set_progress_bar_config(disable=True)
    res = export_planner(
        pipe=pipe, idm=None, out_dir=tmp_path / "onnx", components=["denoiser", "vae_encoder", "vae_decoder"]
    )
    for name in ("denoiser", "vae_encoder", "vae_decoder"):
        assert res["parity"][name]["ok"], res["parity"][name]
    assert res["manifest"]["components"]["vae_encoder"]["dynamic_axes"]["frames"]  # one frame per batch item
    rng = np.random.default_rng(0)
    k, h, w = cfg.num_context_frames, cfg.height, cfg.width
    ctx = rng.integers(0, 256, (k, h, w, 3), dtype=np.uint8)
    obs = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    emb, _ = pipe.encode_prompt(["go to the chair"])
    ref = pipe(
        context=ctx,
        context_positions=np.arange(k) * 3,
        observation=obs,
        prompt="go to the chair",
        generator=torch.Generator().manual_seed(1),
    )
    out = OrtPlannerBackend(tmp_path / "onnx", intra_op_threads=1).sample(
        context=ctx,
        context_positions=np.arange(k) * 3,
        observation=obs,
        text_emb=emb.numpy(),
        generator=torch.Generator().manual_seed(1),
    )
    assert np.abs(ref.latents.numpy() - out.latents).max() < 1e-4
    assert np.abs(ref.frames.astype(int) - out.frames.astype(int)).max() <= 1
