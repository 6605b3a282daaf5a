"""ONNX Runtime backend: the planner's whole sampling loop on onnxruntime, no torch model in the loop.

Why: on a robot without a CUDA torch stack (or on a CPU) the exported graphs are all that is needed.
This module holds the ONNX Runtime side (sessions, input checks, :class:`OrtPlannerBackend`,
:class:`OrtIDM`); the loop (joint classifier-free guidance, context paste-back, box frames, VAE decode) is
:class:`~v4s_agent.export.planner_runtime.PlannerRuntime`, written once over a tiny array-ops shim, so the
TensorRT backend (:mod:`v4s_agent.export.runtime_trt`) runs the very same loop on torch CUDA tensors.

Speed (CPU): sessions use ``ORT_ENABLE_ALL`` graph optimisation and a fixed intra-op thread count, the
conditional and unconditional CFG branches go through the denoiser as ONE batch-2 call, and the inputs
that do not change between steps are built once. IOBinding is optional (no gain on the CPU provider,
where inputs are already zero-copy; it is meant for device providers). This module does not import torch
unless a ``torch.Generator`` or torch tensors are handed in.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_export import load_manifest
from .planner_runtime import RUNTIME_COMPONENTS, NumpyOps, PlannerRuntime, RuntimeOutput, TorchOps

__all__ = [
    "RUNTIME_COMPONENTS",
    "NumpyOps",
    "OrtGraph",
    "OrtIDM",
    "OrtPlannerBackend",
    "PlannerRuntime",
    "RuntimeOutput",
    "TorchOps",
    "default_threads",
    "session_options",
]

# ---------------------------------------------------------------------------------------------------------
# one ONNX graph
# ---------------------------------------------------------------------------------------------------------


def default_threads() -> int:
    """``$V4S_ORT_THREADS``, else torch's thread count when torch is loaded (so ``--num-threads`` of the
    rollout applies to ONNX Runtime too), else 0 (ONNX Runtime's default: one per physical core)."""
    env = os.environ.get("V4S_ORT_THREADS")
    if env:
        return int(env)
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 0


def session_options(intra_op_threads: int | None = None, optimization_level: str = "all") -> Any:
    """CPU session options used by the backend and the benchmark (full graph optimisation, fixed threads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    levels = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization_level not in levels:
        raise ValueError(f"optimization_level must be one of {sorted(levels)}. Got {optimization_level!r}")
    so.graph_optimization_level = levels[optimization_level]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = default_threads() if intra_op_threads is None else int(intra_op_threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


class OrtGraph:
    """An ``InferenceSession`` that checks its inputs (names, rank, fixed dims, dtype) with clear errors."""

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        use_iobinding: bool = False,
        optimization_level: str = "all",
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX graph at {path}")
        self.name = path.parent.name
        self.session = ort.InferenceSession(
            str(path),
            sess_options=session_options(intra_op_threads, optimization_level),
            providers=list(providers or ["CPUExecutionProvider"]),
        )
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.use_iobinding = use_iobinding

    def check(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise ``ValueError`` naming the graph and input when a feed does not fit the graph.

        Checks names, dtype, rank, fixed dims, and that inputs sharing a symbolic dim (e.g. the number of
        latent frames, or ``64*frames`` tokens) agree, so a wrong shape never reaches ONNX Runtime's
        internal reshape errors.
        """
        missing = sorted(set(self.inputs) - set(feeds))
        extra = sorted(set(feeds) - set(self.inputs))
        if missing or extra:
            raise ValueError(
                f"{self.name}: missing inputs {missing}, unexpected inputs {extra}; "
                f"the graph takes {list(self.inputs)}"
            )
        symbols: dict[str, tuple[int, str]] = {}
        for name, meta in self.inputs.items():
            arr = feeds[name]
            want_dtype = _ORT_TYPES.get(meta.type)
            if want_dtype is not None and arr.dtype != want_dtype:
                raise ValueError(f"{self.name}: input {name!r} must be {want_dtype}, got {arr.dtype}")
            if arr.ndim != len(meta.shape):
                raise ValueError(
                    f"{self.name}: input {name!r} must have {len(meta.shape)} dims {meta.shape}, "
                    f"got shape {arr.shape}"
                )
            for i, (want, got) in enumerate(zip(meta.shape, arr.shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise ValueError(
                        f"{self.name}: input {name!r} dim {i} must be {want} (graph shape "
                        f"{meta.shape}), got shape {arr.shape}"
                    )
                if isinstance(want, str):
                    m = _SYM.match(want)
                    if m is None:
                        continue
                    factor, sym = int(m.group(1) or 1), m.group(2)
                    if got % factor:
                        raise ValueError(
                            f"{self.name}: input {name!r} dim {i} ({want}) must be a multiple of "
                            f"{factor}, got shape {arr.shape}"
                        )
                    val = got // factor
                    if sym in symbols and symbols[sym][0] != val:
                        raise ValueError(
                            f"{self.name}: input {name!r} shape {arr.shape} disagrees with {symbols[sym][1]} "
                            f"on dim {want!r} ({val * factor} vs {symbols[sym][0] * factor})"
                        )
                    symbols.setdefault(sym, (val, f"{name!r} shape {arr.shape}"))

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        self.check(feeds)
        if not self.use_iobinding:
            outs = self.session.run(self.output_names, feeds)
            return dict(zip(self.output_names, outs, strict=True))
        binding = self.session.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True))


_ORT_TYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(float16)": np.dtype(np.float16),
}
_SYM = re.compile(r"^(?:(\d+)\*)?([A-Za-z_]\w*)$")


