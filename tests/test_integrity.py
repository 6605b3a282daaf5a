"""Issue 23, groups 2, 3, 4 and 7: no corrupt artefact is used silently. Training checkpoints (``--resume``
falls back to the newest one that verifies), planner pipelines and IDM weights (``CheckpointError`` naming
the file), scene-cache arrays (rebuilt, with a warning) and training shards (regenerated on a rerun)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from agent_helpers import make_tiny_checkpoint
from safetensors.torch import load_file, save_file

from v4s_agent.integrity import CHECKSUMS, IntegrityError, verify_checksums, verify_weights_folder


def scramble(path: Path, n: int = 4096, seed: int = 0, at: float = 0.5) -> None:
    """Overwrite ``n`` bytes in the middle of a file with random bytes (size unchanged)."""
    data = bytearray(path.read_bytes())
    n = min(n, len(data) // 4)
    start = int(len(data) * at) - n // 2
    data[start : start + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# --------------------------------------------------------------------------------- 4. planner checkpoint


@pytest.fixture()
def tiny_ckpt(tmp_path: Path) -> Path:
    return make_tiny_checkpoint(tmp_path / "ckpt")


def _transformer_file(ckpt: Path) -> Path:
    return sorted((ckpt / "pipeline" / "transformer").glob("*.safetensors"))[0]


def test_saved_pipeline_and_idm_carry_checksums(tiny_ckpt: Path) -> None:
    assert verify_weights_folder(tiny_ckpt / "pipeline") is True
    assert verify_checksums(tiny_ckpt / "idm") is True
    listed = json.loads((tiny_ckpt / "pipeline" / CHECKSUMS).read_text())["files"]
    assert "model_index.json" in listed and any(k.startswith("transformer/") for k in listed)


def test_shipped_checkpoint_verifies() -> None:
    from v4s_agent.agent.planner import DEFAULT_CHECKPOINT

    assert verify_weights_folder(DEFAULT_CHECKPOINT / "pipeline") is True
    assert verify_weights_folder(DEFAULT_CHECKPOINT / "idm") is True


def test_corrupt_transformer_shard_is_refused(tiny_ckpt: Path) -> None:
    from v4s_agent.agent.planner import CheckpointError, VideoPlanner

    f = _transformer_file(tiny_ckpt)
    scramble(f)
    with pytest.raises(CheckpointError, match="does not match its sha256") as e:
        VideoPlanner.from_pretrained(tiny_ckpt, device="cpu")
    assert f.name in str(e.value)


def test_nan_weights_without_checksums_are_refused(tiny_ckpt: Path) -> None:
    """A folder from before checksums existed still gets the finite-weights check."""
    from v4s_agent.agent.planner import CheckpointError, VideoPlanner

    (tiny_ckpt / "pipeline" / CHECKSUMS).unlink()
    f = _transformer_file(tiny_ckpt)
    sd = load_file(str(f))
    k = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[k][0] = float("nan")
    save_file(sd, str(f), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="non-finite") as e:
        VideoPlanner.from_pretrained(tiny_ckpt, device="cpu")
    assert f.name in str(e.value) and k in str(e.value)


@pytest.mark.parametrize("corrupt", [scramble, truncate])
def test_corrupt_idm_is_a_checkpoint_error(tiny_ckpt: Path, corrupt) -> None:
    from v4s_agent.agent.planner import CheckpointError, load_idm

    corrupt(tiny_ckpt / "idm" / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_idm(tiny_ckpt / "idm")
    (tiny_ckpt / "idm" / CHECKSUMS).unlink()  # no checksum: the parse check still names the file
    if corrupt is truncate:
        with pytest.raises(CheckpointError, match=r"model.safetensors is not a readable safetensors"):
            load_idm(tiny_ckpt / "idm")


# ------------------------------------------------------------------------------- 2. training checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A tiny 3-step run stopped at step 2 with a checkpoint at every step (steps 1 and 2)."""
    from v4s_agent.training.config import get_train_config
    from v4s_agent.training.generate_data import GenConfig, generate
    from v4s_agent.training.train import train

    data = tmp_path_factory.mktemp("data")
    generate(GenConfig(split="train", height=32, width=32), 2, data, progress=False)
    cfg = get_train_config("tiny").replace(
        data_dir=str(data), num_threads=1, max_steps=3, checkpoint_every=1, keep_checkpoints=5
    )
    run = tmp_path_factory.mktemp("run") / "r"
    train(cfg, run, stop_after=2, progress=False)
    return run, cfg


