"""Export configuration: the ``[export]`` config section (:class:`ExportSettings`, user input) and what
``export.bundle.export_bundle`` takes (:class:`ExportConfig`, which may also hold per-variant objects).

Both are frozen dataclasses checked on construction, so a bundle request that cannot succeed (an unknown
variant, no ``fp32`` reference, too few parity images) is refused before a model is trained or exported.

They stay two types because they hold different things: the section holds what a run chooses (how many images
calibrate and check the variants, the INT8 stem, whether a failed gate fails the run) and nothing that is not
TOML; ``ExportConfig`` holds what ``export_bundle`` needs and a library caller may pass (per-variant threshold and
quantizer objects, the input layout), and takes its images from the caller. The fields they share take their
defaults from the one set of constants below (``DEFAULT_*``), so a library caller building ``ExportConfig()`` gets
what a run with an empty ``[export]`` section gets (tests/export/test_export_config.py checks every shared field).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from edge_encoder.core.config import check_types, config_from_dict, require
from edge_encoder.export.onnx_export import DEFAULT_OPSET, EXPORTERS, INPUT_LAYOUTS, MAX_OPSET, MIN_OPSET
from edge_encoder.device.parity import ParityThresholds
from edge_encoder.export.precision import INT8_FLAVOURS, VARIANTS, QuantConfig
from edge_encoder.device.trt_plans import DLA_MAX_BATCH, check_dla_batch

SECTION = "export"
# QuantConfig.calibrate_method; "auto": each flavour's own (export.precision.INT8_FLAVOURS: int8_trt entropy,
# int8_cpu percentile)
CALIBRATION_METHODS = ("auto", "percentile", "minmax", "entropy")
INT8_STEMS = ("auto", "fp32", "int8")  # QuantConfig.float_input_convs: see ExportSettings
MIN_PARITY_IMAGES = 2  # device.parity.compare_embeddings compares at least 2 rows (top-1 neighbours)

# The defaults of the fields ExportSettings and ExportConfig share: one constant each, used by both.
DEFAULT_VARIANTS: tuple[str, ...] = VARIANTS
# DEFAULT_OPSET (export.onnx_export's, the exporter's own default too) is 18: the dynamo exporter's native opset. At 17, "auto" fails with dynamo (it cannot down-convert the graph) and
# falls back to TorchScript (tests/export/test_onnx_export.py); TensorRT 10/11 parse 18 (export.trt_conformance:
# opsets 9 to 20). What `edge-encoder run` has exported with (docs/BENCHMARKS.md: "opset 18 / dynamo").
DEFAULT_EXPORTER = "auto"
DEFAULT_ALLOW_FAILED = False
DEFAULT_DLA_BATCH = 0  # no DLA plans


def resolve_float_stem(flavour: str, int8_stem: str, dla_batch: int) -> bool:
    """``QuantConfig.float_input_convs`` for ``flavour`` under ``export.int8_stem`` (see ``ExportSettings``):
    "auto" keeps the stem float, except in ``int8_trt`` for a DLA bundle (DLA computes in FP16/INT8 only)."""
    if int8_stem == "auto":
        return not (flavour == "int8_trt" and dla_batch)
    return int8_stem == "fp32"


def _variant_errors(variants: tuple[str, ...]) -> str | None:
    """Why ``variants`` cannot make a bundle, or None. ``fp32`` is every bundle's reference engine."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        return f"{unknown or 'an empty list'} not allowed; choose from {list(VARIANTS)}"
    if "fp32" not in variants:
        return "must include 'fp32' (the bundle's reference engine, and what parity is measured against)"
    if len(set(variants)) != len(variants):
        return "lists a variant twice"
    return None


