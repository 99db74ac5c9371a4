"""Every case of issue 12, as a probe (see ``harness`` for the sandbox and the verdicts).

Each function sets up its bad input or fault in a fresh sandbox, runs the real command line (or the library, where
the issue names a library call) and judges the outcome. ``CASES`` lists them with the verdict the fixed code must
give; ``tests/probes/test_probes.py`` asserts it per case and ``python -m tests.probes`` prints the table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.probes.harness import (
    RUN_NAME,
    Case,
    Outcome,
    Probe,
    Result,
    cli_verdict,
    env_for_children,
    library_verdict,
    sentinel,
    wait_for,
    was_read,
    watched,
    worst,
)

# ------------------------------------------------------------------------------------------------ inputs


def _npz(probe: Probe, name: str = "data.npz", **overrides: Any) -> Path:
    """A small learnable npz (4 classes, 16 px, 128 train / 48 test) with some arrays replaced."""
    rng = np.random.default_rng(0)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(count) % 4
        images = rng.integers(0, 60, size=(count, 16, 16, 3)).astype(np.uint8)
        for image, label in zip(images, labels):
            image[4:12, 4:12, label % 3] = 230
        return images, labels.astype(np.int64)

    (x_train, y_train), (x_test, y_test) = make(128), make(48)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    arrays.update(overrides)
    path = probe.root / name
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _png_tree(root: Path, classes: int = 2, per_class: int = 6, size: int = 12) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"class_{c}" / f"{i}.png")
    return root


def _bomb_png(path: Path, width: int = 12000, height: int = 12000) -> Path:
    """A valid 1-bit PNG of ``width x height`` black pixels: ~17 KB on disk, 0.4 GB as 8-bit RGB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = bytes(height * (1 + (width + 7) // 8))  # filter byte 0 and zero bits, row after row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
                     + chunk(b"IEND", b""))
    return path


def _bad_input(probe: Probe, *args: str, mentions: tuple[str, ...] = (), keep: tuple[str, ...] = (),
               no_run_dir: bool = False) -> Outcome:
    """A command that must stop in one line before it does anything: nothing kept is touched, nothing outside."""
    existed = probe.run_dir.exists()
    with watched(probe, keep=keep) as box:
        result = probe.cli("run", *args)
    outcome = cli_verdict(result, mentions=mentions)
    if outcome.verdict == "clear error" and no_run_dir and not existed and probe.run_dir.exists():
        outcome = Outcome("silent wrong", f"left a run directory behind: {sorted(os.listdir(probe.run_dir))}")
    return worst(outcome, box)


# ------------------------------------------------------------------------------------------------ config (10, 9)


def seed_negative(probe: Probe) -> Outcome:
    return _bad_input(probe, "--set", "data.seed=-1", mentions=("data.seed",), no_run_dir=True)


def image_size_two(probe: Probe) -> Outcome:
    return _bad_input(probe, "--set", "data.image_size=2", mentions=("data.image_size",), no_run_dir=True)


def max_test_one(probe: Probe) -> Outcome:
    return _bad_input(probe, "--set", "data.max_test=1", mentions=("data.max_test",), no_run_dir=True)


def variants_without_fp32(probe: Probe) -> Outcome:
    """Refused up front, or exported and evaluated without fp32: either, but never a crash after training."""
    with watched(probe) as box:
        result = probe.cli("run", "--set", "export.variants=['fp16']")
    if result.rc == 0:
        report = json.loads((probe.run_dir / "report.json").read_text())
        ok = "onnx_fp16" in report.get("metrics", {})
        return worst(Outcome("correct" if ok else "silent wrong", "exported and evaluated fp16 without fp32"), box)
    return worst(cli_verdict(result, mentions=("export.variants",)), box)


def unknown_dataset(probe: Probe) -> Outcome:
    return _bad_input(probe, "--dataset", "imagenet-99", mentions=("imagenet-99",), no_run_dir=True)


def runs_dir_is_a_file(probe: Probe) -> Outcome:
    blocker = probe.root / "runs"
    blocker.write_text("a file where the runs directory should be\n")
    with watched(probe) as box:
        result = probe.cli("run")
    outcome = cli_verdict(result, mentions=(str(blocker),))
    return worst(outcome, box)


def runs_dir_read_only(probe: Probe) -> Outcome:
    probe.tmpfs(probe.runs, size="64k", read_only=True)
    with watched(probe) as box:
        result = probe.cli("run")
    return worst(cli_verdict(result, mentions=(str(probe.runs),)), box)


# ------------------------------------------------------------------------------------------------ npz (6, 10)


def npz_object_array(probe: Probe) -> Outcome:
    path = _npz(probe, y_test=np.array([{"label": 1}] * 48, dtype=object))
    return _bad_input(probe, "--dataset", f"npz:{path}", mentions=(str(path), "y_test"), no_run_dir=True)


def npz_label_outside_class_names(probe: Probe) -> Outcome:
    y_train = np.arange(128) % 4
    y_train[5] = 9
    path = _npz(probe, y_train=y_train, class_names=np.array(["a", "b", "c", "d"]))
    return _bad_input(probe, "--dataset", f"npz:{path}", mentions=(str(path), "9"), no_run_dir=True)


def npz_negative_label(probe: Probe) -> Outcome:
    y_train = np.arange(128) % 4
    y_train[3] = -1
    path = _npz(probe, y_train=y_train)
    return _bad_input(probe, "--dataset", f"npz:{path}", mentions=(str(path), "y_train"), no_run_dir=True)


def npz_float_labels(probe: Probe) -> Outcome:
    path = _npz(probe, y_train=(np.arange(128) % 4).astype(np.float32))
    return _bad_input(probe, "--dataset", f"npz:{path}", mentions=(str(path), "y_train"), no_run_dir=True)


def npz_labels_length_mismatch(probe: Probe) -> Outcome:
    path = _npz(probe, y_train=np.arange(100) % 4)
    return _bad_input(probe, "--dataset", f"npz:{path}", mentions=(str(path), "y_train"), no_run_dir=True)


def npz_sparse_label_without_names(probe: Probe) -> Outcome:
    """One label of 65535 and no class_names: 2 classes (remapped, with a warning), not 65,536."""
    from edge_encoder.imagedata import load_dataset

    y_train = np.zeros(128, np.int64)
    y_train[::2] = 65535
    path = _npz(probe, y_train=y_train, y_test=np.array([0, 65535] * 24))

    def check(splits: Any) -> Outcome:
        if splits.num_classes == 2 and set(np.unique(splits.y_train).tolist()) == {0, 1}:
            return Outcome("correct", f"2 classes {list(splits.class_names)}, labels remapped to 0..1")
        return Outcome("silent wrong", f"{splits.num_classes} classes from labels {{0, 65535}}")

    return library_verdict(lambda: load_dataset(f"npz:{path}"), check=check)


# ------------------------------------------------------------------------------------------------ images (5, 7, 11)


def _decoded_pixel(path: Path, size: int = 4) -> np.ndarray:
    from edge_encoder.imagedata.folder import read_image

    return read_image(path, size)


def png_16_bit_grey(probe: Probe) -> Outcome:
    from PIL import Image

    path = probe.root / "grey16.png"
    Image.fromarray(np.full((8, 8), 0x4000, np.uint16)).save(path)  # a mid-dark grey, 16 bit

    def check(image: np.ndarray) -> Outcome:
        if np.abs(image.astype(int) - 0x40).max() <= 1:
            return Outcome("correct", "decoded to grey 64")
        return Outcome("silent wrong", f"decoded to {int(image.mean())} (expected 64)")

    return library_verdict(lambda: _decoded_pixel(path), check=check)


def png_16_bit_grey_alpha(probe: Probe) -> Outcome:
    """16-bit grey + alpha, half of it transparent: grey where opaque, the white background where not."""
    import struct
    import zlib

    pixels = np.zeros((4, 4, 2), np.uint16)
    pixels[..., 0] = 0x4000
    pixels[:, :2, 1] = 0xFFFF
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(4))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = probe.root / "la16.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 16, 4, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

    def check(image: np.ndarray) -> Outcome:
        left, right = image[:, 0].astype(int), image[:, -1].astype(int)
        if np.abs(left - 0x40).max() <= 2 and right.min() >= 250:
            return Outcome("correct", "opaque grey 64, transparent over white")
        return Outcome("silent wrong", f"opaque side {int(left.mean())}, transparent side {int(right.mean())}")

    return library_verdict(lambda: _decoded_pixel(path), check=check)


def palette_with_transparency(probe: Probe) -> Outcome:
    from PIL import Image

    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    for x in range(2, 4):
        for y in range(4):
            image.putpixel((x, y), 1)
    path = probe.root / "palette.png"
    image.save(path, transparency=0)  # index 0 (black in the palette) is transparent

    def check(decoded: np.ndarray) -> Outcome:
        if decoded[:, 0].min() >= 250 and np.abs(decoded[:, -1].astype(int) - [200, 100, 50]).max() <= 3:
            return Outcome("correct", "transparent index over white, opaque colour kept")
        return Outcome("silent wrong", f"transparent pixels became {decoded[0, 0].tolist()}")

    return library_verdict(lambda: _decoded_pixel(path), check=check)


def cmyk_jpeg(probe: Probe) -> Outcome:
    from PIL import Image

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[...] = (200, 50, 100)
    path = probe.root / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=100)

    def check(decoded: np.ndarray) -> Outcome:
        error = int(np.abs(decoded.astype(int) - [200, 50, 100]).max())
        return Outcome("correct" if error <= 4 else "silent wrong", f"max channel error {error}")

    return library_verdict(lambda: _decoded_pixel(path), check=check)


