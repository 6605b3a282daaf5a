"""Training throughput (samples/s) of the real train loop: ``tiny`` and ``default`` on CPU, 1 process vs
2-process DDP (gloo) in the same run.

    python benchmarks/bench_train.py --data data/val_scenes --steps 20 --warmup 3

Why the real loop: the figure users care about includes data loading, the text-embedding cache, the
optimiser, EMA and DDP's gradient all-reduce; timings come from the loop's own per-step log.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
from pathlib import Path

import torch


def _throughput(run: Path, warmup: int) -> float:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    a = next(r for r in recs if r["step"] == warmup)
    b = recs[-1]
    return (b["step"] - a["step"]) * b["_samples_per_step"] / max(1e-9, b["elapsed_s"] - a["elapsed_s"])


def _run(config: str, data: str, steps: int, out: str, threads: int) -> None:
    from v4s_agent.training.config import get_train_config
    from v4s_agent.training.train import train

    torch.set_num_threads(threads)
    cfg = get_train_config(config).replace(
        data_dir=data,
        max_steps=steps,
        checkpoint_every=10**6,
        log_every=1,
        sample_every=0,
        num_threads=threads,
    )
    train(cfg, out, progress=False, stop_after=steps)  # stop_after: no final export / samples in the timing
    if int(os.environ.get("RANK", "0")) == 0:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        p = Path(out) / "metrics.jsonl"
        lines = [json.loads(x) for x in p.read_text().splitlines() if x]
        for r in lines:
            r["_samples_per_step"] = cfg.batch_size * cfg.grad_accum_steps * world
        p.write_text("".join(json.dumps(r) + "\n" for r in lines))


def _ddp_worker(
    rank: int, world: int, port: int, config: str, data: str, steps: int, out: str, threads: int
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        OMP_NUM_THREADS=str(threads),
    )
    _run(config, data, steps, out, threads)


def bench(config: str, data: str, steps: int, warmup: int, procs: int, threads: int) -> float:
    """Samples/s of ``config`` with ``procs`` processes (``threads`` torch threads each)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        if procs == 1:
            _run(config, data, steps, out, threads)
        else:
            import torch.multiprocessing as mp

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(
                _ddp_worker, args=(procs, port, config, data, steps, out, threads), nprocs=procs, join=True
            )
        return _throughput(Path(out), warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/val_scenes")
    p.add_argument("--configs", nargs="+", default=["tiny", "default"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    a = p.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch "
        f"{torch.__version__}, load average {os.getloadavg()[0]:.1f}"
    )
    rows = []
    for c in a.configs:
        one = bench(c, a.data, a.steps, a.warmup, 1, a.threads)
        two = bench(c, a.data, a.steps, a.warmup, 2, a.threads)
        rows.append((c, one, two))
        print(
            f"{c:8s} 1 proc: {one:7.2f} samples/s   2-proc DDP (gloo): {two:7.2f} samples/s   "
            f"speed-up x{two / one:.2f}",
            flush=True,
        )
    print(json.dumps({c: {"1proc": round(o, 2), "ddp2": round(t, 2)} for c, o, t in rows}))


if __name__ == "__main__":
    main()
