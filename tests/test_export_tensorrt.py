"""TensorRT path on a CPU machine: graph sanitising (polygraphy / onnx-graphsurgeon) for real, fp16
conversion, profile shapes, and the clear error when tensorrt or a GPU is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from v4s_agent.export.onnx_export import GraphSpec, export_all
from v4s_agent.export.tensorrt_build import (
    INSTALL_HINT,
    TensorRTUnavailableError,
    build_engines,
    profile_shapes,
    require_tensorrt,
)


def _need_sanitizer() -> None:
    pytest.importorskip("polygraphy")
    pytest.importorskip("onnx_graphsurgeon")


class _Tiny(torch.nn.Module):
    """Stand-in with constant sub-graphs to fold (a buffer passed through arithmetic) and a dynamic axis."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (self.scale * 2.0 + 1.0).exp().log()  # foldable constant chain
        return torch.nn.functional.gelu(self.lin(x) * s).mean(dim=1, keepdim=True) + x


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("onnx")
    spec = GraphSpec(
        name="tiny",
        module=_Tiny(),
        inputs={"x": torch.randn(1, 5, 8)},
        output_names=["y"],
        dynamic_axes={"x": {0: "batch", 1: "tokens"}},
        alt_inputs={"x": torch.randn(2, 7, 8)},
        shape_ranges={"x": ([1, 1, 8], [2, 5, 8], [2, 64, 8])},
    )
    export_all([spec], out)
    return out


def test_sanitize_only_runs_on_cpu(tiny_export: Path, tmp_path: Path) -> None:
    _need_sanitizer()
    report = build_engines(tiny_export, tmp_path / "trt", sanitize_only=True)
    entry = report["components"]["tiny"]
    assert entry["nodes_after"] <= entry["nodes_before"]
    assert (tmp_path / "trt" / "manifest.json").is_file()
    x = np.random.default_rng(0).standard_normal((2, 9, 8)).astype(np.float32)
    a = ort.InferenceSession(str(tiny_export / "tiny" / "model.onnx")).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(tmp_path / "trt" / "tiny" / "model.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(a, b, atol=1e-6)  # sanitised graph computes the same, dynamic axes kept


def test_profile_shapes_from_manifest(tiny_export: Path) -> None:
    comp = json.loads((tiny_export / "manifest.json").read_text())["components"]["tiny"]
    assert profile_shapes(comp) == {"x": ([1, 1, 8], [2, 5, 8], [2, 64, 8])}


def test_missing_tensorrt_says_what_to_install(tiny_export: Path, tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401

        has_trt = torch.cuda.is_available()
    except ImportError:
        has_trt = False
    if has_trt:
        pytest.skip("tensorrt and a GPU are present")
    with pytest.raises(TensorRTUnavailableError) as err:
        require_tensorrt()
    msg = str(err.value)
    assert "pip install tensorrt polygraphy onnx-graphsurgeon" in msg and "JetPack" in msg
    assert INSTALL_HINT in msg
    with pytest.raises(TensorRTUnavailableError):
        build_engines(tiny_export, tmp_path / "trt")
    from v4s_agent.export.runtime_trt import TrtPlannerBackend

    with pytest.raises(TensorRTUnavailableError):
        TrtPlannerBackend(tmp_path)


def test_bad_onnx_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_engines(tmp_path / "nope", tmp_path / "trt", sanitize_only=True)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        build_engines(tmp_path, tmp_path / "trt", sanitize_only=True)
