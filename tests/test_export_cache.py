"""``load_runtime_pipeline`` finds an export beside a checkpoint, or exports once into the cache (the
export itself is stubbed here; the real one is covered by test_export_onnx.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import v4s_agent.export as export_pkg


def _fake_ckpt(root: Path) -> Path:
    (root / "pipeline").mkdir(parents=True)
    (root / "pipeline" / "model_index.json").write_text("{}")
    (root / "idm").mkdir()
    return root


def test_exports_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import v4s_agent.export.graphs as graphs

    calls: list[tuple[Path, Path]] = []

    def fake_export(checkpoint: Path, out_dir: Path) -> None:
        calls.append((Path(checkpoint), Path(out_dir)))
        (Path(out_dir) / "denoiser").mkdir(parents=True)
        (Path(out_dir) / "manifest.json").write_text(json.dumps({"components": {}}))

    monkeypatch.setenv("V4S_EXPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(graphs, "export_planner", fake_export)
    ckpt = _fake_ckpt(tmp_path / "ckpt")
    first = export_pkg._onnx_dir_for(ckpt / "pipeline")
    again = export_pkg._onnx_dir_for(ckpt / "pipeline")
    assert first == again and first.is_relative_to(tmp_path / "cache")
    assert calls == [(ckpt, first)]  # exported once, from the checkpoint root (so idm/ is included)
    (ckpt / "pipeline" / "model_index.json").write_text('{"changed": 1}')  # retrained -> new export
    assert export_pkg._onnx_dir_for(ckpt / "pipeline") != first


def test_export_beside_checkpoint_is_used(tmp_path: Path) -> None:
    ckpt = _fake_ckpt(tmp_path / "ckpt")
    (ckpt / "onnx" / "denoiser").mkdir(parents=True)
    (ckpt / "onnx" / "manifest.json").write_text("{}")
    assert export_pkg._onnx_dir_for(ckpt / "pipeline") == ckpt / "onnx"
    assert export_pkg._onnx_dir_for(ckpt / "onnx") == ckpt / "onnx"


def test_unknown_backend_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backend must be"):
        export_pkg.load_runtime_pipeline(tmp_path, backend="tflite")
    with pytest.raises(FileNotFoundError, match="no checkpoint or ONNX export"):
        export_pkg.load_runtime_pipeline(tmp_path / "missing")
