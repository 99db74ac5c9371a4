"""The ENGINE argument of ``edge-encoder evaluate`` / ``embed``: a deploy bundle, or any ONNX encoder file.

A bundle (a folder holding ``manifest.json``, or a run folder holding ``deploy/manifest.json``) declares its own
input contract; its variants are opened through ``device.bundle_files.open_engine`` (files hash-checked).

Any other ``.onnx`` file (the user's own encoder, a torchvision model exported as it is) has no such metadata, so
its contract is read from the graph and declared on the command line: uint8 NHWC (normalisation inside the graph),
or float32 NCHW or NHWC (Keras/TensorFlow) with ``--mean``/``--std`` (or ``--preset imagenet``, ``tf``, ``raw255``);
``--image-size`` where the graph's height and width are dynamic; ``--output NAME`` where the graph has several
outputs (default: the first that can be an embedding, logged). Its output may be un-normalised features, logits or
``(N, C, 1, 1)``: the engine wrapper flattens it to ``(N, D)`` and L2-normalises the rows
(``OnnxRuntimeEngine(l2_normalize_output=True)``), and the report says so. A graph with a static batch
(``torch.onnx.export`` without ``dynamic_axes``: 1) runs in chunks of that batch, said once in the log; an output
that cannot be an embedding (zero-width, a fixed first dimension other than the batch, a wrong rank) is refused when
the file is opened, naming it and the shape (exit 2). Either way the engine takes ``uint8 (N, H, W, 3)`` RGB and
returns ``float32 (N, D)`` unit rows.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_encoder.commands.errors import UsageError, usage_errors
from edge_encoder.device.engines import GRAPH_INPUT_LAYOUTS
from edge_encoder.device.manifest import manifest_preprocess

# torchvision's ImageNet weights take RGB on the 0..1 scale normalised with these
# (https://pytorch.org/vision/0.8/models.html: "mean = [0.485, 0.456, 0.406] and std = [0.229, 0.224, 0.225]").
# Keras applications' preprocess_input mode "tf" (MobileNet, Inception, Xception, ResNetV2) "will scale pixels
# between -1 and 1", i.e. x / 127.5 - 1 = (x / 255 - 0.5) / 0.5; EfficientNet and ConvNeXt take the 0..255 values
# themselves (mean 0, std 1/255 on the 0..1 scale). tensorflow.org/api_docs/python/tf/keras/applications/
# imagenet_utils/preprocess_input.
NORMALIZATION_PRESETS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                         "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                         "raw255": ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))}
CONTRACT_OPTIONS = "--input-layout/--mean/--std/--preset/--image-size/--output"


@dataclass(frozen=True)
class InputContract:
    """What the command line declares about a foreign ONNX file's input (``None``: not declared)."""

    layout: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    image_size: int | None = None
    output: str | None = None  # the graph output that is the embedding (default: the first)

    @property
    def declared(self) -> bool:
        return any(v is not None for v in (self.layout, self.mean, self.std, self.image_size, self.output))


@dataclass(frozen=True)
class EngineTarget:
    """What ENGINE names. ``kind`` is ``"bundle"`` (``path`` = the bundle folder, ``manifest`` its manifest,
    ``variants`` the chosen ones) or ``"onnx"`` (``path`` = the file, ``variants`` empty)."""

    path: Path
    kind: str
    variants: tuple[str, ...]
    contract: InputContract
    manifest: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """A short name for run directories: the run's name for ``runs/<name>/deploy``, else the folder/file stem."""
        if self.kind == "bundle":
            return self.path.parent.name if self.path.name == "deploy" else self.path.name
        return self.path.stem


