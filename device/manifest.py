"""Reading a deploy bundle safely: its manifest (every key the project reads, typed) and every file the manifest
names (contained in the bundle, hash-checked before it is used). The lowest layer of bundle reading: it imports no
backend, so ``device.tensorrt``, ``device.reference``, ``device.verify`` and ``device.bundle_files`` (which opens the
engines) all build on it without an import cycle.

A bundle is data a user receives from elsewhere, so nothing outside it is read: a manifest path that is absolute,
contains ``..`` or resolves (symlinks followed) outside the bundle directory is refused, and so is a file whose
SHA-256 differs from the one recorded for it. Every refusal is a ``ValueError`` (:class:`BundleFileError`) of one
line naming the manifest key, the file and, for a hash, the expected and actual digest prefixes. Standard library
and NumPy only (no torch, no onnx).

The manifest records every other file of the bundle (``files``: path -> SHA-256, taken by :func:`record_bundle_files`
once the export has written everything else) and the patterns of the files the device may add (``device_files``,
:data:`DEVICE_FILES`); ``device.verify`` compares :func:`list_bundle_files` with both.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from edge_encoder.core.contract import Preprocess
from edge_encoder.core.files import file_sha256
from edge_encoder.device.parity import ParityThresholds

MANIFEST_FORMAT = "edge-encoder/deploy-bundle/1"
MANIFEST_NAME = "manifest.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPR_LIMIT = 60
# What the device adds to a bundle after export (``edge-encoder build``, ``edge-encoder key``, ``edge-encoder verify``),
# by pattern (``/`` separates folders, ``*`` never crosses one): the export records these in the manifest's
# ``device_files``; verify accepts a file the manifest's ``files`` does not record only when it matches one, and checks
# the plans among them against their engine keys.
DEVICE_FILES = (
    "tensorrt/*.plan",                     # edge-encoder build / trtexec (device.trt_plans.plan_relpath)
    "tensorrt/*.plan.key.json",            # engine keys (device.trt_plans.key_path)
    "tensorrt/timing.cache",               # TensorRT's timing cache (edge-encoder build, trtexec.txt)
    "device_report.json", "device_report.md",  # edge-encoder verify
    "triton/encoder_trt_*/config.pbtxt",   # Triton TensorRT models
    "triton/encoder_trt_*/1/model.plan",   # a copy of the matching tensorrt/ plan (edge-encoder build)
)


class BundleFileError(ValueError):
    """A bundle file is missing, lies outside the bundle, or does not match the SHA-256 recorded for it."""


# ------------------------------------------------------------------------------------------------- manifest


def load_manifest(bundle_dir: Path | str) -> dict[str, Any]:
    """Read ``manifest.json`` of a bundle and check the types of every key the project reads.

    Raises:
        ValueError: one line naming the file and the key (missing file, broken JSON, a missing key, a wrong type).
    """
    bundle = Path(bundle_dir)
    if not bundle.is_dir():
        raise BundleFileError(f"bundle directory {bundle} does not exist (or is not a directory)")
    path = bundle_path(bundle, MANIFEST_NAME, key=MANIFEST_NAME)
    if not path.is_file():
        raise BundleFileError(f"no {MANIFEST_NAME} in {bundle}")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    check_manifest(manifest, path)
    return manifest


def check_manifest(manifest: Any, path: Path | str = MANIFEST_NAME) -> None:
    """Raise a one-line ``ValueError`` naming ``path`` and the key when ``manifest`` lacks a key or has a wrong type."""
    m = _Checker(path)
    m.require(manifest, "", dict, "an object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: key 'format' is {_short(manifest.get('format'))}, expected {MANIFEST_FORMAT!r}")
    for key in ("input", "preprocessing", "output", "variants", "provenance"):
        m.require(m.get(manifest, key), key, dict, "an object")
    m.positive_int(manifest["input"], "input.image_size")
    _check_preprocessing(m, manifest["preprocessing"])
    m.positive_int(manifest["output"], "output.embedding_dim")
    if not manifest["variants"]:
        raise ValueError(f"{path}: key 'variants' is empty (a bundle has at least one variant)")
    for name, entry in manifest["variants"].items():
        m.require(entry, f"variants.{name}", dict, "an object")
        m.file_entry(entry, f"variants.{name}")
        for key, kind, what in (("engine_name", str, "a string"), ("passed", bool, "true or false")):
            if key in entry:
                m.require(entry[key], f"variants.{name}.{key}", kind, what)
        if "dla" in entry:
            _check_dla_graphs(m, entry["dla"], f"variants.{name}.dla")
    if "tensorrt_profile" in manifest:
        _check_profile(m, manifest["tensorrt_profile"])
    if "dla_batch" in manifest and not (_is_int(manifest["dla_batch"]) and manifest["dla_batch"] >= 0):
        m.fail("dla_batch", "an integer >= 0 (0: no DLA plans)", manifest["dla_batch"])
    if "reference" in manifest:
        _check_reference(m, manifest["reference"], manifest["variants"])
    if "files" in manifest:
        _check_files(m, manifest["files"])
    if "device_files" in manifest:
        patterns = manifest["device_files"]
        if not (isinstance(patterns, list) and all(isinstance(p, str) and p and _is_relative(p) for p in patterns)):
            m.fail("device_files", "a list of file patterns inside the bundle (e.g. 'tensorrt/*.plan')", patterns)


def _check_files(m: _Checker, files: Any) -> None:
    """``files``: ``{relative POSIX path: sha256}`` of every file of the bundle but the manifest itself."""
    m.require(files, "files", dict, "an object {path inside the bundle: sha256}")
    for name, sha in files.items():
        if not name or not _is_relative(name) or name == MANIFEST_NAME:
            m.fail("files", f"paths inside the bundle other than {MANIFEST_NAME}", name)
        if not isinstance(sha, str) or not _SHA256.match(sha):
            m.fail(f"files.{name}", "64 lowercase hex digits", sha)


def _is_relative(name: str) -> bool:
    """A lexically relative path without ``..`` (containment itself is checked when the file is read)."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return not (posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\"))
                or ".." in posix.parts or ".." in windows.parts or "\x00" in name)


