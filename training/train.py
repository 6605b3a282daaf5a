"""Train the Video4Spatial planner: flow matching on environment data, with Hugging Face accelerate.

    python -m v4s_agent.training.train --config default --output runs/default --data data/train
    accelerate launch --config_file launch/accelerate_ddp.yaml -m v4s_agent.training.train --config default
    torchrun --nproc-per-node 8 -m v4s_agent.training.train --config paper ...

Why it looks like this (DiT's ``train.py`` plus diffusers' training scripts): one ``train(cfg)`` (``main`` is
the CLI, as ``pyproject``'s ``v4s-train`` entry point expects), EMA helpers,
an ``Accelerator`` for devices/DDP/FSDP/mixed precision, and checkpoints that are plain files:
``transformer.safetensors`` + ``ema.safetensors`` + optimiser/scheduler/RNG + ``state.json`` (step = data
position), written to a temporary folder and renamed, so a run killed at any moment resumes from the last
complete checkpoint. Every step's randomness is seeded from (seed, rank, step), so a resumed run is
bit-identical to an uninterrupted one. The run ends by saving the EMA pipeline with ``save_pretrained``.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import CONFIG_FILE, PRESETS, TrainConfig, get_train_config

CKPT_DIR = "checkpoints"
# model-config fields that change how training draws noise or how sampling runs, not the weights: a run
# may resume with new values (e.g. a training noise distribution chosen from its held-out probe)
TRAINING_ONLY_FIELDS = frozenset(
    {"train_sigma_mean", "train_sigma_std", "train_sigma_shift", "train_sigma_high_frac", "cfg_dropout",
     "guidance_scale",
     "num_inference_steps", "flow_shift", "stochastic_sampling", "name"}
)  # fmt: skip
LATEST = "latest"
METRICS = "metrics.jsonl"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or does not belong to this run's config."""


# ---------------------------------------------------------------------------------------------- helpers


def step_seed(seed: int, rank: int, step: int, micro: int = 0) -> int:
    """The seed of one micro-step's noise (why: exact resume needs no generator state)."""
    return int(np.random.SeedSequence([seed, rank, step, micro, 31337]).generate_state(1)[0])


