"""ONNX export of the planner's graphs: one ``<out>/<component>/model.onnx`` per component.

Why this shape: it follows diffusers' ``convert_stable_diffusion_checkpoint_to_onnx.py`` (one file per
component, named inputs, dynamic axes, ``return_dict=False`` wrappers, external data above 2 GB) but
uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, opset >= 18). Every graph is checked
with ``onnx.checker`` and compared against PyTorch on the same inputs with ONNX Runtime; the errors go
into ``<out>/parity.json``. A ``manifest.json`` beside it records the inputs, the axes that really came
out dynamic and the shape ranges the TensorRT builder needs for its optimisation profiles.

The model-specific wrappers (what each graph computes) live in :mod:`v4s_agent.export.graphs`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the runtimes read manifests without it
    import torch

logger = logging.getLogger(__name__)

OPSET = 18
MANIFEST = "manifest.json"
PARITY = "parity.json"
MODEL_FILE = "model.onnx"
_TWO_GB = 2 * 1024**3


class ExportError(RuntimeError):
    """Raised when a graph cannot be exported or fails its checks (message says which and why)."""


@dataclass
class GraphSpec:
    """One exportable graph: a wrapper module, example inputs and what should be dynamic.

    Args:
        name: component folder name (``denoiser``, ``vae_decoder``, ...).
        module: ``nn.Module`` whose ``forward`` parameter names equal the keys of ``inputs``.
        inputs: example inputs, in ``forward`` order; their keys become the ONNX input names.
        output_names: ONNX output names.
        dynamic_axes: requested dynamic axes, ``{input: {axis: label}}``. Whether an axis really stays
            dynamic is read back from the exported graph (``manifest.json`` ``dynamic_axes``).
        alt_inputs: a second set of inputs with other sizes on the dynamic axes; parity is checked on it
            too, which catches an axis that torch.export silently specialised.
        shape_ranges: ``{input: (min_shape, opt_shape, max_shape)}`` for TensorRT profiles.
        atol: tolerance the parity test applies to this graph.
        notes: free text copied into the manifest.
        export_context: a context manager active only while tracing (e.g. an export-friendly attention
            processor with the same maths); parity is measured against the module outside it.
        reference: the PyTorch module parity is measured against (default ``module``); e.g. the float32
            model for a graph exported from an fp16 copy.
    """

    name: str
    module: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    alt_inputs: dict[str, torch.Tensor] | None = None
    shape_ranges: dict[str, tuple[list[int], list[int], list[int]]] = field(default_factory=dict)
    atol: float = 1e-3
    notes: str = ""
    export_context: Callable[[], AbstractContextManager[Any]] | None = None
    reference: torch.nn.Module | None = None


# ---------------------------------------------------------------------------------------------------------
# one graph
# ---------------------------------------------------------------------------------------------------------


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers()
    )


@contextmanager
def _quiet_loggers() -> Iterator[None]:
    """Silence the exporter's INFO chatter (onnx_ir passes, torchvision notices) while exporting."""
    names = ("torch.onnx", "torch._dynamo", "torch.export", "onnx_ir", "onnxscript")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def export_graph(spec: GraphSpec, out_dir: str | os.PathLike, opset: int = OPSET) -> Path:
    """Export ``spec`` to ``<out_dir>/<spec.name>/model.onnx`` and run ``onnx.checker`` on it.

    Why kwargs: the wrapper's parameter names are the ONNX input names, so ``dynamic_shapes`` can be
    keyed by name and stays correct if the order of inputs changes.
    """
    import onnx
    import torch

    if opset < 18:
        raise ExportError(f"opset must be >= 18 for the dynamo exporter, got {opset}")
    comp_dir = Path(out_dir) / spec.name
    if comp_dir.exists():
        shutil.rmtree(comp_dir)
    comp_dir.mkdir(parents=True)
    path = comp_dir / MODEL_FILE
    module = spec.module.eval()
    auto = torch.export.Dim.AUTO
    dynamic_shapes = {
        name: dict.fromkeys(spec.dynamic_axes.get(name, {}), auto) or None for name in spec.inputs
    }
    external = _param_bytes(module) > _TWO_GB
    t0 = time.perf_counter()
    ctx = spec.export_context() if spec.export_context is not None else nullcontext()
    log = io.StringIO()  # the exporter prints progress and optimiser notes; keep them for errors only
    with warnings.catch_warnings(), torch.no_grad(), ctx, redirect_stdout(log), _quiet_loggers():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                (),
                kwargs=dict(spec.inputs),
                dynamo=True,
                opset_version=opset,
                input_names=list(spec.inputs),
                output_names=list(spec.output_names),
                dynamic_shapes=dynamic_shapes,
                external_data=external,
                verbose=False,
            )
        except Exception as err:  # the exporter raises many types; re-raise with the component named
            tail = log.getvalue()[-2000:]
            raise ExportError(
                f"torch.onnx.export (dynamo) failed for component {spec.name!r}: {err}\n{tail}"
            ) from err
    if program is None:  # pragma: no cover - torch < 2.5 returns None; we need the program to save
        raise ExportError("torch.onnx.export returned no ONNXProgram; torch >= 2.5 is required")
    program.save(str(path), external_data=external)
    rename_dims(path, spec.dynamic_axes)
    logger.info("exported %s in %.1fs", spec.name, time.perf_counter() - t0)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:
        raise ExportError(f"onnx.checker rejected {path}: {err}") from err
    return path


