"""``edge-encoder build BUNDLE``: build TensorRT plans on this device from a deploy bundle; ``edge-encoder key``:
write the engine key of a plan that ``trtexec`` built.

    edge-encoder build BUNDLE [--variant fp16 ...] [--dla-core 0 [--dla-batch 8]]
    edge-encoder key tensorrt/encoder_fp16.plan --onnx encoder_fp16.onnx

The TensorRT variants are fp32, fp16 and int8_trt (``device.trt_plans.TENSORRT_VARIANTS``); int8_cpu is ONNX
Runtime's CPU graph and is never built. Each plan is written with its engine key and, when the bundle has a Triton
repository, as a Triton model next to it (``triton/encoder_trt_<variant>``, or ``..._dla`` for a DLA plan; written
whole, see ``device.triton``; a bundle without ``triton/`` gets none, with a log line). Exit 0 built; 2 bad input (one line:
the bundle, the variant, fp32 on DLA, no DLA batch, TensorRT missing or older than 10) or a build TensorRT refused
(one line naming the variant). The plan selection is checked before TensorRT is imported, so refusals need no GPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge_encoder.core.errors import EXIT_OK, EXIT_USAGE


def get_args_parser() -> argparse.ArgumentParser:
    """The options of ``edge-encoder build`` (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="deploy bundle directory (with manifest.json)")
    parser.add_argument("--variant", action="append", metavar="V",
                        help="variant to build (repeatable; default: fp32, fp16, int8_trt - those in the bundle)")
    parser.add_argument("--dla-core", type=int, default=None, metavar="N",
                        help="build for this Jetson DLA core (fp16 / int8_trt only, static batch, GPU fallback)")
    parser.add_argument("--dla-batch", type=int, default=None, metavar="B",
                        help="the DLA plan's static batch (default: the manifest's dla_batch)")
    parser.add_argument("--workspace-mib", type=int, default=1024, metavar="MIB",
                        help="TensorRT workspace memory pool limit (default: 1024)")
    return parser


def get_key_args_parser() -> argparse.ArgumentParser:
    """The options of ``edge-encoder key`` (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("plan", type=Path, help="the .plan file (e.g. tensorrt/encoder_fp16.plan)")
    parser.add_argument("--onnx", type=Path, required=True, help="the ONNX file it was built from")
    parser.add_argument("--dla-core", type=int, default=None, help="DLA core (default: from the plan's name)")
    return parser


def build_command(args: argparse.Namespace) -> int:
    """Select the plans (no TensorRT needed), then build each; one line per failure."""
    from edge_encoder.device.manifest import load_manifest
    from edge_encoder.device.tensorrt import BuildFailure, build_plans, require_tensorrt
    from edge_encoder.device.trt_plans import select_plans

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = load_manifest(args.bundle)
        specs, notes = select_plans(manifest, args.variant, dla_core=args.dla_core, dla_batch=args.dla_batch,
                                    source=str(args.bundle / "manifest.json"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        require_tensorrt()
        plans = build_plans(args.bundle, manifest, specs, workspace_mib=args.workspace_mib)
    except (ValueError, BuildFailure) as exc:  # a changed ONNX file, a DLA core this device lacks, a failed build
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for plan in plans:
        print(f"built {plan}")
    return EXIT_OK


def key_command(args: argparse.Namespace) -> int:
    from edge_encoder.device.tensorrt import EngineLoadError, require_tensorrt, write_key_for_plan

    try:
        require_tensorrt()
        path = write_key_for_plan(args.plan, args.onnx, dla_core=args.dla_core)
    except (ValueError, EngineLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path}")
    return EXIT_OK