def _check_dla_graphs(m: _Checker, dla: Any, where: str) -> None:
    """``variants.int8_trt.dla`` (``export.dla_int8``): ``tensorrt10`` (the Q/DQ-free graph, with its
    ``calibration_cache``) and ``tensorrt11`` (the Q/DQ graph), each a file entry; what ``device.trt_plans.
    resolve_dla_graph`` builds a DLA plan from. Their files are hash-checked like every recorded file."""
    m.require(dla, where, dict, "an object")
    for generation in ("tensorrt10", "tensorrt11"):
        if generation in dla:
            graph = m.require(dla[generation], f"{where}.{generation}", dict, "an object")
            m.file_entry(graph, f"{where}.{generation}")
    if "tensorrt10" in dla:
        cache = m.require(m.get(dla["tensorrt10"], "calibration_cache", f"{where}.tensorrt10"),
                          f"{where}.tensorrt10.calibration_cache", dict, "an object")
        m.file_entry(cache, f"{where}.tensorrt10.calibration_cache")


def _check_preprocessing(m: _Checker, pre: dict[str, Any]) -> None:
    m.require(m.get(pre, "in_graph", "preprocessing"), "preprocessing.in_graph", bool, "true or false")
    for key in ("mean", "std"):
        values = m.get(pre, key, "preprocessing")
        ok = isinstance(values, list) and len(values) == 3 and all(_is_number(v) for v in values)
        if not ok:
            m.fail(f"preprocessing.{key}", "a list of 3 numbers (RGB)", values)
    if min(pre["std"]) <= 0:
        m.fail("preprocessing.std", "3 numbers > 0", pre["std"])


PREPROCESSING_FORMULA = "((x / 255) - mean) / std, per RGB channel"


def preprocessing_section(pre: Preprocess, in_graph: bool) -> dict[str, Any]:
    """The manifest's ``preprocessing`` object for ``pre`` (its ``image_size`` is the manifest's
    ``input.image_size``, written with the input contract). ``in_graph``: the graphs normalise uint8 input
    themselves; otherwise the caller does (``float_nchw``), which the section says."""
    section: dict[str, Any] = {"in_graph": in_graph, "scale": 1 / 255, "mean": list(pre.mean), "std": list(pre.std),
                               "formula": PREPROCESSING_FORMULA}
    if not in_graph:
        section["applied_by"] = ("the caller (upstream, e.g. DeepStream/Triton), before the graph input; "
                                 "export.engines applies it itself when given uint8 NHWC images")
    return section


def manifest_preprocess(manifest: dict[str, Any], path: Path | str = MANIFEST_NAME) -> Preprocess:
    """The :class:`Preprocess` a manifest records (``input.image_size``, ``preprocessing.mean`` / ``std``).

    Raises:
        ValueError: one line naming ``path`` and the key when either is missing or malformed (a manifest that
            :func:`load_manifest` accepted always converts).
    """
    m = _Checker(path)
    m.require(manifest, "", dict, "an object")
    for key in ("input", "preprocessing"):
        m.require(m.get(manifest, key), key, dict, "an object")
    size = m.positive_int(manifest["input"], "input.image_size")
    _check_preprocessing(m, manifest["preprocessing"])
    pre = manifest["preprocessing"]
    return Preprocess(size, pre["mean"], pre["std"])


