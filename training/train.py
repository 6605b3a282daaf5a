"""Train the Video4Spatial planner: flow matching on environment data, with Hugging Face accelerate.

    python -m v4s_agent.training.train --config default --output runs/default --data data/train
    accelerate launch --config_file launch/accelerate_ddp.yaml -m v4s_agent.training.train --config default
    torchrun --nproc-per-node 8 -m v4s_agent.training.train --config paper ...

Why it looks like this (DiT's ``train.py`` plus diffusers' training scripts): one ``train(cfg)`` (``main`` is
the CLI, as ``pyproject``'s ``v4s-train`` entry point expects), EMA helpers (``ema.py``),
an ``Accelerator`` for devices/DDP/FSDP/mixed precision, and checkpoints that are plain files
(``checkpoints.py``; sample videos and the held-out probe: ``monitoring.py``):
``transformer.safetensors`` + ``ema.safetensors`` + optimiser/scheduler/RNG + ``state.json`` (step = data
position), written to a temporary folder and renamed, so a run killed at any moment resumes from the last
complete checkpoint. Every step's randomness is seeded from (seed, rank, step), so a resumed run is
bit-identical to an uninterrupted one. The run ends by saving the EMA pipeline with ``save_pretrained``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import (
    CKPT_DIR,
    CKPT_PICKLES,
    CKPT_TENSORS,
    LATEST,
    TRAINING_ONLY_FIELDS,
    CheckpointError,
    _init_weights,
    _load_pickle,
    check_compatible,
    export_checkpoint,
    export_ema_pipeline,
    latest_checkpoint,
    latest_valid_checkpoint,
    list_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)
from .config import CONFIG_FILE, PRESETS, TrainConfig, get_train_config
from .ema import ema_decay_at, ema_init, ema_update, ema_weights
from .monitoring import (
    METRICS,
    _fixed_sample_batch,
    _log_probe,
    _log_samples,
    sample_videos,
    write_gif_summary,
)

__all__ = [
    "CKPT_DIR",
    "CKPT_PICKLES",
    "CKPT_TENSORS",
    "LATEST",
    "METRICS",
    "TRAINING_ONLY_FIELDS",
    "CheckpointError",
    "check_compatible",
    "ema_decay_at",
    "ema_init",
    "ema_update",
    "ema_weights",
    "export_checkpoint",
    "export_ema_pipeline",
    "latest_checkpoint",
    "latest_valid_checkpoint",
    "list_checkpoints",
    "lr_lambda",
    "main",
    "parse_args",
    "resolve_mixed_precision",
    "sample_videos",
    "save_checkpoint",
    "step_seed",
    "train",
    "verify_checkpoint",
    "weights_digest",
    "write_gif_summary",
]


# ---------------------------------------------------------------------------------------------- helpers


def step_seed(seed: int, rank: int, step: int, micro: int = 0) -> int:
    """The seed of one micro-step's noise (why: exact resume needs no generator state)."""
    return int(np.random.SeedSequence([seed, rank, step, micro, 31337]).generate_state(1)[0])


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up, then cosine to 10 %, constant, constant then linear decay ("wsd"), or the
    multiplier interpolated linearly between ``lr_points`` ("points": a re-warm and a second decay on
    ``--resume`` keep the run's earlier schedule as their first points)."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        if cfg.lr_schedule == "constant":
            return 1.0
        if cfg.lr_schedule == "points":
            steps, mults = zip(*cfg.lr_points, strict=True)
            return float(np.interp(step, steps, mults))
        if cfg.lr_schedule == "wsd":
            prog = min(1.0, max(0.0, (step - cfg.decay_start) / cfg.decay_steps))
            return 1.0 - (1.0 - cfg.lr_final_ratio) * prog
        prog = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))

    return f


class _WithTransformer:
    """The pipeline seen with another transformer (the DDP/FSDP-wrapped one); everything else is its own."""

    def __init__(self, pipe: Any, transformer: torch.nn.Module) -> None:
        self._pipe, self.transformer = pipe, transformer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


