"""TensorRT 10 DLA INT8 on the device side, without TensorRT: the calibration cache's text format, the calibrator
``device.tensorrt`` hands the builder, and the summary of what an engine runs where (engine inspector JSON).
Unverified on an Orin: the format and the JSON shape follow NVIDIA's sources cited in each module."""

from __future__ import annotations

import json
import struct
import types

import numpy as np
import pytest
from edge_encoder.device.calibration_cache import (
    CalibrationCacheError,
    decode_scale,
    encode_scale,
    read_cache,
    retag,
    tensorrt_version_number,
    write_cache,
)
from edge_encoder.device.trt_plans import is_dla_layer, summarize_engine_layers, tensor_precision

# --------------------------------------------------------------------------------------------- cache format


def test_cache_round_trips_every_float32_scale_exactly() -> None:
    rng = np.random.default_rng(0)
    scales = {f"/layer{i}/Relu_output_0": float(s) for i, s in enumerate(rng.uniform(1e-6, 10, 50).astype(np.float32))}
    scales["backbone_input"] = float(np.float32(0.015652395))
    data = write_cache(scales, "10.3.0")
    lines = data.decode().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2" and len(lines) == len(scales) + 1
    assert lines[1] == f"/layer0/Relu_output_0: {encode_scale(scales['/layer0/Relu_output_0'])}"
    version, algorithm, read = read_cache(data)
    assert (version, algorithm) == (100300, "EntropyCalibration2")
    assert read == scales and list(read) == list(scales)  # exact, in order
    assert write_cache(read, "10.3.0") == data


def test_scale_encoding_matches_nvidia_caches() -> None:
    """The hex of the float32 bits, most significant first: qdq-translator's float_to_hex, and TensorRT's own caches
    (NVIDIA/TensorRT#2036, written by TensorRT 8.2.3: 'TRT-8203-EntropyCalibration2', '167: 3c009976')."""
    assert encode_scale(1.0) == "3f800000" and decode_scale("3f800000") == 1.0
    assert decode_scale("3c009976") == pytest.approx(0.007843, rel=1e-3)  # ~1/127.5: a range of ~1
    for value in (1e-30, 3.2e-3, 0.5, 123.25):
        qdq_translator = hex(struct.unpack("<I", struct.pack("<f", value))[0])[2:]  # leading zeros dropped
        assert decode_scale(qdq_translator) == decode_scale(encode_scale(value)) == float(np.float32(value))
    assert tensorrt_version_number("8.2.3") == 8203 and tensorrt_version_number("8.6.0") == 8600
    assert tensorrt_version_number("10.3.0") == 100300 and tensorrt_version_number("10.7.0.23") == 100700


def test_retag_names_the_running_tensorrt_and_keeps_the_scales() -> None:
    data = write_cache({"a": 0.5, "b: c": 0.25}, "10.3.0")  # a tensor name may hold ': '
    tagged = retag(data, "10.7.0")
    assert tagged.split(b"\n", 1)[0] == b"TRT-100700-EntropyCalibration2"
    assert tagged.split(b"\n", 1)[1] == data.split(b"\n", 1)[1] and read_cache(tagged)[2] == {"a": 0.5, "b: c": 0.25}


@pytest.mark.parametrize("data, match", [
    (b"", "header"),
    (b"TRT-100300\na: 3f800000\n", "header"),
    (b"TRT-100300-EntropyCalibration2\na 3f800000\n", "line 2"),
    (b"TRT-100300-EntropyCalibration2\na: 3f80000g\n", "hexadecimal"),
    (b"TRT-100300-EntropyCalibration2\na: 3f800000\na: 3f800000\n", "twice"),
    (b"TRT-100300-EntropyCalibration2\na: bf800000\n", "not positive"),  # -1.0
    (b"TRT-100300-EntropyCalibration2\na: 7fc00000\n", "not positive"),  # NaN
    (b"\xff\xfe", "UTF-8"),
])
def test_malformed_caches_are_refused_in_one_line(data: bytes, match: str) -> None:
    with pytest.raises(CalibrationCacheError, match=match) as err:
        read_cache(data)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("scales, match", [({}, "at least one"), ({"a\nb": 1.0}, "one line"), ({"a": 0.0}, "positive"),
                                           ({"a": float("inf")}, "positive"), ({"a": 1e39}, "float32")])
def test_writing_refuses_what_tensorrt_could_not_read(scales, match) -> None:
    with pytest.raises(CalibrationCacheError, match=match):
        write_cache(scales)


# ------------------------------------------------------------------------------------------------ calibrator


def test_cache_calibrator_returns_the_cache_and_no_batches() -> None:
    """``IInt8EntropyCalibrator2`` subclass (TensorRT 10 Python API): read_calibration_cache returns the bytes,
    get_batch None (no calibration data), write_calibration_cache never rewrites the bundle. A stand-in base class
    replaces tensorrt's, which is not installed here."""
    from edge_encoder.device.tensorrt import _cache_calibrator

    class Base:
        def __init__(self) -> None:
            self.base_initialised = True  # the docstrings' rule: instantiate the base class explicitly

    fake_trt = types.SimpleNamespace(IInt8EntropyCalibrator2=Base)
    cache = write_cache({"x": 0.5})
    calibrator = _cache_calibrator(fake_trt, cache, 8)
    assert isinstance(calibrator, Base) and calibrator.base_initialised
    assert calibrator.read_calibration_cache() == cache and calibrator.get_batch(["images"]) is None
    assert calibrator.get_batch_size() == 8 and calibrator.write_calibration_cache(b"other") is None


# ---------------------------------------------------------------------------------- engine inspector summary

