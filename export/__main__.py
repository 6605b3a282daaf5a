"""``python -m v4s_agent.export {onnx,tensorrt}``: export the planner to ONNX, build TensorRT engines.

Examples::

    python -m v4s_agent.export onnx --out exports/onnx                    # shipped default checkpoint
    python -m v4s_agent.export onnx --config tiny --out /tmp/onnx_tiny    # random tiny model (tests)
    python -m v4s_agent.export tensorrt --onnx exports/onnx --out exports/trt
    python -m v4s_agent.export tensorrt --onnx exports/onnx --out exports/trt --sanitize-only   # CPU part
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m v4s_agent.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("onnx", help="export every component to <out>/<component>/model.onnx + parity.json")
    src = o.add_mutually_exclusive_group()
    src.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint folder (with pipeline/ and idm/); default: the shipped checkpoint",
    )
    src.add_argument(
        "--config",
        default=None,
        choices=["tiny", "default"],
        help="export a randomly initialised model of this config instead of a checkpoint",
    )
    o.add_argument("--out", required=True, help="output folder")
    o.add_argument("--opset", type=int, default=18)
    o.add_argument("--components", nargs="*", default=None, help="subset of components (default: all)")
    o.add_argument("--seed", type=int, default=0, help="seed of the example/parity inputs")
    o.add_argument(
        "--fp16-denoiser",
        action="store_true",
        help="also export denoiser_fp16 (fp16 weights, float32 I/O): TensorRT 11 builds fp16 engines from it",
    )
    t = sub.add_parser("tensorrt", help="sanitise the ONNX graphs and build fp16 TensorRT engines")
    t.add_argument("--onnx", required=True, help="folder written by `python -m v4s_agent.export onnx`")
    t.add_argument("--out", required=True, help="output folder for engines")
    t.add_argument("--no-fp16", action="store_true", help="build float32 engines")
    t.add_argument(
        "--sanitize-only",
        action="store_true",
        help="only fold constants / clean the graphs (runs without tensorrt or a GPU)",
    )
    t.add_argument("--workspace-gib", type=float, default=None)
    t.add_argument("--components", nargs="*", default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m v4s_agent.export`` and the ``v4s-export`` script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "onnx":
        from .graphs import export_planner
        from .onnx_export import ExportError

        try:
            result = export_planner(
                checkpoint=args.checkpoint,
                config=args.config,
                out_dir=args.out,
                opset=args.opset,
                components=args.components,
                seed=args.seed,
                fp16_denoiser=args.fp16_denoiser,
            )
        except (FileNotFoundError, ValueError, ExportError) as err:  # ValueError: e.g. --components nope
            print(f"error: {err}", file=sys.stderr)
            return 2
        parity = {k: v["max_abs_err"] for k, v in result["parity"].items() if not k.startswith("_")}
        print(json.dumps({"out": args.out, "max_abs_err": parity}, indent=2))
        bad = [k for k, v in result["parity"].items() if not k.startswith("_") and not v["ok"]]
        if bad:
            print(f"parity above tolerance for {bad}; see {args.out}/parity.json", file=sys.stderr)
            return 1
        return 0
    from .tensorrt_build import TensorRTUnavailableError, build_engines

    try:
        report = build_engines(
            args.onnx,
            args.out,
            fp16=not args.no_fp16,
            components=args.components,
            sanitize_only=args.sanitize_only,
            workspace_gib=args.workspace_gib,
        )
    except (TensorRTUnavailableError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
