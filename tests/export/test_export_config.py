"""The two export config types agree: ``ExportConfig`` (what ``export_bundle`` takes, library callers build it) and
``ExportSettings`` (the ``[export]`` section a run reads) share each default through one constant."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from edge_encoder.export.config import DEFAULT_OPSET, ExportConfig, ExportSettings, export_settings_from_dict

SHARED = sorted({f.name for f in dataclasses.fields(ExportSettings)} & {f.name for f in dataclasses.fields(ExportConfig)})


def _default(cls: type, name: str) -> Any:
    (spec,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default


def test_the_shared_fields_are_the_ones_expected() -> None:
    """A field added to both types is covered by the test below; one renamed on one side shows up here."""
    assert SHARED == ["allow_failed", "dla_batch", "exporter", "opset", "variants"]


@pytest.mark.parametrize("name", SHARED)
def test_every_shared_field_has_one_default(name: str) -> None:
    """A library caller building ``ExportConfig()`` gets what a run with an empty ``[export]`` section gets (the
    opset was 17 there and 18 in a run)."""
    assert _default(ExportConfig, name) == _default(ExportSettings, name), name


def test_a_run_and_a_library_caller_export_at_the_same_opset() -> None:
    assert ExportConfig().opset == export_settings_from_dict({}).bundle_config().opset == DEFAULT_OPSET == 18


def test_bundle_config_passes_every_shared_field_through() -> None:
    """What the section sets reaches ``export_bundle`` (``allow_failed`` excepted: the run applies the gate itself,
    so the bundle keeps every variant)."""
    values = {"variants": ["fp32", "int8_trt"], "opset": 17, "exporter": "torchscript", "dla_batch": 4,
              "allow_failed": True}
    config = export_settings_from_dict(values).bundle_config()
    assert (list(config.variants), config.opset, config.exporter, config.dla_batch) == \
        (values["variants"], values["opset"], values["exporter"], values["dla_batch"])
    assert config.allow_failed is True and export_settings_from_dict({}).bundle_config().allow_failed is True