def _check_profile(m: _Checker, profile: Any) -> None:
    m.require(profile, "tensorrt_profile", dict, "an object")
    for key in ("min", "opt", "max"):
        m.positive_int(profile, f"tensorrt_profile.{key}")
    if not profile["min"] <= profile["opt"] <= profile["max"]:
        m.fail("tensorrt_profile", "min <= opt <= max", profile)


def _check_reference(m: _Checker, ref: Any, variants: dict[str, Any]) -> None:
    m.require(ref, "reference", dict, "an object")
    m.positive_int(ref, "reference.count")
    for key in ("images", "embeddings_fp32") + (("labels",) if "labels" in ref else ()):
        entry = m.require(m.get(ref, key, "reference"), f"reference.{key}", dict, "an object")
        m.file_entry(entry, f"reference.{key}")
        shape = m.get(entry, "shape", f"reference.{key}")
        if not (isinstance(shape, list) and shape and all(_is_int(d) and d >= 0 for d in shape)):
            m.fail(f"reference.{key}.shape", "a list of sizes", shape)
    gates = m.require(m.get(ref, "gates", "reference"), "reference.gates", dict, "an object")
    fields = {f.name for f in dataclasses.fields(ParityThresholds)}
    for name, gate in gates.items():
        m.require(gate, f"reference.gates.{name}", dict, "an object")
        for key, value in gate.items():
            if key not in fields:
                m.fail(f"reference.gates.{name}.{key}", f"one of {sorted(fields)}", key)
            if value is not None and not _is_number(value):
                m.fail(f"reference.gates.{name}.{key}", "a number or null", value)
    missing = [v for v in variants if v not in gates]
    if missing:
        m.fail("reference.gates", f"a gate for every variant (missing {missing})", sorted(gates))


class _Checker:
    """Type checks that raise one line: ``<manifest>: key 'a.b' must be <what>, got <value>``."""

    def __init__(self, path: Path | str) -> None:
        self.path = path

    def fail(self, key: str, what: str, value: Any) -> None:
        raise ValueError(f"{self.path}: key {key!r} must be {what}, got {_short(value)}")

    def get(self, obj: dict[str, Any], key: str, parent: str = "") -> Any:
        dotted = f"{parent}.{key}" if parent else key
        if key not in obj:
            raise ValueError(f"{self.path}: missing key {dotted!r}")
        return obj[key]

    def require(self, value: Any, key: str, kind: type, what: str) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key or "(top level)", what, value)
        return value

    def positive_int(self, obj: dict[str, Any], dotted: str) -> int:
        parent, _, key = dotted.rpartition(".")
        value = self.get(obj, key, parent)
        if not _is_int(value) or value <= 0:
            self.fail(dotted, "an integer > 0", value)
        return value

    def file_entry(self, entry: dict[str, Any], where: str) -> None:
        file = self.get(entry, "file", where)
        if not isinstance(file, str) or not file:
            self.fail(f"{where}.file", "a non-empty string (a path inside the bundle)", file)
        sha = self.get(entry, "sha256", where)
        if not isinstance(sha, str) or not _SHA256.match(sha):
            self.fail(f"{where}.sha256", "64 lowercase hex digits", sha)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else f"{type(value).__name__} {json.dumps(value)}"
    text = text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT - 3] + "..."
    return f"{text} ({type(value).__name__})" if not isinstance(value, (dict, list)) else text


# ------------------------------------------------------------------------------------------- files of the bundle


