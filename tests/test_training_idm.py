"""Inverse-dynamics model: shapes, exact save/load round trip, clear errors, a short training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import TINY_GEN
from v4s_agent.training.config import IDMTrainConfig
from v4s_agent.training.generate_data import generate
from v4s_agent.training.train_idm import train_idm

from v4s_agent.agent.inverse_dynamics import IDMConfig, InverseDynamicsModel


def test_forward_shape_and_input_checks() -> None:
    m = InverseDynamicsModel(IDMConfig(height=32, width=32, base_channels=8, num_stages=2))
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert m(x, x).shape == (3, 4)
    with pytest.raises(ValueError, match="same shape"):
        m(x, x[:, :, :16])
    with pytest.raises(ValueError, match="at least 8x8"):
        IDMConfig(height=4, width=4)


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = InverseDynamicsModel(height=32, width=32, base_channels=8, num_stages=2).eval()
    m.save_pretrained(tmp_path / "idm")
    assert json.loads((tmp_path / "idm" / "config.json").read_text())["height"] == 32
    m2 = InverseDynamicsModel.from_pretrained(tmp_path / "idm")
    assert not m2.training
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x0, x1 = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert torch.equal(m(x0, x1), m2(x0, x1))
    with pytest.raises(FileNotFoundError, match="not an inverse-dynamics checkpoint"):
        InverseDynamicsModel.from_pretrained(tmp_path)


def test_short_training_run_on_env_transitions(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    data = tmp_path_factory.getbasetemp() / "v4s_tiny_train"  # shared, resumable
    generate(TINY_GEN, 2, data, workers=1, progress=False)
    cfg = IDMTrainConfig(
        data_dir=str(data),
        height=32,
        width=32,
        base_channels=8,
        num_stages=2,
        batch_size=16,
        max_steps=8,
        num_threads=1,
    )
    m = train_idm(cfg, tmp_path, progress=False)
    assert np.isfinite(m["final_loss"]) and 0.0 <= m["val"]["accuracy"] <= 1.0
    model = InverseDynamicsModel.from_pretrained(tmp_path / "idm")
    assert (model.config.height, model.config.width) == (32, 32)
    # the agent's reader of the IDM (action_decoding.idm_probs) accepts it
    from v4s_agent.agent.action_decoding import idm_probs

    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    p = idm_probs(model, frames)
    assert p.shape == (2, 4) and np.allclose(p.sum(1), 1, atol=1e-5)