def rename_dims(path: str | os.PathLike, dynamic_axes: dict[str, dict[int, str]]) -> dict[str, str]:
    """Give the exporter's symbolic dims (``s15``, ``64*s22``) our labels (``batch``, ``64*frames``).

    Why: readable input shapes for users and TensorRT profiles, and inputs that share a label must agree
    (the runtimes check that). Only names change; external weight files are left where they are.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = {vi.name: vi for vi in model.graph.input}
    mapping: dict[str, str] = {}
    for name, axes in dynamic_axes.items():
        if name not in inputs:
            continue
        dims = inputs[name].type.tensor_type.shape.dim
        for axis, label in axes.items():
            sym = dims[axis].dim_param if axis < len(dims) else ""
            if re.fullmatch(r"[A-Za-z_]\w*", sym or "") and sym not in mapping:
                mapping[sym] = label
    if not mapping:
        return mapping
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = pattern.sub(lambda m: mapping[m.group(1)], d.dim_param)
    onnx.save(model, str(path))
    return mapping


def graph_io(path: str | os.PathLike) -> dict[str, Any]:
    """Inputs/outputs of an ONNX file with symbolic dims as strings (``None`` for unknown)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def dims(vi: Any) -> list[int | str | None]:
        out: list[int | str | None] = []
        for d in vi.type.tensor_type.shape.dim:
            out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        return out

    def dtype(vi: Any) -> str:
        return str(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))

    return {
        "inputs": {vi.name: {"shape": dims(vi), "dtype": dtype(vi)} for vi in model.graph.input},
        "outputs": {vi.name: {"shape": dims(vi), "dtype": dtype(vi)} for vi in model.graph.output},
    }


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().contiguous().numpy()


