"""Verify a deploy bundle on the device it was copied to: its files, each engine's quality and latency.

1. Every file of the bundle folder is checked: each one the manifest records (``files``: every file the export
   wrote but the manifest itself; the variants; the reference set) against its SHA-256, each one the device added
   (``device_files``: TensorRT plans and engine keys, Triton plans, the timing cache, device reports) where it can
   be (a plan against its engine key); any other file is refused as unexpected. ``--manifest-sha256`` pins the
   manifest itself (the export prints its SHA-256).
2. Each engine (ONNX Runtime, or the TensorRT plans built on this device) embeds the bundle's reference images; the
   embeddings are compared with the FP32 PyTorch reference embeddings exported with the bundle and gated with the
   thresholds the manifest records (``reference.gates``).
3. Latency p50 / p90 / p99 at batch 1, 8 and the TensorRT profile's maximum, after warm-up.
4. ``device_report.json`` and ``device_report.md`` are written into the bundle (atomically); the table is printed.

    edge-encoder verify BUNDLE [--backend onnxruntime|tensorrt] [--variant V ...] [--seconds 1.0]

Exit codes: 0 every file intact and every gate passed; 2 a bad, missing, changed or unexpected file, or a usage
error (unknown variant, TensorRT not installed); 3 a gate failed. One line per problem on stderr; the report is still
written for the variants that ran.

The ONNX Runtime path imports neither torch nor onnx (a device may have only onnxruntime and numpy).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from edge_encoder.core.files import atomic_write_json, atomic_write_text, file_sha256
from edge_encoder.core.markdown import md_cell, md_row
from edge_encoder.device.bundle_files import open_engine
from edge_encoder.device.manifest import (
    MANIFEST_NAME,
    BundleFileError,
    bundle_path,
    is_device_file,
    list_bundle_files,
    load_manifest,
    recorded_files,
    resolve_bundle_file,
    variant_entry,
)
from edge_encoder.core.knn import DEFAULT_K, DEFAULT_TEMPERATURE
from edge_encoder.core.errors import EXIT_GATE, EXIT_OK
from edge_encoder.core.errors import EXIT_USAGE as EXIT_FILE  # a bundle file is missing or does not match: exit 2
from edge_encoder.device.parity import ParityThresholds, compare_embeddings, loose_gate_fields
from edge_encoder.device.reference import ReferenceSet, load_reference_set

logger = logging.getLogger(__name__)

REPORT_FORMAT = "edge-encoder/device-report/1"
REPORT_JSON, REPORT_MD = "device_report.json", "device_report.md"
BACKENDS = ("onnxruntime", "tensorrt")
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


def require_file_list(bundle: Path, manifest: dict[str, Any]) -> None:
    """Refuse (``BundleFileError``, exit 2) a manifest without ``files``: an older export recorded only the variants
    and the reference set, so its ``triton/`` copies, ``trtexec.txt``... could not be checked."""
    if "files" not in manifest:
        raise BundleFileError(f"{bundle / MANIFEST_NAME} records no 'files' (exported by an older edge-encoder that "
                              "did not record every bundle file, so triton/, trtexec.txt, calibration.json and "
                              "README.md cannot be checked): re-export the bundle (edge-encoder export RUN) and "
                              "copy it again")


def check_recorded_files(bundle: Path, manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Check every file of the bundle folder: ``(rows {key, file, sha256, ok, problem}, one-line problems)``.

    Each file the manifest records (``files``, and the variants and reference set, each path hashed once) must be
    there with its SHA-256. A file it does not record must match a ``device_files`` pattern (what the device adds);
    the plans among those are checked against their engine keys (:func:`check_device_file`). Anything else is an
    unexpected file.
    """
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    checked: dict[str, str] = {}
    recorded = [*recorded_files(manifest), *(("files", name, sha) for name, sha in manifest.get("files", {}).items())]
    for key, relative, sha in recorded:
        if isinstance(relative, str) and checked.get(_posix(relative)) == sha:
            continue  # the same file with the same digest under another key (a variant is in `files` too)
        try:
            resolve_bundle_file(bundle, relative, sha, key=key)
            rows.append({"key": key, "file": relative, "sha256": sha, "ok": True})
        except BundleFileError as exc:
            rows.append({"key": key, "file": relative, "sha256": sha, "ok": False, "problem": str(exc)})
            problems.append(str(exc))
        if isinstance(relative, str):
            checked.setdefault(_posix(relative), sha)
    try:
        present = list_bundle_files(bundle)
    except OSError as exc:
        problems.append(f"cannot list the files of {bundle}: {exc.strerror} ({exc.filename}); every file must be "
                        "readable to be checked")
        return rows, problems
    patterns = manifest.get("device_files", [])
    for relative in present:
        if relative in checked:
            continue
        if is_device_file(relative, patterns):
            problem = check_device_file(bundle, relative, manifest)
            key = "device_files"
        else:
            problem, key = unexpected_file(bundle, relative), None
        rows.append({"key": key, "file": relative, "sha256": None, "ok": problem is None,
                     **({"problem": problem} if problem else {})})
        if problem:
            problems.append(problem)
    return rows, problems


