"""Red-box draw/read-back and the flow-matching loss (shapes, masking, it learns)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from v4s_agent.model.bbox import draw_red_box, read_red_box
from v4s_agent.model.losses import flow_matching_loss
from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline


def _scene(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (120, 110, 90), np.uint8)
    img[h // 2 :] = (80, 80, 80)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    return img


@pytest.mark.parametrize("box", [(20.0, 24.0, 40.0, 44.0), (0.0, 0.0, 12.0, 9.0), (50.0, 30.0, 63.0, 63.0)])
def test_drawn_box_is_read_back(box):
    frame = draw_red_box(_scene(), box)
    got, conf = read_red_box(frame)
    assert got == box and conf > 0.9


def test_read_back_survives_blur_and_noise():
    frame = draw_red_box(_scene(), (16.0, 20.0, 44.0, 48.0)).astype(np.float32)
    frame = cv2.GaussianBlur(frame, (3, 3), 0.6) + np.random.default_rng(1).normal(0, 6, frame.shape)
    got, conf = read_red_box(np.clip(frame, 0, 255).astype(np.uint8))
    assert got is not None and conf > 0.5
    assert np.allclose(got, (16, 20, 44, 48), atol=1.5)


def test_no_box_and_red_blob():
    assert read_red_box(_scene()) == (None, 0.0)
    assert np.array_equal(draw_red_box(_scene(), None), _scene())
    blob = _scene()
    blob[10:30, 10:30] = (255, 0, 0)  # a filled red object is not a box outline
    box, conf = read_red_box(blob)
    assert conf < 0.3
    with pytest.raises(ValueError):
        read_red_box(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        draw_red_box(_scene(), (10, 10, 5, 5))


@pytest.fixture(scope="module")
def pipe() -> Video4SpatialPipeline:
    return Video4SpatialPipeline.from_config_name("tiny", seed=0)


def _batch(b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 3, 4, 16, 16, generator=g) * 2 - 1
    return {
        "context": torch.rand(b, 3, 2, 16, 16, generator=g) * 2 - 1,
        "context_positions": torch.tensor([[0.0, 7.0]] * b),
        "target": target,
        "camera": torch.randn(b, 4, 12, generator=g),
        "camera_mask": torch.tensor([1.0, 0.0] * (b // 2)),
        "instruction": ["go to the chair", "", "find the bed", "go to the sofa"][:b],
        "drop_context": torch.tensor([False, True] * (b // 2)),
    }


def _output_grad(p: Video4SpatialPipeline, batch: dict) -> torch.Tensor:
    """The loss gradient on the denoiser's output (all frames), one fixed draw of noise and sigma."""
    captured = {}
    orig = p.predict_velocity

    def spy(latents, tt, pos, emb, cam=None, cam_mask=None):
        out = orig(latents, tt, pos, emb, cam, cam_mask)
        out.retain_grad()
        captured["out"] = out
        return out

    p.predict_velocity = spy
    try:
        loss, _ = flow_matching_loss(p, batch, generator=torch.Generator().manual_seed(0))
        loss.backward()
    finally:
        del p.predict_velocity
    p.transformer.zero_grad()
    return captured["out"].grad


def test_loss_only_on_target_tokens(pipe):
    batch = _batch()
    loss, logs = flow_matching_loss(pipe, batch, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and set(logs) >= {"loss", "loss_traj", "loss_box", "sigma", "drop_frac"}
    # changing the context or the observation frame's *values* does not enter the loss as a target
    grad = _output_grad(pipe, batch)
    assert torch.all(grad[:, :, :3] == 0)  # context (2) + observation (1) frames: no loss
    assert torch.all(grad[:, :, 3:].abs().sum(dim=(1, 3, 4)) > 0)


def test_a_few_steps_lower_the_loss(pipe):
    torch.manual_seed(0)
    p = Video4SpatialPipeline.from_config_name("tiny", seed=1)
    p.transformer.train()
    opt = torch.optim.AdamW(p.transformer.parameters(), lr=3e-3)
    batch = _batch()

    def loss_now() -> torch.Tensor:
        return flow_matching_loss(p, batch, generator=torch.Generator().manual_seed(0))[0]

    first = float(loss_now().detach())
    for _ in range(10):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    assert float(loss_now().detach()) < 0.8 * first


def test_bad_batch_raises(pipe):
    batch = _batch()
    with pytest.raises(ValueError, match="context"):
        flow_matching_loss(pipe, {**batch, "context": batch["context"][:, :, :1]})
    with pytest.raises(ValueError, match="target"):
        flow_matching_loss(pipe, {**batch, "target": batch["target"][..., :8]})
    with pytest.raises(ValueError, match="instruction"):
        flow_matching_loss(pipe, {**batch, "instruction": ["a"]})
    with pytest.raises(KeyError):
        flow_matching_loss(pipe, {"context": batch["context"]})


def test_end_frame_loss_weight_scales_the_last_trajectory_frame():
    plain = Video4SpatialPipeline.from_config_name("tiny", seed=0)
    cfg = plain.v4s_config
    assert cfg.end_frame_loss_weight == 1.0
    w = 3.0
    heavy = Video4SpatialPipeline.from_config_name("tiny", seed=0, end_frame_loss_weight=w)
    assert heavy.v4s_config.end_frame_loss_weight == w
    batch = _batch()
    g1, g3 = _output_grad(plain, batch), _output_grad(heavy, batch)
    k, nb = cfg.num_context_frames, cfg.num_box_frames
    n = cfg.num_target_frames - 1  # frames in the loss: the targets after the observation
    last = k + cfg.num_target_frames - nb - 1  # the last trajectory frame in the denoiser's output
    for f in range(k + 1, k + cfg.num_target_frames):
        want = (w if f == last else 1.0) * n / (n - 1 + w)  # the loss is normalised by the weights' sum
        a, b = g1[:, :, f], g3[:, :, f]
        nz = a != 0
        assert nz.any()
        assert torch.allclose(b[nz] / a[nz], torch.full_like(a[nz], want), rtol=1e-3)
    with pytest.raises(ValueError, match="end_frame_loss_weight"):
        Video4SpatialPipeline.from_config_name("tiny", end_frame_loss_weight=0.0)