def _copy_run(trained, tmp_path: Path) -> Path:
    run = tmp_path / "r"
    shutil.copytree(trained[0], run)
    return run


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


@pytest.mark.parametrize(
    "name, corrupt",
    [
        ("ema.safetensors", scramble),
        ("transformer.safetensors", scramble),
        ("transformer.safetensors", truncate),
        ("optimizer.pt", truncate),
        ("state.json", lambda p: p.write_text("{not json")),
    ],
)
def test_resume_skips_a_corrupt_checkpoint(trained, tmp_path, capsys, name, corrupt) -> None:
    from v4s_agent.training.train import latest_valid_checkpoint, verify_checkpoint

    run = _copy_run(trained, tmp_path)
    corrupt(_ckpt(run, 2) / name)
    assert latest_valid_checkpoint(run) == _ckpt(run, 1)
    err = capsys.readouterr().err
    assert name in err and "step_00000002" in err and "resuming from" in err
    (_ckpt(run, 2) / CHECKSUMS).unlink()  # an older checkpoint without checksums: parse checks only
    if name != "ema.safetensors":  # random bytes in a float array may be finite: that needs the checksum
        with pytest.raises(Exception, match=name.split(".")[0]):
            verify_checkpoint(_ckpt(run, 2))


def test_resume_with_corrupt_ema_falls_back_and_exports_finite(trained, tmp_path, capsys) -> None:
    from v4s_agent.training.train import train, verify_checkpoint

    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    run = _copy_run(trained, tmp_path)
    scramble(_ckpt(run, 2) / "ema.safetensors")
    out = train(trained[1], run, resume=True, progress=False)
    assert out["step"] == trained[1].max_steps
    assert "resuming from" in capsys.readouterr().err
    for step in (2, 3):  # step 2 was redone and rewritten whole
        verify_checkpoint(_ckpt(run, step))
    pipe = Video4SpatialPipeline.from_pretrained(str(run / "final" / "pipeline"))
    assert all(torch.isfinite(p).all() for p in pipe.transformer.parameters())


def test_no_valid_checkpoint_and_export_of_a_corrupt_one(trained, tmp_path) -> None:
    from v4s_agent.training.train import CheckpointError, export_checkpoint, latest_valid_checkpoint

    run = _copy_run(trained, tmp_path)
    scramble(_ckpt(run, 2) / "ema.safetensors")
    with pytest.raises(CheckpointError, match="ema.safetensors"):
        export_checkpoint(run, tmp_path / "exp", _ckpt(run, 2))
    assert not (tmp_path / "exp").exists()
    truncate(_ckpt(run, 1) / "transformer.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint in .* verifies"):
        latest_valid_checkpoint(run)


def test_export_refuses_non_finite_ema(tmp_path: Path) -> None:
    from v4s_agent.training.train import CheckpointError, export_ema_pipeline

    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    pipe = Video4SpatialPipeline.from_config_name("tiny")
    ema = {n: p.detach().float().clone() for n, p in pipe.transformer.named_parameters()}
    next(iter(ema.values())).view(-1)[0] = float("inf")
    with pytest.raises(CheckpointError, match="non-finite"):
        export_ema_pipeline(pipe, ema, tmp_path / "final")
    assert not (tmp_path / "final").exists()


# ------------------------------------------------------------------------------------- 3. scene cache


def test_cache_array_corruption_is_caught_and_rebuilt(tmp_path: Path) -> None:
    from v4s_agent.envs.scene_cache import SceneCache

    cache = SceneCache(tmp_path)
    key = cache.key("scene", "unit-test", ("scenes",))
    arr = np.arange(200_000, dtype=np.float32)
    path = cache.save(key, {"a": arr}, {"n": 1})
    assert np.array_equal(cache.load(key)[0]["a"], arr)
    scramble(path, 2048, at=0.5)  # inside the array member, not the metadata
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert cache.load(key) is None
    assert any(path.name in str(x.message) and "rebuilding" in str(x.message) for x in w)
    assert not path.exists()  # deleted: the next build writes a good one