def exif_orientation(probe: Probe) -> Outcome:
    from PIL import Image

    stored = np.zeros((4, 8, 3), np.uint8)
    stored[:, :4] = 255  # stored sideways (orientation 6): the left half is the top once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    path = probe.root / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)

    def check(decoded: np.ndarray) -> Outcome:
        top, bottom = decoded[0].mean(), decoded[-1].mean()
        if top > 200 and bottom < 50:
            return Outcome("correct", "rotated upright")
        return Outcome("silent wrong", f"not rotated (top row {top:.0f}, bottom row {bottom:.0f})")

    return library_verdict(lambda: _decoded_pixel(path), check=check)


def pixel_bomb_in_folder(probe: Probe) -> Outcome:
    root = _png_tree(probe.root / "photos")
    bomb = _bomb_png(root / "class_0" / "huge.png")
    # batch 8: the folder is big enough to train on, so only the bomb can stop the run
    return _bad_input(probe, "--dataset", f"folder:{root}", "--set", "data.image_size=12", "--set",
                      "train.batch_size=8", mentions=(str(bomb), "Mpx"), no_run_dir=True)


def test_only_class(probe: Probe) -> Outcome:
    """train/ + test/ where class 'c' exists only in test/: its images are kept or listed, never silently lost."""
    from edge_encoder.imagedata import load_dataset

    root = probe.root / "tree"
    _png_tree(root / "train", classes=2, per_class=4)
    _png_tree(root / "test", classes=3, per_class=2)  # class_2 only in test/

    def check(splits: Any) -> Outcome:
        accounted = len(splits.x_test) + sum("class_2" in f for f in splits.skipped_files)
        if accounted == 6:
            return Outcome("correct", f"{len(splits.x_test)} test images kept, {len(splits.skipped_files)} listed")
        return Outcome("silent wrong", f"{6 - accounted} test images of the test-only class vanished")

    return library_verdict(lambda: load_dataset(f"folder:{root}", image_size=12), check=check)


# ------------------------------------------------------------------------------------------------ bundles (1, 2, 10)


def _open_engine() -> Callable[..., Any]:
    try:
        from edge_encoder.device.bundle_files import open_engine
    except ImportError:  # before the bundle-files module existed
        from edge_encoder.device.engines import open_engine
    return open_engine


# What the bundle probes embed: the finished run's engines take uint8 (N, 16, 16, 3) (tiny.toml: image_size 16).
_IMAGES = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)


def _embed(bundle: Path) -> np.ndarray:
    with _open_engine()(bundle, "fp32") as engine:
        return engine.embed(_IMAGES)


_AUDIT: dict[str, Any] = {"on": False, "opened": []}


def _audit(event: str, args: tuple) -> None:
    if _AUDIT["on"] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _AUDIT["opened"].append(os.fsdecode(args[0]))


def _opened_during(call: Callable[[], Any]) -> tuple[Callable[[], Any], list[str]]:
    """``call`` wrapped so that the files Python opens during it are recorded (an audit hook; C++ opens such as
    ONNX Runtime's are not seen, hence the sentinel files)."""
    if not _AUDIT.get("installed"):
        sys.addaudithook(_audit)
        _AUDIT["installed"] = True
    opened: list[str] = []

    def wrapped() -> Any:
        _AUDIT["opened"] = opened
        _AUDIT["on"] = True
        try:
            return call()
        finally:
            _AUDIT["on"] = False

    return wrapped, opened


