"""Training throughput (samples/s) of the real train loop: ``tiny`` and ``default`` on CPU, 1 process vs
2-process DDP (gloo), torch's default attention kernel vs the math kernel, all in the same run.

    python benchmarks/bench_train.py --data data/val_scenes --steps 20 --warmup 3 --attention auto math
    python benchmarks/bench_train.py --configs default --steps 40 --warmup 16 \
        --variants auto-1 math-1 math-1-compile math-2-compile

"Today's" loop (issue 24's baseline) is ``--attention auto`` in 1 process, eager; the shipped loop trains
with ``cpu_attention="math"``, ``torch.compile`` and 2-process DDP on the 2 cores when nothing else runs.
A variant is ``ATTENTION-PROCS[-compile]``; compiled variants need a warm-up past the compilation.

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


def _run(
    config: str, data: str, steps: int, out: str, threads: int, attention: str = "math", compile: bool = False
) -> None:
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
        cpu_attention=attention,
        compile=compile,
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
    rank: int, world: int, port: int, config: str, data: str, steps: int, out: str, threads: int,
    attention: str, compile: bool = False,
) -> None:  # fmt: skip
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        OMP_NUM_THREADS=str(threads),
    )
    _run(config, data, steps, out, threads, attention, compile)


def bench(
    config: str,
    data: str,
    steps: int,
    warmup: int,
    procs: int,
    threads: int,
    attention: str = "math",
    compile: bool = False,
) -> float:
    """Samples/s of ``config`` with ``procs`` processes (``threads`` torch threads each)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        if procs == 1:
            _run(config, data, steps, out, threads, attention, compile)
        else:
            import torch.multiprocessing as mp

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(
                _ddp_worker,
                args=(procs, port, config, data, steps, out, threads, attention, compile),
                nprocs=procs,
                join=True,
            )
        return _throughput(Path(out), warmup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/val_scenes")
    p.add_argument("--configs", nargs="+", default=["tiny", "default"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--attention", nargs="+", default=["auto", "math"], choices=["auto", "math"])
    p.add_argument("--procs", nargs="+", type=int, default=[1, 2], help="process counts to compare")
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="instead of the attention x procs grid: ATTENTION-PROCS[-compile] items, e.g. math-2-compile",
    )
    a = p.parse_args()
    variants = []
    for v in a.variants or [f"{att}-{n}" for att in a.attention for n in a.procs]:
        parts = v.split("-")
        if len(parts) not in (2, 3) or parts[0] not in ("auto", "math") or not parts[1].isdigit():
            p.error(f"variant {v!r}: expected ATTENTION-PROCS[-compile], e.g. math-2-compile")
        if len(parts) == 3 and parts[2] != "compile":
            p.error(f"variant {v!r}: the third part can only be 'compile'")
        variants.append((parts[0], int(parts[1]), len(parts) == 3))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch "
        f"{torch.__version__}, load average {os.getloadavg()[0]:.1f}"
    )
    rows: dict[str, dict[str, float]] = {}
    for c in a.configs:
        for att, n, comp in variants:
            sps = bench(c, a.data, a.steps, a.warmup, n, a.threads, att, comp)
            key = f"{att}_{n}proc" + ("_compile" if comp else "")
            rows.setdefault(c, {})[key] = round(sps, 3)
            name = f"{c:8s} attention={att:4s} {n} proc{' compiled' if comp else ''}"
            print(f"{name}: {sps:7.3f} samples/s", flush=True)
        base = rows[c].get("auto_1proc")
        if base:
            best = max(rows[c].values())
            print(f"{c:8s} best / today's (auto, 1 proc): x{best / base:.2f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
