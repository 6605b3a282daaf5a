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


def test_loss_only_on_target_tokens(pipe):
    batch = _batch()
    loss, logs = flow_matching_loss(pipe, batch, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and set(logs) >= {"loss", "loss_traj", "loss_box", "sigma", "drop_frac"}
    # changing the context or the observation frame's *values* does not enter the loss as a target
    captured = {}
    orig = pipe.predict_velocity

    def spy(latents, tt, pos, emb, cam=None, cam_mask=None):
        out = orig(latents, tt, pos, emb, cam, cam_mask)
        out.retain_grad()
        captured["out"] = out
        return out

    pipe.predict_velocity = spy
    try:
        loss, _ = flow_matching_loss(pipe, batch, generator=torch.Generator().manual_seed(0))
        loss.backward()
    finally:
        del pipe.predict_velocity
    grad = captured["out"].grad
    assert torch.all(grad[:, :, :3] == 0)  # context (2) + observation (1) frames: no loss
    assert torch.all(grad[:, :, 3:].abs().sum(dim=(1, 3, 4)) > 0)
    pipe.transformer.zero_grad()


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
