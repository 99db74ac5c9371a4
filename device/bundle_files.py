"""Opening a deploy bundle's engines, every backend, only after their files are checked: the ONNX file against the
manifest's SHA-256, a TensorRT plan against the SHA-256 its engine key recorded at build time (and the ONNX file it
was built from). The checks themselves (typed manifest, containment, hashes) live in ``device.manifest`` and are
re-exported here, so ``from edge_encoder.device.bundle_files import load_manifest, open_engine`` is the one import a
reader of bundles needs.

No torch or onnx at module level: a device with onnxruntime and numpy alone can open and verify a bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_encoder.device.engines import OnnxRuntimeEngine
from edge_encoder.device.manifest import (  # noqa: F401 - re-exported: the bundle-reading API in one place
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    BundleFileError,
    bundle_path,
    check_manifest,
    load_manifest,
    manifest_preprocess,
    read_bundle_file,
    recorded_files,
    resolve_bundle_file,
    variant_entry,
)

if TYPE_CHECKING:
    from edge_encoder.device.tensorrt import TensorRTEngine

logger = logging.getLogger(__name__)


def open_engine(bundle_dir: Path | str, variant: str, *, backend: str = "onnxruntime",
                providers: Sequence[str] | None = None, intra_op_threads: int | None = None,
                dla_core: int | None = None) -> OnnxRuntimeEngine | TensorRTEngine:
    """Open one variant of a deploy bundle after checking its file against the manifest.

    ``backend="onnxruntime"`` runs the ONNX file (its SHA-256 must equal the manifest's); ``"tensorrt"`` the plan
    built on this device, ``tensorrt/encoder_<variant>.plan`` (or, with ``dla_core``, the variant's static-batch
    DLA plan): its SHA-256 must equal the one its engine key recorded at build time, and the ONNX file it was built
    from must be the manifest's (each checked when the key records it).

    Raises:
        ValueError: an unknown variant or backend, a malformed manifest, a file outside the bundle, missing or
            changed (:class:`BundleFileError`), or TensorRT not installed.
    """
    bundle = Path(bundle_dir)
    manifest = load_manifest(bundle)
    entry = variant_entry(manifest, variant, bundle)
    # float-NCHW graphs (normalisation not in the graph): the engine normalises uint8 input itself
    in_graph = manifest["preprocessing"]["in_graph"]
    preprocess = None if in_graph else manifest_preprocess(manifest, bundle / MANIFEST_NAME)
    if backend == "onnxruntime":
        path = resolve_bundle_file(bundle, entry["file"], entry["sha256"], key=f"variants.{variant}.file")
        return OnnxRuntimeEngine(path, name=entry.get("engine_name"), providers=providers,
                                 intra_op_threads=intra_op_threads, preprocess=preprocess)
    if backend == "tensorrt":
        plan = check_tensorrt_plan(bundle, tensorrt_plan_name(bundle, manifest, variant, dla_core), entry)
        from edge_encoder.device.tensorrt import TensorRTEngine, require_tensorrt

        require_tensorrt()

        return TensorRTEngine(plan, name=f"trt_{variant}" + ("" if dla_core is None else f"_dla{dla_core}"),
                              preprocess=preprocess, dla_core=dla_core)
    raise ValueError(f"backend must be 'onnxruntime' or 'tensorrt', got {backend!r}")


def tensorrt_plan_name(bundle_dir: Path, manifest: dict[str, Any], variant: str, dla_core: int | None) -> str:
    """The plan of ``variant`` relative to the bundle: the GPU plan, or the DLA plan of core ``dla_core`` at the
    manifest's ``dla_batch`` (else the one DLA plan of that core in ``tensorrt/``)."""
    from edge_encoder.device.trt_plans import (
        plan_relpath,  # the builder's naming (standard library only)
    )

    if dla_core is None:
        return plan_relpath(variant)
    batch = manifest.get("dla_batch")
    if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:
        return plan_relpath(variant, dla_core, batch)
    found = sorted((Path(bundle_dir) / "tensorrt").glob(f"encoder_{variant}.dla{int(dla_core)}.b*.plan"))
    if len(found) != 1:
        raise BundleFileError(f"{len(found)} DLA plans of {variant!r} for DLA core {dla_core} in tensorrt/ and no "
                              f"dla_batch in the manifest; build one: edge-encoder build "
                              f"{bundle_dir} --variant {variant} --dla-core {dla_core} --dla-batch N")
    return f"tensorrt/{found[0].name}"


def check_tensorrt_plan(bundle_dir: Path | str, relative: str, entry: dict[str, Any]) -> Path:
    """The real path of the plan ``relative`` (inside the bundle) after checking it against its engine key.

    The key (``<plan>.key.json``, written by ``device.tensorrt``) records the plan's own SHA-256 and the SHA-256 of
    the ONNX file it was built from; each is checked when present. A plan without a key (built by trtexec) is
    loaded unchecked, with a warning: TensorRT itself still refuses a plan of another version or GPU.
    """
    from edge_encoder.device.tensorrt import (
        read_engine_key,  # the module imports tensorrt lazily, not here
    )
    from edge_encoder.device.trt_plans import key_path, rebuild_command, variant_graph_hashes

    plan = bundle_path(bundle_dir, relative, key=relative)
    if not plan.is_file():
        raise BundleFileError(f"no TensorRT plan at {relative}; build it on this device: "
                              f"{rebuild_command(Path(bundle_dir) / relative)}")
    if not key_path(plan).resolve().is_relative_to(Path(bundle_dir).resolve()):
        raise BundleFileError(f"engine key of {relative} resolves to {key_path(plan).resolve()}, outside the "
                              "bundle; refusing to read it")
    key = read_engine_key(plan)  # the file TensorRTEngine reads too: beside the plan's real path
    if key is None:
        logger.warning("%s has no engine key (built by trtexec?): its bytes are not hash-checked", relative)
        return plan
    onnx_sha = key.get("onnx_sha256")
    graphs = variant_graph_hashes(entry)  # the variant's graph, and int8_trt's DLA graphs (export.dla_int8)
    if isinstance(onnx_sha, str) and onnx_sha not in graphs:
        raise BundleFileError(f"TensorRT plan {relative} was built from another {key.get('onnx') or entry['file']} "
                              f"(sha256 {onnx_sha[:12]}...) than the manifest's ({entry['sha256'][:12]}...); rebuild "
                              f"it: {rebuild_command(Path(bundle_dir) / relative)}")
    build = key.get("build") if isinstance(key.get("build"), dict) else {}
    cache_sha = build.get("calibration_cache_sha256")  # a TensorRT 10 DLA INT8 plan: the cache its calibrator read
    recorded = (((entry.get("dla") or {}).get("tensorrt10") or {}).get("calibration_cache") or {}).get("sha256")
    if isinstance(cache_sha, str) and cache_sha != recorded:
        raise BundleFileError(f"TensorRT plan {relative} was built with another calibration cache (sha256 "
                              f"{cache_sha[:12]}...) than the manifest's; rebuild it: "
                              f"{rebuild_command(Path(bundle_dir) / relative)}")
    if isinstance(key.get("sha256"), str):
        return resolve_bundle_file(bundle_dir, relative, key["sha256"], key="sha256",
                                   recorded_in=f"its engine key {key_path(plan).name}")
    logger.warning("%s: its engine key records no sha256 (an older key): the plan is not hash-checked", relative)
    return plan