def engine_options(*, variant_help: str, many_variants: bool) -> argparse.ArgumentParser:
    """ENGINE, ``--variant`` and the input-contract options of a foreign ONNX file (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("engine", metavar="ENGINE",
                        help="a deploy bundle folder (runs/<name>/deploy, or the run folder itself) or any ONNX "
                             "encoder file")
    parser.add_argument("--variant", metavar="V", action="append" if many_variants else "store", help=variant_help)
    group = parser.add_argument_group("input contract of an ONNX file (a bundle's manifest declares its own)")
    group.add_argument("--input-layout", choices=GRAPH_INPUT_LAYOUTS,
                       help="uint8_nhwc: uint8 (N, H, W, 3), normalised inside the graph; float_nchw: float32 "
                            "(N, 3, H, W), float_nhwc: float32 (N, H, W, 3) (Keras/TensorFlow), both normalised "
                            "with --mean/--std (default: as the graph's input says)")
    group.add_argument("--mean", metavar="R,G,B", help="per-channel mean on the 0..1 scale (float input)")
    group.add_argument("--std", metavar="R,G,B", help="per-channel std on the 0..1 scale (float input)")
    group.add_argument("--preset", choices=sorted(NORMALIZATION_PRESETS),
                       help="a known mean/std: imagenet = 0.485,0.456,0.406 / 0.229,0.224,0.225 (torchvision); "
                            "tf = 0.5 / 0.5, pixels -1..1 (Keras MobileNet, Inception); raw255 = 0 / 1/255, pixels "
                            "0..255 (Keras EfficientNet)")
    group.add_argument("--image-size", type=int, metavar="N",
                       help="input side in pixels; required when the graph's height/width are dynamic")
    group.add_argument("--output", metavar="NAME",
                       help="the graph output that is the embedding, for a graph with several (default: the first "
                            "of rank 2, or 4, logged)")
    return parser


def _rgb(text: str, option: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UsageError(f"{option} must be three comma-separated numbers R,G,B (0..1 scale), got {text!r}")
    return values  # type: ignore[return-value]


def contract_from_args(args: argparse.Namespace) -> InputContract:
    """The declared input contract; one-line errors for an incomplete or contradictory declaration."""
    mean = _rgb(args.mean, "--mean") if args.mean is not None else None
    std = _rgb(args.std, "--std") if args.std is not None else None
    if args.preset is not None:
        if mean is not None or std is not None:
            raise UsageError(f"--preset {args.preset} sets mean and std; give either --preset or --mean/--std")
        mean, std = NORMALIZATION_PRESETS[args.preset]
    if (mean is None) != (std is None):
        raise UsageError("--mean and --std go together (or use --preset imagenet)")
    if std is not None and min(std) <= 0:
        raise UsageError(f"--std values must be > 0, got {','.join(map(str, std))}")
    if args.image_size is not None and args.image_size < 1:
        raise UsageError(f"--image-size must be >= 1, got {args.image_size}")
    if args.input_layout == "uint8_nhwc" and mean is not None:
        raise UsageError("--input-layout uint8_nhwc normalises inside the graph: --mean/--std/--preset do not apply")
    return InputContract(args.input_layout, mean, std, args.image_size, args.output)


def _bundle_dir(path: Path) -> Path | None:
    for candidate in (path, path / "deploy"):
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def resolve_target(text: str, variants: list[str] | str | None, contract: InputContract, *,
                   default_variants: str) -> EngineTarget:
    """ENGINE as a bundle or an ONNX file. ``default_variants``: ``"all"`` or ``"fp32"`` when ``--variant`` is not
    given (the bundle's fp32 variant, else its first)."""
    path = Path(text).expanduser()
    chosen = [variants] if isinstance(variants, str) else list(variants or [])
    if path.is_dir():
        bundle = _bundle_dir(path)
        if bundle is None:
            raise UsageError(f"{path} is not a deploy bundle (no manifest.json in it or in {path / 'deploy'}); "
                             "ENGINE is a bundle folder or an ONNX file")
        if contract.declared:
            raise UsageError(f"{CONTRACT_OPTIONS} describe an ONNX file; the bundle {bundle} declares its input in "
                             "manifest.json")
        from edge_encoder.device.bundle_files import load_manifest

        with usage_errors():
            manifest = load_manifest(bundle)
        available = list(manifest["variants"])
        unknown = [v for v in chosen if v not in available]
        if unknown:
            raise UsageError(f"variant(s) {unknown} not in {bundle / 'manifest.json'}; available: {available}")
        if not chosen:
            chosen = available if default_variants == "all" else ["fp32" if "fp32" in available else available[0]]
        # fp32 first: the other variants are compared with it.
        ordered = sorted(dict.fromkeys(chosen), key=lambda v: v != "fp32")
        return EngineTarget(bundle, "bundle", tuple(ordered), contract, manifest)
    if path.is_file():
        if chosen:
            raise UsageError(f"--variant selects a variant of a bundle; {path} is a single ONNX file")
        return EngineTarget(path, "onnx", (), contract)
    raise UsageError(f"engine {path} does not exist (give a bundle folder or an ONNX file)")


def open_target(target: EngineTarget, variant: str | None = None) -> Any:
    """An entered-ready engine (context manager) for one bundle variant, or for the ONNX file."""
    from edge_encoder.device.bundle_files import open_engine
    from edge_encoder.device.engines import OnnxRuntimeEngine

    if target.kind == "bundle":
        with usage_errors():
            return open_engine(target.path, variant or target.variants[0])
    contract = target.contract
    preprocess = {"mean": contract.mean, "std": contract.std} if contract.mean is not None else None
    with usage_errors():
        engine = OnnxRuntimeEngine(target.path, preprocess=preprocess, image_size=contract.image_size,
                                   l2_normalize_output=True, input_layout=contract.layout,
                                   output_name=contract.output)
    if engine.input_layout == "uint8_nhwc" and contract.mean is not None:
        engine.close()
        raise UsageError(f"{target.path}: its input is uint8 NHWC (normalised inside the graph): "
                         "--mean/--std/--preset do not apply")
    return engine


def square_size(engine: Any) -> int:
    """The engine's input side; datasets and image folders are fitted to square images."""
    spec = engine.input_spec
    if spec.height != spec.width:
        raise UsageError(f"engine {engine.name!r} takes {spec.height}x{spec.width} images; only square inputs are "
                         "supported (datasets and folders are fitted to S x S)")
    return int(spec.height)


def describe_engine(target: EngineTarget, engine: Any, variant: str | None = None) -> dict[str, Any]:
    """The report's ``engines[name]`` entry: where the engine came from, its input contract, its output."""
    spec = engine.input_spec
    entry: dict[str, Any] = {"source": str(engine.source_path), "input_layout": engine.input_layout,
                             "input_size": [spec.height, spec.width]}
    if target.kind == "bundle":
        assert target.manifest is not None
        pre = manifest_preprocess(target.manifest, target.path / "manifest.json")
        entry.update(kind="bundle variant", variant=variant, mean=list(pre.mean), std=list(pre.std),
                     normalization_in_graph=target.manifest["preprocessing"]["in_graph"],
                     output="(N, D) L2-normalised inside the graph (the bundle's contract)")
        return entry
    contract = target.contract
    entry.update(kind="onnx file", graph_output=getattr(engine, "output_name", None),
                 graph_output_shape=getattr(engine, "output_shape", None),
                 output="flattened to (N, D) and L2-normalised by the engine wrapper (the model's own output is "
                        "not assumed normalised)")
    if engine.input_layout != "uint8_nhwc":
        declared = contract.mean is not None
        entry.update(mean=list(contract.mean) if declared else "from the model's metadata",
                     std=list(contract.std) if declared else "from the model's metadata",
                     normalization_in_graph=False)
    else:
        entry["normalization_in_graph"] = True
    return entry
