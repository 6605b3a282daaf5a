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
    build_sample,
    choose_context,
    choose_view_context,
    clip_window,
    load_idm_transitions,
    load_shard,
    make_dataloader,
    near_schedule,
    sample_context,
    view_distance,
)
from v4s_agent.training.generate_data import DataGenerationError, GenConfig, generate, shard_name

from v4s_agent.model.configuration_model import get_model_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_data(tmp_path_factory.getbasetemp())


def test_manifest_counts_and_shards(data_dir: Path) -> None:
    m = json.loads((data_dir / "manifest.json").read_text())
    assert m["n_shards"] == 2 and m["generator_seed"] == 0 and m["version"]
    assert m["totals"]["n_visits_ok"] > 0 and m["totals"]["n_video"] > 200 and m["totals"]["n_idm"] > 0
    z = load_shard(data_dir / shard_name(0))
    n = len(z["video_frames"])
    assert z["video_frames"].dtype == np.uint8 and z["video_frames"].shape[1:] == (32, 32, 3)
    assert z["video_poses"].shape == (n, 4, 4) and z["video_actions"].shape == (n,)
    assert z["video_boxes"].shape == (n, len(z["categories"]), 4)
    assert z["video_actions"][-1] == -1 and set(np.unique(z["video_actions"][:-1])) <= {1, 2, 3}
    v = len(z["visit_end"])
    assert z["visit_instructions"].shape[0] == v and np.all(z["visit_start"] <= z["visit_end"])
    assert len(set(z["visit_instructions"].ravel().tolist())) > 1  # varied templates
    # a visit that ends centred has its goal's box in its end frame, with SD < 0.2
    for e in np.nonzero(z["visit_ok"])[0]:
        assert not np.isnan(z["video_boxes"][z["visit_end"][e], z["visit_category"][e]]).any()
        assert z["visit_sd"][e] < 0.2