def _posix(relative: str) -> str:
    return PurePosixPath(relative.replace("\\", "/")).as_posix()


def unexpected_file(bundle: Path, relative: str) -> str:
    """The one line for a file neither recorded by the manifest nor one the device writes."""
    parts = relative.split("/")
    litter = (any(p.startswith(".") for p in parts) or parts[0] == "__MACOSX"
              or parts[-1] in ("Thumbs.db", "desktop.ini"))
    kind = " (hidden or OS file, e.g. left by a file manager or an archive tool)" if litter else ""
    return (f"unexpected file {relative}{kind}: {MANIFEST_NAME} does not record it and it is none of the files the "
            f"device writes (tensorrt/ plans and keys, device_report.*, Triton TensorRT plans); remove it "
            f"(rm -r {shlex.quote(str(bundle / relative))}) or re-export the bundle")


def check_device_file(bundle: Path, relative: str, manifest: dict[str, Any]) -> str | None:
    """``None`` when a file the device added (``device_files``) checks out, else the one-line problem.

    ``tensorrt/<plan>.plan``: its variant must be the manifest's and the plan must match its engine key (SHA-256 of
    the plan and of the ONNX file it was built from; a plan without a key, built by trtexec, is accepted with a
    warning). ``<plan>.key.json``: its plan must be there. ``triton/encoder_trt_<v>[_dla]/1/model.plan``: the same
    bytes as the ``tensorrt/`` plan it copies (:func:`check_triton_plan`). Other matches (timing cache, reports, Triton
    configs) cannot be checked: accepted.
    """
    from edge_encoder.device.bundle_files import check_tensorrt_plan
    from edge_encoder.device.trt_plans import parse_plan_name, rebuild_command

    parts = relative.split("/")
    try:
        if len(parts) == 2 and parts[0] == "tensorrt" and parts[1].endswith(".plan"):
            variant = parse_plan_name(relative)[0]
            if variant not in manifest["variants"]:
                return (f"TensorRT plan {relative} is for variant {variant!r}, which {MANIFEST_NAME} does not have "
                        f"(variants: {', '.join(manifest['variants'])}); remove it")
            check_tensorrt_plan(bundle, relative, manifest["variants"][variant])
        elif len(parts) == 2 and parts[0] == "tensorrt" and parts[1].endswith(".plan.key.json"):
            plan = relative.removesuffix(".key.json")
            if not (bundle / plan).is_file():
                return (f"engine key {relative} has no plan {plan} beside it; remove the key, or rebuild the plan: "
                        f"{rebuild_command(bundle / plan)}")
        elif len(parts) == 4 and parts[0] == "triton" and parts[2:] == ["1", "model.plan"]:
            return check_triton_plan(bundle, relative, manifest)
    except ValueError as exc:  # BundleFileError, a damaged engine key
        return _one_line(str(exc))
    except OSError as exc:
        return f"bundle file {relative} cannot be read: {exc.strerror}"
    return None


