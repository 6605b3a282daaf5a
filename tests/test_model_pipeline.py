"""Video4SpatialPipeline: clean context through sampling, joint CFG, save/load, bad inputs, expected slice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from v4s_agent.model.pipeline_v4s import ModelInputError, Video4SpatialPipeline


@pytest.fixture(scope="module")
def pipe() -> Video4SpatialPipeline:
    p = Video4SpatialPipeline.from_config_name("tiny", seed=0)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def inputs() -> dict:
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    obs = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return {
        "context": ctx,
        "context_positions": np.array([3, 17]),
        "observation": obs,
        "prompt": "go to the chair",
    }


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_output_contract(pipe, inputs):
    out = pipe(**inputs, generator=_gen())
    assert out.frames.shape == (1, 4, 16, 16, 3) and out.frames.dtype == np.uint8
    np.testing.assert_array_equal(out.frames[0, 0], inputs["observation"])  # frame 0 = observation
    assert len(out.box) == 1 and len(out.box_confidence) == 1
    assert out.latents.shape == (1, 3, 4, 16, 16)
    assert pipe.model_config["num_target_frames"] == 4  # what VideoPlanner reads


def test_context_and_observation_stay_exactly_clean(pipe, inputs):
    seen = []

    def hook(module, args, kwargs):
        seen.append((args[0].clone(), args[1].clone()))

    h = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        pipe(**inputs, num_inference_steps=3, guidance_scale=2.0, generator=_gen())
    finally:
        h.remove()
    ctx = torch.as_tensor(inputs["context"]).float().div(127.5).sub(1).permute(3, 0, 1, 2)
    obs = torch.as_tensor(inputs["observation"]).float().div(127.5).sub(1).permute(2, 0, 1)
    assert len(seen) == 3
    for x, t in seen:
        assert x.shape[0] == 2  # cond + null branch in one batch
        assert torch.equal(x[0, :, :2], ctx) and torch.equal(x[0, :, 2], obs)  # cond branch: clean context
        assert not torch.allclose(x[1, :, :2], ctx)  # joint CFG: the null branch sees pure-noise context
        assert torch.equal(x[1, :, 2], obs)  # ... but the same clean observation
        assert torch.all(t[:, : 3 * 16] == 0) and torch.all(t[:, 3 * 16 :] > 0)  # t = 0 on clean tokens


def _manual_sample(pipe, inputs, steps: int, w: float, seed: int = 0) -> torch.Tensor:
    """The method written out step by step (reference for the pipeline's loop)."""
    g = _gen(seed)
    ctx = torch.as_tensor(inputs["context"]).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]
    obs = torch.as_tensor(inputs["observation"]).float().div(127.5).sub(1).permute(2, 0, 1)[None, :, None]
    noise = randn_tensor((1, 3, 3, 16, 16), generator=g)
    z_ctx = randn_tensor((1, 3, 2, 16, 16), generator=g) if w > 1 else None
    emb, _ = pipe.encode_prompt([inputs["prompt"]], torch.device("cpu"))
    pos = pipe.frame_positions(torch.tensor([[3.0, 17.0]]), 4)
    clean = torch.cat([ctx, obs], 2)
    x = torch.cat([clean, noise], 2)
    pipe.scheduler.set_timesteps(steps)
    sig = pipe.scheduler.sigmas
    for i, t in enumerate(pipe.scheduler.timesteps):
        tt = pipe.token_timesteps(t.view(1), 2, 6, 16)
        v = pipe.predict_velocity(x, tt, pos, emb)
        if w > 1:
            v_null = pipe.predict_velocity(torch.cat([z_ctx, x[:, :, 2:]], 2), tt, pos, torch.zeros_like(emb))
            v = v_null + w * (v - v_null)
        x = x + (sig[i + 1] - sig[i]) * v
        x = torch.cat([clean, x[:, :, 3:]], 2)
    return x[:, :, 2:]


@torch.no_grad()
def test_guidance_scale_one_is_the_conditional_branch(pipe, inputs):
    out = pipe(**inputs, num_inference_steps=3, guidance_scale=1.0, generator=_gen(), output_type="latent")
    ref = _manual_sample(pipe, inputs, 3, 1.0)
    torch.testing.assert_close(out.latents, ref, rtol=0, atol=1e-5)
    out2 = pipe(**inputs, num_inference_steps=3, guidance_scale=1.0, cfg_mode="text_only", generator=_gen())
    torch.testing.assert_close(out.latents, out2.latents, rtol=0, atol=0)


@torch.no_grad()
def test_joint_cfg_formula(pipe, inputs):
    out = pipe(**inputs, num_inference_steps=3, guidance_scale=3.0, generator=_gen(), output_type="latent")
    ref = _manual_sample(pipe, inputs, 3, 3.0)
    torch.testing.assert_close(out.latents, ref, rtol=0, atol=1e-4)
    text_only = pipe(
        **inputs, num_inference_steps=3, guidance_scale=3.0, cfg_mode="text_only", generator=_gen()
    )
    assert not torch.allclose(out.latents, text_only.latents)


def test_positions_switch_changes_samples(inputs):
    a = Video4SpatialPipeline.from_config_name("tiny", seed=0, positions="source")
    b = Video4SpatialPipeline.from_config_name("tiny", seed=0, positions="contiguous")
    for p in (a, b):
        p.set_progress_bar_config(disable=True)
    la = a(**inputs, generator=_gen()).latents
    lb = b(**inputs, generator=_gen()).latents
    assert not torch.allclose(la, lb)
    assert torch.equal(b.frame_positions(torch.tensor([[3.0, 17.0]]), 4), torch.arange(6.0)[None])
    assert torch.equal(
        a.frame_positions(torch.tensor([[3.0, 17.0]]), 4), torch.tensor([[3.0, 17, 18, 19, 20, 21]])
    )