def test_generation_is_resumable(data_dir: Path) -> None:
    p = data_dir / shard_name(1)
    t = p.stat().st_mtime_ns
    generate(TINY_GEN, 2, data_dir, workers=1, progress=False)
    assert p.stat().st_mtime_ns == t  # finished shards are never redone
    with pytest.raises(DataGenerationError, match="different settings"):
        generate(
            GenConfig(**{**TINY_GEN.__dict__, "random_walk_steps": 5}), 2, data_dir, workers=1, progress=False
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


def test_view_context_replaces_only_pose_clips_context(data_dir: Path) -> None:
    """``view_prob=1``: every pose clip's context is its path's closest views from another pass of the
    video (the context poses say where they are); object clips keep theirs; 0 leaves the stream as it was."""
    from v4s_agent.envs.scene_video import VIEW_MARGIN

    m = get_model_config("tiny", context_pose=True)
    z = load_shard(data_dir / shard_name(0))
    ep = int(np.nonzero(z["visit_ok"])[0][0])
    for kind in ("pose", "obj"):
        a = build_sample(z, kind, ep, np.random.default_rng(3), m, p_drop=0.0)
        b = build_sample(z, kind, ep, np.random.default_rng(3), m, p_drop=0.0, view_prob=1.0)
        assert torch.equal(a["target"], b["target"])  # the same clip
        if kind == "obj":
            assert torch.equal(a["context"], b["context"])
            continue
        cidx = b["context_positions"].numpy().astype(int)
        assert not torch.equal(a["context"], b["context"]) and len(cidx) == m.num_context_frames
        # the clip's window, drawn as build_sample draws it (end-window draw, then the window)
        rng = np.random.default_rng(3)
        t = m.num_target_frames - m.num_box_frames
        w = clip_window(z, "pose", ep, t, bool(rng.random() < 0.5), rng)
        assert np.array_equal(b["target"][:, :t], a["target"][:, :t])
        rest = np.setdiff1d(np.arange(len(z["video_frames"])), np.arange(w.min(), w.max() + 1))
        far = rest[(rest < w.min() - VIEW_MARGIN) | (rest > w.max() + VIEW_MARGIN)]
        assert not set(cidx.tolist()) & set(w.tolist())
        for ref in w[::-1][: m.num_context_frames - 1]:
            d = view_distance(z["video_poses"], z["video_poses"][ref])
            assert d[cidx].min() == pytest.approx(d[far].min())


def test_goal_context_holds_the_goal_views_soonest_reached(data_dir: Path) -> None:
    """``choose_goal_context``: up to ``GOAL_VIEWS`` frames that show the goal centred, from outside the
    margin, the soonest reached from the observation first (floor distance with ``rank="floor"``); an
    object clip with ``goal_prob=1`` gets them; pose clips and ``goal_prob=0`` keep the stream as it was."""
    from v4s_agent.envs.scene_video import (
        GOAL_VIEWS,
        VIEW_MARGIN,
        choose_goal_context,
        exact_goal_frames,
        nearest_distinct_views,
        reach_steps,
    )

    z = load_shard(data_dir / shard_name(0))
    ep = int(np.nonzero(z["visit_ok"])[0][0])
    cat = int(z["visit_category"][ep])
    g = exact_goal_frames(z, cat)
    assert len(g) and int(z["visit_end"][ep]) in g.tolist()  # a visit ends with its goal centred
    w = clip_window(z, "obj", ep, 5, True, np.random.default_rng(0))
    far = g[(g < w.min() - VIEW_MARGIN) | (g > w.max() + VIEW_MARGIN)]
    obs = z["video_poses"][w[0]]
    for rank, cost in (
        ("reach", reach_steps(obs, z["video_poses"][far])),
        ("floor", np.linalg.norm(z["video_poses"][far][:, [0, 2], 3] - obs[[0, 2], 3], axis=1)),
    ):
        cidx, pos = choose_goal_context(z, w, 6, np.random.default_rng(1), g, cat, rank=rank)
        assert np.array_equal(cidx, pos) and len(cidx) == 6 and not set(cidx.tolist()) & set(w.tolist())
        first = nearest_distinct_views(z["video_poses"], far, obs, 1, rank)[0]
        assert cost[far.tolist().index(first)] == cost.min()
        picked = nearest_distinct_views(z["video_poses"], far, obs, min(GOAL_VIEWS, 5), rank)
        assert picked and set(picked) <= set(cidx.tolist())  # every picked goal view is in the context
    with pytest.raises(ValueError, match="rank"):
        nearest_distinct_views(z["video_poses"], far, obs, 1, "straight")
    with pytest.raises(ValueError, match="pose"):
        nearest_distinct_views(z["video_poses"], far, obs[[0, 2], 3], 1)
    # one goal view, reach-ranked: the training sample's context holds the soonest reached
    m1 = get_model_config("tiny", context_pose=True)
    s1 = build_sample(z, "obj", ep, np.random.default_rng(5), m1, p_drop=0.0, end_window_prob=1.0,
                      goal_prob=1.0, goal_views=1, goal_rank="reach")  # fmt: skip
    w1 = clip_window(z, "obj", ep, m1.num_target_frames - m1.num_box_frames, True, np.random.default_rng(5))
    far1 = g[(g < w1.min() - VIEW_MARGIN) | (g > w1.max() + VIEW_MARGIN)]
    got = set(s1["context_positions"].numpy().astype(int).tolist()) & set(far1.tolist())
    assert nearest_distinct_views(z["video_poses"], far1, z["video_poses"][w1[0]], 1)[0] in got
    # no goal view outside the margin: the natural context
    nat, _ = choose_context(z, w, 6, "sparse", np.random.default_rng(1), 0.0, cat)
    none, _ = choose_goal_context(z, w, 6, np.random.default_rng(1), np.zeros(0, np.int64), cat)
    assert np.array_equal(nat, none)
    m = get_model_config("tiny", context_pose=True)
    a = build_sample(z, "obj", ep, np.random.default_rng(5), m, p_drop=0.0, end_window_prob=1.0)
    b = build_sample(
        z, "obj", ep, np.random.default_rng(5), m, p_drop=0.0, end_window_prob=1.0, goal_prob=1.0
    )
    assert torch.equal(a["target"], b["target"])
    w5 = clip_window(z, "obj", ep, m.num_target_frames - m.num_box_frames, True, np.random.default_rng(0))
    far5 = g[(g < w5.min() - VIEW_MARGIN) | (g > w5.max() + VIEW_MARGIN)]
    assert len(far5) and set(b["context_positions"].numpy().astype(int).tolist()) & set(far5.tolist())
    c = build_sample(z, "pose", ep, np.random.default_rng(5), m, p_drop=0.0)
    d = build_sample(z, "pose", ep, np.random.default_rng(5), m, p_drop=0.0, goal_prob=1.0)
    assert torch.equal(c["context"], d["context"])  # pose clips: goal views do not apply


def test_reach_steps_counts_turn_go_turn_actions() -> None:
    """``reach_steps``: 1 m straight ahead is 4 forward steps; the same spot turned 90 deg is 6 turns;
    1 m behind, facing the same way, is 12 turns + 4 steps + 12 turns."""
    from v4s_agent.envs.scene_video import reach_steps

    def pose(x: float, z: float, yaw_deg: float) -> np.ndarray:
        t = np.radians(yaw_deg)  # looks along -z at yaw 0, turning left is +yaw
        P = np.eye(4)
        P[:3, :3] = [[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]]
        P[0, 3], P[2, 3] = x, z
        return P

    here = pose(0, 0, 0)
    got = reach_steps(here, np.stack([pose(0, -1, 0), pose(0, 0, 90), pose(0, 1, 0), here]))
    assert got.tolist() == [4, 6, 28, 0]


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
    cand = np.arange(48)
    idx, pos = sample_context(cand, 6, "sparse", rng)
    assert len(set(idx.tolist())) == 6 and np.all(np.diff(idx) > 0) and np.array_equal(idx, pos)
    idx, pos = sample_context(cand, 6, "contiguous", rng)
    assert np.all(np.diff(idx) == 1) and np.array_equal(pos, np.arange(6))
    with pytest.raises(ValueError, match="no context candidates"):
        sample_context(np.zeros(0, np.int64), 6, "sparse", rng)
    assert near_schedule(0, 0.9, 0.0, 100) == 0.9 and near_schedule(50, 0.9, 0.0, 100) == pytest.approx(0.45)
    assert near_schedule(500, 0.9, 0.1, 100) == pytest.approx(0.1) and near_schedule(5, 0.9, 0.2, 0) == 0.2


def test_clips_and_context_come_from_one_video(data_dir: Path) -> None:
    """Object clips end their visit centred; the context never holds the clip's own frames, shows the goal
    in at least one frame, and with near_prob=1 holds the video's closest view to the clip's last frame."""
    z = load_shard(data_dir / shard_name(0))
    n = len(z["video_frames"])
    rng = np.random.default_rng(0)
    ok = np.nonzero(z["visit_ok"])[0]
    for e in ok:
        w = clip_window(z, "obj", int(e), 5, True, rng)
        assert w[-1] == z["visit_end"][e] and np.all(np.diff(w) <= 1)
        cat = int(z["visit_category"][e])
        for near in (0.0, 1.0):
            cidx, pos = choose_context(z, w, 6, "sparse", rng, near, cat)
            assert np.array_equal(cidx, pos) and np.all(np.diff(cidx) >= 0)
            assert not set(cidx.tolist()) & set(range(int(w.min()), int(w.max()) + 1))
            assert (~np.isnan(z["video_boxes"][cidx, cat]).any(-1)).any()
            if near == 1.0:
                rest = np.setdiff1d(np.arange(n), np.arange(w.min(), w.max() + 1))
                d = view_distance(z["video_poses"], z["video_poses"][w[-1]])
                assert d[cidx].min() == pytest.approx(d[rest].min())
    # near_frames: the closest views of the last frame and every other one back are all in the context
    w = clip_window(z, "pose", 0, 9, False, rng)
    cidx, _ = choose_context(z, w, 6, "sparse", rng, 1.0, None, near_frames=4)
    rest = np.setdiff1d(np.arange(n), np.arange(w.min(), w.max() + 1))
    for ref in w[::-2][:4]:
        d = view_distance(z["video_poses"], z["video_poses"][ref])
        assert d[cidx].min() == pytest.approx(d[rest].min())
    # near_frames beyond every other frame: the skipped ones follow, up to k - 1 views
    cidx, _ = choose_context(z, w, 12, "sparse", rng, 1.0, None, near_frames=9)
    for ref in w:
        d = view_distance(z["video_poses"], z["video_poses"][ref])
        assert d[cidx].min() == pytest.approx(d[rest].min())
    # near_margin: the matched views come from outside the margin around the clip (another pass)
    margin = 10
    far = rest[(rest < w.min() - margin) | (rest > w.max() + margin)]
    vidx, vpos = choose_view_context(z, w, 12, rng, margin=margin)
    assert np.array_equal(vidx, vpos) and len(vidx) == 12 and not set(vidx.tolist()) & set(w.tolist())
    for ref in w:
        d = view_distance(z["video_poses"], z["video_poses"][ref])
        assert d[vidx].min() == pytest.approx(d[far].min())
    # use time (the path is not in the video): each path pose's closest view, the rest random, k in all
    from v4s_agent.envs.scene_video import closest_views

    idx = closest_views(z["video_poses"], z["video_poses"][w], 12, np.random.default_rng(0))
    assert len(idx) == 12 and np.all(np.diff(idx) > 0) and set(w[::-1][:11].tolist()) <= set(idx.tolist())
    short = closest_views(z["video_poses"][:3], z["video_poses"][w], 6, np.random.default_rng(0))
    assert len(short) == 6 and set(short.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="path"):
        closest_views(z["video_poses"], np.zeros((0, 4, 4)), 6, np.random.default_rng(0))
    # the look-around after a visit returns to the visit's end view: an exact copy exists in the video
    e = int(ok[0])
    assert view_distance(z["video_poses"][z["visit_end"][e] + 24 : z["visit_end"][e] + 25],
                         z["video_poses"][z["visit_end"][e]])[0] < 1e-3  # fmt: skip
    w = clip_window(z, "pose", 0, 5, False, rng)
    assert len(w) == 5 and np.all(np.diff(w) == 1) and w.min() >= 0 and w.max() < n


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
