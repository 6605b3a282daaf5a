"""Where the planner finds its exported backends (ONNX Runtime, TensorRT) without importing them.

Why: the export builds on the agent (it exports the planner's inverse-dynamics model), so the agent must
not import the export back. The export's runtime loader is handed in instead: the package root registers
it (``v4s_agent/__init__.py``), and a caller may pass its own (``VideoPlanner.from_pretrained(...,
runtime_loader=...)``). This module imports nothing heavy, so the root can register at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# loader(pipe_dir, backend=..., device=...) -> a pipeline-compatible runtime
RuntimeLoader = Callable[..., Any]

_LOADERS: dict[str, RuntimeLoader] = {}


def register_runtime_loader(backend: str, loader: RuntimeLoader) -> None:
    """Make ``loader`` the one that builds ``backend``'s runtime for ``VideoPlanner.from_pretrained``."""
    if not callable(loader):
        raise TypeError(f"loader for {backend!r} must be callable. Got {type(loader).__name__}")
    _LOADERS[backend] = loader


def runtime_loader(backend: str) -> RuntimeLoader | None:
    """The registered loader of ``backend`` (``None`` when nothing was handed in)."""
    return _LOADERS.get(backend)


def load_runtime(pipe_dir: Path, backend: str, device: str, loader: RuntimeLoader | None = None) -> Any:
    """Build ``backend``'s runtime for a checkpoint's pipeline folder with ``loader`` or the registered one.

    Raises:
        LookupError: no loader for ``backend`` was handed in.
    """
    loader = loader if loader is not None else _LOADERS.get(backend)
    if loader is None:
        raise LookupError(
            f"no runtime loader for backend {backend!r}: import v4s_agent (it registers "
            f"v4s_agent.export's) or pass runtime_loader="
        )
    return loader(pipe_dir, backend=backend, device=device)