@dataclass(frozen=True)
class ExportSettings:
    """The ``[export]`` section.

    Attributes:
        variants: the ONNX variants to export (from ``export.precision.VARIANTS``; ``fp32`` required).
        opset: ONNX opset (default ``DEFAULT_OPSET`` = 18: the dynamo exporter's native opset; TensorRT 10/11
            parse it).
        exporter: ``"auto"``, ``"dynamo"`` or ``"torchscript"`` (``export.onnx_export``).
        calibration_images: training images that calibrate the INT8 variants (a seeded sample, >= 1).
        calibration_method: ``"auto"`` (each INT8 flavour's own: entropy for ``int8_trt``, percentile for
            ``int8_cpu``), or ``"percentile"``, ``"minmax"`` or ``"entropy"`` for both
            (``export.precision.QuantConfig``).
        int8_stem: ``"fp32"``: the convolution that reads the normalised image stays float in both INT8 flavours
            (``export.precision.input_convs``); ``"int8"``: quantize it too; ``"auto"`` (default): ``"fp32"``,
            or for ``int8_trt`` ``"int8"`` when ``dla_batch`` is set, since DLA computes in FP16/INT8 only and a
            float stem in the strongly typed TensorRT 11 DLA build would fall back to the GPU.
        parity_images: test images every variant is compared on against the PyTorch reference (>= 2).
        allow_failed: exit 0 even when a variant fails its parity gate (the files are kept either way).
        dla_batch: static batch of the Jetson DLA plans (fp16 / int8_trt); 0 = none (see ``device.trt_plans``).
    """

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    opset: int = DEFAULT_OPSET
    exporter: str = DEFAULT_EXPORTER
    calibration_images: int = 256
    calibration_method: str = "auto"
    int8_stem: str = "auto"
    parity_images: int = 500
    allow_failed: bool = DEFAULT_ALLOW_FAILED
    dla_batch: int = DEFAULT_DLA_BATCH

    def __post_init__(self) -> None:
        check_types(SECTION, self)
        problem = _variant_errors(self.variants)
        require(problem is None, SECTION, "variants", problem or "", list(self.variants))
        require(MIN_OPSET <= self.opset <= MAX_OPSET, SECTION, "opset", f"must lie in [{MIN_OPSET}, {MAX_OPSET}]",
                self.opset)
        require(self.exporter in EXPORTERS, SECTION, "exporter", f"must be one of {list(EXPORTERS)}", self.exporter)
        require(self.calibration_images >= 1, SECTION, "calibration_images", "must be >= 1", self.calibration_images)
        require(self.calibration_method in CALIBRATION_METHODS, SECTION, "calibration_method",
                f"not allowed; choose from {list(CALIBRATION_METHODS)}", self.calibration_method)
        require(self.int8_stem in INT8_STEMS, SECTION, "int8_stem", f"not allowed; choose from {list(INT8_STEMS)}",
                self.int8_stem)
        require(not (self.dla_batch and self.int8_stem == "fp32"), SECTION, "int8_stem",
                "'fp32' cannot run on the DLA (FP16/INT8 only) that export.dla_batch asks for; use 'int8' or 'auto'",
                self.int8_stem)
        require(self.parity_images >= MIN_PARITY_IMAGES, SECTION, "parity_images", f"must be >= {MIN_PARITY_IMAGES}",
                self.parity_images)
        # "The maximum supported batch size is 4096" (TensorRT's DLA restrictions; device.trt_plans.DLA_MAX_BATCH)
        require(self.dla_batch == 0 or 1 <= self.dla_batch <= DLA_MAX_BATCH, SECTION, "dla_batch",
                f"must be 0 (no DLA plans) or in [1, {DLA_MAX_BATCH}] (DLA's maximum batch)", self.dla_batch)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "variants": list(self.variants)}

    def bundle_config(self) -> ExportConfig:
        """What ``export_bundle`` takes for this section: every INT8 flavour calibrated with
        ``calibration_method``, its stem as ``int8_stem`` says; ``allow_failed=True``, so every variant is written
        and evaluated and the caller applies the gate (the exit code)."""
        quant = {flavour: replace(config, float_input_convs=resolve_float_stem(flavour, self.int8_stem, self.dla_batch),
                                  calibrate_method=config.calibrate_method if self.calibration_method == "auto"
                                  else self.calibration_method)
                 for flavour, config in INT8_FLAVOURS.items()}
        return ExportConfig(variants=self.variants, opset=self.opset, exporter=self.exporter, quant_configs=quant,
                            allow_failed=True, dla_batch=self.dla_batch)


def export_settings_from_dict(values: Mapping[str, Any]) -> ExportSettings:
    """The validated ``[export]`` section; ``ValueError`` naming ``export.KEY`` otherwise."""
    return config_from_dict(SECTION, ExportSettings, values)


@dataclass(frozen=True)
class ExportConfig:
    """How ``export_bundle`` builds a bundle.

    Attributes:
        variants: variants to build, ``fp32`` first in the manifest order given.
        opset / exporter: passed to ``export.onnx_export.build_fp32_encoder``; defaults ``DEFAULT_OPSET`` /
            ``DEFAULT_EXPORTER``, a run's (``ExportSettings``).
        input_layout: ``"uint8_nhwc"`` (preprocessing in every graph) or ``"float_nchw"`` (normalised upstream).
        thresholds: per-variant overrides of ``device.parity.DEFAULT_THRESHOLDS``.
        quant_configs: per-flavour overrides of ``export.precision.INT8_FLAVOURS``; with ``dla_batch`` set and no
            ``int8_trt`` entry, ``int8_trt`` quantizes its stem too (``float_input_convs=False``: DLA has no FP32).
        allow_failed: write the bundle and return when a variant fails its gate, instead of raising
            ``ParityGateError`` (after the bundle is written).
        dla_batch: static batch of the Jetson DLA plans (fp16 / int8_trt), recorded in the manifest, written into
            ``trtexec.txt`` and the ``encoder_trt_<v>_dla`` Triton models; 0 = no DLA plans (``device.trt_plans``).
    """

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    opset: int = DEFAULT_OPSET
    exporter: str = DEFAULT_EXPORTER
    input_layout: str = "uint8_nhwc"
    thresholds: Mapping[str, ParityThresholds] = field(default_factory=dict)
    quant_configs: Mapping[str, QuantConfig] = field(default_factory=dict)
    allow_failed: bool = DEFAULT_ALLOW_FAILED
    dla_batch: int = DEFAULT_DLA_BATCH

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants))
        problem = _variant_errors(self.variants)
        if problem is not None:
            raise ValueError(f"export variants {list(self.variants)}: {problem}")
        if self.input_layout not in INPUT_LAYOUTS:
            raise ValueError(f"input_layout must be one of {INPUT_LAYOUTS}, got {self.input_layout!r}")
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {self.opset}")
        unknown = sorted(set(self.thresholds) - set(VARIANTS)) + sorted(set(self.quant_configs) - set(INT8_FLAVOURS))
        if unknown:
            raise ValueError(f"thresholds / quant_configs name unknown variants {unknown}")
        if self.dla_batch != 0:
            check_dla_batch(self.dla_batch, "dla_batch")
            if "int8_trt" not in self.quant_configs:  # the default ("auto") stem of a DLA bundle
                stem = resolve_float_stem("int8_trt", "auto", self.dla_batch)
                object.__setattr__(self, "quant_configs", {
                    **self.quant_configs, "int8_trt": replace(INT8_FLAVOURS["int8_trt"], float_input_convs=stem)})