class _TrainComponents:
    """The pipeline's pieces for ``flow_matching_loss``, with the forward going through the wrapped
    (DDP/FSDP) transformer so gradients synchronise; everything else is the plain pipeline's."""

    def __init__(self, pipe: Any, model: torch.nn.Module) -> None:
        self._pipe, self._model = pipe, model
        self.transformer = pipe.transformer
        self.v4s_config = pipe.v4s_config

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    @torch.no_grad()
    def encode_prompt(self, prompt, device=None):
        """The pipeline's ``encode_prompt`` memoised per string: the text encoder is frozen and training
        instructions come from a small set of templates, so this saves a MiniLM pass per step."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        cache = self.__dict__.setdefault("_text_cache", {})
        todo = sorted({p for p in prompts if p not in cache})
        if todo:
            emb, mask = self._pipe.encode_prompt(todo, device)
            for i, p in enumerate(todo):
                cache[p] = (emb[i].detach(), mask[i].detach())
        return (torch.stack([cache[p][0] for p in prompts]), torch.stack([cache[p][1] for p in prompts]))

    def predict_velocity(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The pipeline's own denoiser step, run through the wrapped (DDP/FSDP) transformer."""
        return type(self._pipe).predict_velocity(_WithTransformer(self._pipe, self._model), *args, **kwargs)


def resolve_mixed_precision(mode: str) -> str:
    """``auto``: bf16 on CUDA (fp16 if bf16 is unsupported), fp32 on CPU."""
    if mode != "auto":
        return mode
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _attention_kernel(device: torch.device, mode: str = "math"):
    """On CPU (``mode="math"``), scaled-dot-product attention's math kernel: for our short sequences
    (~400 tokens) its bf16 backward is faster per training step than the flash kernel torch picks by
    default (``benchmarks/bench_train.py --attention auto math``); on GPUs torch's own choice."""
    import contextlib

    if device.type != "cpu" or mode == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