def bundle_path(bundle_dir: Path | str, relative: Any, *, key: str) -> Path:
    """The real path of ``relative`` inside the bundle, or :class:`BundleFileError` naming ``key`` when it is not
    a plain relative path or resolves (symlinks followed) outside the bundle directory. Existence is not checked."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise BundleFileError(f"key {key!r}: {_short(relative)} is not a file name inside the bundle")
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or relative.startswith(("/", "\\")):
        raise BundleFileError(f"key {key!r}: {relative!r} is an absolute path; bundle files must be "
                              "relative to the bundle directory")
    if ".." in posix.parts or ".." in windows.parts:
        raise BundleFileError(f"key {key!r}: {relative!r} contains '..'; bundle files must stay inside "
                              "the bundle directory")
    root = Path(bundle_dir).resolve()
    real = (root / relative).resolve()  # follows every symlink on the way
    if not real.is_relative_to(root):
        raise BundleFileError(f"key {key!r}: {relative!r} resolves to {real}, outside the bundle {root} "
                              "(a symlink out of the bundle); refusing to read it")
    return real


def resolve_bundle_file(bundle_dir: Path | str, relative: Any, expected_sha256: str, *, key: str = "file",
                        recorded_in: str = "the manifest") -> Path:
    """The real path of a bundle file after checking containment (see :func:`bundle_path`), that it is a regular
    file, and that its SHA-256 is ``expected_sha256`` (as ``recorded_in`` records it under ``key``) — all before
    anything opens it for use.

    Raises:
        BundleFileError: one line naming ``key`` and the file (and the expected / actual digest prefixes).
    """
    path = bundle_path(bundle_dir, relative, key=key)
    if not path.is_file():
        raise BundleFileError(f"bundle file {relative} (key {key!r}) is missing from {Path(bundle_dir)}")
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise BundleFileError(f"bundle file {relative} (key {key!r}) cannot be read: {exc.strerror}") from None
    _check_digest(relative, key, actual, expected_sha256, recorded_in)
    return path


def read_bundle_file(bundle_dir: Path | str, relative: Any, expected_sha256: str, *, key: str = "file") -> bytes:
    """The bytes of a bundle file, read once and hash-checked in memory (no window between check and use)."""
    path = bundle_path(bundle_dir, relative, key=key)
    if not path.is_file():
        raise BundleFileError(f"bundle file {relative} (key {key!r}) is missing from {Path(bundle_dir)}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleFileError(f"bundle file {relative} (key {key!r}) cannot be read: {exc.strerror}") from None
    _check_digest(relative, key, hashlib.sha256(data).hexdigest(), expected_sha256, "the manifest")
    return data


def _check_digest(relative: str, key: str, actual: str, expected: str, recorded_in: str) -> None:
    if actual != expected:
        raise BundleFileError(f"bundle file {relative} (key {key!r}) does not match {recorded_in}: its sha256 is "
                              f"{actual[:12]}... but {recorded_in} records {expected[:12]}...; the file was "
                              "changed or damaged after it was recorded")


def recorded_files(manifest: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(manifest key, relative path, sha256)`` of every file the manifest records: each object anywhere in it with
    string ``file`` and ``sha256`` members (variants, the reference set, and whatever later sections add)."""

    def walk(node: Any, where: str) -> Iterator[tuple[str, str, str]]:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str) and isinstance(node.get("sha256"), str):
                yield f"{where}.file", node["file"], node["sha256"]
            for key, value in node.items():
                yield from walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}[{i}]")

    yield from walk(manifest, "")


def list_bundle_files(bundle_dir: Path | str) -> list[str]:
    """Every file under the bundle directory but ``manifest.json``: relative POSIX paths, sorted. Anything that is not
    a directory counts (a symlink too, also one to a directory, which is listed and not entered); empty directories
    do not. What the export records in ``files``, and what verify compares with it.

    Raises:
        OSError: a directory of the bundle cannot be read.
    """
    root = Path(bundle_dir)

    def fail(exc: OSError) -> None:
        raise exc

    found = []
    for folder, dirs, names in os.walk(root, onerror=fail):  # symlinked directories are not followed
        here = Path(folder)
        found += [(here / name).relative_to(root).as_posix()
                  for name in names + [d for d in dirs if (here / d).is_symlink()]]
    return sorted(f for f in found if f != MANIFEST_NAME)


def record_bundle_files(bundle_dir: Path | str) -> dict[str, str]:
    """``{relative path: sha256}`` of :func:`list_bundle_files`: the manifest's ``files``, taken when every other
    file of the bundle is written."""
    return {name: file_sha256(Path(bundle_dir) / name) for name in list_bundle_files(bundle_dir)}


def is_device_file(relative: str, patterns: Any = DEVICE_FILES) -> bool:
    """Whether ``relative`` (POSIX) matches one of ``patterns``, folder by folder (``*`` never crosses a ``/``)."""
    parts = relative.split("/")
    return any(isinstance(p, str) and len(p.split("/")) == len(parts)
               and all(fnmatch.fnmatchcase(part, pat) for part, pat in zip(parts, p.split("/")))
               for p in (patterns or ()))


# ------------------------------------------------------------------------------------------------------ engines


def variant_entry(manifest: dict[str, Any], variant: str, bundle_dir: Path | str) -> dict[str, Any]:
    """The manifest entry of ``variant``, or a ``ValueError`` listing the variants the bundle has."""
    variants = manifest["variants"]
    if variant not in variants:
        raise ValueError(f"variant {variant!r} is not in {Path(bundle_dir) / MANIFEST_NAME}; available: "
                         f"{sorted(variants)}")
    return variants[variant]
