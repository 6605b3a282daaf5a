"""Training checkpoints: atomic writes, verification, resume checks, and the EMA pipeline they export to.

A checkpoint is a folder ``OUTPUT/checkpoints/step_N`` of plain files: ``transformer.safetensors`` +
``ema.safetensors`` + optimiser/scheduler/RNG pickles + ``state.json`` (step = data position) +
``checksums.json``; it is written to a temporary folder and renamed, so a run killed at any moment
resumes from the last complete checkpoint (the ``latest`` pointer names it).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig
from .ema import ema_weights

CKPT_DIR = "checkpoints"
# model-config fields that change how training draws noise or how sampling runs, not the weights: a run
# may resume with new values (e.g. a training noise distribution chosen from its held-out probe)
TRAINING_ONLY_FIELDS = frozenset(
    {"train_sigma_mean", "train_sigma_std", "train_sigma_shift", "train_sigma_high_frac", "cfg_dropout",
     "end_frame_loss_weight",
     "guidance_scale",
     "num_inference_steps", "flow_shift", "stochastic_sampling", "name"}
)  # fmt: skip
LATEST = "latest"
METRICS = "metrics.jsonl"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or does not belong to this run's config."""


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