# Shaped like IEngineInspector.get_engine_information(LayerInformationFormat.JSON) of TensorRT 10 with
# ProfilingVerbosity.DETAILED: {"Layers": [{"Name", "LayerType", "Inputs"/"Outputs": [{"Name", "Dimensions",
# "Format/Datatype"}], ...}], "Bindings": [...]} (NVIDIA/TensorRT tools/experimental/trt-engine-explorer trex
# parser.py / layer.py / activations.py read exactly these keys); a DLA subgraph is one "{ForeignNode[...]}" layer
# between copies to and from DLA memory ("images to nvm", "... from nvm": NVIDIA/TensorRT#3143).
_T = lambda name, fmt, dims: {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": fmt}  # noqa: E731
TRT10_DLA_ENGINE = {
    "Layers": [
        {"Name": "preprocess/cast", "LayerType": "Cast",
         "Inputs": [_T("images", "Row major linear UInt8 format", [8, 16, 16, 3])],
         "Outputs": [_T("preprocess/float", "Row major linear FP32", [8, 16, 16, 3])]},
        {"Name": "backbone_input to nvm", "LayerType": "Reformat",
         "Inputs": [_T("backbone_input", "Row major linear FP32", [8, 3, 16, 16])],
         "Outputs": [_T("backbone_input copy", "Channel major INT8 format where channel % 32 == 0", [8, 3, 16, 16])]},
        {"Name": "{ForeignNode[/conv1/Conv.../layer4/layer4.1/relu_1/Relu]}", "LayerType": "DlaNetwork",
         "Inputs": [_T("backbone_input copy", "Channel major INT8 format where channel % 32 == 0", [8, 3, 16, 16])],
         "Outputs": [_T("/layer4/layer4.1/relu_1/Relu_output_0", "Channel major INT8 format where channel % 32 == 0",
                        [8, 64, 2, 2])]},
        {"Name": "/layer4/layer4.1/relu_1/Relu_output_0 from nvm", "LayerType": "Reformat",
         "Inputs": [], "Outputs": [_T("relu copy", "Sixteen wide channel vectorized row major FP16 format", [8, 64, 2, 2])]},
        {"Name": "/avgpool/GlobalAveragePool", "LayerType": "CaskPooling",
         "Inputs": [_T("relu copy", "Sixteen wide channel vectorized row major FP16 format", [8, 64, 2, 2])],
         "Outputs": [_T("pooled", "Row major linear FP32", [8, 64, 1, 1])]},
        {"Name": "{ForeignNode[tail/square...tail/div]}", "LayerType": "Myelin",
         "Inputs": [_T("pooled", "Row major linear FP32", [8, 64])],
         "Outputs": [_T("embeddings", "Row major linear FP32", [8, 64])]},
    ],
    "Bindings": ["images", "embeddings"],
}


def test_layer_summary_counts_layers_per_device_and_precision() -> None:
    summary = summarize_engine_layers(json.dumps(TRT10_DLA_ENGINE), dla_build=True)
    assert summary["detailed"] and summary["layers"] == 6
    assert summary["by_device"] == {"DLA": {"INT8": 1}, "GPU": {"FP32": 3, "INT8": 1, "FP16": 1}}
    assert [layer["name"] for layer in summary["dla_layers"]] == [TRT10_DLA_ENGINE["Layers"][2]["Name"]]
    assert summary["dla_layers"][0] == {"name": TRT10_DLA_ENGINE["Layers"][2]["Name"], "type": "DlaNetwork",
                                        "precision": "INT8"}
    # a GPU build: its ForeignNode layers are Myelin subgraphs, not DLA
    gpu = summarize_engine_layers(TRT10_DLA_ENGINE, dla_build=False)
    dla_layer = TRT10_DLA_ENGINE["Layers"][2] | {"LayerType": "Reformat"}
    assert not is_dla_layer(dla_layer, dla_build=False) and is_dla_layer(dla_layer, dla_build=True)
    assert "DLA" in summarize_engine_layers(TRT10_DLA_ENGINE, dla_build=True)["by_device"]
    assert is_dla_layer(TRT10_DLA_ENGINE["Layers"][2], dla_build=False)  # its type names the DLA
    assert gpu["by_device"]["GPU"]["FP32"] == 3 and gpu["by_device"]["DLA"] == {"INT8": 1}
    assert not is_dla_layer(TRT10_DLA_ENGINE["Layers"][5], dla_build=True)  # Myelin on the GPU


def test_layer_summary_reads_tensorrt11_datatypes_and_name_only_engines() -> None:
    """TensorRT 11 splits "Format/Datatype" into "Format" and "DataType" ("Migrating IEngineInspector Usage")."""
    trt11 = {"Layers": [{"Name": "{ForeignNode[/conv1/Conv...]}", "LayerType": "DLA",
                         "Outputs": [{"Name": "r", "Format": "Channel major", "DataType": "Int8"}]},
                        {"Name": "tail/div", "LayerType": "ElementWise",
                         "Outputs": [{"Name": "embeddings", "Format": "Row major linear", "DataType": "Float"}]}],
             "I/O Tensors": [{"Name": "images", "IOMode": "Input", "DataType": "UInt8"}]}
    summary = summarize_engine_layers(trt11, dla_build=True)
    assert summary["by_device"] == {"DLA": {"INT8": 1}, "GPU": {"FP32": 1}}
    names_only = summarize_engine_layers({"Layers": ["{ForeignNode[/conv1/Conv...]}", "tail/div"]}, dla_build=True)
    assert names_only["detailed"] is False and names_only["layers"] == 2 and len(names_only["dla_layers"]) == 1
    with pytest.raises(ValueError, match="no 'Layers' list"):
        summarize_engine_layers("{}", dla_build=True)
    assert tensor_precision({"Format/Datatype": "Row major linear BFloat16 format"}) == "BF16"
    assert tensor_precision({}) == "unknown"