def check_triton_plan(bundle: Path, relative: str, manifest: dict[str, Any]) -> str | None:
    """``triton/encoder_trt_<v>/1/model.plan`` (``_dla``: a DLA plan of ``<v>``) must be byte for byte the
    ``tensorrt/`` plan ``edge-encoder build`` copied there: its SHA-256 must be the one that plan's engine key records
    (or, for a plan without a key, the plan's own)."""
    from edge_encoder.device.tensorrt import read_engine_key
    from edge_encoder.device.trt_plans import key_path, parse_plan_name, plan_relpath, rebuild_command

    model = relative.split("/")[1]
    name = model.removeprefix("encoder_trt_")
    variants = manifest["variants"]
    if name in variants:
        variant, sources = name, [plan_relpath(name)]
    elif name.endswith("_dla") and name.removesuffix("_dla") in variants:
        variant = name.removesuffix("_dla")
        sources = sorted(f"tensorrt/{p.name}" for p in (bundle / "tensorrt").glob(f"encoder_{variant}.dla*.plan")
                         if parse_plan_name(p)[0] == variant and parse_plan_name(p)[1] is not None)
    else:
        return (f"Triton plan {relative}: model {model} is for no variant of {MANIFEST_NAME} (variants: "
                f"{', '.join(variants)}); remove it")
    expected = {}
    for source in sources:
        plan = bundle_path(bundle, source, key=source)
        if not plan.is_file():
            continue
        key = read_engine_key(plan)
        sha = key.get("sha256") if key is not None else None
        expected[source] = (sha, f"the engine key {key_path(source).as_posix()}") if isinstance(sha, str) else \
            (file_sha256(plan), f"the plan {source}")
    if not expected:
        plan = sources[0] if sources else plan_relpath(variant)
        return (f"Triton plan {relative} has no TensorRT plan {plan} to be checked against: rebuild it on this "
                f"device ({rebuild_command(bundle / plan)} writes both), or remove it")
    path = bundle_path(bundle, relative, key=relative)
    actual = file_sha256(path)
    if actual in {sha for sha, _ in expected.values()}:
        return None
    source, (sha, recorded_in) = next(iter(expected.items()))
    try:
        resolve_bundle_file(bundle, relative, sha, key="sha256", recorded_in=recorded_in)
    except BundleFileError as exc:
        return f"{exc}; copy it again: cp {source} {relative} (edge-encoder build does)"
    return None


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
    placement = None
    if options.backend == "tensorrt":  # what TensorRT placed on the DLA / GPU, in which precision (engine key, build)
        from edge_encoder.device.tensorrt import read_engine_key

        placement = (read_engine_key(path) or {}).get("layers")
    gates = ParityThresholds(**manifest["reference"]["gates"][variant])
    k, temperature = knn_setting(manifest)
    # One kNN (core.knn, weighted, the manifest's k and T): the figure printed below is the one the gate checks.
    parity = compare_embeddings(reference.embeddings, candidate, reference.labels, gates, knn_k=k,
                                knn_temperature=temperature)
    knn, knn_ref = parity.knn_accuracy_candidate, parity.knn_accuracy_reference
    size = path.stat().st_size
    return {
        "engine": name, "backend": options.backend, "file": path.relative_to(bundle.resolve()).as_posix(),
        "bytes": size, "size_mb": size / 1e6, "providers": providers,
        "cosine_min": parity.cosine_min, "cosine_p1": parity.cosine_p1, "cosine_mean": parity.cosine_mean,
        "top1_agreement": parity.top1_agreement, "top10_overlap": parity.top10_overlap,
        "knn_top1": knn, "knn_top1_fp32": knn_ref, "knn_top1_delta": None if knn is None else knn - knn_ref,
        "latency": latency, "images_per_s": max(v["images_per_s"] for v in latency.values()),
        "parity": parity.to_dict(), "failures": list(parity.failures), "passed": parity.passed,
        **({"tensorrt_layers": placement} if placement else {}),
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
    require_file_list(bundle, manifest)
    if options.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {options.backend!r}")
    if options.backend == "tensorrt":
        from edge_encoder.device.tensorrt import require_tensorrt

        require_tensorrt()
    if options.dla_core is not None and options.backend != "tensorrt":
        raise ValueError("--dla-core runs TensorRT DLA plans: add --backend tensorrt")
    if not options.allow_loose_gates:
        check_gate_floors(manifest)
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


def knn_setting(manifest: dict[str, Any]) -> tuple[int, float]:
    """``(k, T)`` of the bundle's kNN (``reference.knn``; bundles without it used core.knn's defaults)."""
    knn = (manifest.get("reference") or {}).get("knn") or {}
    return int(knn.get("k", DEFAULT_K)), float(knn.get("temperature", DEFAULT_TEMPERATURE))


def check_gate_floors(manifest: dict[str, Any]) -> None:
    """Refuse (one-line ``ValueError``, exit 2) a manifest whose gates are missing or looser than
    ``device.parity.GATE_FLOORS``: a manifest with null gates must not pass anything."""
    if not isinstance(manifest.get("reference"), dict):
        return  # no reference set at all: load_reference_set names that (re-export)
    gates = manifest["reference"].get("gates") or {}
    for variant in manifest["variants"]:
        gate = gates.get(variant)
        loose = ["no gate at all"] if not isinstance(gate, dict) else loose_gate_fields(variant, gate)
        if loose:
            raise ValueError(f"manifest.json: key 'reference.gates.{variant}' is looser than the built-in floor: "
                             f"{'; '.join(loose)}; re-export with stricter gates, or pass --allow-loose-gates to "
                             "accept it")


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
    return board_model()  # Jetson: an integrated GPU, named by the board


# The board's name on a device-tree machine (a Jetson: "NVIDIA Jetson AGX Orin Developer Kit"); absent elsewhere.
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
NVPMODEL_TIMEOUT_S = 10.0


def board_model() -> str | None:
    """``/proc/device-tree/model`` (NUL-terminated), or None where there is none (x86, macOS)."""
    try:
        return DEVICE_TREE_MODEL.read_text(errors="replace").strip("\x00\n ") or None
    except OSError:
        return None


def parse_nvpmodel(text: str) -> dict[str, Any] | None:
    """The power mode in the output of ``nvpmodel -q``: ``{"name": "MAXN", "id": 0}`` (``id`` None when no number
    follows), or None when ``text`` names no mode.

    ``nvpmodel -q`` prints ``NV Power Mode: <NAME>`` and, on the next line, the mode's ID (Jetson Linux Developer
    Guide, "Platform Power and Performance": ``sudo /usr/sbin/nvpmodel -q`` displays the current power mode; the
    two-line format is what jetson_stats parses, jtop/core/nvpmodel.py). With ``--verbose`` the line carries an
    ``NVPM VERB: Current mode:`` prefix, and other ``NVPM``/``NV Fan Mode`` lines may come first.
    """
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines()]
    for i, line in enumerate(lines):
        marker = line.find("NV Power Mode:")
        if marker < 0:
            continue
        name = line[marker + len("NV Power Mode:"):].strip()
        if not name:
            return None
        following = next((rest for rest in lines[i + 1:] if rest), "")
        return {"name": name, "id": int(following) if following.isascii() and following.isdigit() else None}
    return None


