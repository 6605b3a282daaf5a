"""Data generation from the real env, shard streaming, context sampling, CFG dropout, data faults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import TINY_GEN, tiny_data
from v4s_agent.training.dataset import (
    DataError,
    V4SShardDataset,
    load_idm_transitions,
    load_shard,
    make_dataloader,
    sample_context,
    window_indices,
)
from v4s_agent.training.generate_data import DataGenerationError, GenConfig, generate, shard_name

from v4s_agent.model.configuration_model import get_model_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_data(tmp_path_factory.getbasetemp())


def test_manifest_counts_and_shards(data_dir: Path) -> None:
    m = json.loads((data_dir / "manifest.json").read_text())
    assert m["n_shards"] == 2 and m["generator_seed"] == 0 and m["version"]
    assert m["totals"]["n_obj"] > 0 and m["totals"]["n_tour"] > 0 and m["totals"]["n_idm"] > 0
    z = load_shard(data_dir / shard_name(0))
    assert z["tour_frames"].dtype == np.uint8 and z["tour_frames"].shape[1:] == (32, 32, 3)
    assert z["tour_poses"].shape[1:] == (4, 4)
    n_obj = len(z["obj_offsets"]) - 1
    assert z["obj_box_frames"].shape[0] == n_obj and z["obj_instructions"].shape[0] == n_obj
    assert len(z["obj_boxes"]) == len(z["obj_frames"]) == len(z["obj_actions"])
    assert z["pose_camera"].shape == (len(z["pose_frames"]), 12)
    assert len(set(z["obj_instructions"].ravel().tolist())) > 1  # varied templates


def test_generation_is_resumable(data_dir: Path) -> None:
    p = data_dir / shard_name(1)
    t = p.stat().st_mtime_ns
    generate(TINY_GEN, 2, data_dir, workers=1, progress=False)
    assert p.stat().st_mtime_ns == t  # finished shards are never redone
    with pytest.raises(DataGenerationError, match="different settings"):
        generate(
            GenConfig(**{**TINY_GEN.__dict__, "object_episodes": 5}), 2, data_dir, workers=1, progress=False
        )


def test_batch_matches_the_contract(data_dir: Path) -> None:
    m = get_model_config("tiny")
    b = next(iter(make_dataloader(data_dir, m, batch_size=3, p_drop=0.5)))
    K, T, H, W = m.num_context_frames, m.num_target_frames, m.height, m.width
    assert b["context"].shape == (3, 3, K, H, W) and b["context"].dtype == torch.float32
    assert b["target"].shape == (3, 3, T, H, W)
    assert b["context"].min() >= -1 and b["context"].max() <= 1
    assert b["context_positions"].shape == (3, K) and b["camera"].shape == (3, T, 12)
    assert b["camera_mask"].shape == (3,) and b["drop_context"].dtype == torch.bool
    assert isinstance(b["instruction"], list) and len(b["instruction"]) == 3
    for pos in b["context_positions"]:
        assert torch.all(pos[1:] >= pos[:-1])


def test_joint_cfg_dropout_drops_instruction_and_context_together(data_dir: Path) -> None:
    m = get_model_config("tiny")
    it = iter(make_dataloader(data_dir, m, batch_size=8, p_drop=0.5))
    seen = 0
    for _ in range(4):
        b = next(it)
        for instr, drop in zip(b["instruction"], b["drop_context"].tolist(), strict=True):
            assert (instr == "") == drop
            seen += drop
    assert seen > 0


def test_context_sampling_modes() -> None:
    rng = np.random.default_rng(0)
    idx, pos = sample_context(48, 6, "sparse", rng)
    assert len(set(idx.tolist())) == 6 and np.all(np.diff(idx) > 0) and np.array_equal(idx, pos)
    idx, pos = sample_context(48, 6, "contiguous", rng)
    assert np.all(np.diff(idx) == 1) and np.array_equal(pos, np.arange(6))
    assert np.array_equal(window_indices(3, 5, True, rng), [0, 1, 2, 2, 2])  # stopped: last frame repeats
    assert np.array_equal(window_indices(10, 4, True, rng), [6, 7, 8, 9])


def test_stream_resume_and_rank_sharding(data_dir: Path) -> None:
    m = get_model_config("tiny")
    full = iter(make_dataloader(data_dir, m, batch_size=2, seed=3))
    batches = [next(full) for _ in range(5)]
    resumed = next(iter(make_dataloader(data_dir, m, batch_size=2, seed=3, start_batch=4)))
    assert torch.equal(resumed["target"], batches[4]["target"])
    assert resumed["instruction"] == batches[4]["instruction"]
    # two ranks: disjoint shards within an epoch (2 shards, 2 ranks; reshuffled every epoch)
    ds = V4SShardDataset(data_dir, m, world_size=2)
    for epoch in range(3):
        shards = [{si for si, _, _, _ in ds._items(epoch, r, 2)} for r in range(2)]
        assert shards[0] and shards[1] and not shards[0] & shards[1]


def test_missing_and_corrupt_shards_raise_clear_errors(data_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(data_dir, bad)
    m = get_model_config("tiny")
    raw = (bad / shard_name(0)).read_bytes()
    (bad / shard_name(0)).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="corrupt shard"):
        load_shard(bad / shard_name(0))
    (bad / shard_name(0)).unlink()
    with pytest.raises(DataError, match="missing shard"):
        V4SShardDataset(bad, m)
    with pytest.raises(DataError, match="no manifest.json"):
        V4SShardDataset(tmp_path, m)
    with pytest.raises(DataError, match="not found"):
        V4SShardDataset(tmp_path / "nope", m)


def test_idm_transitions(data_dir: Path) -> None:
    f0, f1, y = load_idm_transitions(data_dir)
    assert f0.shape == f1.shape and f0.shape[0] == len(y) and f0.dtype == np.uint8
    assert set(np.unique(y).tolist()) <= {0, 1, 2, 3} and (y == 1).any()


def test_stream_resume_with_dataloader_workers(data_dir: Path) -> None:
    """Workers deliver batches round-robin; a resumed loader must continue the same batch sequence."""
    m = get_model_config("tiny")
    full = iter(make_dataloader(data_dir, m, batch_size=2, seed=1, num_workers=2))
    batches = [next(full) for _ in range(6)]
    resumed = iter(make_dataloader(data_dir, m, batch_size=2, seed=1, num_workers=2, start_batch=3))
    for i in range(3):
        assert torch.equal(next(resumed)["target"], batches[3 + i]["target"])