# ---------------------------------------------------------------------------------------------- main


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's parameters (compares DDP ranks without writing files)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(
    cfg: TrainConfig,
    output: str | Path,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Train (or resume) one run; returns a summary dict.

    ``stop_after`` exits after that step as if killed (tests); ``max_minutes`` ends the run early but
    properly (checkpoint + final EMA pipeline) when this process has trained that long (time spent on
    sample videos and the held-out probe does not count, so candidates compare at equal training time).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from v4s_agent.model.configuration_model import get_model_config
    from v4s_agent.model.losses import flow_matching_loss
    from v4s_agent.model.pipeline_v4s import build_pipeline

    from .dataset import load_manifest, make_dataloader

    output = Path(output)
    if cfg.num_threads > 0 and not torch.cuda.is_available():
        torch.set_num_threads(cfg.num_threads)
    from accelerate.state import AcceleratorState

    # a second train() in one process (benchmarks, notebooks) may use another mixed precision: accelerate
    # keeps it in a singleton, so reset that (the distributed PartialState is kept)
    AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True without CUDA: accelerate only sets up gloo DDP under torchrun when told it runs on CPU
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum_steps,
        cpu=not torch.cuda.is_available(),
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    mcfg = get_model_config(cfg.model_config, **cfg.model_overrides)
    p_drop = mcfg.cfg_dropout if cfg.p_drop_cond is None else cfg.p_drop_cond
    manifest = load_manifest(cfg.data_dir)  # clear error before anything is built

    # ---- run directory, resume --------------------------------------------------------------------
    ckpt = latest_valid_checkpoint(output) if resume else None
    if is_main:
        output.mkdir(parents=True, exist_ok=True)
        if not resume and list_checkpoints(output):
            raise CheckpointError(
                f"{output} already holds checkpoints: pass --resume to continue that run, "
                "or choose another --output"
            )
        resolved = {
            **cfg.to_dict(),
            "resolved_model_config": mcfg.to_dict(),
            "resolved": {
                "world_size": world,
                "mixed_precision": accelerator.mixed_precision,
                "p_drop_cond": p_drop,
                "torch": torch.__version__,
            },
        }
        (output / CONFIG_FILE).write_text(json.dumps(resolved, indent=2))
    accelerator.wait_for_everyone()

    torch.manual_seed(cfg.seed)
    pipe = build_pipeline(mcfg, seed=cfg.seed)
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer
    transformer.train()
    if getattr(pipe, "vae", None) is not None:
        pipe.vae.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        transformer.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))

    start_step, samples_seen, elapsed_before = 0, 0, 0.0
    if ckpt is not None:
        from safetensors.torch import load_file

        state = json.loads((ckpt / "state.json").read_text())
        check_compatible(state, cfg, mcfg.to_dict(), ckpt, world)
        transformer.load_state_dict(load_file(str(ckpt / "transformer.safetensors")), strict=True)
        optimizer.load_state_dict(_load_pickle(ckpt / "optimizer.pt"))
        scheduler.load_state_dict(_load_pickle(ckpt / "scheduler.pt"))
        rng = _load_pickle(ckpt / "rng.pt")
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        start_step, samples_seen = int(state["step"]), int(state["samples_seen"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        if is_main:
            print(f"resuming from {ckpt} (step {start_step})", file=sys.stderr)
    elif resume and is_main:
        print(f"no checkpoint in {output}: starting from scratch", file=sys.stderr)
    init = None
    if ckpt is None and cfg.init_from:
        init_w, init_ema, init = _init_weights(Path(cfg.init_from))
        transformer.load_state_dict(init_w, strict=True)
        if is_main:
            print(f"initialised from {init} (weights and EMA; fresh optimiser, step 0)", file=sys.stderr)

    model, optimizer = accelerator.prepare(transformer, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    if cfg.compile:  # after prepare: DDP's hooks stay outside the compiled graph; weights are shared
        model = torch.compile(model)
    ema = ema_init(unwrapped)
    if ckpt is not None:
        from safetensors.torch import load_file

        ema = {k: v.to(accelerator.device) for k, v in load_file(str(ckpt / "ema.safetensors")).items()}
    elif init is not None:
        ema = {k: init_ema[k].to(accelerator.device) for k in ema}
    comps = _TrainComponents(pipe, model)

    loader = make_dataloader(
        cfg.data_dir,
        mcfg,
        cfg.batch_size,
        seed=cfg.seed,
        start_batch=start_step * cfg.grad_accum_steps,
        rank=rank,
        world_size=world,
        num_workers=cfg.num_workers,
        context_mode=cfg.context_mode,
        p_drop=p_drop,
        pose_task_prob=cfg.pose_task_prob,
        end_window_prob=cfg.end_window_prob,
        near_context=(
            cfg.near_context_start,
            cfg.near_context_end,
            cfg.near_context_steps * cfg.grad_accum_steps,
        ),
        near_frames=cfg.near_context_frames,
        view_prob=cfg.view_context_prob,
        goal_prob=cfg.goal_context_prob,
        goal_views=cfg.goal_context_views,
        goal_rank=cfg.goal_context_rank,
    )
    data = iter(loader)

    writer = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output / "tb"), purge_step=start_step + 1 if start_step else None)
        mpath = output / METRICS
        if mpath.exists():  # drop lines past the resumed step (they belong to the lost interval)
            keep = [
                ln for ln in mpath.read_text().splitlines() if ln and json.loads(ln)["step"] <= start_step
            ]
            mpath.write_text("".join(k + "\n" for k in keep))
    sample_batch = None
    if is_main and (cfg.sample_every > 0 or stop_after is None):
        sample_batch = _fixed_sample_batch(cfg, mcfg, p_drop)
    probe = None
    if is_main and cfg.sample_every > 0 and cfg.val_data_dir:
        from .val_probe import probe_batch

        try:
            # the same held-out clips whatever the run's seed, so that runs' curves compare
            probe = probe_batch(cfg.val_data_dir, mcfg)
        except (ValueError, OSError) as e:
            print(f"warning: no held-out probe ({e})", file=sys.stderr)

    from tqdm import tqdm

    bar = tqdm(
        total=cfg.max_steps,
        initial=start_step,
        disable=not (is_main and progress),
        desc="train",
        dynamic_ncols=True,
    )
    t_start, t_log, n_log = time.time(), time.time(), 0
    t_eval = 0.0  # seconds spent on sample videos and the held-out probe (not training: off the budget)
    logs: dict[str, float] = {}
    last_loss = float("nan")
    step = start_step

    def checkpoint_now(at_step: int) -> None:
        """Atomic checkpoint of the current state (reads the loop's counters at call time)."""
        _checkpoint(
            accelerator,
            output,
            at_step,
            unwrapped,
            ema,
            optimizer,
            scheduler,
            cfg,
            mcfg,
            world,
            samples_seen,
            elapsed_before + time.time() - t_start,
            manifest,
        )

    # SIGTERM (a scheduler's or `kill`'s) and Ctrl-C end the run after the current step with a checkpoint
    # at that step, as the time budget does: nothing trained is lost, and --resume continues from it
    stop_signals: list[int] = []
    old_handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old_handlers[sig] = signal.signal(sig, lambda signum, _frame: stop_signals.append(signum))
    try:
        while step < cfg.max_steps:
            for micro in range(cfg.grad_accum_steps):
                batch = next(data)
                g = torch.Generator(device=accelerator.device).manual_seed(
                    step_seed(cfg.seed, rank, step, micro)
                )
                torch.manual_seed(step_seed(cfg.seed, rank, step, micro) + 1)
                with accelerator.accumulate(model):
                    with accelerator.autocast(), _attention_kernel(accelerator.device, cfg.cpu_attention):
                        loss, logs = flow_matching_loss(comps, batch, mcfg, generator=g)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss {float(loss)} at step {step}")
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            ema_update(ema, unwrapped, ema_decay_at(step, cfg.ema_decay))
            samples_seen += cfg.batch_size * cfg.grad_accum_steps * world
            n_log += cfg.batch_size * cfg.grad_accum_steps * world
            last_loss = logs.get("loss", float(loss.detach()))
            if is_main:
                now = time.time()
                sps = n_log / max(1e-9, now - t_log)
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", sps=f"{sps:.2f}")
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    rec = {
                        "step": step,
                        "lr": scheduler.get_last_lr()[0],
                        "samples_per_s": sps,
                        "elapsed_s": elapsed_before + now - t_start,
                        **logs,
                    }
                    if grad_norm is not None:
                        rec["grad_norm"] = float(grad_norm)
                    for k, v in rec.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, step)
                    with open(output / METRICS, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    t_log, n_log = now, 0
                t0 = time.time()
                if sample_batch is not None and cfg.sample_every > 0 and step % cfg.sample_every == 0:
                    _log_samples(writer, output, pipe, ema, sample_batch, cfg, step)
                if probe is not None and step % cfg.sample_every == 0:
                    _log_probe(writer, output, pipe, ema, probe, cfg, step)
                t_eval += time.time() - t0
                t_log += time.time() - t0
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                checkpoint_now(step)
            if stop_after is not None and step >= stop_after:
                break
            out_of_time = max_minutes is not None and (time.time() - t_start - t_eval) > 60.0 * max_minutes
            out_of_time = out_of_time or bool(stop_signals)
            if world > 1:  # every rank must leave the loop at the same step
                flag = torch.tensor([float(out_of_time)], device=accelerator.device)
                out_of_time = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
            if out_of_time:
                if step % cfg.checkpoint_every != 0:
                    checkpoint_now(step)
                if is_main:
                    why = (
                        f"signal {signal.Signals(stop_signals[0]).name}"
                        if stop_signals
                        else f"time budget of {max_minutes} min"
                    )
                    print(
                        f"{why} at step {step}: checkpointed, finishing (--resume continues)", file=sys.stderr
                    )
                break
    finally:
        bar.close()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    accelerator.wait_for_everyone()
    finished = step >= cfg.max_steps or (max_minutes is not None and stop_after is None)
    finished = finished and not stop_signals  # a stop request skips the final samples and export
    summary = {
        "step": step,
        "samples_seen": samples_seen,
        "final_loss": last_loss,
        "elapsed_s": round(elapsed_before + time.time() - t_start, 1),
        "world_size": world,
        "rank": rank,
        "distributed_type": str(accelerator.distributed_type),
        "weights_digest": weights_digest(unwrapped),
        "stopped_by_signal": bool(stop_signals),
    }
    if finished and is_main:
        if sample_batch is not None:
            _log_samples(writer, output, pipe, ema, sample_batch, cfg, step)
        if probe is not None and step % cfg.sample_every != 0:
            _log_probe(writer, output, pipe, ema, probe, cfg, step)
        export_ema_pipeline(pipe, ema, output / "final" / "pipeline")
        (output / "final" / "summary.json").write_text(json.dumps(summary, indent=1))
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    if accelerator.distributed_type != DistributedType.NO:
        accelerator.end_training()
    return summary


def _checkpoint(
    accelerator,
    output,
    step,
    unwrapped,
    ema,
    optimizer,
    scheduler,
    cfg,
    mcfg,
    world,
    samples_seen,
    elapsed,
    manifest,
) -> None:
    """Only rank 0 writes (weights are identical across DDP ranks); everyone waits for it."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {
            "step": step,
            "samples_seen": samples_seen,
            "batches_per_rank": step * cfg.grad_accum_steps,
            "world_size": world,
            "elapsed_s": round(elapsed, 2),
            "train_config": cfg.to_dict(),
            "model_config": mcfg.to_dict(),
            "data_shards": manifest.get("n_shards"),
            "data_generator_seed": manifest.get("generator_seed"),
            "torch": torch.__version__,
        }
        save_checkpoint(output, step, unwrapped, ema, optimizer, scheduler, state, cfg.keep_checkpoints)
    accelerator.wait_for_everyone()


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """CLI -> (config, args)."""
    p = argparse.ArgumentParser(description="Train the Video4Spatial planner (flow matching, accelerate).")
    p.add_argument("--config", default="default", choices=PRESETS, help="named preset")
    p.add_argument(
        "--config-path",
        default=None,
        help=f"a serialised TrainConfig (.json/.yaml), e.g. a run's {CONFIG_FILE}; overrides --config",
    )
    p.add_argument("--output", required=True, help="run directory (checkpoints, TensorBoard, final pipeline)")
    p.add_argument("--data", default=None, help="generated training data folder (default: the config's)")
    p.add_argument("--val-data", default=None, help="held-out data for the sample videos")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--sample-every", type=int, default=None)
    p.add_argument("--context-mode", choices=["sparse", "contiguous"], default=None)
    p.add_argument(
        "--mixed-precision",
        choices=["auto", "no", "bf16", "fp16"],
        default=None,
        help="auto: bf16 on CUDA, fp32 on CPU; bf16 also speeds up CPUs with AVX512-BF16/AMX",
    )
    p.add_argument(
        "--model-override",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="documented training-side change of a model-config field, e.g. patch_size=[1,8,8]",
    )
    p.add_argument("--stop-after", type=int, default=None, help="debug: exit after this step as if killed")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-time budget: finish early (checkpoint + final pipeline) after this long",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the transformer (faster steps after warm-up)"
    )
    a = p.parse_args(argv)
    cfg = TrainConfig.from_file(a.config_path) if a.config_path else get_train_config(a.config)
    over = {
        "data_dir": a.data,
        "val_data_dir": a.val_data,
        "max_steps": a.max_steps,
        "batch_size": a.batch_size,
        "seed": a.seed,
        "num_workers": a.num_workers,
        "num_threads": a.num_threads,
        "checkpoint_every": a.checkpoint_every,
        "sample_every": a.sample_every,
        "context_mode": a.context_mode,
        "mixed_precision": a.mixed_precision,
    }
    cfg = cfg.replace(**{k: v for k, v in over.items() if v is not None})
    if a.compile:
        cfg = cfg.replace(compile=True)
    if a.model_override:
        mo = dict(cfg.model_overrides)
        for item in a.model_override:
            key, sep, val = item.partition("=")
            if not sep:
                p.error(f"--model-override expects KEY=JSON. Got {item!r}")
            try:
                mo[key] = json.loads(val)
            except json.JSONDecodeError:
                mo[key] = val
        cfg = cfg.replace(model_overrides=mo)
    return cfg, a


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``v4s-train``) with clear errors."""
    from .dataset import DataError

    cfg, a = parse_args(argv)
    try:
        s = train(
            cfg,
            a.output,
            resume=a.resume,
            stop_after=a.stop_after,
            progress=not a.no_progress,
            max_minutes=a.max_minutes,
        )
    except (CheckpointError, DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
