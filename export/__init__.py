"""v4s_agent.export: ONNX export, ONNX Runtime / TensorRT runtimes of the planner, parity checks.

Importing this package is cheap (no torch, no onnx); the heavy modules load on first use:

- :mod:`.onnx_export`, :mod:`.graphs`: ``python -m v4s_agent.export onnx`` (graphs + ``parity.json``);
- :mod:`.planner_runtime`: :class:`PlannerRuntime`, the sampling loop over exported graphs (both runtimes);
- :mod:`.runtime_ort`: :class:`OrtPlannerBackend`, that loop on onnxruntime;
- :mod:`.tensorrt_build`, :mod:`.runtime_trt`: ``python -m v4s_agent.export tensorrt`` and
  :class:`TrtPlannerBackend` (needs an NVIDIA GPU and tensorrt).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["export_cache_dir", "load_runtime_pipeline"]


def export_cache_dir() -> Path:
    """Where exports made on demand are kept: ``$V4S_EXPORT_CACHE`` or ``~/.cache/v4s_agent/export``."""
    return Path(os.environ.get("V4S_EXPORT_CACHE", Path.home() / ".cache" / "v4s_agent" / "export"))


def _fingerprint(folder: Path) -> str:
    """Content hash of a checkpoint folder (configs and weights), so a retrained checkpoint re-exports."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _find(path: Path, marker: str, sub: str) -> Path | None:
    for cand in (path, path / sub, path.parent / sub):
        if (cand / marker).is_file():
            return cand
    return None


def _onnx_dir_for(path: Path) -> Path:
    """An ONNX export for ``path``: the folder itself, ``<ckpt>/onnx``, or a cached export made now."""
    found = _find(path, "manifest.json", "onnx")
    if found is not None and (found / "denoiser").is_dir():
        return found
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint or ONNX export at {path}")
    ckpt = path.parent if path.name == "pipeline" else path
    out = export_cache_dir() / f"{ckpt.name}-{_fingerprint(path)}" / "onnx"
    if (out / "manifest.json").is_file():
        return out
    from .graphs import export_planner

    logger.warning("exporting %s to ONNX once (cached in %s)", ckpt, out)
    export_planner(checkpoint=ckpt if (ckpt / "pipeline").is_dir() else path, out_dir=out)
    return out


def load_runtime_pipeline(path: str | os.PathLike, backend: str = "onnxruntime", device: str = "cpu") -> Any:
    """A pipeline-compatible runtime for ``VideoPlanner`` (``backend="onnxruntime"`` or ``"tensorrt"``).

    ``path`` is an ONNX export folder, a TensorRT build folder, or a checkpoint (``<ckpt>`` or
    ``<ckpt>/pipeline``); a checkpoint without ``onnx/`` (``tensorrt/``) beside it is exported (built)
    once into :func:`export_cache_dir`. The result is called like ``Video4SpatialPipeline`` and has
    ``model_config``.
    """
    p = Path(path)
    if backend == "onnxruntime":
        from .runtime_ort import OrtPlannerBackend

        return OrtPlannerBackend(_onnx_dir_for(p))
    if backend == "tensorrt":
        from .runtime_trt import TrtPlannerBackend
        from .tensorrt_build import ENGINES_JSON, build_engines, require_tensorrt

        require_tensorrt(need_gpu=True)
        found = _find(p, ENGINES_JSON, "tensorrt")
        if found is None:
            onnx_dir = _onnx_dir_for(p)
            found = onnx_dir.parent / "tensorrt"
            if not (found / ENGINES_JSON).is_file():
                logger.warning("building TensorRT engines once into %s", found)
                build_engines(onnx_dir, found)
        return TrtPlannerBackend(found, device=device if device != "cpu" else "cuda")
    raise ValueError(f"backend must be 'onnxruntime' or 'tensorrt'. Got {backend!r}")