def test_save_load_round_trip_identical(pipe, inputs, tmp_path):
    pipe.save_pretrained(tmp_path)
    names = {p.name for p in (tmp_path / "transformer").iterdir()}
    assert names == {"config.json", "diffusion_pytorch_model.safetensors"}  # no MiniLM weights inside
    loaded = Video4SpatialPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert not loaded.transformer.training
    a = pipe(**inputs, generator=_gen(3))
    b = loaded(**inputs, generator=_gen(3))
    np.testing.assert_array_equal(a.frames, b.frames)
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)


def test_checkpoint_config_mismatch_raises(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    idx = json.loads((tmp_path / "model_index.json").read_text())
    idx["model_config"]["num_layers"] = 5
    (tmp_path / "model_index.json").write_text(json.dumps(idx))
    with pytest.raises(ValueError, match="does not match its sha256"):  # an edited file is caught first
        Video4SpatialPipeline.from_pretrained(tmp_path)
    from v4s_agent.integrity import write_checksums

    (tmp_path / "checksums.json").unlink()
    write_checksums(tmp_path)  # a folder consistent with itself, but not with its weights
    with pytest.raises(ValueError, match="does not match model config"):
        Video4SpatialPipeline.from_pretrained(tmp_path)


def test_bad_inputs_raise(pipe, inputs):
    ctx, obs = inputs["context"], inputs["observation"]
    with pytest.raises(ModelInputError, match="16x16"):
        pipe(context=np.zeros((2, 32, 32, 3), np.uint8), observation=obs)
    with pytest.raises(ModelInputError, match="num_context_frames"):
        pipe(context=np.concatenate([ctx, ctx]), observation=obs)
    with pytest.raises(ModelInputError, match="empty"):
        pipe(context=np.zeros((0, 16, 16, 3), np.uint8), observation=obs)
    with pytest.raises(ModelInputError, match="required"):
        pipe(context=None, observation=obs)
    with pytest.raises(ModelInputError, match="camera"):
        pipe(context=ctx, observation=obs, camera=np.zeros((3, 12), np.float32))
    with pytest.raises(ModelInputError, match=r"\[-1, 1\]"):
        pipe(context=torch.full((1, 3, 2, 16, 16), 5.0), observation=obs)
    with pytest.raises(ModelInputError, match="num_frames"):
        pipe(context=ctx, observation=obs, num_frames=9)
    with pytest.raises(ModelInputError, match="context_positions"):
        pipe(context=ctx, observation=obs, context_positions=[1, 2, 3])


def test_batch_camera_and_callback(pipe, inputs):
    steps = []

    def cb(p, i, t, kw):
        steps.append(i)
        return {"latents": kw["latents"]}

    out = pipe(
        **{**inputs, "prompt": ["go to the chair", ""]},
        camera=np.zeros((4, 12), np.float32),
        generator=_gen(),
        callback_on_step_end=cb,
    )
    assert out.frames.shape[0] == 2 and steps == [0, 1]


def test_expected_slice(pipe, inputs):
    out = pipe(**inputs, generator=_gen(0), output_type="latent")
    got = out.latents[0, 0, -1, 0, :8]
    expected = torch.tensor(EXPECTED_SLICE)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)


# tiny config, seed 0, 2 steps, w = 2 (torch 2.13 CPU, diffusers 0.42.1)
EXPECTED_SLICE = [0.0669, -0.4727, -0.3059, 0.3312, -0.5756, -0.3231, 1.9678, -0.7359]


def test_context_pose_is_embedded_only_when_enabled(inputs):
    """``context_pose`` models see the context frames' relative poses (not when the context is dropped);
    other models ignore them; the per-frame camera tensor is exactly [context poses, target path]."""
    pipes = {}
    for flag in (True, False):
        p = Video4SpatialPipeline.from_config_name("tiny", seed=0, context_pose=flag)
        p.set_progress_bar_config(disable=True)
        g = torch.Generator().manual_seed(5)  # the camera embedder starts as a no-op: make it act
        w = p.transformer.camera_embedder.linear_2.weight
        w.data = torch.randn(w.shape, generator=g) * 0.5
        pipes[flag] = p
    rng = np.random.default_rng(1)
    ca, cb = (rng.normal(size=(2, 12)).astype(np.float32) for _ in range(2))

    def run(p, cam, **kw):
        kw = {"guidance_scale": 1.0, "generator": _gen(), "output_type": "latent", **kw}
        return p(**inputs, context_camera=cam, **kw)

    on, off = pipes[True], pipes[False]
    assert not torch.equal(run(on, ca).latents, run(on, cb).latents)
    assert torch.equal(run(off, ca).latents, run(off, cb).latents)
    assert torch.equal(run(off, ca).latents, run(off, None).latents)
    assert torch.equal(run(on, ca, drop_context=True).latents, run(on, cb, drop_context=True).latents)
    full, mask = on.camera_inputs(None, None, 1, 2, torch.device("cpu"), torch.from_numpy(ca)[None])
    tl = on.v4s_config.num_latent_target_frames
    assert torch.equal(full[0, :2], torch.from_numpy(ca)) and not full[0, 2:].any()
    assert mask.tolist() == [[1.0, 1.0] + [0.0] * tl]
    with pytest.raises(ModelInputError, match="context_camera"):
        run(on, np.zeros((3, 12), np.float32))