def parity(spec: GraphSpec, path: str | os.PathLike) -> dict[str, Any]:
    """Max abs error of ONNX Runtime vs PyTorch on ``spec.inputs`` (and ``spec.alt_inputs``)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    report: dict[str, Any] = {}
    sets = {"example": spec.inputs}
    if spec.alt_inputs is not None:
        sets["alt_shapes"] = spec.alt_inputs
    for label, inputs in sets.items():
        with torch.no_grad():
            ref = (spec.reference if spec.reference is not None else spec.module).eval()(**inputs)
        refs = list(ref) if isinstance(ref, (tuple, list)) else [ref]
        outs = sess.run(list(spec.output_names), {k: _to_numpy(v) for k, v in inputs.items()})
        errs = {}
        for name, r, o in zip(spec.output_names, refs, outs, strict=True):
            r_np = _to_numpy(r)
            if r_np.shape != o.shape:
                raise ExportError(
                    f"{spec.name}: output {name!r} has shape {o.shape} in ONNX Runtime but {r_np.shape} in "
                    f"PyTorch for the {label} inputs (an axis was specialised during export?)"
                )
            errs[name] = (
                float(np.abs(r_np.astype(np.float64) - o.astype(np.float64)).max()) if r_np.size else 0.0
            )
        report[label] = {
            "max_abs_err": max(errs.values()),
            "per_output": errs,
            "input_shapes": {k: list(v.shape) for k, v in inputs.items()},
        }
    report["max_abs_err"] = max(v["max_abs_err"] for v in report.values() if isinstance(v, dict))
    report["atol"] = spec.atol
    report["ok"] = report["max_abs_err"] <= spec.atol
    return report


# ---------------------------------------------------------------------------------------------------------
# whole export
# ---------------------------------------------------------------------------------------------------------


def check_opset(opset: int) -> None:
    """The dynamo exporter needs opset >= 18: refuse others before anything is loaded or written."""
    if not isinstance(opset, int) or opset < 18:
        raise ExportError(f"--opset must be >= 18 for the dynamo exporter (default {OPSET}); got {opset}")


def export_all(
    specs: list[GraphSpec],
    out_dir: str | os.PathLike,
    opset: int = OPSET,
    runtime_config: dict[str, Any] | None = None,
    extra_files: Callable[[Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Export every spec, check it, measure parity, write ``manifest.json`` and ``parity.json``.

    ``runtime_config`` (scheduler, latent layout, sizes) goes into the manifest for the ONNX Runtime and
    TensorRT backends, so that they need no torch model and no checkpoint to run. ``extra_files`` may
    write more files (e.g. the tokenizer) and returns what to record about them.
    """
    import torch

    check_opset(opset)  # before the folder exists: a refused export leaves nothing behind
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"opset": opset, "torch": torch.__version__, "components": {}}
    parity_report: dict[str, Any] = {}
    for spec in specs:
        t0 = time.perf_counter()
        path = export_graph(spec, out, opset=opset)
        io = graph_io(path)
        dynamic = {
            name: {
                str(axis): io["inputs"][name]["shape"][axis]
                for axis in axes
                if isinstance(io["inputs"][name]["shape"][axis], str)
            }
            for name, axes in spec.dynamic_axes.items()
        }
        specialised = {
            name: [label for axis, label in axes.items() if str(axis) not in dynamic.get(name, {})]
            for name, axes in spec.dynamic_axes.items()
        }
        specialised = {k: v for k, v in specialised.items() if v}
        manifest["components"][spec.name] = {
            "file": f"{spec.name}/{MODEL_FILE}",
            **io,
            "requested_dynamic_axes": {
                k: {str(a): n for a, n in v.items()} for k, v in spec.dynamic_axes.items()
            },
            "dynamic_axes": dynamic,
            "specialised_axes": specialised,
            "example_shapes": {k: list(v.shape) for k, v in spec.inputs.items()},
            "shape_ranges": {k: [list(s) for s in v] for k, v in spec.shape_ranges.items()},
            "export_seconds": round(time.perf_counter() - t0, 2),
            "notes": spec.notes,
        }
        if specialised:
            logger.warning(
                "%s: axes %s came out static (graph does not allow them dynamic)", spec.name, specialised
            )
        parity_report[spec.name] = parity(spec if not specialised else _drop_alt(spec), path)
    if runtime_config is not None:
        manifest["runtime"] = runtime_config
    if extra_files is not None:
        manifest["files"] = extra_files(out)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    parity_report["_meta"] = {
        "what": "max abs error, ONNX Runtime (CPU EP) vs PyTorch eager (CPU, float32), same inputs",
        "onnxruntime": _ort_version(),
        "torch": torch.__version__,
    }
    (out / PARITY).write_text(json.dumps(parity_report, indent=2))
    from v4s_agent.integrity import write_checksums

    write_checksums(out)  # load_manifest verifies it: a corrupt graph is an error naming the file
    return {"manifest": manifest, "parity": parity_report}


def _drop_alt(spec: GraphSpec) -> GraphSpec:
    """A graph with a specialised axis only runs at the exported size: compare on that size alone."""
    return GraphSpec(**{**spec.__dict__, "alt_inputs": None})


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def load_manifest(onnx_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``manifest.json`` of an export folder, with a clear error for a wrong path."""
    path = Path(onnx_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"ONNX export folder {str(path)!r} does not exist (run `python -m v4s_agent.export onnx`)"
        )
    mf = path / MANIFEST
    if not mf.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} has no {MANIFEST}: it is not an export made by `python -m v4s_agent.export onnx`"
        )
    manifest = json.loads(mf.read_text())
    for name, comp in manifest.get("components", {}).items():
        if not (path / comp["file"]).is_file():
            raise FileNotFoundError(f"component {name!r}: {path / comp['file']} is missing from the export")
    from v4s_agent.integrity import verify_checksums

    verify_checksums(path)  # IntegrityError (a ValueError) naming a corrupt file; exports before: unchecked
    return manifest