def jetson_power_mode() -> dict[str, Any] | None:
    """The Jetson power mode from ``nvpmodel -q`` when ``nvpmodel`` is on PATH (None otherwise, or when it fails or
    takes longer than ``NVPMODEL_TIMEOUT_S``): a report detail, never a reason for ``verify`` to fail."""
    command = shutil.which("nvpmodel")
    if command is None:
        return None
    try:
        res = subprocess.run([command, "-q"], capture_output=True, text=True, timeout=NVPMODEL_TIMEOUT_S,
                             check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        logger.warning("nvpmodel -q failed (%s): the power mode is not recorded", _one_line(str(exc), 200))
        return None
    mode = parse_nvpmodel(res.stdout) or parse_nvpmodel(res.stderr)
    if mode is None:
        logger.warning("nvpmodel -q (exit %s) printed no power mode: it is not recorded", res.returncode)
    return mode


def device_info(backend: str) -> dict[str, Any]:
    return {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "gpu": _gpu_name(backend),
            "platform": platform.platform(), "machine": platform.machine(),
            "board": board_model(), "power_mode": jetson_power_mode()}


def _report(bundle: Path, manifest: dict[str, Any], options: VerifyOptions, chosen: list[str],
            reference: ReferenceSet | None, files: list[dict[str, Any]], variants: dict[str, Any],
            problems: list[str], gate_failures: list[str]) -> dict[str, Any]:
    ref = manifest.get("reference") or {}
    k, temperature = knn_setting(manifest)
    knn_fp32 = next((e["knn_top1_fp32"] for e in variants.values() if e.get("knn_top1_fp32") is not None), None)
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
                      "knn": {"k": k, "temperature": temperature, "vote": "weighted", "leave_one_out": True,
                              "gated": "max_knn_accuracy_drop applies to exactly the kNN top-1 printed"}},
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


