"""V4STransformer3DModel: explicit-position RoPE, per-token timesteps, camera conditioning, configs."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from v4s_agent.model.configuration_model import ModelConfig, get_model_config
from v4s_agent.model.transformer_v4s import V4STransformer3DModel, WanFramePosRotaryEmbed


def _tiny_model(seed: int = 0) -> V4STransformer3DModel:
    torch.manual_seed(seed)
    return V4STransformer3DModel(**get_model_config("tiny").transformer_kwargs()).eval()


def _inputs(b: int = 2, f: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, f, 16, 16, generator=g)
    t = torch.rand(b, f * 16, generator=g) * 1000
    e = torch.randn(b, 8, 384, generator=g)
    return x, t, e


@pytest.mark.parametrize("head_dim,patch,f,h,w", [(12, (1, 4, 4), 6, 16, 16), (128, (1, 2, 2), 9, 16, 26)])
def test_rope_contiguous_equals_diffusers_bit_for_bit(head_dim, patch, f, h, w):
    ours = WanFramePosRotaryEmbed(head_dim, patch, 1024)
    ref = WanRotaryPosEmbed(head_dim, patch, 1024)
    x = torch.zeros(2, 4, f, h, w)
    pos = torch.arange(f, dtype=torch.float32).expand(2, -1)
    cos, sin = ours(x, pos)
    rcos, rsin = ref(x)
    assert torch.equal(cos, rcos.expand_as(cos)) and torch.equal(sin, rsin.expand_as(sin))
    # and the no-positions path is diffusers' own code
    cos0, sin0 = ours(x)
    assert torch.equal(cos0, rcos) and torch.equal(sin0, rsin)


def test_model_with_contiguous_positions_equals_wan():
    model = _tiny_model()
    wan = WanTransformer3DModel(
        **{k: v for k, v in model.config.items() if k != "camera_dim" and not k.startswith("_")}
    )
    missing, unexpected = wan.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("camera_embedder") for k in unexpected)
    x, t, e = _inputs()
    pos = torch.arange(6).float().expand(2, -1)
    with torch.no_grad():
        ours = model(x, t, e, frame_positions=pos).sample
        ref = wan.eval()(x, t, e).sample
    assert torch.equal(ours, ref)


def test_source_positions_change_output():
    model = _tiny_model()
    x, t, e = _inputs()
    with torch.no_grad():
        a = model(x, t, e, frame_positions=torch.arange(6).float().expand(2, -1)).sample
        b = model(x, t, e, frame_positions=torch.tensor([[0.0, 9.0, 10, 11, 12, 13]] * 2)).sample
    assert not torch.allclose(a, b, atol=1e-5)


def test_per_token_timesteps_reach_the_blocks():
    model = _tiny_model()
    x, t, e = _inputs()
    seen: list[torch.Tensor] = []
    h = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[2].clone()))
    t2 = t.clone()
    t2[:, :16] = 0.0  # first frame's tokens clean
    with torch.no_grad():
        model(x, t, e)
        model(x, t2, e)
    h.remove()
    a, b = seen
    assert a.shape == (2, 96, 6, 24)  # (B, seq_len, 6, inner_dim): per-token modulation
    assert not torch.allclose(a[:, :16], b[:, :16])  # changed tokens changed
    assert torch.equal(a[:, 16:], b[:, 16:])  # the others did not


def test_camera_embedding_starts_as_noop_and_is_masked():
    model = _tiny_model()
    x, t, e = _inputs()
    cam = torch.randn(2, 6, 12)
    with torch.no_grad():
        a = model(x, t, e).sample
        b = model(x, t, e, camera=cam, camera_mask=torch.ones(2)).sample
        assert torch.equal(a, b)  # zero-initialised last layer
        torch.nn.init.normal_(model.camera_embedder.linear_2.weight)
        c = model(x, t, e, camera=cam, camera_mask=torch.ones(2)).sample
        d = model(x, t, e, camera=cam, camera_mask=torch.zeros(2)).sample
    assert not torch.allclose(a, c) and torch.equal(a, d)


def test_bad_model_inputs_raise():
    model = _tiny_model()
    x, t, e = _inputs()
    with pytest.raises(ValueError, match="per-token timestep"):
        model(x, t[:, :10], e)
    with pytest.raises(ValueError, match="frame_positions"):
        model(x, t, e, frame_positions=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="camera"):
        model(x, t, e, camera=torch.zeros(2, 3, 12))


def test_configs_validate():
    with pytest.raises(ValueError, match="unknown model config"):
        get_model_config("huge")
    with pytest.raises(ValueError, match="positions"):
        get_model_config("tiny", positions="random")
    with pytest.raises(ValueError, match="cfg_mode"):
        get_model_config("tiny", cfg_mode="none")
    with pytest.raises(ValueError, match="multiples"):
        get_model_config("tiny", height=18)
    with pytest.raises(ValueError, match="num_target_frames"):
        get_model_config("tiny", num_target_frames=2, num_box_frames=1)
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"heigth": 3})
    d = get_model_config("default")
    assert (d.height, d.width, d.num_context_frames, d.num_target_frames, d.num_box_frames) == (
        64,
        64,
        12,
        11,
        2,
    )
    assert d.train_sigma_high_frac == 0.3 and d.target_position_gap == 8.0
    with pytest.raises(ValueError, match="train_sigma_high_frac"):
        ModelConfig(train_sigma_high_frac=1.5)
    with pytest.raises(ValueError, match="target_position_gap"):
        ModelConfig(target_position_gap=-1.0)
    assert ModelConfig.from_dict(d.to_dict()) == d
