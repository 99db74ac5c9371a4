"""``edge-encoder evaluate ENGINE --dataset SPEC``: the run report for an engine this project may not have trained.

ENGINE is a deploy bundle (every variant, or ``--variant``) or any ONNX encoder file with a declared input contract
(the "input contract" options). The dataset is fitted to the engine's input size; its train split is the kNN bank and
its test split the queries. The report (``RUNS_DIR/NAME/report.json``, ``report.md``; schema
``docs/report_schema.md``) has the same metrics as a run's, plus the raw-pixel baseline and an ``engines`` section
saying where each engine came from and who L2-normalised its output. Embeddings are cached under
``RUNS_DIR/NAME/cache/embeddings``, so a rerun costs only the metrics.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_encoder import stages
from edge_encoder.commands.dataset_args import resolve_settings, run_name
from edge_encoder.commands.engine_args import (
    EngineTarget,
    engine_options,
    contract_from_args,
    describe_engine,
    open_target,
    resolve_target,
    square_size,
)
from edge_encoder.commands.errors import UsageError
from edge_encoder.commands.options import DATASET_HELP, dataset_options, output_options, show_progress
from edge_encoder.evaluate.baselines import RawPixelEngine
from edge_encoder.evaluate.report import assemble_report, render_summary_table, write_report
from edge_encoder.evaluate.suite import evaluate_engines
from edge_encoder.settings import Settings


def get_args_parser() -> argparse.ArgumentParser:
    """evaluate's options (a parent parser)."""
    engine = engine_options(variant_help="bundle variant to evaluate (repeatable; default: every variant)",
                            many_variants=True)
    parser = argparse.ArgumentParser(add_help=False, parents=[engine, dataset_options(sections=("data", "evaluate")),
                                                              output_options()])
    parser.add_argument("--dataset", required=True, metavar="SPEC", help=DATASET_HELP)
    parser.add_argument("--name", metavar="NAME", help="report directory RUNS_DIR/NAME/ (default: evaluate-<engine>)")
    parser.add_argument("--runs-dir", metavar="DIR", default="runs", help="where report directories go (default: runs)")
    parser.add_argument("--no-baselines", action="store_true", help="leave out the raw-pixel baseline")
    return parser


