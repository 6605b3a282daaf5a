"""ONNX Runtime backend: the planner's whole sampling loop on onnxruntime, no torch model in the loop.

Why: on a robot without a CUDA torch stack (or on a CPU) the exported graphs are all that is needed.
The loop (flow-matching Euler scheduler in numpy, joint classifier-free guidance, context paste-back,
box frames, VAE decode) is written once in :class:`PlannerRuntime` over a tiny array-ops shim, so the
TensorRT backend (:mod:`v4s_agent.export.runtime_trt`) runs the very same loop on torch CUDA tensors.

Speed (CPU): sessions use ``ORT_ENABLE_ALL`` graph optimisation and a fixed intra-op thread count,
the conditional and unconditional CFG branches go through the denoiser as ONE batch-2 call, and the
denoiser's inputs that do not change between steps are bound once with IOBinding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_export import load_manifest

# ---------------------------------------------------------------------------------------------------------
# scheduler maths (numpy): diffusers' FlowMatchEulerDiscreteScheduler, static shift
# ---------------------------------------------------------------------------------------------------------


def flow_match_sigmas(
    num_inference_steps: int, num_train_timesteps: int = 1000, shift: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(timesteps (N,), sigmas (N+1,))`` exactly as ``FlowMatchEulerDiscreteScheduler.set_timesteps``.

    Only the static-shift path (no dynamic shifting, no karras/exponential/beta sigmas) is implemented;
    :func:`scheduler_config_for_runtime` refuses other configurations at export time.
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    n = float(num_train_timesteps)

    def shifted(s: np.ndarray) -> np.ndarray:
        return shift * s / (1 + (shift - 1) * s)

    train_sigmas = shifted(np.linspace(1, n, int(n), dtype=np.float32)[::-1].copy() / n)
    sigma_max, sigma_min = float(train_sigmas[0]), float(train_sigmas[-1])
    timesteps = np.linspace(sigma_max * n, sigma_min * n, num_inference_steps)
    sigmas = shifted(timesteps / n).astype(np.float32)
    timesteps = (sigmas * np.float32(n)).astype(np.float32)
    return timesteps, np.concatenate([sigmas, np.zeros(1, np.float32)])


_UNSUPPORTED = ("use_dynamic_shifting", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                "invert_sigmas", "stochastic_sampling", "shift_terminal")


def scheduler_config_for_runtime(scheduler: Any) -> dict[str, Any]:
    """The scheduler settings the numpy loop needs; a clear error for schedulers it does not implement."""
    cfg = dict(scheduler.config)
    name = type(scheduler).__name__
    if name != "FlowMatchEulerDiscreteScheduler":
        raise NotImplementedError(f"the ONNX Runtime loop implements FlowMatchEulerDiscreteScheduler, not {name}")
    bad = [k for k in _UNSUPPORTED if cfg.get(k)]
    if bad:
        raise NotImplementedError(f"scheduler options {bad} are not implemented in the numpy scheduler")
    return {"class": name, "num_train_timesteps": int(cfg["num_train_timesteps"]), "shift": float(cfg["shift"])}


# ---------------------------------------------------------------------------------------------------------
# array ops shim: numpy (ORT) or torch (TensorRT)
# ---------------------------------------------------------------------------------------------------------


class NumpyOps:
    """The handful of array operations the sampling loop uses, on numpy float32 arrays."""

    def asarray(self, x: Any, dtype: str = "float32") -> np.ndarray:
        if hasattr(x, "detach"):  # a torch tensor handed in by a caller
            x = x.detach().cpu().numpy()
        return np.ascontiguousarray(np.asarray(x, dtype=dtype))

    def cat(self, xs: Sequence[Any], axis: int) -> np.ndarray:
        return np.concatenate(list(xs), axis=axis)

    def full(self, shape: Sequence[int], value: float, like: Any) -> np.ndarray:
        return np.full(tuple(shape), value, dtype=like.dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


class TorchOps:
    """Same operations on torch tensors on one device (the TensorRT backend)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = device

    def asarray(self, x: Any, dtype: str = "float32") -> Any:
        return self.torch.as_tensor(np.asarray(x) if not hasattr(x, "detach") else x,
                                    dtype=getattr(self.torch, dtype), device=self.device).contiguous()

    def cat(self, xs: Sequence[Any], axis: int) -> Any:
        return self.torch.cat(list(xs), dim=axis)

    def full(self, shape: Sequence[int], value: float, like: Any) -> Any:
        return self.torch.full(tuple(shape), value, dtype=like.dtype, device=like.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().float().cpu().numpy()


# ---------------------------------------------------------------------------------------------------------
# one ONNX graph
# ---------------------------------------------------------------------------------------------------------


def session_options(intra_op_threads: int | None = None) -> Any:
    """CPU session options used by the backend and the benchmark (full graph optimisation, fixed threads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = intra_op_threads if intra_op_threads is not None else (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


class OrtGraph:
    """An ``InferenceSession`` that checks its inputs (names, rank, fixed dims, dtype) with clear errors."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX graph at {path}")
        self.name = path.parent.name
        self.session = ort.InferenceSession(str(path), sess_options=session_options(intra_op_threads),
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def check(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise ``ValueError`` naming the graph and input when a feed does not fit the graph."""
        missing = sorted(set(self.inputs) - set(feeds))
        extra = sorted(set(feeds) - set(self.inputs))
        if missing or extra:
            raise ValueError(f"{self.name}: missing inputs {missing}, unexpected inputs {extra}; "
                             f"the graph takes {list(self.inputs)}")
        for name, meta in self.inputs.items():
            arr = feeds[name]
            if arr.ndim != len(meta.shape):
                raise ValueError(f"{self.name}: input {name!r} must have {len(meta.shape)} dims {meta.shape}, "
                                 f"got shape {arr.shape}")
            for i, (want, got) in enumerate(zip(meta.shape, arr.shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise ValueError(f"{self.name}: input {name!r} dim {i} must be {want} (graph shape "
                                     f"{meta.shape}), got shape {arr.shape}")

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        self.check(feeds)
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs, strict=True))


# ---------------------------------------------------------------------------------------------------------
# the planner runtime
# ---------------------------------------------------------------------------------------------------------


class PlannerRuntime:
    """Backend-neutral sampling loop over exported graphs (see the module docstring)."""

    def __init__(self, root: Path, manifest: dict[str, Any], graphs: dict[str, Any], ops: Any) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.config: dict[str, Any] = manifest.get("runtime", {})
        self.graphs = graphs
        self.ops = ops

    def _run(self, name: str, **inputs: Any) -> dict[str, Any]:
        if name not in self.graphs:
            raise KeyError(f"the export has no {name!r} graph (has {sorted(self.graphs)})")
        return self.graphs[name](**inputs)


class OrtPlannerBackend(PlannerRuntime):
    """The planner on ONNX Runtime: ``OrtPlannerBackend(onnx_dir).sample(...)`` (see docs/INTERFACES.md)."""

    def __init__(self, onnx_dir: str | os.PathLike, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None) -> None:
        manifest = load_manifest(onnx_dir)
        root = Path(onnx_dir)
        graphs = {name: OrtGraph(root / comp["file"], providers, intra_op_threads)
                  for name, comp in manifest["components"].items()}
        super().__init__(root, manifest, graphs, NumpyOps())