def test_env_rebuilds_corrupt_scene_and_navgrid_entries(tmp_path: Path) -> None:
    from v4s_agent.envs import V4SNavEnv

    kw = {"task": "object", "scene": "val_scenes", "resolution": (32, 32), "context_video": "none"}
    ref = V4SNavEnv(cache_dir=False, **kw)
    want, _ = ref.reset(seed=3)
    ref.close()
    env = V4SNavEnv(cache_dir=tmp_path, **kw)
    env.reset(seed=3)
    env.close()
    files = {p.name.split("-")[0]: p for p in tmp_path.glob("*.npz")}
    for kind in ("scene", "navgrid"):
        scramble(files[kind], 2048, at=0.6)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        env = V4SNavEnv(cache_dir=tmp_path, **kw)
        got, _ = env.reset(seed=3)
        env.close()
    msgs = " ".join(str(x.message) for x in w)
    assert files["scene"].name in msgs and files["navgrid"].name in msgs and "rebuilding" in msgs
    assert np.array_equal(got["rgb"], want["rgb"])


# ----------------------------------------------------------------------------------- 7. training shards


def test_generate_rerun_regenerates_a_corrupt_shard(tmp_path: Path, monkeypatch, capsys) -> None:
    """The rerun's to-do list is checked against each shard's recorded sha256 (the worker is a stub here:
    the real generation is covered by test_training_data)."""
    from v4s_agent.training import generate_data as gd

    done: list[int] = []

    def fake_worker(args):
        _, index, out = args
        done.append(index)
        path = Path(out) / gd.shard_name(index)
        info = gd.write_shard(path, {"video_frames": np.full((2, 4, 4, 3), index, np.uint8)})
        counts = dict.fromkeys(("n_video", "n_visits", "n_visits_ok", "n_idm", "n_idm_video"), 1)
        (Path(out) / (gd.shard_name(index) + ".json")).write_text(json.dumps({**counts, **info}))
        return info

    monkeypatch.setattr(gd, "_worker", fake_worker)
    cfg = gd.GenConfig(split="train", height=32, width=32)
    gd.generate(cfg, 2, tmp_path, progress=False)
    assert done == [0, 1]
    done.clear()
    gd.generate(cfg, 2, tmp_path, progress=False)
    assert done == []  # intact shards are kept
    scramble(tmp_path / gd.shard_name(1), 64)
    manifest = gd.generate(cfg, 2, tmp_path, progress=False)
    assert done == [1] and "does not match its recorded sha256" in capsys.readouterr().err
    for s in manifest["shards"]:
        assert gd.file_sha256(tmp_path / s["file"]) == s["sha256"]


# ------------------------------------------------------------------------------------------ export


def test_onnx_manifest_checksum_is_verified(tmp_path: Path) -> None:
    from v4s_agent.export.onnx_export import MANIFEST, load_manifest

    from v4s_agent.integrity import write_checksums

    (tmp_path / "denoiser").mkdir()
    (tmp_path / "denoiser" / "model.onnx").write_bytes(os.urandom(8192))
    comps = {"denoiser": {"file": "denoiser/model.onnx"}}
    (tmp_path / MANIFEST).write_text(json.dumps({"components": comps}))
    write_checksums(tmp_path)
    assert "denoiser" in load_manifest(tmp_path)["components"]
    scramble(tmp_path / "denoiser" / "model.onnx", 16)
    with pytest.raises(IntegrityError, match="model.onnx does not match"):
        load_manifest(tmp_path)


def test_evaluator_detector_carries_and_checks_checksums(tmp_path: Path) -> None:
    """The evaluator scores every generated video: a corrupt detector must not load silently."""
    from v4s_agent.evaluation.evaluator_detector import DEFAULT_DETECTOR, EvaluatorDetector

    det = EvaluatorDetector.from_pretrained()  # the shipped one verifies
    det.save_pretrained(tmp_path / "det")
    assert (tmp_path / "det" / CHECKSUMS).is_file() and verify_checksums(tmp_path / "det", required=True)
    shutil.copytree(DEFAULT_DETECTOR, tmp_path / "bad")
    raw = bytearray((tmp_path / "bad" / "model.safetensors").read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = os.urandom(64)
    (tmp_path / "bad" / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="model.safetensors"):
        EvaluatorDetector.from_pretrained(tmp_path / "bad")
