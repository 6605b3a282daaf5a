"""TensorRT engines from the ONNX export: sanitise (polygraphy / onnx-graphsurgeon), then build.

Why these steps:
- **sanitise**: the dynamo exporter leaves shape arithmetic and constant sub-graphs that TensorRT's
  parser handles poorly; polygraphy folds constants (ONNX Runtime evaluates them) and
  onnx-graphsurgeon removes dead nodes and sorts the graph. This part runs on CPU and is tested here.
- **fp16**: TensorRT 10 builds weakly typed networks with ``BuilderFlag.FP16``. TensorRT 11 removed
  that flag (every network is strongly typed: precision comes from the graph), so there the
  ``denoiser_fp16`` graph of the export (``--fp16-denoiser``: exported from an fp16 copy of the
  transformer, float32 I/O) is built instead; onnxconverter-common's float16 pass produced graphs with
  type conflicts on this model, so the fp16 graph comes from PyTorch itself.
- **optimisation profiles** for every dynamic input, from the shape ranges in ``manifest.json``.
- **timing cache** shared by all engines of a build and written back, so rebuilding is fast.

TensorRT was NOT run on the machines this was written on (no GPU, no tensorrt wheel); the API calls
follow NVIDIA's Python API reference for TensorRT 10.x/11.x.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from .onnx_export import MANIFEST, MODEL_FILE, load_manifest

logger = logging.getLogger(__name__)

ENGINE_FILE = "model.engine"
ENGINES_JSON = "engines.json"
TIMING_CACHE = "timing.cache"

INSTALL_HINT = (
    "TensorRT needs an NVIDIA GPU and the tensorrt Python package.\n"
    "  x86_64 Linux/Windows with an NVIDIA GPU and driver:\n"
    "      pip install tensorrt polygraphy onnx-graphsurgeon\n"
    "      (plus a CUDA build of torch, e.g. pip install torch --index-url https://download.pytorch.org/whl/cu128)\n"
    "  NVIDIA Jetson (aarch64): TensorRT comes with JetPack, not from PyPI:\n"
    "      sudo apt install nvidia-jetpack   # provides python3-libnvinfer (tensorrt)\n"
    "      python3 -m venv --system-site-packages .venv && pip install polygraphy onnx-graphsurgeon\n"
    "      (torch for Jetson: NVIDIA's JetPack wheels)\n"
    "On a CPU-only machine use backend='onnxruntime' instead."
)


class TensorRTUnavailableError(ImportError):
    """tensorrt (or a CUDA GPU) is missing; the message says what to install for x86 GPUs and Jetson."""


def require_tensorrt(need_gpu: bool = True) -> ModuleType:
    """Import tensorrt, or raise :class:`TensorRTUnavailableError` with install instructions."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception as err:  # ImportError, or OSError when libnvinfer is missing
        raise TensorRTUnavailableError(f"could not import tensorrt ({err}).\n{INSTALL_HINT}") from err
    if need_gpu:
        import torch

        if not torch.cuda.is_available():
            raise TensorRTUnavailableError(
                f"tensorrt is installed but torch sees no CUDA GPU.\n{INSTALL_HINT}"
            )
    return trt


def require_sanitizer() -> tuple[ModuleType, ModuleType]:
    """Import polygraphy and onnx-graphsurgeon, or say how to install them."""
    try:
        import onnx_graphsurgeon as gs  # type: ignore[import-not-found]
        from polygraphy.backend import onnx as pg_onnx  # type: ignore[import-not-found]
    except Exception as err:
        raise ImportError(
            f"graph sanitising needs polygraphy and onnx-graphsurgeon ({err}): "
            "pip install polygraphy onnx-graphsurgeon"
        ) from err
    return pg_onnx, gs


# ---------------------------------------------------------------------------------------------------------
# CPU part: sanitise (tested on CPU)
# ---------------------------------------------------------------------------------------------------------


def _save(model: Any, path: Path) -> None:
    import onnx

    large = model.ByteSize() > 2 * 1024**3 - 1 if hasattr(model, "ByteSize") else False
    if large:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, str(path))


def demote_float64(model: Any) -> int:
    """Turn float64 tensors into float32 in place (TensorRT has no double); returns how many changed.

    Why: the temporal RoPE computes its angles in float64 (``WanFramePosRotaryEmbed.compute_dtype``) for
    bit-exact PyTorch parity; in float32 the angle error is ~1e-6 rad, far below fp16 noise.
    """
    import numpy as np
    from onnx import TensorProto, numpy_helper

    changed = 0
    dbl, flt = TensorProto.DOUBLE, TensorProto.FLOAT

    def fix_tensor(t: Any) -> Any:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)

    graph = model.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == dbl:
            graph.initializer[i].CopyFrom(fix_tensor(init))
            changed += 1
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == dbl:
                attr.i = flt
                changed += 1
            if attr.name == "value" and attr.HasField("t") and attr.t.data_type == dbl:
                attr.t.CopyFrom(fix_tensor(attr.t))
                changed += 1
    for vi in [*graph.value_info, *graph.input, *graph.output]:
        if vi.type.tensor_type.elem_type == dbl:
            vi.type.tensor_type.elem_type = flt
            changed += 1
    return changed