def _flip_largest_initializer(path: Path) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    raw = max((t.raw_data for t in model.graph.initializer), key=len)
    data = bytearray(path.read_bytes())
    offset = data.find(raw)
    assert offset >= 0 and len(raw) > 16
    data[offset + len(raw) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


def flipped_weight_byte(probe: Probe) -> Outcome:
    bundle = probe.copy_finished_run() / "deploy"
    before = _embed(bundle)
    _flip_largest_initializer(bundle / "encoder_fp32.onnx")

    def check(after: np.ndarray) -> Outcome:
        cosine = float((before * after).sum(axis=1).min())
        return Outcome("silent wrong" if cosine < 1 - 1e-7 else "correct",
                       f"loaded the tampered file; min cosine to the original {cosine:.6f}")

    return library_verdict(lambda: _embed(bundle), mentions=("encoder_fp32.onnx",), check=check)


def verify_flipped_weight_byte(probe: Probe) -> Outcome:
    from edge_encoder import cli

    if "verify" not in getattr(cli, "COMMANDS", ()):
        return Outcome("other", "no `edge-encoder verify` subcommand")
    bundle = probe.copy_finished_run() / "deploy"
    _flip_largest_initializer(bundle / "encoder_fp32.onnx")
    result = probe.cli("verify", str(bundle), run_args=False)
    return cli_verdict(result, mentions=("encoder_fp32.onnx",))


def _rewrite_manifest(bundle: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _outside_file(probe: Probe, relative_to_bundle: Callable[[Path, Path], str]) -> Outcome:
    """A manifest whose fp32 file is a valid ONNX (same bytes, same hash) outside the bundle: only containment
    stops it. The outside copy is a sentinel, so a read of it shows."""
    bundle = probe.copy_finished_run() / "deploy"
    outside = sentinel(probe.root / "elsewhere" / "encoder_fp32.onnx", (bundle / "encoder_fp32.onnx").read_bytes())
    name = relative_to_bundle(bundle, outside)
    _rewrite_manifest(bundle, lambda m: m["variants"]["fp32"].update(file=name))
    call, opened = _opened_during(lambda: _embed(bundle))
    outcome = library_verdict(call, mentions=(name,), check=lambda _: Outcome("outside", f"loaded {name}"))
    if was_read(outside) or any(Path(p).resolve() == outside.resolve() for p in opened):
        return Outcome("outside", f"read {outside} ({outcome.verdict}: {outcome.detail[:120]})")
    return outcome


def manifest_path_escapes(probe: Probe) -> Outcome:
    return _outside_file(probe, lambda bundle, outside: os.path.relpath(outside, bundle))


def manifest_path_absolute(probe: Probe) -> Outcome:
    return _outside_file(probe, lambda bundle, outside: str(outside))


def manifest_path_etc_passwd(probe: Probe) -> Outcome:
    bundle = probe.copy_finished_run() / "deploy"
    _rewrite_manifest(bundle, lambda m: m["variants"]["fp32"].update(file="/etc/passwd"))
    call, opened = _opened_during(lambda: _embed(bundle))
    outcome = library_verdict(call, mentions=("/etc/passwd",), check=lambda _: Outcome("outside", "loaded"))
    # ONNX Runtime opens the file in C++ (invisible to the audit hook): its parse error shows it was read.
    parsed = "protobuf" in outcome.detail.lower() or "invalid_protobuf" in outcome.detail.lower()
    if "/etc/passwd" in opened or parsed:
        return Outcome("outside", f"opened /etc/passwd ({outcome.detail[:120]})")
    return outcome


def manifest_broken_json(probe: Probe) -> Outcome:
    bundle = probe.copy_finished_run() / "deploy"
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text[: len(text) // 2])
    return library_verdict(lambda: _embed(bundle), mentions=("manifest.json",))


def manifest_wrong_types(probe: Probe) -> Outcome:
    bundle = probe.copy_finished_run() / "deploy"
    _rewrite_manifest(bundle, lambda m: m["variants"]["fp32"].update(file=12345))
    return library_verdict(lambda: _embed(bundle), mentions=("file",))


def verify_broken_manifest(probe: Probe) -> Outcome:
    from edge_encoder import cli

    if "verify" not in getattr(cli, "COMMANDS", ()):
        return Outcome("other", "no `edge-encoder verify` subcommand")
    bundle = probe.copy_finished_run() / "deploy"
    (bundle / "manifest.json").write_text('{"format": ')
    return cli_verdict(probe.cli("verify", str(bundle), run_args=False), mentions=("manifest.json",))


# ------------------------------------------------------------------------------------------- every bundle file (16)


def _verify_fp32(probe: Probe, bundle: Path, *args: str) -> Result:
    """`edge-encoder verify` running fp32 only (every file is checked whatever runs), no timing."""
    return probe.cli("verify", str(bundle), "--variant", "fp32", "--seconds", "0", "--warmup", "0", *args,
                     run_args=False)


def verify_changed_triton_copy(probe: Probe) -> Outcome:
    """What Triton serves: a damaged ``triton/encoder_onnx_fp32/1/model.onnx`` (a copy once ``scp -r`` made the hard
    link a file), the variant itself intact."""
    bundle = probe.copy_finished_run() / "deploy"
    copy = bundle / "triton" / "encoder_onnx_fp32" / "1" / "model.onnx"
    if copy.samefile(bundle / "encoder_fp32.onnx"):  # still a hard link: make it the copy a transfer would
        data = copy.read_bytes()
        copy.unlink()
        copy.write_bytes(data)
    _flip_largest_initializer(copy)
    return cli_verdict(_verify_fp32(probe, bundle), mentions=("triton/encoder_onnx_fp32/1/model.onnx",))


def verify_unexpected_file(probe: Probe) -> Outcome:
    bundle = probe.copy_finished_run() / "deploy"
    (bundle / "triton" / "encoder_onnx_fp32" / "2").mkdir()
    (bundle / "triton" / "encoder_onnx_fp32" / "2" / "model.onnx").write_bytes(b"a second version Triton would load")
    return cli_verdict(_verify_fp32(probe, bundle), mentions=("unexpected file triton/encoder_onnx_fp32/2/model.onnx",))


def verify_rewritten_manifest_pinned(probe: Probe) -> Outcome:
    """trtexec.txt edited and its hash rewritten in the manifest: self-consistent, so only the pin can catch it."""
    import hashlib

    bundle = probe.copy_finished_run() / "deploy"
    pinned = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    (bundle / "trtexec.txt").write_text("trtexec --onnx=encoder_fp32.onnx --best --saveEngine=tensorrt/encoder.plan\n")
    digest = hashlib.sha256((bundle / "trtexec.txt").read_bytes()).hexdigest()
    _rewrite_manifest(bundle, lambda m: m.get("files", {}).update({"trtexec.txt": digest}))
    return cli_verdict(_verify_fp32(probe, bundle, "--manifest-sha256", pinned), mentions=("manifest.json",))


# ------------------------------------------------------------------------------------------------ reruns (8, 10, 11)


def refused_rerun_keeps_config(probe: Probe) -> Outcome:
    probe.copy_finished_run()
    return _bad_input(probe, "--set", "train.epochs=3", mentions=("epochs",),
                      keep=("config.json", "train/checkpoints", "report.json", "deploy"))


def checkpoint_without_state(probe: Probe) -> Outcome:
    import torch

    run_dir = probe.copy_finished_run()
    checkpoints = sorted((run_dir / "train" / "checkpoints").glob("step_*.pt"))
    for older in checkpoints[:-1]:
        older.unlink()
    payload = torch.load(checkpoints[-1], weights_only=True)
    del payload["state"]
    torch.save(payload, checkpoints[-1])
    return _bad_input(probe, mentions=(checkpoints[-1].name, "state"), keep=("train/checkpoints", "config.json"))


def compare_dataset_list(probe: Probe) -> Outcome:
    run_dir = probe.copy_finished_run()
    other = probe.runs / "other"
    shutil.copytree(run_dir, other)
    report = json.loads((other / "report.json").read_text())
    report["dataset"] = ["digits", "cifar10"]
    (other / "report.json").write_text(json.dumps(report))
    result = probe.cli("compare", str(run_dir), str(other), run_args=False)
    return cli_verdict(result, mentions=("dataset",))


def _model_state(checkpoint: Path) -> dict[str, Any]:
    import torch

    return torch.load(checkpoint, weights_only=True, map_location="cpu")["state"]["model"]


def _same_model(a: Path, b: Path) -> bool:
    import torch

    sa, sb = _model_state(a), _model_state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _final_checkpoint(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / "report.json").read_text())["train"]["checkpoint"])


def truncated_newest_checkpoint(probe: Probe) -> Outcome:
    """The newest checkpoint torn in half: the rerun resumes from the older one (naming the skipped file) and ends
    where the uninterrupted run ended, bit for bit."""
    run_dir = probe.copy_finished_run()
    reference = probe.root / "reference.pt"
    checkpoints = sorted((run_dir / "train" / "checkpoints").glob("step_*.pt"))
    shutil.copy2(checkpoints[-1], reference)
    newest = checkpoints[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    (run_dir / "report.json").unlink()
    result = probe.cli("run")
    if result.rc != 0:
        return cli_verdict(result)
    if newest.name not in result.err:
        return Outcome("silent wrong", "finished without naming the skipped checkpoint")
    if not _same_model(newest, reference):
        return Outcome("silent wrong", "the resumed run ended elsewhere than the uninterrupted one")
    return Outcome("correct", f"skipped {newest.name} with a warning, resumed from {checkpoints[-2].name}, same end")


# ------------------------------------------------------------------------------------------------ non-finite (4, 10)


def _finite_checkpoints(run_dir: Path) -> tuple[list[Path], list[str]]:
    """The kept checkpoints and, per bad one, its first NaN/inf tensor (an oracle independent of train/)."""
    import torch

    def walk(tree: Any, name: str) -> str | None:
        if isinstance(tree, torch.Tensor):
            return name if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else None
        items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
        for key, value in items:
            bad = walk(value, f"{name}.{key}")
            if bad:
                return bad
        return None

    kept = sorted((run_dir / "train" / "checkpoints").glob("step_*.pt"))
    bad = []
    for path in kept:
        found = walk(torch.load(path, weights_only=True, map_location="cpu"), path.name)
        if found:
            bad.append(found)
    return kept, bad


def diverging_run(probe: Probe) -> Outcome:
    """base_lr=1e5, a checkpoint every step, keep_last=2: a one-line stop naming the step, and every kept checkpoint
    finite (the one named as the last good one included)."""
    with watched(probe) as box:
        result = probe.cli("run", "--set", "train.base_lr=1e5", "--set", "train.checkpoint_every_steps=1",
                           "--set", "train.keep_last=2", "--set", "train.epochs=10")
    kept, bad = _finite_checkpoints(probe.run_dir)
    if bad:
        return Outcome("silent wrong", f"kept checkpoints hold NaN/inf: {bad[:2]}")
    if result.rc == 0:
        return worst(Outcome("correct", f"did not diverge; {len(kept)} kept checkpoints all finite"), box)
    outcome = cli_verdict(result, mentions=("step",))
    if outcome.verdict == "clear error" and kept and kept[-1].name not in result.last_line:
        return Outcome("other", f"the message does not name the last good checkpoint {kept[-1].name}")
    return worst(outcome, box)


def nan_loss(probe: Probe) -> Outcome:
    with watched(probe) as box:
        result = probe.cli("run", "--set", "train.base_lr=1e10")
    _, bad = _finite_checkpoints(probe.run_dir)
    if bad:
        return Outcome("silent wrong", f"kept checkpoints hold NaN/inf: {bad[:2]}")
    return worst(cli_verdict(result, mentions=("step",)), box)


# ------------------------------------------------------------------------------------------------ disk full (10)


def _no_temp_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or ".building-" in p.name]


def disk_full_in_training(probe: Probe) -> Outcome:
    probe.run_dir.mkdir(parents=True)
    probe.tmpfs(probe.run_dir / "train", size="512k")  # a checkpoint of the tiny model is ~1 MB
    with watched(probe) as box:
        result = probe.cli("run")
    outcome = cli_verdict(result, mentions=("No space left on device", str(probe.run_dir / "train")))
    leftovers = _no_temp_files(probe.run_dir)
    log = probe.run_dir / "train" / "train_log.jsonl"
    torn = [line for line in log.read_text().splitlines() if not _is_json(line)] if log.is_file() else []
    if outcome.verdict == "clear error" and (leftovers or torn):
        return Outcome("silent wrong", f"half-written files left: {leftovers[:3]} {torn[:1]}")
    return worst(outcome, box)


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def disk_full_in_embedding_cache(probe: Probe) -> Outcome:
    run_dir = probe.copy_finished_run()
    shutil.rmtree(run_dir / "cache")
    probe.tmpfs(run_dir / "cache", size="8k")  # the first embeddings (256 x 32 float32) do not fit
    with watched(probe, keep=("report.json", "train/checkpoints")) as box:
        result = probe.cli("run")
    outcome = cli_verdict(result, mentions=("No space left on device", str(run_dir / "cache")))
    cache = run_dir / "cache" / "embeddings"
    files = {p.name for p in cache.iterdir()} if cache.is_dir() else set()
    unpaired = sorted(n for n in files if n.endswith(".npy") and n[:-4] + ".json" not in files)
    leftovers = _no_temp_files(run_dir / "cache")
    if outcome.verdict == "clear error" and (unpaired or leftovers):
        return Outcome("silent wrong", f"cache left inconsistent: {unpaired[:2]} {leftovers[:2]}")
    return worst(outcome, box)


# ------------------------------------------------------------------------------------------------ signals (faults)


def sigkill_in_training(probe: Probe) -> Outcome:
    """SIGKILL after the first checkpoint: the rerun resumes and ends bit for bit where an uninterrupted run ends."""
    reference = _final_checkpoint(probe._finished_run())
    first = probe.run_dir / "train" / "checkpoints" / "step_000000004.pt"
    proc = probe.start("run")
    if not wait_for(first.is_file, proc):
        proc.kill()
        proc.wait()
        return Outcome("other", "no checkpoint appeared before the run ended")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with watched(probe, keep=("train/checkpoints/step_000000004.pt",)) as box:
        result = probe.cli("run")
    if result.rc != 0:
        return worst(cli_verdict(result), box)
    if not _same_model(_final_checkpoint(probe.run_dir), reference):
        return Outcome("silent wrong", "the resumed run's weights differ from an uninterrupted run's")
    return worst(Outcome("correct", "resumed from step 4; final weights bit-identical to an uninterrupted run"), box)


def _bundle_intact(bundle: Path) -> str | None:
    """``None`` when every file the manifest names has its recorded SHA-256, else the first problem."""
    import hashlib

    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, entry in manifest["variants"].items():
        path = bundle / entry["file"]
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            return f"{name}: {entry['file']} missing or not its recorded hash"
    return None


def sigkill_in_export(probe: Probe) -> Outcome:
    run_dir = probe.copy_finished_run()
    (run_dir / "report.json").unlink()
    with watched(probe, keep=("deploy",)) as box:
        proc = probe.start("run")
        building = lambda: any(".building-" in p.name for p in run_dir.iterdir())
        if not wait_for(building, proc):
            proc.kill()
            proc.wait()
            return Outcome("other", "the export never started a bundle beside the old one")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if box["lost"]:
        return worst(Outcome("data lost", "the old bundle changed under a killed export"), box)
    result = probe.cli("run")
    if result.rc != 0:
        return cli_verdict(result)
    problem = _bundle_intact(run_dir / "deploy")
    leftovers = _no_temp_files(run_dir)
    if problem or leftovers:
        return Outcome("silent wrong", f"after the rerun: {problem or leftovers[:2]}")
    return Outcome("correct", "old bundle untouched by the kill; the rerun replaced it whole, every hash matching")


def sigint_in_evaluation(probe: Probe) -> Outcome:
    run_dir = probe.copy_finished_run()
    shutil.rmtree(run_dir / "cache")
    (run_dir / "report.json").unlink()
    proc = probe.start("run")
    embedded = lambda: any((run_dir / "cache" / "embeddings").glob("*.npy"))
    if not wait_for(embedded, proc):
        proc.kill()
        proc.wait()
        return Outcome("other", "evaluation never wrote an embedding")
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # a hang after SIGINT
        proc.kill()
        proc.communicate()
        return Outcome("other", "did not stop within 120 s of SIGINT")
    outcome = cli_verdict(Result(proc.returncode, out, err), mentions=("interrupted",), codes=(130,))
    files = {p.name for p in (run_dir / "cache" / "embeddings").iterdir()}
    unpaired = sorted(n for n in files if n.endswith(".npy") and n[:-4] + ".json" not in files)
    if outcome.verdict == "clear error" and (unpaired or _no_temp_files(run_dir / "cache")):
        return Outcome("silent wrong", f"cache left inconsistent: {unpaired[:2]}")
    return outcome


# ------------------------------------------------------------------------------------------------ concurrency (3)


def _holds_lock(run_dir: Path, pid: int) -> Callable[[], bool]:
    def check() -> bool:
        lock = run_dir / ".lock"
        try:
            if lock.read_text().split()[:1] == [str(pid)]:
                return True
        except OSError:
            pass
        return (run_dir / "train" / "train_log.jsonl").is_file()  # code without a lock: training has begun

    return check


def concurrent_runs(probe: Probe) -> Outcome:
    """Seeds 0 and 1 under one --name at once: the second is refused in one line naming the folder and the holder's
    pid; the first finishes, and its report, config, checkpoint all describe seed 0."""
    first = probe.start("run")
    if not wait_for(_holds_lock(probe.run_dir, first.pid), first):
        first.kill()
        return Outcome("other", "the first run never started training")
    second = probe.cli("run", "--set", "train.seed=1")
    _, err = first.communicate(timeout=1500)
    if first.returncode != 0:
        return Outcome("other", f"the first run failed (exit {first.returncode}): {err.strip()[-200:]}")
    seeds = {
        "report": json.loads((probe.run_dir / "report.json").read_text())["config"]["train"]["seed"],
        "config": json.loads((probe.run_dir / "config.json").read_text())["train"]["seed"],
        "checkpoint": _checkpoint_seed(_final_checkpoint(probe.run_dir)),
    }
    if set(seeds.values()) != {0}:
        return Outcome("silent wrong", f"the first run's files are mixed: {seeds}")
    return cli_verdict(second, mentions=(str(probe.run_dir), str(first.pid)))


def _checkpoint_seed(path: Path) -> int:
    import torch

    return int(torch.load(path, weights_only=True, map_location="cpu")["config"]["seed"])


def run_after_killed_holder(probe: Probe) -> Outcome:
    holder = probe.start("run")
    if not wait_for(_holds_lock(probe.run_dir, holder.pid), holder):
        holder.kill()
        return Outcome("other", "the first run never started")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = probe.cli("run")
    if result.rc == 0:
        return Outcome("correct", "a new run went ahead after the holder was killed")
    return cli_verdict(result)


# ------------------------------------------------------------------------------------------------ issue 18


def _files_and_mtimes(root: Path) -> dict[str, tuple[str, int]]:
    """``{relative path: (sha256, mtime_ns)}`` of every file and folder under ``root`` (``root`` itself as ".")."""
    import hashlib

    state = {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                        p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}
    state["."] = ("dir", root.stat().st_mtime_ns)
    return state


def export_onto_user_folder(probe: Probe) -> Outcome:
    """`edge-encoder export RUN --out DIR` where DIR is a user's folder of documents and photos: refused in one line
    naming it (exit 2), every file byte-identical and its mtime unchanged."""
    run_dir = probe.copy_finished_run()
    mine = probe.root / "Documents"
    (mine / "photos").mkdir(parents=True)
    (mine / "thesis.docx").write_bytes(b"PK\x03\x04 chapter one")
    (mine / "photos" / "beach.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 16)
    before = _files_and_mtimes(mine)
    result = probe.cli("export", str(run_dir), "--out", str(mine), "--no-progress", run_args=False)
    after = _files_and_mtimes(mine) if mine.is_dir() else {}
    lost = sorted(k for k in before if after.get(k) != before[k])
    if lost:
        return Outcome("data lost", f"exit {result.rc}; the user's {lost[:4]} gone or changed")
    return cli_verdict(result, mentions=(str(mine), "not a deploy bundle"), codes=(2,))


def bundle_readable_by_others(probe: Probe) -> Outcome:
    """An export under umask 022: the bundle folder (built in a mkdtemp folder, 0700) must be 755 and every file in
    it 644, as for anything else a user's tools write, so Triton's service account or another user can read it."""
    import stat

    run_dir = probe.copy_finished_run()
    out = probe.root / "bundle"
    done = subprocess.run(probe.command("export", str(run_dir), "--out", str(out), "--no-progress", run_args=False),
                          cwd=probe.root, capture_output=True, text=True, timeout=900, env=env_for_children(),
                          check=False, preexec_fn=lambda: os.umask(0o022))  # noqa: PLW1509
    if done.returncode != 0:
        return cli_verdict(Result(done.returncode, done.stdout, done.stderr))
    wrong = [f"{p.relative_to(probe.root)} {oct(stat.S_IMODE(p.lstat().st_mode))}" for p in [out, *out.rglob("*")]
             if stat.S_IMODE(p.lstat().st_mode) != (0o755 if p.is_dir() else 0o644)]
    if wrong:
        return Outcome("silent wrong", f"exit 0 but not readable by others: {wrong[:4]}")
    return Outcome("correct", f"bundle folder 755, its {sum(1 for _ in out.rglob('*'))} entries 755/644")


def config_not_finite(probe: Probe) -> Outcome:
    """`inf` (and 1e-30 for the temperature) must be refused up front by key, like `nan`: exit 2, no run folder,
    instead of failing at the first step with exit 3."""
    tried = []
    overrides = ("train.temperature=inf", "train.temperature=1e-30", "train.base_lr=inf",
                 "evaluate.knn_temperature=-inf")
    for override in overrides:
        key = override.split("=")[0]
        outcome = _bad_input(probe, "--set", override, mentions=(key,), no_run_dir=True)
        if outcome.verdict != "clear error":
            return Outcome(outcome.verdict, f"{override}: {outcome.detail}")
        tried.append(override)
    return Outcome("clear error", f"{', '.join(tried)} each refused by key; last: {outcome.detail}")


_PROBE_SLOW_WRITER = """
import sys, time
from edge_encoder.core.files import atomic_write

def write(f):
    for _ in range(10_000):
        f.write(b"x" * (1 << 20))
        f.flush()
        print("writing", flush=True)
        time.sleep(0.01)

atomic_write(sys.argv[1], write)
"""


def sigkill_mid_atomic_write(probe: Probe) -> Outcome:
    """SIGKILL of a process in the middle of an atomic write of a big file, then another write of the same file:
    the README promises no temp file is left behind, and the old file stays whole until the new one replaces it."""
    target = probe.root / "report.json"
    target.write_text('{"old": true}\n')
    proc = subprocess.Popen([sys.executable, "-c", _PROBE_SLOW_WRITER, str(target)], cwd=probe.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for_children())
    assert proc.stdout is not None
    started = all(proc.stdout.readline().strip() == "writing" for _ in range(3))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    if not started:
        return Outcome("other", "the writer never started writing")
    if target.read_text() != '{"old": true}\n':
        return Outcome("data lost", "the old file changed under a killed write")
    rerun = probe.python(f"from edge_encoder.core.files import atomic_write_text; "
                         f"atomic_write_text({str(target)!r}, '{{\"new\": true}}\\n')")
    if rerun.rc != 0:
        return Outcome("traceback" if "Traceback" in rerun.err else "other", rerun.err.strip()[-200:])
    leftovers = sorted(p.name for p in probe.root.iterdir() if p.name.endswith(".tmp"))
    if leftovers:
        return Outcome("silent wrong", f"the killed writer's temp file stays after the next write: {leftovers[:2]}")
    if target.read_text() != '{"new": true}\n':
        return Outcome("silent wrong", f"the rerun wrote {target.read_text()[:60]!r}")
    return Outcome("correct", "the killed writer's temp file was removed by the next write; the file is the new one")


def train_batch_larger_than_data(probe: Probe) -> Outcome:
    """`edge-encoder train` with a batch larger than the data must be refused where `run` refuses it: exit 2
    naming the key, and no run folder (no lock, no config.json) left behind."""
    result = probe.cli("train", "--set", "train.batch_size=100000")
    outcome = cli_verdict(result, mentions=("train.batch_size",), codes=(2,))
    if outcome.verdict == "clear error" and probe.run_dir.exists():
        return Outcome("silent wrong", f"refused, but left a run folder: {sorted(os.listdir(probe.run_dir))}")
    return outcome


# ------------------------------------------------------------------------------------------------ issue 18: names, classes


def _evaluate_tree(probe: Probe, tree: Path, *extra: str) -> tuple[Result, Path]:
    """`edge-encoder evaluate` of the finished run's bundle on ``folder:tree`` (tiny config: k=5, no linear probe,
    no index sweep, no baseline); returns the result and the report folder."""
    from tests.probes.harness import TINY

    run_dir = probe.copy_finished_run()
    out = probe.runs / "evaluated"
    result = probe.cli("evaluate", str(run_dir / "deploy"), "--dataset", f"folder:{tree}", "--config", str(TINY),
                       "--set", "evaluate.linear_probe=false", "--set", "evaluate.index_benchmark=false",
                       "--runs-dir", str(probe.runs), "--name", "evaluated", "--no-baselines", "--no-progress",
                       *extra, run_args=False)
    return result, out


def report_class_names_with_pipe_and_newline(probe: Probe) -> Outcome:
    """Class folders named `a|b` and `c<newline>d` (and an engine report on them): every table of report.md keeps
    its header's column count, and the per-class table names each class once."""
    from tests.core.markdown_reader import split_md_row

    names = ["a|b", "c\nd", "plain"]
    tree = probe.root / "tree"
    _png_tree(tree, classes=3, per_class=10, size=16)
    for i, name in enumerate(names):
        (tree / f"class_{i}").rename(tree / name)
    result, out = _evaluate_tree(probe, tree)
    if result.rc != 0:
        return cli_verdict(result)
    lines = (out / "report.md").read_text().split("\n")
    broken, header, per_class = [], None, []
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            header = None
            continue
        if header is None:
            header = split_md_row(line) if line.rstrip().endswith("|") else [line]
            in_per_class = header[:1] == ["class"]
            continue
        if set(line) <= {"|", "-"}:
            continue
        try:
            cells = split_md_row(line)
        except ValueError:  # a row cut by a line break inside a cell
            cells = []
        if len(cells) != len(header):
            broken.append(f"line {i + 1}: {len(cells)} cells under {len(header)}: {line[:60]!r}")
        elif in_per_class:
            per_class.append(cells[0])
    if broken:
        return Outcome("silent wrong", f"report.md tables broken: {broken[:2]}")
    shown = [f"{i} {name}".replace("\n", "\\n") for i, name in enumerate(names)]
    if per_class != shown:
        return Outcome("silent wrong", f"per-class rows {per_class} (expected {shown})")
    return Outcome("correct", f"every table row keeps its columns; per-class rows {per_class}")


def class_of_only_corrupt_images(probe: Probe) -> Outcome:
    """Six class folders of images and a seventh of only unreadable files, with --skip-corrupt: the seventh is not
    a class (or is refused in one line): num_classes, class_names, the confusion matrix and the per-class table agree."""
    tree = probe.root / "tree"
    _png_tree(tree, classes=6, per_class=10, size=16)
    (tree / "class_3b").mkdir()
    for i in range(4):
        (tree / "class_3b" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    result, out = _evaluate_tree(probe, tree, "--skip-corrupt")
    if result.rc != 0:
        return cli_verdict(result, mentions=("class_3b",))
    report = json.loads((out / "report.json").read_text())
    dataset = report["dataset"]
    counts = {"num_classes": dataset["num_classes"], "class_names": len(dataset["class_names"])}
    for name, metrics in report["metrics"].items():
        if metrics.get("confusion_matrix") is not None:
            counts[f"{name} confusion"] = len(metrics["confusion_matrix"])
        counts[f"{name} per-class"] = len(metrics.get("per_class", {}).get("knn_top1", {}))
    if set(counts.values()) != {6} or "class_3b" in dataset["class_names"]:
        return Outcome("silent wrong", f"class counts disagree: {counts}; class_names {dataset['class_names']}")
    return Outcome("correct", f"6 classes everywhere ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
                              f"left out: {dataset.get('classes_without_readable_images')}")


def train_data_links_to_queries(probe: Probe) -> Outcome:
    """--train-data folders of symlinks, of hard links, and a folder reached through a symlink, each to the
    evaluation queries of --eval-data: the queries are never trained on and `excluded_eval_images` counts them."""
    from edge_encoder.imagedata import open_run_data
    from edge_encoder.imagedata.config import DataSettings
    from edge_encoder.imagedata.folder import list_folder

    tree = _png_tree(probe.root / "eval", classes=2, per_class=10)
    queries = [p for p, _ in list_folder(tree, 0.2, 0)[2]]
    links = {"symlinks": probe.root / "symlinks", "hard links": probe.root / "hardlinks"}
    for kind, folder in links.items():
        _png_tree(folder / "own", classes=1, per_class=4)  # images of the user's own besides the links
        for query in queries:
            target = folder / query.parent.name / query.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(query) if kind == "symlinks" else os.link(query, target)
    (probe.root / "alias").symlink_to(tree, target_is_directory=True)
    specs = {**{k: f"images:{v}" for k, v in links.items()}, "symlinked folder": f"images:{probe.root / 'alias'}"}
    seen = []
    for kind, spec in specs.items():  # a library call, as the run makes it: its train_data is the report's
        settings = DataSettings(train_data=spec, eval_data=f"folder:{tree}", image_size=12, test_fraction=0.2)
        data = open_run_data(settings)
        info = data.train_summary()
        rows = {row.tobytes() for row in data.evaluation.x_test}
        trained = sum(row.tobytes() in rows for row in data.train_images)
        if trained or info["excluded_eval_images"] != len(queries):
            return Outcome("silent wrong", f"{kind}: {trained} queries trained on, excluded_eval_images "
                                           f"{info['excluded_eval_images']} of {len(queries)}")
        seen.append(f"{kind}: {info['excluded_eval_images']} excluded, {len(data.train_images)} trained")
    return Outcome("correct", "; ".join(seen))


# ------------------------------------------------------------------------------------------------ foreign encoders, modes (18)


def _foreign_exports(probe: Probe) -> dict[str, Path]:
    """One seeded small CNN (16 px float NCHW, 16-d output) as ``torch.onnx.export`` writes it without
    ``dynamic_axes`` (``static``: batch 1) and with a dynamic batch (``dynamic``)."""
    import warnings

    import torch

    paths = {}
    for kind in ("static", "dynamic"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                                    torch.nn.Flatten()).eval()
        paths[kind] = probe.root / f"encoder_{kind}.onnx"
        axes = {"dynamic_axes": {"input": {0: "batch"}}} if kind == "dynamic" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(paths[kind]), dynamo=False,
                              input_names=["input"], output_names=["output"], **axes)
    return paths


_NORM = ("--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")


def static_batch_onnx_embed(probe: Probe) -> Outcome:
    """`edge-encoder embed` of a folder through a batch-1 export: the embeddings of the dynamic-batch export."""
    models = _foreign_exports(probe)
    root = _png_tree(probe.root / "photos", per_class=5, size=20)
    results, arrays = {}, {}
    for kind, model in models.items():
        out = probe.root / f"{kind}.npz"
        results[kind] = probe.cli("embed", str(model), "--images", str(root), *_NORM, "--batch-size", "4", "--out",
                                  str(out), "--no-progress", run_args=False)
        if results[kind].rc != 0:
            return cli_verdict(results[kind], mentions=(str(model),))
        arrays[kind] = np.load(out)["embeddings"]
    if arrays["static"].shape != arrays["dynamic"].shape:
        return Outcome("silent wrong", f"shapes {arrays['static'].shape} vs {arrays['dynamic'].shape}")
    error = float(np.abs(arrays["static"] - arrays["dynamic"]).max())
    said = "images run 1 at a time" in results["static"].err
    if error > 1e-5 or not said:
        return Outcome("silent wrong", f"max difference {error:.2e}; batch said in the log: {said}")
    return Outcome("correct", f"{len(arrays['static'])} embeddings equal to the dynamic export's (max diff "
                              f"{error:.1e}); the log says the graph's batch")


def static_batch_onnx_evaluate(probe: Probe) -> Outcome:
    """`edge-encoder evaluate` of a batch-1 export: the report figures of the dynamic-batch export."""
    models = _foreign_exports(probe)
    data = _npz(probe)
    metrics = {}
    for kind, model in models.items():
        result = probe.cli("evaluate", str(model), "--dataset", f"npz:{data}", *_NORM, "--runs-dir", str(probe.runs),
                           "--name", kind, "--set", "evaluate.linear_probe=false", "--set",
                           "evaluate.index_benchmark=false", "--no-progress", run_args=False)
        if result.rc != 0:
            return cli_verdict(result, mentions=(str(model),))
        metrics[kind] = json.loads((probe.runs / kind / "report.json").read_text())["metrics"][model.stem]
    keys = ("dim", "knn_top1", "knn_top5", "recall_at_1", "map_at_r")
    differ = [k for k in keys if metrics["static"][k] != metrics["dynamic"][k]]
    if differ:
        return Outcome("silent wrong", "figures differ: " + ", ".join(
            f"{k} {metrics['static'][k]} vs {metrics['dynamic'][k]}" for k in differ))
    return Outcome("correct", "report figures equal the dynamic export's: " + ", ".join(
        f"{k} {metrics['static'][k]:.4g}" for k in keys))


def zero_width_onnx_output(probe: Probe) -> Outcome:
    """A foreign ONNX whose output is (N, 0): refused when opened, naming the file and the shape, no run folder."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(v, np.int64), n)
             for n, v in (("axes", [2, 3]), ("s", [0]), ("e", [0]), ("a", [1]))]
    nodes = [helper.make_node("ReduceMean", ["input", "axes"], ["pooled"], keepdims=0),
             helper.make_node("Slice", ["pooled", "s", "e", "a"], ["output"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                         ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = probe.root / "zero_width.onnx"
    onnx.save(model, str(path))
    data = _npz(probe)
    with watched(probe) as box:
        result = probe.cli("evaluate", str(path), "--dataset", f"npz:{data}", *_NORM, "--runs-dir", str(probe.runs),
                           "--name", RUN_NAME, "--no-progress", run_args=False)
    outcome = cli_verdict(result, mentions=(str(path), "0]"))
    if outcome.verdict == "clear error" and probe.runs.exists():
        outcome = Outcome("silent wrong", f"left {sorted(os.listdir(probe.runs))} in the runs folder")
    return worst(outcome, box)


def lab_tiff_in_folder(probe: Probe) -> Outcome:
    """A folder dataset whose class_0 images are CIE L*a*b* TIFFs of mid grey: decoded grey, not blue."""
    from PIL import Image

    from edge_encoder.imagedata import load_dataset

    root = _png_tree(probe.root / "photos", classes=2, per_class=6)
    for i in range(6):  # class_0: mid grey as CIELab TIFF (L* 53.6, a* = b* = 0)
        (root / "class_0" / f"{i}.png").unlink()
        Image.new("RGB", (12, 12), (128, 128, 128)).convert("LAB").save(root / "class_0" / f"grey_{i}.tif")

    def check(splits: Any) -> Outcome:
        grey = [image for images, labels in ((splits.x_train, splits.y_train), (splits.x_test, splits.y_test))
                for image in images[labels == 0]]
        if len(grey) != 6:
            return Outcome("silent wrong", f"{len(grey)} of the 6 LAB images in the dataset")
        pixels = np.stack(grey).reshape(-1, 3).astype(int)
        error = int(np.abs(pixels - 128).max())
        if error > 2:
            return Outcome("silent wrong", f"mid grey decoded as {pixels.mean(axis=0).round().tolist()}")
        return Outcome("correct", f"6 LAB TIFFs decoded to grey 128 (max channel error {error})")

    return library_verdict(lambda: load_dataset(f"folder:{root}", image_size=12), check=check)


# ------------------------------------------------------------------------------------------------ issue 18: more faults


# A child that runs the command line with one fault injected into the project's atomic writes: the first write to a
# path containing MATCH and ending in SUFFIX is SIGKILLed "before" it writes a byte, or "mid" way (half of its first
# large chunk on disk, in the temp file). Deterministic, where a kill timed from outside would race a fast write.
_KILL_IN_WRITE = r"""
import os, signal, sys
import edge_encoder.core.files as files
import edge_encoder.evaluate.extract as extract

match, suffix, when = sys.argv[1:4]
real = files.atomic_write

class _Cut:
    def __init__(self, f):
        self._f = f
    def __getattr__(self, name):
        return getattr(self._f, name)
    def write(self, data):
        data = bytes(data)
        if len(data) > 1024:
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return self._f.write(data)

def killing(path, write):
    text = str(path)
    if match in text and text.endswith(suffix):
        if when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        def cut(f):
            write(_Cut(f))
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # no large chunk: killed once all is in the temp file
        return real(path, cut)
    return real(path, write)

files.atomic_write = extract.atomic_write = killing
from edge_encoder.cli import main
sys.argv = ["edge-encoder", *sys.argv[4:]]
sys.exit(main())
"""


def _killed_in_write(probe: Probe, match: str, suffix: str, when: str, argv: list[str]) -> Result:
    """``argv`` (a ``probe.command`` list) run with the first matching atomic write SIGKILLed (``_KILL_IN_WRITE``)."""
    cmd = [sys.executable, "-c", _KILL_IN_WRITE, match, suffix, when, *argv[3:]]  # argv: python -m edge_encoder.cli
    try:
        done = subprocess.run(cmd, cwd=probe.root, capture_output=True, text=True, timeout=900,
                              env=env_for_children(), check=False)
    except subprocess.TimeoutExpired as exc:
        return Result(None, str(exc.stdout or ""), str(exc.stderr or ""))
    return Result(done.returncode, done.stdout, done.stderr)


def _temp_litter(folder: Path) -> list[str]:
    """Temp files and half-built folders under ``folder``: atomic writes' ``.NAME.*.tmp``, exports' ``.building-``
    and ``.old-`` folders."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith(".tmp") or ".building-" in p.name or ".old-" in p.name)


def sigkill_in_embed(probe: Probe) -> Outcome:
    """SIGKILL of `edge-encoder embed` before and mid-way through writing --out over an older file: the older file
    stays whole each time, and a rerun writes the uninterrupted run's embeddings, no temp file left beside them."""
    bundle = probe.copy_finished_run() / "deploy"
    tree = _png_tree(probe.root / "photos", classes=2, per_class=12, size=20)
    out_dir = probe.root / "out"
    out_dir.mkdir()
    ref, out = out_dir / "reference.npz", out_dir / "embeddings.npz"
    argv = probe.command("embed", str(bundle), "--images", str(tree), "--batch-size", "4", "--no-progress",
                         "--out", str(out), run_args=False)
    done = probe.cli("embed", str(bundle), "--images", str(tree), "--no-progress", "--out", str(ref), run_args=False)
    if done.rc != 0:
        return cli_verdict(done)
    np.savez(out, embeddings=np.zeros((2, 2), np.float32))  # an older embeddings file the kill must not damage
    old = out.read_bytes()
    for when in ("before", "mid"):
        killed = _killed_in_write(probe, str(out_dir), "embeddings.npz", when, argv)
        if killed.rc != -signal.SIGKILL:
            return Outcome("other", f"the {when}-write kill did not happen (exit {killed.rc}): {killed.err[-200:]}")
        if out.read_bytes() != old:
            return Outcome("data lost", f"SIGKILL {when} the write changed the older {out.name}")
    rerun = probe.cli(*argv[3:], run_args=False)
    if rerun.rc != 0:
        return cli_verdict(rerun)
    got, want = np.load(out), np.load(ref)
    if got["paths"].tolist() != want["paths"].tolist() or not np.array_equal(got["embeddings"], want["embeddings"]):
        return Outcome("silent wrong", "the rerun's embeddings differ from an uninterrupted run's")
    litter = _temp_litter(out_dir)
    if litter:
        return Outcome("silent wrong", f"temp files left after the rerun: {litter[:3]}")
    return Outcome("correct", "older file whole after a kill before and mid-write; the rerun wrote the uninterrupted "
                              f"run's {len(want['paths'])} embeddings, no temp file left")


_COMPARED = ("knn_top1", "knn_top5", "recall_at_1", "map_at_r")


def _figures(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {engine: {k: m.get(k) for k in _COMPARED} for engine, m in report.get("metrics", {}).items()}


def sigkill_in_embedding_cache(probe: Probe) -> Outcome:
    """SIGKILL mid-way through the embedding cache's first .npy, then (second run) between a .npy and its .json:
    each rerun ends with the uninterrupted run's figures, and the cache holds only whole .npy + .json pairs whose
    arrays equal a fresh computation's (no poisoned entry, no half file read as valid, no temp file)."""
    run_dir = probe.copy_finished_run()
    reference = _figures(json.loads((run_dir / "report.json").read_text()))
    cache = run_dir / "cache" / "embeddings"
    seen = []
    for suffix, when in ((".npy", "mid"), (".json", "before")):
        shutil.rmtree(run_dir / "cache", ignore_errors=True)
        (run_dir / "report.json").unlink(missing_ok=True)
        killed = _killed_in_write(probe, str(cache), suffix, when, probe.command("run"))
        if killed.rc != -signal.SIGKILL:
            return Outcome("other", f"the kill in the cache's {suffix} write did not happen (exit {killed.rc}): "
                                    f"{killed.err[-200:]}")
        with watched(probe, keep=("train/checkpoints",)) as box:
            result = probe.cli("run")
        if result.rc != 0:
            return worst(cli_verdict(result), box)
        figures = _figures(json.loads((run_dir / "report.json").read_text()))
        if figures != reference:
            differ = sorted(e for e in reference if figures.get(e) != reference[e])
            return Outcome("silent wrong", f"after a kill in the {suffix} write the rerun's figures differ for {differ}")
        names = {p.name for p in cache.iterdir()}
        unpaired = sorted(n for n in names if n.endswith(".npy") and n[:-4] + ".json" not in names)
        litter = _temp_litter(run_dir / "cache")
        if unpaired or litter:
            return Outcome("silent wrong", f"after a kill in the {suffix} write: cache left {unpaired[:2]} {litter[:2]}")
        seen.append(f"{suffix} {when}: {sum(n.endswith('.npy') for n in names)} pairs")
        if box["outside"]:
            return worst(Outcome("correct", ""), box)
    # Every cached array must be what a fresh run computes: a third run with the cache moved aside.
    kept = {p.name: np.load(p) for p in cache.glob("*.npy")}
    shutil.rmtree(run_dir / "cache")
    (run_dir / "report.json").unlink()
    fresh = probe.cli("run")
    if fresh.rc != 0:
        return cli_verdict(fresh)
    poisoned = [n for n, arr in kept.items() if not (cache / n).is_file() or not np.array_equal(np.load(cache / n), arr)]
    if poisoned:
        return Outcome("silent wrong", f"cache entries differ from a fresh computation: {poisoned[:2]}")
    return Outcome("correct", "; ".join(seen) + "; reruns gave the uninterrupted figures, every entry equals a fresh "
                                               "computation, no temp file")


def _bundle_bytes(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())


def disk_full_in_export(probe: Probe) -> Outcome:
    """`edge-encoder export RUN --out DISK/deploy`, DISK a tmpfs with room for the old bundle and a third of
    another: exit 2 naming "No space left on device", the old bundle byte for byte as it was, no half-built
    folder or temp file left; then with room again, the export succeeds and `verify` passes."""
    run_dir = probe.copy_finished_run()
    size = _bundle_bytes(run_dir / "deploy")
    disk = probe.tmpfs(probe.root / "disk", size=f"{(size * 4 // 3 + 65535) // 4096 * 4}k")
    out = disk / "deploy"
    shutil.copytree(run_dir / "deploy", out)
    with watched(probe) as box:
        before = snapshot_of(out)
        result = probe.cli("export", str(run_dir), "--out", str(out), "--no-progress", run_args=False)
        after = snapshot_of(out)
    outcome = cli_verdict(result, mentions=("No space left on device",), codes=(2,))
    if before != after:
        return Outcome("data lost", f"the old bundle changed under a failed export ({outcome.verdict})")
    litter = _temp_litter(disk)
    if outcome.verdict == "clear error" and litter:
        return Outcome("silent wrong", f"half-built files left on the full disk: {litter[:3]}")
    if outcome.verdict != "clear error":
        return worst(outcome, box)
    subprocess.run(["mount", "-o", f"remount,size={size * 3 // 1024 + 256}k", str(disk)], capture_output=True,
                   check=False)
    again = probe.cli("export", str(run_dir), "--out", str(out), "--no-progress", run_args=False)
    if again.rc != 0:
        return Outcome("other", f"the export with room again failed: {again.last_line[:200]}")
    verify = probe.cli("verify", str(out), "--seconds", "0", "--warmup", "0", run_args=False)
    if verify.rc != 0 or _temp_litter(disk):
        return Outcome("silent wrong", f"after the retry: verify exit {verify.rc} {verify.last_line[:120]}; "
                                       f"left {_temp_litter(disk)[:2]}")
    return worst(Outcome("clear error", f"{outcome.detail}; old bundle intact, nothing left; the retry verifies"), box)


def snapshot_of(folder: Path) -> dict[str, tuple[int, str]]:
    from tests.probes.harness import snapshot

    return snapshot(folder)


def concurrent_exports(probe: Probe) -> Outcome:
    """Two `edge-encoder export RUN` started together: each exits 0, or 2 naming the run folder's lock; at least
    one succeeds; the bundle at the end is whole (`verify` exit 0) and nothing half-built is left."""
    run_dir = probe.copy_finished_run()
    with watched(probe) as box:
        procs = [probe.start("export", str(run_dir), "--no-progress", run_args=False) for _ in range(2)]
        results = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=900)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            results.append(Result(proc.returncode, out, err))
    codes = [r.rc for r in results]
    for r in results:
        if "Traceback (most recent call last)" in r.err:
            return cli_verdict(r)
        if r.rc not in (0, 2):
            return Outcome("other", f"exit codes {codes}: {r.last_line[:200]}")
        if r.rc == 2:
            refused = cli_verdict(r, mentions=(str(run_dir),), codes=(2,))
            if refused.verdict != "clear error" or not any(w in r.last_line for w in ("lock", "in use", "deploy")):
                return Outcome(refused.verdict if refused.verdict != "clear error" else "other",
                               f"the refused export does not name the lock or bundle: {r.last_line[:200]}")
    if 0 not in codes:
        return Outcome("other", f"neither export succeeded: {[r.last_line[:100] for r in results]}")
    verify = probe.cli("verify", str(run_dir / "deploy"), "--seconds", "0", "--warmup", "0", run_args=False)
    litter = _temp_litter(run_dir)
    if verify.rc != 0 or litter:
        return Outcome("silent wrong", f"exits {codes}; verify exit {verify.rc}: {verify.last_line[:120]}; "
                                       f"left {litter[:2]}")
    refused = [r.last_line for r in results if r.rc == 2]
    return worst(Outcome("correct", f"exits {codes}; the bundle verifies" + (f"; refused: {refused[0][:160]}"
                                                                             if refused else "")), box)


def verify_during_export(probe: Probe) -> Outcome:
    """`edge-encoder verify RUN/deploy` again and again while `edge-encoder export RUN` rebuilds and swaps the
    bundle: every verify exits 0 (a whole bundle, old or new) or 2 with one line naming a file, never a traceback;
    and the bundle verifies at the end."""
    run_dir = probe.copy_finished_run()
    bundle = run_dir / "deploy"
    verify = lambda: probe.cli("verify", str(bundle), "--seconds", "0", "--warmup", "0", "--report-dir",
                               str(probe.root / "reports"), run_args=False)
    export = probe.start("export", str(run_dir), "--no-progress", run_args=False)
    seen: dict[str, int] = {}
    while export.poll() is None:
        result = verify()
        if result.rc == 0:
            seen["passed"] = seen.get("passed", 0) + 1
            continue
        outcome = cli_verdict(result, codes=(2,))
        if outcome.verdict != "clear error" or not any(w in result.last_line for w in (".onnx", ".json", "manifest",
                                                                                          str(bundle))):
            export.kill()
            export.communicate()
            return Outcome(outcome.verdict if outcome.verdict != "clear error" else "other",
                           f"verify during the export: {outcome.detail or result.last_line[:200]}")
        seen["refused"] = seen.get("refused", 0) + 1
        seen.setdefault(result.last_line[:120], 0)
    _, err = export.communicate()
    if export.returncode != 0:
        return Outcome("other", f"the export failed (exit {export.returncode}): {err.strip()[-200:]}")
    final = verify()
    if final.rc != 0 or _temp_litter(run_dir):
        return Outcome("silent wrong", f"after the export: verify exit {final.rc} {final.last_line[:120]}")
    return Outcome("correct", f"{sum(v for k, v in seen.items() if k in ('passed', 'refused'))} verifies during the "
                              f"export: {seen}; the new bundle verifies")


def _changed_tree_run(probe: Probe, change: Callable[[Path], Path]) -> tuple[Result, Path, Path]:
    """A streamed `run` on a folder tree, ``change(tree)`` applied once training has begun; ``(result, tree, the
    file changed)``."""
    tree = _png_tree(probe.root / "photos", classes=2, per_class=40, size=20)
    proc = probe.start("run", "--dataset", f"folder:{tree}", "--set", "data.stream=true", "--set",
                       "data.image_size=16", "--set", "train.batch_size=16", "--set", "train.queue_size=32",
                       "--set", "train.epochs=3", "--set", "export.parity_images=16",
                       "--set", "export.calibration_images=16")
    log = probe.run_dir / "train" / "train_log.jsonl"
    if not wait_for(lambda: log.is_file() and log.stat().st_size > 0, proc):
        proc.kill()
        out, err = proc.communicate()
        return Result(proc.returncode, out, err), tree, tree
    changed = change(tree)
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return Result(None, out, err), tree, changed
    return Result(proc.returncode, out, err), tree, changed


def folder_changes_during_run(probe: Probe) -> Outcome:
    """A `folder:` dataset streamed (data.stream=true) by `edge-encoder run` while an image is rewritten, one is
    removed and one is added (three runs): a changed or removed file stops the run in one line naming it (or the
    report says which files were used); an added file is not read (the report counts the files listed at the
    start); never a run that mixes a file's old and new contents."""
    from PIL import Image

    def rewrite(tree: Path) -> Path:
        path = sorted((tree / "class_0").glob("*.png"))[0]
        Image.fromarray(np.full((20, 20, 3), 255, np.uint8)).save(path)
        return path

    def remove(tree: Path) -> Path:
        path = sorted((tree / "class_1").glob("*.png"))[0]
        path.unlink()
        return path

    def add(tree: Path) -> Path:
        path = tree / "class_0" / "new.png"
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(path)
        return path

    seen = []
    for what, change in (("rewritten", rewrite), ("removed", remove), ("added", add)):
        shutil.rmtree(probe.root, ignore_errors=True)
        probe.root.mkdir(parents=True)
        result, tree, path = _changed_tree_run(probe, change)
        if path == tree:
            return Outcome("other", f"{what}: the run never began training: {result.last_line[:200]}")
        if result.rc != 0:
            outcome = cli_verdict(result, mentions=(str(path),), codes=(2,))
            if what == "added" or outcome.verdict != "clear error":
                return Outcome(outcome.verdict if outcome.verdict != "clear error" else "other",
                               f"{what}: {outcome.detail}")
            seen.append(f"{what}: {result.last_line[:150]}")
            continue
        report = json.loads((probe.run_dir / "report.json").read_text())
        if what != "added" and str(path) not in json.dumps(report):
            return Outcome("silent wrong", f"{what} {path.name} mid-run: exit 0 and the report does not name it")
        counts = report.get("dataset", {})
        used = (counts.get("num_train") or 0) + (counts.get("num_test") or 0)
        if what == "added" and used != 80:  # _changed_tree_run lists 2 x 40 images before the change
            return Outcome("silent wrong", f"added {path.name} mid-run: the report counts {used} images, not the 80 "
                                           "listed at the start")
        seen.append(f"{what}: exit 0 ({counts.get('num_train')} train + {counts.get('num_test')} test images, the "
                    "files listed at the start)")
    return Outcome("correct" if all("exit 0" in s for s in seen) else "clear error", "; ".join(seen))


# ------------------------------------------------------------------------------------------------ the list


CASES = [
    Case("bundle_flipped_weight_byte", "1", "one byte flipped mid-way through the largest initializer of "
         "encoder_fp32.onnx; open_engine + embed", flipped_weight_byte),
    Case("verify_flipped_weight_byte", "1", "`edge-encoder verify` on that bundle", verify_flipped_weight_byte),
    Case("manifest_path_escapes", "2", "variant file ../../../elsewhere/encoder_fp32.onnx (valid ONNX, same hash)",
         manifest_path_escapes),
    Case("manifest_path_absolute", "2", "variant file an absolute path to a valid ONNX", manifest_path_absolute),
    Case("manifest_path_etc_passwd", "2", "variant file /etc/passwd", manifest_path_etc_passwd),
    Case("concurrent_runs", "3", "two runs with one --name at once (seeds 0 and 1)", concurrent_runs, slow=True),
    Case("run_after_killed_holder", "3", "SIGKILL of a run holding the folder, then a new run", run_after_killed_holder,
         expect="correct", slow=True),
    Case("diverging_run", "4", "train.base_lr=1e5, a checkpoint every step, keep_last=2", diverging_run, slow=True),
    Case("png_16_bit_grey", "5", "16-bit grey PNG (mode I;16)", png_16_bit_grey, expect="correct"),
    Case("png_16_bit_grey_alpha", "5", "16-bit grey + alpha PNG, half transparent", png_16_bit_grey_alpha,
         expect="correct"),
    Case("palette_with_transparency", "5", "palette PNG with a transparent index", palette_with_transparency,
         expect="correct"),
    Case("cmyk_jpeg", "5", "CMYK JPEG", cmyk_jpeg, expect="correct"),
    Case("exif_orientation", "5", "JPEG stored sideways with EXIF orientation 6", exif_orientation, expect="correct"),
    Case("npz_sparse_label_without_names", "6", "npz labels {0, 65535}, no class_names",
         npz_sparse_label_without_names, expect="correct"),
    Case("npz_label_outside_class_names", "6", "npz label 9 with 4 class_names", npz_label_outside_class_names),
    Case("npz_negative_label", "6", "npz label -1", npz_negative_label),
    Case("npz_float_labels", "6", "npz float32 labels", npz_float_labels),
    Case("npz_labels_length_mismatch", "6", "npz 100 labels for 128 images", npz_labels_length_mismatch),
    Case("test_only_class", "7", "train/ + test/ with a class only in test/", test_only_class, expect="correct"),
    Case("refused_rerun_keeps_config", "8", "rerun of a finished run with train.epochs changed",
         refused_rerun_keeps_config),
    Case("unknown_dataset", "8", "--dataset imagenet-99 (no run directory may be left)", unknown_dataset),
    Case("variants_without_fp32", "9", "export.variants = ['fp16']", variants_without_fp32, also_fine=("correct",)),
    Case("runs_dir_read_only", "10", "--runs-dir on a read-only mount", runs_dir_read_only),
    Case("runs_dir_is_a_file", "10", "--runs-dir names a file", runs_dir_is_a_file),
    Case("seed_negative", "10", "data.seed=-1", seed_negative),
    Case("image_size_two", "10", "data.image_size=2", image_size_two),
    Case("max_test_one", "10", "data.max_test=1", max_test_one),
    Case("disk_full_in_training", "10", "train/ on a 512 KiB tmpfs (a checkpoint is ~1 MB)", disk_full_in_training,
         slow=True),
    Case("disk_full_in_embedding_cache", "10", "cache/ on an 8 KiB tmpfs", disk_full_in_embedding_cache, slow=True),
    Case("nan_loss", "10", "train.base_lr=1e10 (NaN loss)", nan_loss, slow=True),
    Case("npz_object_array", "10", "npz y_test an object array", npz_object_array),
    Case("checkpoint_without_state", "10", "the only checkpoint lacks 'state'", checkpoint_without_state),
    Case("manifest_broken_json", "10", "manifest.json cut in half; open_engine", manifest_broken_json),
    Case("manifest_wrong_types", "10", "manifest variant file = 12345; open_engine", manifest_wrong_types),
    Case("verify_broken_manifest", "10", "`edge-encoder verify` with a broken manifest", verify_broken_manifest),
    Case("verify_changed_triton_copy", "16", "`edge-encoder verify`, triton/encoder_onnx_fp32/1/model.onnx damaged",
         verify_changed_triton_copy),
    Case("verify_unexpected_file", "16", "`edge-encoder verify`, a triton/encoder_onnx_fp32/2/model.onnx added",
         verify_unexpected_file),
    Case("verify_rewritten_manifest_pinned", "16", "`edge-encoder verify --manifest-sha256` of the export, trtexec.txt "
         "and its hash in the manifest rewritten", verify_rewritten_manifest_pinned),
    Case("compare_dataset_list", "10", "compare two runs, one report's dataset a list", compare_dataset_list),
    Case("truncated_newest_checkpoint", "11", "newest checkpoint cut in half, older one intact",
         truncated_newest_checkpoint, expect="correct", slow=True),
    Case("pixel_bomb_in_folder", "11", "a 12000x12000 PNG header in a folder dataset", pixel_bomb_in_folder),
    Case("sigkill_in_training", "fault", "SIGKILL after the first checkpoint, then rerun", sigkill_in_training,
         expect="correct", slow=True),
    Case("sigkill_in_export", "fault", "SIGKILL while the new bundle is built, then rerun", sigkill_in_export,
         expect="correct", slow=True),
    Case("sigint_in_evaluation", "fault", "SIGINT once embeddings are being cached", sigint_in_evaluation, slow=True),
    Case("export_onto_user_folder", "18", "`edge-encoder export RUN --out DIR`, DIR a folder of documents and photos",
         export_onto_user_folder),
    Case("bundle_readable_by_others", "18", "export under umask 022: bundle folder 755, files 644",
         bundle_readable_by_others, expect="correct"),
    Case("config_not_finite", "18", "train.temperature=inf / 1e-30, train.base_lr=inf, evaluate.knn_temperature=-inf",
         config_not_finite),
    Case("sigkill_mid_atomic_write", "18", "SIGKILL mid-way through an atomic write of a big file, then a rewrite",
         sigkill_mid_atomic_write, expect="correct"),
    Case("train_batch_larger_than_data", "18", "`edge-encoder train` with train.batch_size=100000 (no run folder)",
         train_batch_larger_than_data),
    Case("report_class_names_with_pipe_and_newline", "18", "class folders `a|b` and `c<newline>d`; report.md tables",
         report_class_names_with_pipe_and_newline, expect="correct"),
    Case("class_of_only_corrupt_images", "18", "a 7th class folder of only unreadable files, --skip-corrupt",
         class_of_only_corrupt_images, expect="correct", also_fine=("clear error",)),
    Case("train_data_links_to_queries", "18", "--train-data of symlinks / hard links / a symlinked folder to the "
         "evaluation queries", train_data_links_to_queries, expect="correct"),
    Case("static_batch_onnx_embed", "18", "`edge-encoder embed` of a folder through a torch.onnx.export with a static "
         "batch of 1 (no dynamic_axes)", static_batch_onnx_embed, expect="correct"),
    Case("static_batch_onnx_evaluate", "18", "`edge-encoder evaluate` of that batch-1 export vs its dynamic-batch "
         "export", static_batch_onnx_evaluate, expect="correct"),
    Case("zero_width_onnx_output", "18", "`edge-encoder evaluate` of a foreign ONNX whose output is (N, 0) (no run "
         "folder may be left)", zero_width_onnx_output),
    Case("lab_tiff_in_folder", "18", "a folder dataset whose class_0 holds CIE L*a*b* TIFFs of mid grey",
         lab_tiff_in_folder, expect="correct"),
    Case("sigkill_in_embed", "18", "SIGKILL of `edge-encoder embed` before / mid-way through writing --out over an "
         "older file, then a rerun", sigkill_in_embed, expect="correct", slow=True),
    Case("sigkill_in_embedding_cache", "18", "SIGKILL mid-way through a cache .npy, then between a .npy and its "
         ".json; reruns", sigkill_in_embedding_cache, expect="correct", slow=True),
    Case("disk_full_in_export", "18", "`edge-encoder export RUN --out` onto a tmpfs with room for the old bundle "
         "and a third of another", disk_full_in_export, slow=True),
    Case("concurrent_exports", "18", "two `edge-encoder export RUN` of one run at once", concurrent_exports,
         expect="correct", slow=True),
    Case("verify_during_export", "18", "`edge-encoder verify` again and again while an export rewrites the bundle",
         verify_during_export, expect="correct", slow=True),
    Case("folder_changes_during_run", "18", "a streamed folder: dataset with an image rewritten / removed / added "
         "while `run` trains", folder_changes_during_run, expect="clear error", also_fine=("correct",), slow=True),
]
assert len({c.name for c in CASES}) == len(CASES)
assert RUN_NAME == "probe"
