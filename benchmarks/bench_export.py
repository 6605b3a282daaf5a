"""Plan latency: PyTorch vs ONNX Runtime on CPU in one run (and, on a GPU, eager vs compiled vs TensorRT).

Usage::

    python benchmarks/bench_export.py                              # shipped checkpoint (else random default)
    python benchmarks/bench_export.py --config default --threads 1 --repeats 7
    python benchmarks/bench_export.py --onnx exports/onnx          # reuse an export
    python benchmarks/bench_export.py --device cuda                # GPU machine: eager / torch.compile /
                                                                   # CUDA graphs / ORT-CUDA / TensorRT

One plan = ``VideoPlanner.plan``: instruction (cached) -> ``num_inference_steps`` sampler steps with joint
CFG -> decode -> red-box read-back -> inverse-dynamics actions (OpenCV cross-check off, it is the same
numpy code for every backend). Variants run round-robin so that a noisy shared machine slows all of them
alike; wall time and process CPU time (all threads) are reported, median over repeats. The same run
checks that the ONNX Runtime plan equals the PyTorch plan for the same noise.

The CPU variants:
- ``torch``: the PyTorch pipeline + IDM (eager, float32);
- ``ort_baseline``: ONNX Runtime with graph optimisation off and the two CFG branches as two calls;
- ``ort``: ``ORT_ENABLE_ALL``, fixed intra-op threads, CFG fused into one batch-2 call (the default backend);
- ``ort_iobinding``: the same with IOBinding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _plan_inputs(cfg: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, 256, (cfg.num_context_frames, cfg.height, cfg.width, 3), dtype=np.uint8)
    return {
        "context": ctx,
        "context_positions": np.arange(cfg.num_context_frames) * 5,
        "observation": ctx[-1],
        "instruction": "go to the chair",
    }


def _time(fn: Any, sync: bool = False) -> tuple[float, float]:
    if sync:
        torch.cuda.synchronize()
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


def run_variants(
    variants: dict[str, Any], inputs: dict[str, Any], repeats: int, warmup: int, sync: bool = False
) -> dict[str, Any]:
    """Round-robin timing of ``planner.plan`` for every variant; median wall / CPU seconds."""
    walls: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(warmup + repeats):
        for name, planner in variants.items():
            w, c = _time(lambda planner=planner, r=r: planner.plan(**inputs, seed=r), sync)
            if r >= warmup:
                walls[name].append(w)
                cpus[name].append(c)
    return {
        k: {
            "wall_s_median": statistics.median(walls[k]),
            "wall_s_min": min(walls[k]),
            "cpu_s_median": statistics.median(cpus[k]),
            "wall_s": walls[k],
        }
        for k in variants
    }


def plan_parity(pipe: Any, backend: Any, cfg: Any) -> dict[str, float]:
    """Same torch noise through both pipelines: max |latents| error and max uint8 frame difference."""
    inp = _plan_inputs(cfg)
    kw = {
        "context": inp["context"],
        "context_positions": inp["context_positions"],
        "observation": inp["observation"],
        "prompt": inp["instruction"],
    }
    ref = pipe(**kw, generator=torch.Generator().manual_seed(0))
    out = backend(**kw, generator=torch.Generator().manual_seed(0))
    ref_lat = ref.latents.detach().float().cpu().numpy()
    out_lat = out.latents.detach().float().cpu().numpy() if hasattr(out.latents, "detach") else out.latents
    return {
        "latents_max_abs_err": float(np.abs(ref_lat - out_lat).max()),
        "frames_max_abs_diff_uint8": int(np.abs(ref.frames.astype(int) - out.frames.astype(int)).max()),
    }


def cpu_bench(args: argparse.Namespace, pipe: Any, idm: Any, onnx_dir: Path) -> dict[str, Any]:
    from v4s_agent.export.runtime_ort import OrtIDM, OrtPlannerBackend

    from v4s_agent.agent.planner import VideoPlanner

    torch.set_num_threads(args.threads)
    cfg = pipe.v4s_config
    mc = cfg.to_dict()
    common = {"crosscheck": "off", "num_inference_steps": args.steps}
    ort_idm = OrtIDM(onnx_dir, intra_op_threads=args.threads) if idm is not None else None
    variants = {
        "torch": VideoPlanner(pipe, idm, backend="torch", model_config=mc, **common),
        "ort_baseline": VideoPlanner(
            OrtPlannerBackend(
                onnx_dir, intra_op_threads=args.threads, optimization_level="none", fuse_cfg=False
            ),
            ort_idm,
            backend="onnxruntime",
            model_config=mc,
            **common,
        ),
        "ort": VideoPlanner(
            OrtPlannerBackend(onnx_dir, intra_op_threads=args.threads),
            ort_idm,
            backend="onnxruntime",
            model_config=mc,
            **common,
        ),
        "ort_iobinding": VideoPlanner(
            OrtPlannerBackend(onnx_dir, intra_op_threads=args.threads, use_iobinding=True),
            ort_idm,
            backend="onnxruntime",
            model_config=mc,
            **common,
        ),
    }
    res = run_variants(variants, _plan_inputs(cfg), args.repeats, args.warmup)
    t = res["torch"]["wall_s_median"]
    for v in res.values():
        v["speedup_vs_torch"] = t / v["wall_s_median"]
    parity = plan_parity(pipe, variants["ort"].pipeline, cfg)
    return {"variants": res, "parity": parity}


def gpu_bench(args: argparse.Namespace, pipe: Any, idm: Any, onnx_dir: Path) -> dict[str, Any]:
    """Eager vs torch.compile vs CUDA graphs (torch.compile ``reduce-overhead``), plus ORT-CUDA and TensorRT
    when installed. NOT run on the development machines (no GPU there)."""
    import copy

    from v4s_agent.agent.planner import VideoPlanner

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU and a CUDA build of torch")
    cfg = pipe.v4s_config
    mc = cfg.to_dict()
    common = {"crosscheck": "off", "num_inference_steps": args.steps, "device": "cuda"}
    pipe = pipe.to("cuda")
    idm = idm.to("cuda") if idm is not None else None
    variants: dict[str, Any] = {
        "torch_eager": VideoPlanner(pipe, idm, backend="torch", model_config=mc, **common)
    }
    for name, mode in (
        ("torch_compile", "max-autotune-no-cudagraphs"),
        ("torch_cuda_graphs", "reduce-overhead"),
    ):
        p = copy.deepcopy(pipe)
        p.transformer.compile(mode=mode, dynamic=False)
        variants[name] = VideoPlanner(p, idm, backend="torch", model_config=mc, **common)
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            from v4s_agent.export.runtime_ort import OrtPlannerBackend

            be = OrtPlannerBackend(
                onnx_dir, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], use_iobinding=True
            )
            variants["ort_cuda"] = VideoPlanner(be, idm, backend="onnxruntime", model_config=mc, **common)
    except ImportError:
        pass
    try:
        from v4s_agent.export.runtime_trt import TrtPlannerBackend
        from v4s_agent.export.tensorrt_build import build_engines

        trt_dir = Path(args.trt) if args.trt else onnx_dir.parent / "tensorrt"
        if not (trt_dir / "engines.json").is_file():
            build_engines(onnx_dir, trt_dir)
        variants["tensorrt_fp16"] = VideoPlanner(
            TrtPlannerBackend(trt_dir), idm, backend="tensorrt", model_config=mc, **common
        )
    except ImportError as err:
        print(f"TensorRT variant skipped: {err}")
    res = run_variants(variants, _plan_inputs(cfg), args.repeats, args.warmup, sync=True)
    t = res["torch_eager"]["wall_s_median"]
    for v in res.values():
        v["speedup_vs_eager"] = t / v["wall_s_median"]
    return {"variants": res, "gpu": torch.cuda.get_device_name(0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    src.add_argument("--config", default=None, choices=["tiny", "default"], help="random weights of a config")
    ap.add_argument("--onnx", default=None, help="reuse this ONNX export (default: export to a temp folder)")
    ap.add_argument("--trt", default=None, help="TensorRT build folder (GPU only)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads (CPU)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the config's)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    from v4s_agent.export.graphs import _shipped_checkpoint, export_planner, load_models

    config, checkpoint = args.config, args.checkpoint
    if config is None and checkpoint is None and not _shipped_checkpoint().is_dir():
        print("shipped checkpoint not found: benchmarking a randomly initialised `default` config")
        config = "default"
    pipe, idm = load_models(checkpoint, config)
    pipe.set_progress_bar_config(disable=True)
    tmp = None
    if args.onnx is None:
        tmp = tempfile.TemporaryDirectory()
        onnx_dir = Path(tmp.name) / "onnx"
        t0 = time.perf_counter()
        export_planner(pipe=pipe, idm=idm, out_dir=onnx_dir)
        print(f"exported to {onnx_dir} in {time.perf_counter() - t0:.1f}s")
    else:
        onnx_dir = Path(args.onnx)
    cfg = pipe.v4s_config
    result: dict[str, Any] = {
        "command": "python benchmarks/bench_export.py " + " ".join(os.sys.argv[1:]),
        "model": checkpoint or (f"random {config}" if config else "shipped checkpoint"),
        "config": {
            k: getattr(cfg, k)
            for k in (
                "height",
                "width",
                "num_context_frames",
                "num_target_frames",
                "num_layers",
                "num_inference_steps",
                "guidance_scale",
            )
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "threads": args.threads,
        "repeats": args.repeats,
        "device": args.device,
    }
    try:
        import onnxruntime as ort

        result["machine"]["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    result.update(
        cpu_bench(args, pipe, idm, onnx_dir) if args.device == "cpu" else gpu_bench(args, pipe, idm, onnx_dir)
    )
    print(f"\n{'variant':<18}{'wall s (median)':>16}{'wall s (min)':>14}{'cpu s':>10}{'speedup':>9}")
    for name, v in result["variants"].items():
        sp = v.get("speedup_vs_torch", v.get("speedup_vs_eager", float("nan")))
        print(
            f"{name:<18}{v['wall_s_median']:>16.3f}{v['wall_s_min']:>14.3f}{v['cpu_s_median']:>10.3f}{sp:>8.2f}x"
        )
    if "parity" in result:
        print("parity ORT vs PyTorch (same noise):", result["parity"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