def _board_text(dev: dict[str, Any]) -> str:
    """``; board: <model>; power mode: MAXN (0)`` for the device line, from what the report holds (if anything)."""
    text = f"; board: {dev['board']}" if dev.get("board") else ""
    mode = dev.get("power_mode")
    if mode:
        text += f"; power mode: {mode['name']}" + (f" ({mode['id']})" if mode.get("id") is not None else "")
    return text


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
    lines = [md_row(head), "|" + "---|" * len(head)]
    for variant in report["variants_requested"]:
        e = report["variants"].get(variant)
        cells = [variant, _status(report, variant)]
        if e is None:
            cells += ["-"] * (len(head) - 2)
        else:
            cells += [f"{e['size_mb']:.2f}", f"{e['cosine_min']:.5f}", f"{e['top1_agreement']:.3f}",
                      _fmt(e["knn_top1"], ".3f"), *[_fmt(e["latency"].get(str(b), {}).get("p50_ms"), ".2f") for b in sizes],
                      f"{e['images_per_s']:.0f}"]
        lines.append(md_row(cells))  # cells escaped: a variant name from the manifest keeps the row's columns
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """``device_report.md``: device and versions, the table, latency percentiles, gates, problems."""
    dev, ver, ref = report["device"], report["versions"], report["reference"]
    lines = [f"# Device report: {Path(report['bundle']).name}", "",
             f"- backend: {report['backend']}; verdict: **{'PASSED' if report['passed'] else 'FAILED'}**",
             (f"- device: {dev['cpu']} ({dev['cpu_count']} CPUs); GPU: {dev['gpu'] or 'none'}; {dev['platform']}"
              + _board_text(dev)),
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
                lines.append(f"| {md_cell(variant)} | {t['batch']} | {t['p50_ms']:.3f} | {t['p90_ms']:.3f} | "
                             f"{t['p99_ms']:.3f} | {t['images_per_s']:.0f} | {t['runs']} |")
        lines += ["", "## Quality against the FP32 reference", "",
                  ("| variant | cosine min | cosine p1 | cosine mean | top-1 agree | top-10 overlap | kNN top-1 | "
                   "kNN change | gate failures |"), "|---|---|---|---|---|---|---|---|---|"]
        for variant, e in report["variants"].items():
            lines.append(f"| {md_cell(variant)} | {e['cosine_min']:.5f} | {e['cosine_p1']:.5f} | "
                         f"{e['cosine_mean']:.5f} | {e['top1_agreement']:.3f} | {e['top10_overlap']:.3f} | "
                         f"{_fmt(e['knn_top1'], '.3f')} | "
                         f"{_fmt(e['knn_top1_delta'], '+.3f')} | {md_cell('; '.join(e['failures']) or 'none')} |")
    bad = [f for f in report["files"] if not f["ok"]]
    lines += ["", f"## Files: {len(report['files']) - len(bad)} of {len(report['files'])} match the manifest"]
    if report["problems"] or report["gate_failures"]:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in report["problems"] + report["gate_failures"]]
    return "\n".join(lines) + "\n"


def write_device_report(out_dir: Path | str, report: dict[str, Any]) -> tuple[Path, Path]:
    """``device_report.json`` and ``device_report.md`` in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    return atomic_write_json(out / REPORT_JSON, report), atomic_write_text(out / REPORT_MD, render_markdown(report))
