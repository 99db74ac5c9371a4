"""Verify a deploy bundle on the device it was copied to: its files, each engine's quality and latency.

1. Every file the manifest records is hash-checked (each variant, the reference set, and whatever else it records).
2. Each engine (ONNX Runtime, or the TensorRT plans built on this device) embeds the bundle's reference images; the
   embeddings are compared with the FP32 PyTorch reference embeddings exported with the bundle and gated with the
   thresholds the manifest records (``reference.gates``).
3. Latency p50 / p90 / p99 at batch 1, 8 and the TensorRT profile's maximum, after warm-up.
4. ``device_report.json`` and ``device_report.md`` are written into the bundle (atomically); the table is printed.

    edge-encoder verify BUNDLE [--backend onnxruntime|tensorrt] [--variant V ...] [--seconds 1.0]

Exit codes: 0 every file intact and every gate passed; 2 a bad, missing or changed file, or a usage error (unknown
variant, TensorRT not installed); 3 a gate failed. One line per problem on stderr; the report is still written for
the variants that ran.

The ONNX Runtime path imports neither torch nor onnx (a device may have only onnxruntime and numpy).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from edge_encoder.core.files import atomic_write_json, atomic_write_text, file_sha256
from edge_encoder.device.bundle_files import open_engine
from edge_encoder.device.manifest import (
    BundleFileError,
    load_manifest,
    recorded_files,
    resolve_bundle_file,
    variant_entry,
)
from edge_encoder.device.parity import ParityThresholds, compare_embeddings
from edge_encoder.device.reference import ReferenceSet, load_reference_set

logger = logging.getLogger(__name__)

REPORT_FORMAT = "edge-encoder/device-report/1"
REPORT_JSON, REPORT_MD = "device_report.json", "device_report.md"
BACKENDS = ("onnxruntime", "tensorrt")
EXIT_OK, EXIT_FILE, EXIT_GATE, EXIT_INTERRUPTED = 0, 2, 3, 130
# Weighted kNN as in evaluate/knn.py's defaults (k = 20, T = 0.07; Wu et al. 2018, DINO), so the device figure
# reads like the run report's; export/ does not import evaluate/, hence the small NumPy copy below.
KNN_K, KNN_TEMPERATURE = 20, 0.07
DEFAULT_PROFILE_MAX = 64


@dataclass(frozen=True)
class VerifyOptions:
    """What to check and how long to time it.

    Attributes:
        backend: ``"onnxruntime"`` (the ONNX files) or ``"tensorrt"`` (``tensorrt/encoder_<variant>.plan``).
        variants: the variants to run (empty: every variant in the manifest). Every file is hash-checked anyway.
        seconds: timed seconds per batch size and variant (at least ``min_runs`` calls each).
        warmup: untimed calls per batch size before timing.
        min_runs: timed calls per batch size, at least.
        intra_op_threads: ONNX Runtime intra-op threads (None: ONNX Runtime's default).
        providers: ONNX Runtime execution providers, best first (empty: CPU).
        dla_core: TensorRT only: run the variants' static-batch DLA plans on this Jetson DLA core.
        manifest_sha256: the SHA-256 of ``manifest.json`` the user trusted at export time (the export prints it); a
            manifest with another digest is refused before anything else is read.
        allow_loose_gates: accept gate thresholds that are missing or looser than ``device.parity.GATE_FLOORS``.
    """

    backend: str = "onnxruntime"
    variants: tuple[str, ...] = ()
    seconds: float = 1.0
    warmup: int = 5
    min_runs: int = 10
    intra_op_threads: int | None = None
    providers: tuple[str, ...] = ()
    dla_core: int | None = None
    manifest_sha256: str | None = None
    allow_loose_gates: bool = False


@dataclass
class VerifyResult:
    """The report (JSON-serialisable) and the one-line problems: bad files (exit 2) and failed gates (exit 3)."""

    report: dict[str, Any]
    file_problems: list[str] = field(default_factory=list)
    gate_failures: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_FILE if self.file_problems else EXIT_GATE if self.gate_failures else EXIT_OK


# ------------------------------------------------------------------------------------------------------ metrics


def weighted_knn_top1(embeddings: np.ndarray, labels: np.ndarray, k: int = KNN_K,
                      temperature: float = KNN_TEMPERATURE) -> float:
    """Leave-one-out weighted kNN top-1 accuracy in [0, 1] within one labelled set.

    Each row is classified by its ``k`` most similar other rows (inner product of float ``(N, D)`` L2-normalised
    ``embeddings``), each voting ``exp(sim / temperature)`` for its label (int ``(N,)``, ids >= 0); ties go to the
    lower class id, as in ``evaluate.knn``.
    """
    if len(embeddings) < 2 or labels.shape != (len(embeddings),):
        raise ValueError(f"weighted kNN needs >= 2 rows and one label per row, got {embeddings.shape} and "
                         f"{labels.shape}")
    emb = embeddings.astype(np.float64)
    sims = emb @ emb.T  # N x N
    np.fill_diagonal(sims, -np.inf)  # leave one out
    k = min(k, len(emb) - 1)
    ids = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]  # N x k, unordered (the vote does not need order)
    weights = np.exp(np.take_along_axis(sims, ids, axis=1) / temperature)  # N x k
    scores = np.zeros((len(emb), int(labels.max()) + 1))
    np.add.at(scores, (np.repeat(np.arange(len(emb)), k), labels[ids].ravel()), weights.ravel())
    return float((scores.argmax(axis=1) == labels).mean())


def measure_latency(engine: Any, images: np.ndarray, batch_sizes: Sequence[int], *, seconds: float,
                    warmup: int, min_runs: int) -> dict[str, dict[str, float]]:
    """Per batch size: p50 / p90 / p99 / mean of ``engine.embed`` wall time in ms and images/s (from the median).

    ``images`` uint8 ``(N, H, W, 3)`` are repeated to fill batches larger than N. Each size gets ``warmup``
    untimed calls, then at least ``min_runs`` timed calls and ``seconds`` of timing.
    """
    out = {}
    for b in batch_sizes:
        batch = np.ascontiguousarray(images[np.arange(b) % len(images)])
        for _ in range(warmup):
            engine.embed(batch)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            engine.embed(batch)
            times.append(time.perf_counter() - t0)
        ms = np.asarray(times) * 1e3
        out[str(b)] = {"batch": int(b), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                       "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
                       "images_per_s": float(b / np.median(times)), "runs": len(times)}
    return out


def batch_sizes(manifest: dict[str, Any], backend: str, plan: Path | None = None) -> list[int]:
    """1, 8 and the profile's max; for TensorRT only those inside the profile, and for a DLA ``plan`` its one
    static batch (from its name, ``encoder_<v>.dla<core>.b<batch>.plan``)."""
    if plan is not None:
        from edge_encoder.device.trt_plans import parse_plan_name

        static = parse_plan_name(plan)[2]
        if static is not None:
            return [int(static)]
    profile = manifest.get("tensorrt_profile") or {"min": 1, "max": DEFAULT_PROFILE_MAX}
    sizes = sorted({1, 8, int(profile["max"])})
    if backend == "tensorrt":
        sizes = [b for b in sizes if profile["min"] <= b <= profile["max"]]
    return sizes


# ------------------------------------------------------------------------------------------------------- checks


def check_recorded_files(bundle: Path, manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Hash every file the manifest records: ``(rows {key, file, sha256, ok, problem}, one-line problems)``."""
    rows, problems = [], []
    for key, relative, sha in recorded_files(manifest):
        try:
            resolve_bundle_file(bundle, relative, sha, key=key)
            rows.append({"key": key, "file": relative, "sha256": sha, "ok": True})
        except BundleFileError as exc:
            rows.append({"key": key, "file": relative, "sha256": sha, "ok": False, "problem": str(exc)})
            problems.append(str(exc))
    return rows, problems


def verify_variant(bundle: Path, variant: str, manifest: dict[str, Any], reference: ReferenceSet,
                   options: VerifyOptions) -> dict[str, Any]:
    """Open one variant, embed the reference set, compare and gate it, time it: the report's entry."""
    with open_engine(bundle, variant, backend=options.backend, providers=list(options.providers) or None,
                     intra_op_threads=options.intra_op_threads, dla_core=options.dla_core) as engine:
        name, path = engine.name, Path(engine.source_path)
        candidate = engine.embed(reference.images)
        sizes = batch_sizes(manifest, options.backend, path if options.backend == "tensorrt" else None)
        latency = measure_latency(engine, reference.images, sizes, seconds=options.seconds, warmup=options.warmup,
                                  min_runs=options.min_runs)
        providers = list(getattr(engine, "providers", []) or [])
    gates = ParityThresholds(**manifest["reference"]["gates"][variant])
    parity = compare_embeddings(reference.embeddings, candidate, reference.labels, gates)
    knn = knn_ref = None
    if reference.labels is not None:
        knn, knn_ref = weighted_knn_top1(candidate, reference.labels), weighted_knn_top1(reference.embeddings,
                                                                                         reference.labels)
    size = path.stat().st_size
    return {
        "engine": name, "backend": options.backend, "file": path.relative_to(bundle.resolve()).as_posix(),
        "bytes": size, "size_mb": size / 1e6, "providers": providers,
        "cosine_min": parity.cosine_min, "cosine_p1": parity.cosine_p1, "cosine_mean": parity.cosine_mean,
        "top1_agreement": parity.top1_agreement, "top10_overlap": parity.top10_overlap,
        "knn_top1": knn, "knn_top1_fp32": knn_ref, "knn_top1_delta": None if knn is None else knn - knn_ref,
        "latency": latency, "images_per_s": max(v["images_per_s"] for v in latency.values()),
        "parity": parity.to_dict(), "failures": list(parity.failures), "passed": parity.passed,
    }


def verify_bundle(bundle_dir: Path | str, options: VerifyOptions = VerifyOptions()) -> VerifyResult:
    """Check every recorded file, run and gate each chosen variant on the reference set; nothing is written.

    Raises:
        ValueError: the manifest is missing or malformed, an unknown backend or variant, TensorRT not installed.
    """
    bundle = Path(bundle_dir)
    if options.manifest_sha256 is not None:
        check_manifest_digest(bundle, options.manifest_sha256)
    manifest = load_manifest(bundle)
    if options.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {options.backend!r}")
    if options.backend == "tensorrt":
        from edge_encoder.device.tensorrt import require_tensorrt

        require_tensorrt()
    if options.dla_core is not None and options.backend != "tensorrt":
        raise ValueError("--dla-core runs TensorRT DLA plans: add --backend tensorrt")
    chosen = list(dict.fromkeys(options.variants)) or _default_variants(manifest, options)
    for variant in chosen:
        variant_entry(manifest, variant, bundle)
    if options.backend == "tensorrt":
        from edge_encoder.device.trt_plans import TENSORRT_VARIANTS

        refused = [v for v in chosen if v not in TENSORRT_VARIANTS]
        if refused:
            raise ValueError(f"--variant {refused[0]} has no TensorRT plan: it is ONNX Runtime's CPU graph (verify it "
                             f"with --backend onnxruntime); TensorRT variants: {', '.join(TENSORRT_VARIANTS)}")
    files, problems = check_recorded_files(bundle, manifest)
    bad = {row["file"] for row in files if not row["ok"]}
    reference = _reference_or_none(bundle, manifest, bad, problems)
    variants: dict[str, Any] = {}
    gate_failures: list[str] = []
    for variant in chosen if reference is not None else []:
        if options.backend == "onnxruntime" and manifest["variants"][variant]["file"] in bad:
            continue  # already named above; an engine is never opened from a changed file
        try:
            variants[variant] = verify_variant(bundle, variant, manifest, reference, options)
        except Exception as exc:  # one variant that cannot run must not hide the others' results
            logger.debug("variant %s could not run", variant, exc_info=True)
            problems.append(_one_line(f"{variant}: {exc}" if isinstance(exc, ValueError) else
                                      f"{variant}: could not run ({type(exc).__name__}: {exc})"))
            continue
        gate_failures += [f"{variant}: gate {failure}" for failure in variants[variant]["failures"]]
    report = _report(bundle, manifest, options, chosen, reference, files, variants, problems, gate_failures)
    return VerifyResult(report, problems, gate_failures)


def check_manifest_digest(bundle: Path, expected: str) -> None:
    """Refuse (``BundleFileError``, exit 2) a ``manifest.json`` whose SHA-256 is not ``expected`` (64 hex digits)."""
    wanted = expected.strip().lower()
    if len(wanted) != 64 or any(c not in "0123456789abcdef" for c in wanted):
        raise ValueError(f"--manifest-sha256 must be 64 hexadecimal digits (the export prints it), got {expected!r}")
    path = bundle / "manifest.json"
    if not path.is_file():
        raise BundleFileError(f"no manifest.json in {bundle}")
    actual = file_sha256(path)
    if actual != wanted:
        raise BundleFileError(f"bundle file manifest.json does not match --manifest-sha256: its sha256 is "
                              f"{actual[:12]}... but {wanted[:12]}... was pinned; the manifest was rewritten "
                              "after export (or this is another bundle)")


def _one_line(text: str, limit: int = 400) -> str:
    """Backend errors (ONNX Runtime, TensorRT) can span lines: one line, cut at ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _default_variants(manifest: dict[str, Any], options: VerifyOptions) -> list[str]:
    """Every variant on ONNX Runtime; on TensorRT the TensorRT variants (fp32, fp16, int8_trt: never int8_cpu), and
    on DLA only those DLA computes (fp16, int8_trt: DLA has no FP32)."""
    from edge_encoder.device.trt_plans import DLA_VARIANTS, tensorrt_variants

    if options.backend != "tensorrt":
        return list(manifest["variants"])
    chosen = tensorrt_variants(manifest)
    return chosen if options.dla_core is None else [v for v in chosen if v in DLA_VARIANTS]


def _reference_or_none(bundle: Path, manifest: dict[str, Any], bad: set[str], problems: list[str]) -> ReferenceSet | None:
    ref = manifest.get("reference")
    if ref is not None and any(isinstance(e, dict) and e.get("file") in bad for e in ref.values()):
        problems.append("the reference set is damaged (see above): no variant can be checked")
        return None
    try:
        return load_reference_set(bundle, manifest)
    except BundleFileError as exc:
        problems.append(str(exc))
        return None


# ------------------------------------------------------------------------------------------------------- report


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def runtime_versions(backend: str) -> dict[str, str | None]:
    """Versions of what ran: ONNX Runtime, TensorRT (imported only for the TensorRT backend), NumPy, this package."""
    versions = {"onnxruntime": _dist_version("onnxruntime", "onnxruntime-gpu"),
                "tensorrt": _dist_version("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13"),
                "numpy": np.__version__, "edge-encoder": _dist_version("edge-encoder"),
                "python": platform.python_version()}
    if backend == "tensorrt":  # JetPack's python3-libnvinfer has no pip metadata: ask the module
        import tensorrt

        versions["tensorrt"] = tensorrt.__version__
    return versions


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _gpu_name(backend: str) -> str | None:
    """The GPU (TensorRT: the CUDA device the plans ran on; else nvidia-smi's first GPU, or a Jetson's model)."""
    if backend == "tensorrt":
        try:
            # The CUDA driver API through ctypes, as the engine key does (no torch needed).
            from edge_encoder.device.tensorrt import cuda_device_properties

            return cuda_device_properties(0)[0]
        except Exception:  # noqa: BLE001 - a name for the report, never a reason to fail
            return None
    if shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10, check=False)
            if res.returncode == 0 and res.stdout.strip():
                return res.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:  # Jetson: an integrated GPU, named by the board
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ") or None
    except OSError:
        return None


def device_info(backend: str) -> dict[str, Any]:
    return {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "gpu": _gpu_name(backend),
            "platform": platform.platform(), "machine": platform.machine()}


def _report(bundle: Path, manifest: dict[str, Any], options: VerifyOptions, chosen: list[str],
            reference: ReferenceSet | None, files: list[dict[str, Any]], variants: dict[str, Any],
            problems: list[str], gate_failures: list[str]) -> dict[str, Any]:
    ref = manifest.get("reference") or {}
    knn_fp32 = None
    if reference is not None and reference.labels is not None:
        knn_fp32 = weighted_knn_top1(reference.embeddings, reference.labels)
    return {
        "format": REPORT_FORMAT,
        "bundle": str(bundle.resolve()),
        "manifest_sha256": file_sha256(bundle / "manifest.json"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "backend": options.backend,
        "dla_core": options.dla_core,
        "device": device_info(options.backend),
        "versions": runtime_versions(options.backend),
        "reference": {"count": ref.get("count"), "labels": "labels" in ref, "knn_top1_fp32": knn_fp32,
                      "knn": {"k": KNN_K, "temperature": KNN_TEMPERATURE, "leave_one_out": True}},
        "timing": {"seconds_per_batch": options.seconds, "warmup_calls": options.warmup, "min_runs": options.min_runs,
                   "batch_sizes": sorted({int(b) for e in variants.values() for b in e["latency"]})
                   or batch_sizes(manifest, options.backend)},
        "variants_requested": chosen,
        "files": files,
        "variants": variants,
        "problems": problems,
        "gate_failures": gate_failures,
        "passed": not problems and not gate_failures,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _status(report: dict[str, Any], variant: str) -> str:
    entry = report["variants"].get(variant)
    if entry is None:
        return "not run (see problems)"
    if entry["passed"]:
        return "pass"
    return "FAIL: " + ", ".join(f.split(" ")[0] for f in entry["failures"])


def render_table(report: dict[str, Any]) -> str:
    """The plain table a user reads (variant, status, size, quality, latency), as Markdown."""
    sizes = report["timing"]["batch_sizes"]
    lat_cols = [f"p50 b={b} (ms)" for b in sizes]
    head = ["variant", "status", "size (MB)", "cosine min", "top-1 agree", "kNN top-1", *lat_cols, "images/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in report["variants_requested"]:
        e = report["variants"].get(variant)
        cells = [variant, _status(report, variant)]
        if e is None:
            cells += ["-"] * (len(head) - 2)
        else:
            cells += [f"{e['size_mb']:.2f}", f"{e['cosine_min']:.5f}", f"{e['top1_agreement']:.3f}",
                      _fmt(e["knn_top1"], ".3f"), *[_fmt(e["latency"].get(str(b), {}).get("p50_ms"), ".2f") for b in sizes],
                      f"{e['images_per_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """``device_report.md``: device and versions, the table, latency percentiles, gates, problems."""
    dev, ver, ref = report["device"], report["versions"], report["reference"]
    lines = [f"# Device report: {Path(report['bundle']).name}", "",
             f"- backend: {report['backend']}; verdict: **{'PASSED' if report['passed'] else 'FAILED'}**",
             f"- device: {dev['cpu']} ({dev['cpu_count']} CPUs); GPU: {dev['gpu'] or 'none'}; {dev['platform']}",
             (f"- versions: ONNX Runtime {ver['onnxruntime'] or '-'}, TensorRT {ver['tensorrt'] or '-'}, "
              f"NumPy {ver['numpy']}, Python {ver['python']}"),
             (f"- reference set: {ref['count']} images; FP32 reference kNN top-1 (leave-one-out, weighted, "
              f"k={ref['knn']['k']}): {_fmt(ref['knn_top1_fp32'], '.3f')}"),
             f"- created {report['created']}", "", render_table(report), ""]
    if report["variants"]:
        lines += ["## Latency (ms per call, after warm-up)", "",
                  "| variant | batch | p50 | p90 | p99 | images/s | runs |", "|---|---|---|---|---|---|---|"]
        for variant, e in report["variants"].items():
            for t in e["latency"].values():
                lines.append(f"| {variant} | {t['batch']} | {t['p50_ms']:.3f} | {t['p90_ms']:.3f} | {t['p99_ms']:.3f} "
                             f"| {t['images_per_s']:.0f} | {t['runs']} |")
        lines += ["", "## Quality against the FP32 reference", "",
                  ("| variant | cosine min | cosine p1 | cosine mean | top-1 agree | top-10 overlap | kNN top-1 | "
                   "kNN change | gate failures |"), "|---|---|---|---|---|---|---|---|---|"]
        for variant, e in report["variants"].items():
            lines.append(f"| {variant} | {e['cosine_min']:.5f} | {e['cosine_p1']:.5f} | {e['cosine_mean']:.5f} | "
                         f"{e['top1_agreement']:.3f} | {e['top10_overlap']:.3f} | {_fmt(e['knn_top1'], '.3f')} | "
                         f"{_fmt(e['knn_top1_delta'], '+.3f')} | {'; '.join(e['failures']) or 'none'} |")
    bad = [f for f in report["files"] if not f["ok"]]
    lines += ["", f"## Files: {len(report['files']) - len(bad)} of {len(report['files'])} match the manifest"]
    if report["problems"] or report["gate_failures"]:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in report["problems"] + report["gate_failures"]]
    return "\n".join(lines) + "\n"


def write_device_report(out_dir: Path | str, report: dict[str, Any]) -> tuple[Path, Path]:
    """``device_report.json`` and ``device_report.md`` in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    return atomic_write_json(out / REPORT_JSON, report), atomic_write_text(out / REPORT_MD, render_markdown(report))
