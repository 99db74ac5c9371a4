"""``edge-encoder verify BUNDLE``: on the device, check every bundle file and gate each engine on the reference set.

    edge-encoder verify BUNDLE [--backend onnxruntime|tensorrt] [--variant V ...] [--manifest-sha256 HEX]

Exit codes: 0 every file intact and every gate passed; 2 a bad, missing, changed or unexpected file, or a usage
error (unknown variant, TensorRT not installed); 3 a gate failed. One line per problem on stderr; the report
(``device_report.{json,md}``) is still written for the variants that ran. Imports only the device runtime
(``edge_encoder.device``: the standard library, NumPy and the backend at hand).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge_encoder.core.errors import EXIT_INTERRUPTED, EXIT_USAGE


def get_args_parser() -> argparse.ArgumentParser:
    """The options of ``edge-encoder verify`` (a parent parser)."""
    from edge_encoder.device.verify import BACKENDS

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="deploy bundle directory (with manifest.json)")
    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                        help="onnxruntime: the ONNX files; tensorrt: the plans built here (default: onnxruntime)")
    parser.add_argument("--variant", action="extend", nargs="+", metavar="V", dest="variants", default=[],
                        help="variants to run (default: all; TensorRT: fp32, fp16, int8_trt); every file is "
                             "hash-checked anyway")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per batch size (default: 1)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per batch size (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    parser.add_argument("--provider", action="append", default=[], metavar="EP",
                        help="ONNX Runtime execution provider, best first (repeatable; default: CPU)")
    parser.add_argument("--dla-core", type=int, default=None, metavar="N",
                        help="with --backend tensorrt: the static-batch DLA plans of Jetson DLA core N")
    parser.add_argument("--manifest-sha256", metavar="HEX", default=None,
                        help="the SHA-256 of manifest.json that the export printed: a bundle whose manifest differs "
                             "is refused (exit 2), so a rewritten manifest cannot pass")
    parser.add_argument("--allow-loose-gates", action="store_true",
                        help="accept a manifest whose gate thresholds are missing or looser than the built-in floors")
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="where device_report.{json,md} go (default: the bundle)")
    return parser


def verify_command(args: argparse.Namespace) -> int:
    """Run ``verify`` with parsed arguments; print the table and one line per problem; return the exit code."""
    from edge_encoder.device.verify import REPORT_JSON, VerifyOptions, render_table, verify_bundle, write_device_report

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.seconds < 0 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        print("error: --seconds and --warmup must be >= 0 and --threads >= 1", file=sys.stderr)
        return EXIT_USAGE
    options = VerifyOptions(backend=args.backend, variants=tuple(args.variants), seconds=args.seconds,
                            warmup=args.warmup, intra_op_threads=args.threads, providers=tuple(args.provider),
                            dla_core=args.dla_core, manifest_sha256=args.manifest_sha256,
                            allow_loose_gates=args.allow_loose_gates)
    try:
        result = verify_bundle(args.bundle, options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(render_table(result.report))
    out_dir, code = args.report_dir or args.bundle, result.exit_code
    try:
        json_path, md_path = write_device_report(out_dir, result.report)
        print(f"\nreport: {json_path}\n        {md_path}")
    except OSError as exc:  # e.g. a read-only bundle: the table above is still the result
        print(f"error: cannot write {REPORT_JSON} into {out_dir}: {exc.strerror} (use --report-dir)", file=sys.stderr)
        code = EXIT_USAGE
    for line in result.file_problems + result.gate_failures:
        print(f"error: {line}", file=sys.stderr)
    return code