@torch.no_grad()
def ema_init(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Float32 EMA copy of the trainable parameters."""
    return {n: p.detach().float().clone() for n, p in model.named_parameters()}


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * param`` (DiT's ``update_ema``)."""
    names = list(ema)
    params = dict(model.named_parameters())
    e = [ema[n] for n in names]
    p = [params[n].detach().float() for n in names]
    torch._foreach_mul_(e, decay)
    torch._foreach_add_(e, p, alpha=1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Ramp so early EMA weights are not dominated by the random init."""
    return min(decay, (1.0 + step) / (10.0 + step))


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up, then cosine to 10% (or constant)."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        if cfg.lr_schedule == "constant":
            return 1.0
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


# ---------------------------------------------------------------------------------------------- checkpoints


def list_checkpoints(output: Path) -> list[Path]:
    """Complete checkpoints (renamed from their tmp folder), oldest first."""
    d = output / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(
        p for p in d.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / "state.json").is_file()
    )


def latest_checkpoint(output: Path) -> Path | None:
    """The newest complete checkpoint (the ``latest`` pointer, else the highest step)."""
    ptr = output / CKPT_DIR / LATEST
    if ptr.is_file():
        p = output / CKPT_DIR / ptr.read_text().strip()
        if (p / "state.json").is_file():
            return p
    ckpts = list_checkpoints(output)
    return ckpts[-1] if ckpts else None


CKPT_TENSORS = ("transformer.safetensors", "ema.safetensors")
CKPT_PICKLES = ("optimizer.pt", "scheduler.pt", "rng.pt")


def verify_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Check a checkpoint folder before it is used; returns its ``state.json``.

    Why: a few corrupt bytes in ``ema.safetensors`` still parse and were resumed and exported silently.
    Checkpoints carry ``checksums.json`` (sha256 of every file); older ones get the parse checks only.
    Float weights must be finite either way. Raises :class:`CheckpointError` naming the bad file.
    """
    from v4s_agent.integrity import IntegrityError, verify_checksums, verify_safetensors

    ckpt = Path(ckpt)
    try:
        had_sums = verify_checksums(ckpt)
        for name in CKPT_TENSORS:
            verify_safetensors(ckpt / name)
    except IntegrityError as e:
        raise CheckpointError(f"checkpoint {ckpt} is corrupt: {e}") from e
    f = ckpt / "state.json"
    try:
        state = json.loads(f.read_text())
        if not isinstance(state, dict):
            raise TypeError("not a JSON object")
        int(state["step"]), int(state["samples_seen"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {ckpt} is corrupt: {f} is unreadable ({type(e).__name__}: {e})"
        ) from e
    for name in CKPT_PICKLES:
        if not (ckpt / name).is_file():
            raise CheckpointError(f"checkpoint {ckpt} is incomplete: {ckpt / name} is missing")
        if not had_sums:  # no checksum to trust: the pickle must at least load
            _load_pickle(ckpt / name)
    return state


def _load_pickle(path: Path) -> Any:
    """``torch.load`` of one of our checkpoint pickles, with a :class:`CheckpointError` naming the file."""
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # unpickling raises many types (EOFError, UnpicklingError, RuntimeError)
        raise CheckpointError(
            f"cannot read {path} ({type(e).__name__}: {e}): the checkpoint is corrupt"
        ) from e


def latest_valid_checkpoint(output: Path) -> Path | None:
    """The newest checkpoint that passes :func:`verify_checkpoint` (``--resume``); each corrupt newer one
    is skipped with a warning naming it. None without checkpoints; raises when none verifies."""
    cands = list_checkpoints(output)[::-1]
    newest = latest_checkpoint(output)
    if newest is not None and newest in cands:  # the ``latest`` pointer first
        cands.remove(newest)
        cands.insert(0, newest)
    errors = []
    for c in cands:
        try:
            verify_checkpoint(c)
        except CheckpointError as e:
            errors.append(str(e))
            print(f"warning: {e}; trying an older checkpoint", file=sys.stderr)
            continue
        if errors:
            print(f"warning: resuming from {c}, the newest checkpoint that verifies", file=sys.stderr)
        return c
    if errors:
        raise CheckpointError(
            f"no checkpoint in {output / CKPT_DIR} verifies ({'; '.join(errors)}): restore one, or move the "
            "folder away to start over"
        )
    return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(
    output: Path,
    step: int,
    model: torch.nn.Module,
    ema: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``checkpoints/step_N`` atomically: a tmp folder, fsync, rename, then the ``latest`` pointer.

    A full disk raises ``CheckpointError`` (the tmp folder is removed; earlier checkpoints stay valid).
    """
    from safetensors.torch import save_file

    root = output / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(tmp / "transformer.safetensors"), metadata={"step": str(step)})
        save_file({k: v.cpu().contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(
            {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            tmp / "rng.pt",
        )
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        from v4s_agent.integrity import write_checksums

        write_checksums(tmp)  # verified on --resume / export (verify_checkpoint)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        ptr_tmp = root / (LATEST + ".tmp")
        ptr_tmp.write_text(final.name)
        os.replace(ptr_tmp, root / LATEST)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise CheckpointError(
                f"disk full while writing checkpoint step {step} to {root}: free space and run again with "
                f"--resume (the last complete checkpoint is kept)"
            ) from e
        raise CheckpointError(f"cannot write checkpoint step {step} to {root}: {e}") from e
    for old in list_checkpoints(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _attention_kernel(device: torch.device, mode: str = "math"):
    """On CPU (``mode="math"``), scaled-dot-product attention's math kernel: for our short sequences
    (~400 tokens) its bf16 backward is faster per training step than the flash kernel torch picks by
    default (``benchmarks/bench_train.py --attention auto math``); on GPUs torch's own choice."""
    import contextlib

    if device.type != "cpu" or mode == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _init_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """``init_from`` -> (weights, EMA, what was loaded): a checkpoint or run folder (``_init_checkpoint``),
    or a ``save_pretrained`` pipeline folder such as a shipped checkpoint's ``pipeline/`` (its weights are
    already the EMA: both start from them)."""
    from safetensors.torch import load_file

    if (path / "transformer" / "config.json").is_file():
        from v4s_agent.model.transformer_v4s import V4STransformer3DModel

        model = V4STransformer3DModel.from_pretrained(str(path / "transformer"))
        w = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
        return w, {k: v.clone() for k, v in w.items()}, str(path / "transformer")
    init = _init_checkpoint(path)
    w = load_file(str(init / "transformer.safetensors"))
    return w, load_file(str(init / "ema.safetensors")), str(init)


def _init_checkpoint(path: Path) -> Path:
    """``init_from``: a checkpoint folder (verified), or a run folder's newest checkpoint that verifies."""
    if (path / "transformer.safetensors").is_file() and (path / "ema.safetensors").is_file():
        verify_checkpoint(path)
        return path
    found = latest_valid_checkpoint(path)
    if found is None:
        raise CheckpointError(f"init_from={str(path)!r}: no checkpoint (transformer + ema safetensors) there")
    return found


def check_compatible(
    state: dict[str, Any], cfg: TrainConfig, model_cfg: dict[str, Any], ckpt: Path, world_size: int
) -> None:
    """A checkpoint from another model config (or another data order) cannot be resumed: say which fields."""
    old = state.get("model_config", {})
    try:  # fields added since that checkpoint was written take their defaults (what it was trained with)
        from v4s_agent.model.configuration_model import ModelConfig

        old = ModelConfig.from_dict(old).to_dict()
    except (TypeError, ValueError):
        pass
    diff = sorted(k for k in set(old) | set(model_cfg) if old.get(k) != model_cfg.get(k))
    soft = [k for k in diff if k in TRAINING_ONLY_FIELDS]
    if soft:  # how the run samples noise or plans, not what the weights are: allowed, and said
        print(
            "warning: resuming with other training/sampling settings: "
            + ", ".join(f"{k}: {old.get(k)!r} -> {model_cfg.get(k)!r}" for k in soft),
            file=sys.stderr,
        )
        diff = [k for k in diff if k not in TRAINING_ONLY_FIELDS]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {model_cfg.get(k)!r}" for k in diff[:6])
        raise CheckpointError(
            f"checkpoint {ckpt} was trained with model config {old.get('name')!r}, this run uses "
            f"{model_cfg.get('name')!r}; differing fields: {detail}. Use another --output."
        )
    tc = state.get("train_config", {})
    for k in ("seed", "batch_size", "grad_accum_steps", "context_mode"):
        if k in tc and tc[k] != getattr(cfg, k):
            raise CheckpointError(
                f"checkpoint {ckpt} used {k}={tc[k]!r}, this run {getattr(cfg, k)!r}: resuming "
                "would not continue the same run. Use the run's train_config.json or another --output."
            )
    if state.get("world_size", world_size) != world_size:
        print(
            f"warning: checkpoint {ckpt} was written by {state['world_size']} processes, resuming with "
            f"{world_size}: the data order changes (training continues, not bit-exactly)",
            file=sys.stderr,
        )


# ---------------------------------------------------------------------------------------------- logging


def write_gif_summary(writer: Any, tag: str, video: np.ndarray, step: int, fps: int = 4) -> None:
    """TensorBoard video without moviepy: an animated-GIF image summary (what ``add_video`` writes)."""
    import io

    import imageio.v2 as imageio
    from tensorboard.compat.proto.summary_pb2 import Summary

    buf = io.BytesIO()
    imageio.mimsave(buf, list(video), format="GIF", duration=1.0 / fps, loop=0)
    h, w = video.shape[1:3]
    img = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=buf.getvalue())
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=img)]), step)