def sanitize_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> dict[str, int]:
    """float64 -> float32, fold constants (polygraphy), clean up and sort (onnx-graphsurgeon); check; save.

    Returns the node counts before and after, for the build log.
    """
    import onnx

    pg_onnx, gs = require_sanitizer()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no ONNX file at {src}")
    model = onnx.load(str(src))
    before = len(model.graph.node)
    demoted = demote_float64(model)
    model = pg_onnx.fold_constants(model, error_ok=False)
    graph = gs.import_onnx(model)
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _save(model, dst)
    return {"nodes_before": before, "nodes_after": len(model.graph.node), "float64_demoted": demoted}


# ---------------------------------------------------------------------------------------------------------
# GPU part: build engines (not run here)
# ---------------------------------------------------------------------------------------------------------


def profile_shapes(comp: dict[str, Any]) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """(min, opt, max) for every input with a symbolic dim; the example shape where no range was given."""
    out: dict[str, tuple[list[int], list[int], list[int]]] = {}
    ranges = comp.get("shape_ranges", {})
    for name, info in comp["inputs"].items():
        if all(isinstance(d, int) for d in info["shape"]):
            continue
        if name in ranges:
            mn, opt, mx = (list(map(int, s)) for s in ranges[name])
        else:
            ex = list(map(int, comp["example_shapes"][name]))
            mn, opt, mx = ex, ex, ex
        out[name] = (mn, opt, mx)
    return out


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    profiles: dict[str, tuple[list[int], list[int], list[int]]],
    fp16: bool = True,
    timing_cache: str | os.PathLike | None = None,
    workspace_gib: float | None = None,
) -> Path:
    """Build one serialized engine with the TensorRT Python API.

    ``Builder`` -> ``create_network`` -> ``OnnxParser.parse_from_file`` -> ``IBuilderConfig`` (fp16,
    workspace, timing cache, one optimisation profile) -> ``build_serialized_network``.
    """
    trt = require_tensorrt(need_gpu=True)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    weak_fp16 = hasattr(trt.BuilderFlag, "FP16")  # TensorRT <= 10
    flags = 0
    if not weak_fp16 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")
    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 1024**3))
    if fp16 and weak_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in profiles.items():
            profile.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    if timing_cache:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return engine_path


def build_engines(
    onnx_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    fp16: bool = True,
    components: list[str] | None = None,
    sanitize_only: bool = False,
    workspace_gib: float | None = None,
) -> dict[str, Any]:
    """Sanitise every exported graph into ``<out>/<component>/model.onnx`` and build ``model.engine``.

    ``sanitize_only`` stops before TensorRT (what can run on a CPU machine). The manifest and the
    tokenizer files are copied so that ``<out>`` is self-contained for :class:`TrtPlannerBackend`.
    """
    manifest = load_manifest(onnx_dir)
    if not sanitize_only:
        trt = require_tensorrt(need_gpu=True)  # fail before the slow CPU part
        trt_version = str(trt.__version__)
    else:
        trt_version = None
    src, out = Path(onnx_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = components or [n for n in manifest["components"] if not n.endswith("_fp16")]
    unknown = sorted(set(names) - set(manifest["components"]))
    if unknown:
        raise ValueError(f"unknown components {unknown}; the export has {sorted(manifest['components'])}")
    report: dict[str, Any] = {"tensorrt": trt_version, "fp16": fp16, "components": {}}
    strongly_typed = not sanitize_only and not hasattr(trt.BuilderFlag, "FP16")  # TensorRT 11
    for name in names:
        source = name
        if fp16 and strongly_typed:
            if f"{name}_fp16" in manifest["components"]:
                source = f"{name}_fp16"  # precision comes from the graph on TensorRT 11
            elif not name.endswith("_fp16"):
                logger.warning(
                    "TensorRT %s has no BuilderFlag.FP16 and the export has no %s_fp16 graph: %s is built in "
                    "float32 (export with `--fp16-denoiser` for an fp16 denoiser)",
                    trt_version,
                    name,
                    name,
                )
        comp = manifest["components"][source]
        sanitized = out / name / MODEL_FILE
        stats = sanitize_onnx(src / comp["file"], sanitized)
        entry: dict[str, Any] = {"source": source, "sanitized": f"{name}/{MODEL_FILE}", **stats}
        if not sanitize_only:
            profiles = profile_shapes(comp)
            build_engine(
                sanitized,
                out / name / ENGINE_FILE,
                profiles,
                fp16=fp16,
                timing_cache=out / TIMING_CACHE,
                workspace_gib=workspace_gib,
            )
            entry.update(engine=f"{name}/{ENGINE_FILE}", profiles=profiles)
        report["components"][name] = entry
        logger.info("%s: %s", name, entry)
    built = {
        name: {**manifest["components"][entry["source"]], "file": entry["sanitized"]}
        for name, entry in report["components"].items()
    }
    (out / MANIFEST).write_text(json.dumps({**manifest, "components": built}, indent=2))
    for rel in manifest.get("files", {}).get("copy", []):
        s, d = src / rel, out / rel
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        elif s.is_file():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(s, d)
    (out / ENGINES_JSON).write_text(json.dumps(report, indent=2))
    from v4s_agent.integrity import write_checksums

    write_checksums(out)  # load_manifest verifies it (also when --out is the ONNX folder itself)
    return report