def evaluate_command(args: argparse.Namespace) -> int:
    """Evaluate ENGINE on the dataset and write the report; returns the exit code."""
    started = time.perf_counter()
    target = resolve_target(args.engine, args.variant, contract_from_args(args), default_variants="all")
    keys: list[str | None] = list(target.variants) or [None]
    with open_target(target, keys[0]) as engine:  # the input size fixes the dataset's image size
        size = square_size(engine)
    settings = resolve_settings(args, args.dataset, size, args.name or run_name(target.label, "evaluate"))
    progress = show_progress(args)
    run_dir = Path(args.runs_dir) / settings.name
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = stages.load_labelled_data(settings.data)
    timings["data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with removed_if_left_empty(run_dir / "cache" / "embeddings"):  # a failed evaluation leaves no empty run folder
        metrics, engines, indexed = evaluate_target(target, keys, settings, data, run_dir, progress,
                                                    baselines=not args.no_baselines)
    timings["evaluate"] = time.perf_counter() - t0
    index_section = None
    if settings.evaluate.index_benchmark:
        t0 = time.perf_counter()
        index_section = stages.run_index_benchmark(settings, indexed)
        timings["index_benchmark"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    report = build_report(settings, target, data, timings, metrics, engines)
    if index_section is not None:
        report["index_benchmark"] = index_section
    json_path, md_path = write_report(run_dir, report)
    print(render_summary_table(report))
    print(f"\nreport: {json_path}\n        {md_path}")
    return 0


@contextmanager
def removed_if_left_empty(folder: Path) -> Iterator[None]:
    """On an exception inside the block, remove the folders of ``folder``'s path that did not exist before it and
    are still empty (deepest first; a folder holding anything, or that existed before, is kept)."""
    created = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        created.append(candidate)
    try:
        yield
    except BaseException:
        for candidate in created:  # deepest first
            try:
                candidate.rmdir()  # only an empty directory goes
            except OSError:
                break
        raise


def target_engines(target: EngineTarget, keys: list[str | None], data: Any, engines: dict[str, Any], *,
                   baselines: bool) -> Iterator[tuple[str, Any]]:
    """``(kind, engine)`` for ``evaluate.suite.evaluate_engines``: each engine of ``target`` (a bundle's first
    variant is the reference of the others: fp32 when evaluated, ``resolve_target`` puts it first), then the
    raw-pixel baseline. Each engine's description goes into ``engines`` (the report's ``engines`` section)."""
    for index, key in enumerate(keys):
        with open_target(target, key) as engine:
            engines[engine.name] = {**describe_engine(target, engine, key),
                                    "providers": list(getattr(engine, "providers", []))}
            yield ("reference" if index == 0 and len(keys) > 1 else "engine"), engine
    if baselines:
        # Per-image centring, as the run report's raw_pixels (the stronger of the two raw-pixel variants).
        with RawPixelEngine(data.x_train, centering="image") as engine:
            if engine.name in engines:
                raise UsageError(f"an engine is named {engine.name!r} like the baseline; pass --no-baselines")
            yield "baseline", engine


def evaluate_target(target: EngineTarget, keys: list[str | None], settings: Settings, data: Any, run_dir: Path,
                    progress: bool, *, baselines: bool) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Evaluate each engine of ``target`` (and the raw-pixel baseline) on ``data`` through the run's loop.

    Returns ``(metrics table, engines section, the evaluation the index benchmark uses: the first engine's)``."""
    engines: dict[str, Any] = {}
    metrics, evaluations = evaluate_engines(target_engines(target, keys, data, engines, baselines=baselines), data,
                                            config=settings.evaluate, cache_dir=run_dir / "cache" / "embeddings",
                                            progress=progress)
    if target.kind == "bundle":
        assert target.manifest is not None
        for key in target.variants:
            entry = target.manifest["variants"][key]
            name = entry.get("engine_name") or f"onnx_{key}"
            if name in metrics:
                metrics[name].update(precision=key, parity_passed=entry.get("passed"))
    return metrics, engines, next(iter(evaluations.values()))


def bundle_summary(target: EngineTarget) -> dict[str, Any]:
    """The report's ``export`` entry for a bundle, from its manifest (as a run report's)."""
    assert target.manifest is not None
    provenance = target.manifest.get("provenance", {})
    return {
        "bundle": str(target.path),
        "opset": provenance.get("opset"),
        "exporter": provenance.get("exporter"),
        "variants": {name: {"file": v.get("file"), "engine": v.get("engine_name"), "precision": name,
                            "passed": v.get("passed"), "parity": v.get("parity")}
                     for name, v in target.manifest["variants"].items()},
    }


def build_report(settings: Settings, target: EngineTarget, data: Any, timings: dict[str, float],
                 metrics: dict[str, Any], engines: dict[str, Any]) -> dict[str, Any]:
    """The report dict (``docs/report_schema.md``): ``train`` is null (nothing was trained here); ``export`` is the
    bundle's summary, or null for an ONNX file; ``engines`` describes each evaluated engine."""
    providers = sorted({p for e in engines.values() for p in e.get("providers", [])})
    config = settings.to_dict()
    report = assemble_report(
        name=settings.name, device="onnxruntime: " + ", ".join(providers) if providers else "cpu",
        dataset=data.summary(), timings=timings, train=None,  # type: ignore[arg-type]
        config={"command": "evaluate", "engine": str(target.path), "variants": list(target.variants),
                "data": config["data"], "evaluate": config["evaluate"]},
        export=bundle_summary(target) if target.kind == "bundle" else None,  # type: ignore[arg-type]
        metrics=metrics)
    report["engines"] = engines
    return report
