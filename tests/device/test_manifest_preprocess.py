"""The manifest's preprocessing (``input.image_size`` + ``preprocessing``) to and from ``core.contract.Preprocess``:
written by ``export.bundle`` through ``preprocessing_section``, read by ``manifest_preprocess`` (``open_engine``, the
TensorRT engine's fallback)."""

from __future__ import annotations

import copy

import pytest
from edge_encoder.core.contract import Preprocess
from edge_encoder.device.manifest import check_manifest, manifest_preprocess, preprocessing_section

PRE = Preprocess(16, [0.491, 0.482, 0.447], [0.247, 0.243, 0.261])
# The section export.bundle wrote before the type existed (same keys, order and values): a bundle exported by the
# previous code is read unchanged, and a new one is byte-identical.
OLD_FLOAT_SECTION = {"in_graph": False, "scale": 1 / 255, "mean": [0.491, 0.482, 0.447], "std": [0.247, 0.243, 0.261],
                     "formula": "((x / 255) - mean) / std, per RGB channel",
                     "applied_by": "the caller (upstream, e.g. DeepStream/Triton), before the graph input; "
                                   "export.engines applies it itself when given uint8 NHWC images"}


def _manifest(section: dict) -> dict:
    manifest = {"format": "edge-encoder/deploy-bundle/1", "input": {"image_size": 16}, "preprocessing": section,
                "output": {"embedding_dim": 8}, "variants": {"fp32": {"file": "encoder_fp32.onnx", "sha256": "0" * 64}},
                "provenance": {}}
    check_manifest(manifest)
    return manifest


def test_the_section_is_what_bundles_always_held() -> None:
    assert list(preprocessing_section(PRE, False).items()) == list(OLD_FLOAT_SECTION.items())
    in_graph = {k: v for k, v in OLD_FLOAT_SECTION.items() if k != "applied_by"} | {"in_graph": True}
    assert list(preprocessing_section(PRE, True).items()) == list(in_graph.items())


@pytest.mark.parametrize("in_graph", [True, False])
def test_written_and_read_back_is_the_same_preprocess(in_graph: bool) -> None:
    assert manifest_preprocess(_manifest(preprocessing_section(PRE, in_graph))) == PRE
    assert manifest_preprocess(_manifest(OLD_FLOAT_SECTION)) == PRE


@pytest.mark.parametrize("edit, key", [
    (lambda m: m["input"].pop("image_size"), "missing key 'input.image_size'"),
    (lambda m: m["input"].update(image_size=0), "key 'input.image_size' must be an integer > 0"),
    (lambda m: m["preprocessing"].update(std=[0.2, 0.0, 0.2]), "key 'preprocessing.std' must be 3 numbers > 0"),
    (lambda m: m["preprocessing"].update(mean=[0.5, 0.5]), "key 'preprocessing.mean' must be a list of 3 numbers"),
    (lambda m: m.pop("preprocessing"), "missing key 'preprocessing'"),
])
def test_a_malformed_manifest_names_the_file_and_the_key(edit, key: str) -> None:  # noqa: ANN001
    manifest = copy.deepcopy(_manifest(preprocessing_section(PRE, False)))
    edit(manifest)
    with pytest.raises(ValueError) as err:
        manifest_preprocess(manifest, "bundle/manifest.json")
    assert str(err.value).startswith(f"bundle/manifest.json: {key}"), str(err.value)
