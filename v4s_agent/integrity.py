"""Integrity of artefacts read back from disk, and strict JSON for what we write.

Why: a checkpoint, a shipped pipeline or an IDM with a few corrupt bytes still parses (safetensors only
checks its header), so without a checksum it would load and plan garbage. Every folder we write gets a
``checksums.json`` (sha256 per file); readers verify it and check that float weights are finite, and
raise :class:`IntegrityError` naming the file and saying what to do. Folders written before this file
existed (no ``checksums.json``) still get the parse and finite-weights checks.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

CHECKSUMS = "checksums.json"


class IntegrityError(ValueError):
    """An artefact on disk does not match its checksum, does not parse, or holds non-finite weights."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MB chunks (no whole-file copy in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files_under(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != CHECKSUMS and not p.name.startswith(".")
    )


def write_checksums(folder: str | os.PathLike, files: Iterable[str] | None = None) -> Path:
    """Write ``folder/checksums.json`` with the sha256 of ``files`` (default: every file below ``folder``),
    atomically (tmp + ``os.replace``), so a reader never sees a partial list."""
    folder = Path(folder)
    names = sorted(files) if files is not None else _files_under(folder)
    sums = {"algorithm": "sha256", "files": {n: sha256_file(folder / n) for n in names}}
    tmp = folder / f".{CHECKSUMS}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(sums, indent=1))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, folder / CHECKSUMS)
    return folder / CHECKSUMS


def verify_checksums(folder: str | os.PathLike, required: bool = False) -> bool:
    """Check every file listed in ``folder/checksums.json``; False when there is none (and not
    ``required``). Raises :class:`IntegrityError` naming the first file that is missing or differs."""
    folder = Path(folder)
    f = folder / CHECKSUMS
    if not f.is_file():
        if required:
            raise IntegrityError(f"{f} is missing: the folder cannot be verified")
        return False
    try:
        listed = json.loads(f.read_text())["files"]
        if not isinstance(listed, dict):
            raise TypeError("'files' is not an object")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{f} is unreadable ({type(e).__name__}: {e}): the folder is corrupt") from e
    for name, want in listed.items():
        p = folder / name
        if not p.is_file():
            raise IntegrityError(f"{p} is missing (listed in {f})")
        if sha256_file(p) != want:
            raise IntegrityError(
                f"{p} does not match its sha256 in {f}: the file is corrupt (re-download, re-export or "
                "restore it)"
            )
    return True


def verify_safetensors(path: str | os.PathLike, check_finite: bool = True) -> list[str]:
    """Parse a ``.safetensors`` file and check that its float tensors are finite; returns its keys.

    Raises :class:`IntegrityError` naming the file (and the tensor) instead of safetensors' own
    ``SafetensorError``, which names neither."""
    import torch
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise IntegrityError(f"{p} is missing")
    try:
        with safe_open(str(p), framework="pt") as f:
            keys = list(f.keys())
            if check_finite:
                for k in keys:
                    t = f.get_tensor(k)
                    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                        raise IntegrityError(
                            f"{p}: tensor {k!r} holds non-finite values (NaN/inf): the file is corrupt or "
                            "comes from a diverged run"
                        )
    except IntegrityError:
        raise
    except Exception as e:  # SafetensorError, OSError, ... : safetensors raises several types
        raise IntegrityError(f"{p} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    return keys


def verify_weights_folder(folder: str | os.PathLike, required: bool = False) -> bool:
    """``verify_checksums`` plus ``verify_safetensors`` of every ``*.safetensors`` below ``folder``.
    Returns whether a checksum list was there (False: only the parse/finite checks ran)."""
    folder = Path(folder)
    had = verify_checksums(folder, required=required)
    for p in sorted(folder.rglob("*.safetensors")):
        verify_safetensors(p)
    return had


def check_finite_tensors(tensors: dict[str, Any], what: str) -> None:
    """Raise :class:`IntegrityError` when a float tensor of ``tensors`` holds NaN/inf (``what`` names
    where they come from, for the message)."""
    import torch

    for k, t in tensors.items():
        if (
            isinstance(t, torch.Tensor)
            and t.is_floating_point()
            and t.numel()
            and not bool(torch.isfinite(t).all())
        ):
            raise IntegrityError(f"{what}: tensor {k!r} holds non-finite values (NaN/inf)")


# ---------------------------------------------------------------------------------------- strict JSON


def to_strict_json(o: Any) -> Any:
    """``o`` with NaN/inf floats as ``None`` and numpy values as Python ones (strict JSON: ``null``, not
    the bare ``NaN`` that ``json.dumps`` writes and other parsers reject)."""
    if isinstance(o, dict):
        return {k if isinstance(k, str | int | float | bool) or k is None else str(k): to_strict_json(v)
                for k, v in o.items()}  # fmt: skip
    if isinstance(o, list | tuple):
        return [to_strict_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return to_strict_json(o.tolist())
    if isinstance(o, np.generic):
        return to_strict_json(o.item())
    if isinstance(o, float):
        return float(o) if math.isfinite(o) else None
    return o


def dumps_strict(o: Any, **kw: Any) -> str:
    """``json.dumps`` of ``to_strict_json(o)`` with ``allow_nan=False`` (other types via ``str``)."""
    kw.setdefault("default", str)
    return json.dumps(to_strict_json(o), allow_nan=False, **kw)
