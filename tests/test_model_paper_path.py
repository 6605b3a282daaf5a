"""The ``paper`` config's loading path: real Wan2.x diffusers-format folders, tested on a tiny random one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from v4s_agent.model.configuration_model import get_model_config
from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline, build_pipeline


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        "<pad>": 0,
        "</s>": 1,
        "<unk>": 2,
        **{w: i + 3 for i, w in enumerate(["go", "to", "the", "chair", "a", "bed"])},
    }
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    """A tiny random Wan checkpoint in diffusers' layout (what Wan2.2-TI2V-5B-Diffusers looks like)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    root = tmp_path_factory.mktemp("wan_tiny")
    torch.manual_seed(0)
    WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    ).save_pretrained(root / "transformer")
    AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).save_pretrained(root / "vae")
    UMT5EncoderModel(
        UMT5Config(vocab_size=16, d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ).save_pretrained(root / "text_encoder")
    _tiny_tokenizer().save_pretrained(root / "tokenizer")
    FlowMatchEulerDiscreteScheduler(shift=5.0).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    return root


def _cfg(path):
    return get_model_config(
        "paper",
        height=32,
        width=32,
        num_context_frames=2,
        num_target_frames=5,
        num_box_frames=1,
        vae_z_dim=16,
        vae_scale_factor_spatial=8,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        ffn_dim=32,
        freq_dim=16,
        text_dim=32,
        max_text_len=8,
        rope_max_seq_len=32,
        num_inference_steps=2,
        pretrained_path=str(path),
    )


def test_paper_config_dims():
    cfg = get_model_config("paper")
    assert (cfg.height, cfg.width) == (256, 416)
    assert cfg.num_attention_heads * cfg.attention_head_dim == 3072 and cfg.num_layers == 30
    assert cfg.latent_space == "wan_vae" and cfg.text_encoder == "umt5"
    with pytest.raises(ValueError, match="pretrained_path"):
        build_pipeline(cfg)  # no weights given: clear error, never a download


def test_loads_wan_weights_and_samples(wan_folder):
    from diffusers import WanTransformer3DModel

    pipe = build_pipeline(_cfg(wan_folder))
    ref = WanTransformer3DModel.from_pretrained(wan_folder / "transformer")
    ours = pipe.transformer.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(ours[k], v), k
    assert not pipe.transformer.camera_embedder.linear_2.weight.detach().any()  # starts as a no-op
    pipe.set_progress_bar_config(disable=True)
    ctx = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    out = pipe(
        context=ctx,
        context_positions=[0, 7],
        observation=ctx[0],
        prompt="go to the chair",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.frames.shape == (1, 5, 32, 32, 3)
    np.testing.assert_array_equal(out.frames[0, 0], ctx[0])  # frame 0 is the observation
    assert out.latents.shape == (1, 16, 2, 4, 4)  # 1 + (5-1)/4 latent frames


def test_paper_loss_runs(wan_folder):
    from v4s_agent.model.losses import flow_matching_loss

    pipe = build_pipeline(_cfg(wan_folder))
    b = 1
    batch = {
        "context": torch.rand(b, 3, 2, 32, 32) * 2 - 1,
        "context_positions": torch.tensor([[0.0, 4.0]]),
        "target": torch.rand(b, 3, 5, 32, 32) * 2 - 1,
        "camera": torch.zeros(b, 5, 12),
        "camera_mask": torch.zeros(b),
        "instruction": ["go to the bed"],
        "drop_context": torch.tensor([False]),
    }
    loss, logs = flow_matching_loss(pipe, batch)
    loss.backward()
    assert torch.isfinite(loss) and logs["loss"] > 0


def test_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="transformer"):
        Video4SpatialPipeline.from_wan_pretrained(tmp_path, _cfg(tmp_path))
