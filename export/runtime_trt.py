"""TensorRT backend: runs the engines built by :mod:`v4s_agent.export.tensorrt_build` on torch CUDA tensors.

Why torch tensors: the planner already lives in torch on the robot; TensorRT reads and writes the
tensors' device memory directly (``set_tensor_address`` + ``execute_async_v3`` on torch's current
stream), so no extra CUDA bindings (pycuda / cuda-python) are needed and nothing is copied to the host
inside the sampling loop. The sampling loop itself is the same code as the ONNX Runtime backend
(:class:`v4s_agent.export.planner_runtime.PlannerRuntime`), working on torch CUDA tensors here.

NOT run here: no GPU and no tensorrt on the development machines (see docs/EXPORT.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .onnx_export import MANIFEST
from .planner_runtime import PlannerRuntime, TorchOps
from .tensorrt_build import ENGINE_FILE, ENGINES_JSON, require_tensorrt


def _torch_dtype(trt: Any, dt: Any) -> torch.dtype:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
    }
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dt not in table:
        raise TypeError(f"unsupported TensorRT dtype {dt}")
    return table[dt]


class TrtGraph:
    """One engine: ``graph(**inputs) -> {output: tensor}`` with torch CUDA tensors in and out."""

    def __init__(self, engine_path: str | os.PathLike, device: str | torch.device = "cuda") -> None:
        trt = require_tensorrt(need_gpu=True)
        path = Path(engine_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no TensorRT engine at {path} (run `python -m v4s_agent.export tensorrt`)"
            )
        self._trt = trt
        self.device = torch.device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"TensorRT could not deserialize {path} (built with another TensorRT version/GPU?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_in[n]]
        self.output_names = [n for n in names if not is_in[n]]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        missing = sorted(set(self.input_names) - set(inputs))
        if missing:
            raise ValueError(f"missing engine inputs {missing}; expected {self.input_names}")
        keep = []  # keep converted inputs alive until the stream has run
        for name in self.input_names:
            t = inputs[name].to(device=self.device, dtype=self.dtypes[name]).contiguous()
            keep.append(t)
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise ValueError(
                    f"input {name!r} shape {tuple(t.shape)} is outside the engine's optimisation profile"
                )
            self.context.set_tensor_address(name, t.data_ptr())
        outs: dict[str, torch.Tensor] = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return {k: v.float() if v.dtype == torch.float16 else v for k, v in outs.items()}


class TrtPlannerBackend(PlannerRuntime):
    """Planner sampling loop on TensorRT engines (same API as :class:`OrtPlannerBackend`)."""

    def __init__(self, engine_dir: str | os.PathLike, device: str | torch.device = "cuda") -> None:
        require_tensorrt(need_gpu=True)
        root = Path(engine_dir)
        if not (root / ENGINES_JSON).is_file() or not (root / MANIFEST).is_file():
            raise FileNotFoundError(
                f"{root} is not a TensorRT build folder (no {ENGINES_JSON}/{MANIFEST}); "
                "run `python -m v4s_agent.export tensorrt --onnx DIR --out DIR`"
            )
        manifest = json.loads((root / MANIFEST).read_text())
        built = json.loads((root / ENGINES_JSON).read_text())["components"]
        graphs = {
            name: TrtGraph(root / name / ENGINE_FILE, device) for name in built if "engine" in built[name]
        }
        super().__init__(root, manifest, graphs, TorchOps(torch.device(device)))

    def _run(self, name: str, **inputs: Any) -> dict[str, Any]:
        conv = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
        return self.graphs[name](**conv)
