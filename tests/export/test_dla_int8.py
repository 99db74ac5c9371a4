"""int8_trt's DLA graphs (export.dla_int8): the Q/DQ-free graph computes what int8_trt's weights compute in float, the
Q/DQ-everywhere graph stays close to int8_trt, and a calibration that is not int8_trt's is refused. Unverified on an
Orin: ONNX Runtime stands in for the DLA here."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
from edge_encoder.export.dla_int8 import build_dla_int8, dla_tensors, qdq_scales
from edge_encoder.export.onnx_export import build_fp32_encoder
from edge_encoder.export.precision import INT8_FLAVOURS, make_variant

from tests.export.conftest import PREPROCESS

DLA_INT8 = dataclasses.replace(INT8_FLAVOURS["int8_trt"], float_input_convs=False)


@pytest.fixture(scope="module")
def graphs(backbone, random_images):
    fp32 = build_fp32_encoder(backbone, PREPROCESS, exporter="torchscript")[0]
    int8 = make_variant(fp32, "int8_trt", random_images, DLA_INT8)
    return fp32, int8, build_dla_int8(fp32, int8, random_images, DLA_INT8)


def _run(model, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


def test_dla_graphs_compute_int8_trt(graphs, random_images) -> None:
    fp32, int8, dla = graphs
    ref, q, implicit, explicit = (_run(m, random_images) for m in (fp32, int8, dla.implicit, dla.explicit))
    cos = lambda a, b: float((a * b).sum(1).min())  # noqa: E731 - rows are L2-normalised
    assert cos(implicit, ref) > 0.999  # float activations, int8_trt's INT8 weights
    assert cos(explicit, q) > 0.99 and cos(explicit, ref) > 0.99  # every trunk tensor INT8 on top of int8_trt
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in dla.implicit.graph.node)
    assert set(qdq_scales(dla.explicit)) == set(dla.scales) == set(dla_tensors(dla.implicit))
    assert dla.stats["int8_trt_max_rel_diff"] == 0.0 and dla.stats["calibrated"] > 0


def test_a_calibration_that_is_not_int8_trts_is_refused(graphs, random_images) -> None:
    fp32, int8, _ = graphs
    other = dataclasses.replace(DLA_INT8, calibrate_method="percentile")  # int8 was calibrated with entropy
    with pytest.raises(ValueError, match="not the same calibration"):
        build_dla_int8(fp32, int8, random_images, other)
    with pytest.raises(ValueError, match="DLA INT8 needs int8 activations"):
        build_dla_int8(fp32, int8, random_images, dataclasses.replace(DLA_INT8, activation_type="uint8"))
