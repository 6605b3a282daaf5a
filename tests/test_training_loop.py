"""Train loop: exact resume after a kill, atomic checkpoints, clear errors, 2-process CPU DDP (gloo)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import tiny_data
from v4s_agent.training import train as train_mod
from v4s_agent.training.config import TrainConfig, get_train_config
from v4s_agent.training.train import CheckpointError, latest_checkpoint, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_data(tmp_path_factory.getbasetemp())  # shared with test_training_data (resumable)


def tiny(data_dir: Path, **kw) -> TrainConfig:
    return get_train_config("tiny").replace(data_dir=str(data_dir), num_threads=1, **kw)


def weights(run: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / f"{name}.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_kill_and_resume_equals_uninterrupted_run(data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny(data_dir)
    full = train(cfg, tmp_path / "full", progress=False)
    assert full["step"] == cfg.max_steps
    # "killed" after step 4 (no checkpoint at 4): the last checkpoint is step 3, one step is redone
    train(cfg, tmp_path / "cut", stop_after=4, progress=False)
    assert latest_checkpoint(tmp_path / "cut").name == "step_00000003"
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert resumed["weights_digest"] == full["weights_digest"]
    for name in ("transformer", "ema"):
        assert_same(
            weights(tmp_path / "full", cfg.max_steps, name), weights(tmp_path / "cut", cfg.max_steps, name)
        )
    # the final EMA pipeline is a loadable save_pretrained folder
    from v4s_agent.model.pipeline_v4s import Video4SpatialPipeline

    pipe = Video4SpatialPipeline.from_pretrained(str(tmp_path / "cut" / "final" / "pipeline"))
    ema = load_file(str(tmp_path / "cut" / "checkpoints" / f"step_{cfg.max_steps:08d}" / "ema.safetensors"))
    for n, p in pipe.transformer.named_parameters():
        assert torch.equal(p.detach().float(), ema[n])
    run_cfg = json.loads((tmp_path / "cut" / "train_config.json").read_text())
    assert run_cfg["resolved_model_config"]["name"] == "tiny"
    assert TrainConfig.from_file(tmp_path / "cut" / "train_config.json").max_steps == cfg.max_steps
    assert not list((tmp_path / "cut" / "checkpoints").glob(".tmp*"))
    assert (tmp_path / "cut" / "metrics.jsonl").read_text().count("\n") == cfg.max_steps
    # packaging for shipping: sharded EMA pipeline + loss curve
    from v4s_agent.training.package import package_run

    facts = package_run(tmp_path / "cut", tmp_path / "pkg")
    assert (tmp_path / "pkg" / "loss_curve.png").stat().st_size > 0 and facts["steps"] == cfg.max_steps
    pkg = Video4SpatialPipeline.from_pretrained(str(tmp_path / "pkg" / "pipeline"))
    for n, p in pkg.transformer.named_parameters():
        assert torch.equal(p.detach().float(), ema[n])


def test_resume_takes_a_new_training_field_and_refuses_another_config(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny(data_dir, max_steps=3)
    train(cfg, tmp_path / "run", stop_after=3, progress=False)
    # a training-only setting (the loss weight of the last trajectory frame) may change on resume, said
    heavier = cfg.replace(max_steps=4, model_overrides={**cfg.model_overrides, "end_frame_loss_weight": 4.0})
    capsys.readouterr()
    assert train(heavier, tmp_path / "run", resume=True, progress=False)["step"] == 4
    assert "end_frame_loss_weight: 1.0 -> 4.0" in capsys.readouterr().err
    other = cfg.replace(model_overrides={"num_layers": 3})
    with pytest.raises(CheckpointError, match="num_layers"):
        train(other, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="batch_size"):
        train(cfg.replace(batch_size=3), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="--resume"):
        train(cfg, tmp_path / "run", progress=False)


def test_full_disk_gives_a_clear_error_and_keeps_old_checkpoints(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny(data_dir, max_steps=6)
    calls = {"n": 0}
    import safetensors.torch as st

    real = st.save_file

    def full_disk(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (2 files) succeeds, the second hits ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(st, "save_file", full_disk)
    with pytest.raises(CheckpointError, match="disk full"):
        train(cfg, tmp_path / "run", progress=False)
    assert latest_checkpoint(tmp_path / "run").name == "step_00000003"
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp*"))


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    from v4s_agent.training.dataset import DataError

    with pytest.raises(DataError, match="not found"):
        train(
            get_train_config("tiny").replace(data_dir=str(tmp_path / "nothing")),
            tmp_path / "r",
            progress=False,
        )


# ------------------------------------------------------------------------------------------------ DDP


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, res: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    writes: list[int] = []
    real = train_mod.save_checkpoint

    def spy(output, step, *a, **k):
        writes.append(step)
        return real(output, step, *a, **k)

    train_mod.save_checkpoint = spy
    cfg = get_train_config("tiny").replace(data_dir=data, max_steps=4, checkpoint_every=2)
    s = train_mod.train(cfg, out, progress=False)
    Path(res, f"rank{rank}.json").write_text(json.dumps({**s, "writes": writes}))


def test_two_process_cpu_ddp(data_dir: Path, tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = tmp_path / "res"
    res.mkdir()
    mp.spawn(_ddp_worker, args=(2, port, str(data_dir), str(tmp_path / "ddp"), str(res)), nprocs=2, join=True)
    r0, r1 = (json.loads((res / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["world_size"] == r1["world_size"] == 2 and "MULTI_CPU" in r0["distributed_type"]
    assert r0["weights_digest"] == r1["weights_digest"]  # DDP kept the ranks in sync
    assert r0["writes"] == [2, 4] and r1["writes"] == []  # only rank 0 writes checkpoints
    assert r0["samples_seen"] == 4 * 2 * 2
    assert (tmp_path / "ddp" / "final" / "pipeline").is_dir()


@pytest.mark.slow
def test_sigkill_during_training_then_resume(data_dir: Path, tmp_path: Path) -> None:
    """A real SIGKILL of the CLI at a random moment; the resumed run ends with the uninterrupted weights."""
    cmd = [
        sys.executable,
        "-m",
        "v4s_agent.training.train",
        "--config",
        "tiny",
        "--data",
        str(data_dir),
        "--max-steps",
        "30",
        "--checkpoint-every",
        "5",
        "--no-progress",
        "--num-threads",
        "1",
    ]
    subprocess.run([*cmd, "--output", str(tmp_path / "ref")], check=True, capture_output=True)
    p = subprocess.Popen(
        [*cmd, "--output", str(tmp_path / "k")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and latest_checkpoint(tmp_path / "k") is None:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    subprocess.run([*cmd, "--output", str(tmp_path / "k"), "--resume"], check=True, capture_output=True)
    assert_same(weights(tmp_path / "ref", 30, "ema"), weights(tmp_path / "k", 30, "ema"))


def test_x_prediction_run_with_held_out_probe(data_dir: Path, tmp_path: Path) -> None:
    """x-prediction with the blend skip trains through the (DDP-ready) wrapper, and the held-out probe
    logs denoising error per sigma and the three context conditions into metrics.jsonl."""
    cfg = tiny(
        data_dir,
        max_steps=4,
        sample_every=2,
        val_data_dir=str(data_dir),
        model_overrides={"prediction_type": "sample", "sample_anchor": "blend", "train_sigma_shift": 1.0},
    )
    out = train(cfg, tmp_path / "x", progress=False)
    assert out["step"] == 4 and out["final_loss"] == out["final_loss"]  # finite
    recs = [json.loads(x) for x in (tmp_path / "x" / "metrics.jsonl").read_text().splitlines()]
    probes = [r for r in recs if "val/x0_mse_mean" in r]
    assert [r["step"] for r in probes] == [2, 4]
    for key in ("val/x0_mse@0.05", "val/x0_mse@1", "val/sample_mse_ctx", "val/sample_mse_noctx",
                "val/sample_mse_wrongctx"):  # fmt: skip
        assert all(0.0 <= r[key] < 10.0 for r in probes), key
    saved = json.loads((tmp_path / "x" / "final" / "pipeline" / "model_index.json").read_text())
    assert saved["model_config"]["prediction_type"] == "sample"


def test_sigterm_checkpoints_the_current_step_then_resume(data_dir: Path, tmp_path: Path) -> None:
    """SIGTERM mid-run ends the run after the current step with a checkpoint at that step (not only at
    the last periodic one), and --resume goes on from there."""
    import threading

    cfg = tiny(data_dir, max_steps=10_000, checkpoint_every=1_000)
    run = tmp_path / "run"

    def send_when_training() -> None:
        for _ in range(600):
            if (run / "metrics.jsonl").is_file():
                break
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=send_when_training, daemon=True).start()
    out = train(cfg, run, progress=False)
    assert out["stopped_by_signal"] and 0 < out["step"] < cfg.max_steps
    assert latest_checkpoint(run).name == f"step_{out['step']:08d}"
    assert not (run / "final").exists()  # a stop request is not a finished run
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    again = train(cfg.replace(max_steps=out["step"] + 2), run, resume=True, progress=False)
    assert again["step"] == out["step"] + 2 and not again["stopped_by_signal"]


def test_init_from_starts_a_new_run_with_context_pose(data_dir: Path, tmp_path: Path) -> None:
    """``init_from`` starts a new run (step 0, fresh optimiser) from another run's weights and EMA, here
    with ``context_pose`` switched on; the probe logs the one-step context gain."""
    train(tiny(data_dir, max_steps=2), tmp_path / "base", progress=False)
    frozen = tiny(
        data_dir, max_steps=2, lr=0.0, weight_decay=0.0, init_from=str(tmp_path / "base"),
        model_overrides={"context_pose": True}, sample_every=2, val_data_dir=str(data_dir),
    )  # fmt: skip
    out = train(frozen, tmp_path / "ft", progress=False)
    assert out["step"] == 2  # a new run: its own steps
    assert_same(weights(tmp_path / "base", 2, "transformer"), weights(tmp_path / "ft", 2, "transformer"))
    recs = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    probe = [r for r in recs if "val/x0_context_gain" in r]
    assert probe and all(0.0 <= probe[-1][f"val/x0_mse_wrongctx@{s:g}"] < 10.0 for s in (0.05, 1.0))
    # the path's-views condition (the planner's context for a given path) on the pose clips
    v = probe[-1]
    for kind in ("pose", "obj"):  # object clips: views of their goal
        t, o = v[f"val/x0_mse_views_{kind}@1"], v[f"val/x0_mse_views_wrongctx_{kind}@1"]
        assert 0.0 < t < 10.0 and 0.0 < o < 10.0
        assert v[f"val/x0_context_gain_frac_views_{kind}@1"] == pytest.approx((o - t) / t)
    saved = json.loads((tmp_path / "ft" / "final" / "pipeline" / "model_index.json").read_text())
    assert saved["model_config"]["context_pose"] is True
    with pytest.raises(CheckpointError, match="init_from"):
        bad = tiny(data_dir, max_steps=1, init_from=str(tmp_path / "nothing"))
        train(bad, tmp_path / "bad", progress=False)


@pytest.mark.slow
def test_compiled_run_trains_the_eager_weights(data_dir: Path, tmp_path: Path) -> None:
    """``compile=True`` (``--compile``) trains the same weights as eager within float tolerance, and the
    checkpoint keeps plain parameter names (a compiled module's ``_orig_mod.`` prefix would break
    ``--resume`` and packaging)."""
    train(tiny(data_dir, max_steps=3), tmp_path / "eager", progress=False)
    train(tiny(data_dir, max_steps=3, compile=True), tmp_path / "compiled", progress=False)
    a, b = weights(tmp_path / "eager", 3, "transformer"), weights(tmp_path / "compiled", 3, "transformer")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-3, rtol=1e-2)


def test_wsd_schedule_holds_then_decays_linearly() -> None:
    """A constant-lr run can be cooled down on resume: lr stays, then falls linearly to the floor."""
    cfg = TrainConfig(warmup_steps=10, lr_schedule="wsd", decay_start=100, decay_steps=50, lr_final_ratio=0.2)
    f = train_mod.lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(99) == 1.0 and f(100) == 1.0
    assert f(125) == pytest.approx(0.6) and f(150) == pytest.approx(0.2) and f(10_000) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="decay_steps"):
        TrainConfig(lr_schedule="wsd")
    with pytest.raises(ValueError, match="lr_final_ratio"):
        TrainConfig(lr_final_ratio=1.5)


def test_points_schedule_rewarms_and_decays_again() -> None:
    """A resumed run's new data mix gets a re-warm and a second decay; the earlier schedule stays as the
    first points, so the steps already trained keep their lr."""
    pts = [[0, 1.0], [100, 1.0], [150, 0.2], [160, 0.2], [170, 0.5], [200, 0.5], [300, 0.1]]
    cfg = TrainConfig(warmup_steps=10, lr_schedule="points", lr_points=pts)
    wsd = TrainConfig(warmup_steps=10, lr_schedule="wsd", decay_start=100, decay_steps=50, lr_final_ratio=0.2)
    f, g = train_mod.lr_lambda(cfg), train_mod.lr_lambda(wsd)
    assert all(f(s) == pytest.approx(g(s)) for s in range(0, 161))
    assert f(165) == pytest.approx(0.35) and f(200) == pytest.approx(0.5) and f(250) == pytest.approx(0.3)
    assert f(10_000) == pytest.approx(0.1)
    for bad in ([], [[10, 1.0], [5, 1.0]], [[0, -1.0]]):
        with pytest.raises(ValueError, match="lr_points"):
            TrainConfig(lr_schedule="points", lr_points=bad)