@torch.no_grad()
def sample_videos(
    pipe: Any, ema: dict[str, torch.Tensor], batch: dict[str, Any], steps: int, scale: float, seed: int
) -> np.ndarray:
    """Generate with the EMA weights (swapped in and back): uint8 ``(B, 2, T, H, W, 3)`` (generated, real)."""
    tr = pipe.transformer
    with ema_weights(pipe, ema):
        ctx = batch["context"]
        obs = (
            ((batch["target"][:, :, 0].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        )
        outs = []
        for i in range(ctx.shape[0]):
            cam = batch["camera"][i].numpy() if float(batch["camera_mask"][i]) > 0 else None
            prompt = batch["instruction"][i] or "Find the chair."
            g = torch.Generator(device=tr.device).manual_seed(seed + i)
            out = pipe(
                context=ctx[i : i + 1],
                context_positions=batch["context_positions"][i].numpy(),
                observation=obs[i],
                prompt=prompt,
                camera=cam,
                context_camera=batch["context_camera"][i].numpy() if "context_camera" in batch else None,
                num_inference_steps=steps,
                guidance_scale=scale,
                generator=g,
                output_type="np",
            )
            outs.append(out.frames[0])
        gen = np.stack(outs)
        real = ((batch["target"].permute(0, 2, 3, 4, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        return np.stack([gen, real], axis=1)


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
            probe = probe_batch(cfg.val_data_dir, mcfg, seed=cfg.seed + 777)
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


def _fixed_sample_batch(cfg: TrainConfig, mcfg: Any, p_drop: float) -> dict[str, Any] | None:
    """Two fixed samples (no CFG dropout) for the sample videos: held-out data when given."""
    from .dataset import DataError, make_dataloader

    src = cfg.val_data_dir or cfg.data_dir
    try:
        dl = make_dataloader(
            src,
            mcfg,
            2,
            seed=cfg.seed + 12345,
            p_drop=0.0,
            context_mode=cfg.context_mode,
            pose_task_prob=0.0,
            end_window_prob=1.0,
        )
        return next(iter(dl))
    except DataError as e:
        print(f"warning: no sample videos ({e})", file=sys.stderr)
        return None


def _log_samples(writer, output: Path, pipe, ema, batch, cfg: TrainConfig, step: int) -> None:
    import imageio.v2 as imageio

    vids = sample_videos(pipe, ema, batch, cfg.sample_steps, cfg.guidance_scale, cfg.seed)
    (output / "samples").mkdir(exist_ok=True)
    for i, v in enumerate(vids):
        strip = np.concatenate([v[0], v[1]], axis=1)  # generated above real, per frame
        write_gif_summary(writer, f"samples/{i}", strip, step)
        imageio.mimsave(output / "samples" / f"step_{step:08d}_{i}.gif", list(strip), duration=0.25, loop=0)


class ema_weights:  # noqa: N801  (a context manager used like a function)
    """Swap the EMA weights into the pipeline's transformer (eval mode) and back on exit."""

    def __init__(self, pipe: Any, ema: dict[str, torch.Tensor]) -> None:
        self.tr, self.ema = pipe.transformer, ema

    def __enter__(self) -> None:
        self.backup = {n: p.detach().clone() for n, p in self.tr.named_parameters()}
        self.was_training = self.tr.training
        with torch.no_grad():
            for n, p in self.tr.named_parameters():
                p.copy_(self.ema[n].to(p.dtype))
        self.tr.eval()

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for n, p in self.tr.named_parameters():
                p.copy_(self.backup[n])
        self.tr.train(self.was_training)


def _log_probe(writer, output: Path, pipe, ema, probe, cfg: TrainConfig, step: int) -> None:
    """Held-out diagnostics (``val_probe``) with the EMA weights -> TensorBoard ``val/*`` + metrics.jsonl."""
    from .val_probe import run_probe

    t0 = time.time()
    with ema_weights(pipe, ema):
        vals = run_probe(pipe, probe, cfg.sample_steps, cfg.guidance_scale, seed=cfg.seed)
    for k, v in vals.items():
        writer.add_scalar(f"val/{k}", v, step)
    rec = {
        "step": step,
        "probe_seconds": round(time.time() - t0, 2),
        **{f"val/{k}": v for k, v in vals.items()},
    }
    with open(output / METRICS, "a") as f:
        f.write(json.dumps(rec) + "\n")


def export_ema_pipeline(pipe: Any, ema: dict[str, torch.Tensor], out: str | Path) -> Path:
    """``save_pretrained`` of the pipeline with the EMA weights (the shipped format); refuses NaN/inf
    weights (a diverged or corrupt EMA must not ship)."""
    from v4s_agent.integrity import IntegrityError, check_finite_tensors

    try:
        check_finite_tensors(ema, "the EMA weights")
    except IntegrityError as e:
        raise CheckpointError(f"not exporting to {out}: {e}") from e
    with ema_weights(pipe, ema):
        pipe.save_pretrained(str(out))
    return Path(out)


def export_checkpoint(run_dir: str | Path, out: str | Path, ckpt: str | Path | None = None) -> Path:
    """Rebuild the pipeline from a run's checkpoint and save its EMA weights with ``save_pretrained``."""
    from safetensors.torch import load_file

    from v4s_agent.model.configuration_model import ModelConfig
    from v4s_agent.model.pipeline_v4s import build_pipeline

    run_dir = Path(run_dir)
    c = Path(ckpt) if ckpt else latest_valid_checkpoint(run_dir)
    if c is None:
        raise CheckpointError(f"no checkpoint in {run_dir}")
    state = verify_checkpoint(c)
    mcfg = ModelConfig.from_dict(state["model_config"])
    pipe = build_pipeline(mcfg)
    pipe.transformer.load_state_dict(load_file(str(c / "transformer.safetensors")))
    ema = load_file(str(c / "ema.safetensors"))
    return export_ema_pipeline(pipe, ema, out)


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