class OrtPlannerBackend(PlannerRuntime):
    """The planner on ONNX Runtime: ``OrtPlannerBackend(onnx_dir).sample(...)`` (see docs/INTERFACES.md).

    Args:
        onnx_dir: folder written by ``python -m v4s_agent.export onnx``.
        providers: ONNX Runtime execution providers (default CPU; ``["CUDAExecutionProvider", ...]`` with
            onnxruntime-gpu).
        intra_op_threads: threads per operator (default: all cores).
        use_iobinding: bind inputs/outputs with ``io_binding`` (saves copies with device providers).
        optimization_level: ``"none" | "basic" | "extended" | "all"`` ONNX Runtime graph optimisation.
        fuse_cfg: run the conditional and unconditional CFG branches as one batch-2 call.
    """

    def __init__(
        self,
        onnx_dir: str | os.PathLike,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        use_iobinding: bool = False,
        optimization_level: str = "all",
        fuse_cfg: bool = True,
    ) -> None:
        manifest = load_manifest(onnx_dir)
        root = Path(onnx_dir)
        graphs = {
            name: OrtGraph(
                root / comp["file"], providers, intra_op_threads, use_iobinding, optimization_level
            )
            for name, comp in manifest["components"].items()
        }
        super().__init__(root, manifest, graphs, NumpyOps())
        self.fuse_cfg = fuse_cfg


class OrtIDM:
    """The exported inverse-dynamics graph as a drop-in for ``InverseDynamicsModel.__call__`` on tensors.

    Why: ``agent.action_decoding.idm_probs`` calls ``idm(frame_t, frame_t1)`` with torch tensors; this
    object answers with torch logits computed by ONNX Runtime, so the whole plan can run on ORT.
    """

    def __init__(self, onnx_dir: str | os.PathLike, intra_op_threads: int | None = None) -> None:
        manifest = load_manifest(onnx_dir)
        if "idm" not in manifest["components"]:
            raise FileNotFoundError(f"{onnx_dir} has no idm graph (the checkpoint had no idm/ folder)")
        self.graph = OrtGraph(Path(onnx_dir) / manifest["components"]["idm"]["file"], None, intra_op_threads)
        shape = manifest["components"]["idm"]["inputs"]["frame_t"]["shape"]
        self.config = {"height": shape[2], "width": shape[3]}

    def __call__(self, frame_t: Any, frame_t1: Any) -> Any:
        import torch

        out = self.graph(
            frame_t=np.ascontiguousarray(frame_t.detach().cpu().numpy(), np.float32),
            frame_t1=np.ascontiguousarray(frame_t1.detach().cpu().numpy(), np.float32),
        )["logits"]
        return torch.from_numpy(out)

    def to(self, *args: Any, **kwargs: Any) -> OrtIDM:
        return self

    def eval(self) -> OrtIDM:
        return self
