"""Every shipped preset (``configs/*.toml``) and every train recipe (``train.config.PRESETS``) goes through the one
validator (``core.config.config_from_dict``) of each section, as a user's file would (torchtune-style)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from edge_encoder.evaluate.suite import eval_config_from_dict
from edge_encoder.export.config import export_settings_from_dict
from edge_encoder.imagedata.config import data_settings_from_dict
from edge_encoder.train.config import PRESETS, preset_config, train_config_from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
VALIDATORS = {"data": data_settings_from_dict, "train": train_config_from_dict, "export": export_settings_from_dict,
              "evaluate": eval_config_from_dict}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates_section_by_section(path: Path) -> None:
    config = tomllib.loads(path.read_text())
    assert config["name"] == path.stem and set(config) <= {"name", *VALIDATORS}
    for section, validate in VALIDATORS.items():
        settings = validate(config.get(section, {}))
        # what the file says is what the run gets (nothing dropped or renamed on the way)
        assert {k: settings.to_dict()[k] for k in config.get(section, {})} == {
            k: list(v) if isinstance(v, tuple) else v for k, v in config.get(section, {}).items()}


def test_there_are_shipped_configs() -> None:
    assert {p.stem for p in CONFIGS} >= {"digits_cpu", "cifar10_cpu", "cifar10_gpu_resnet18"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_train_recipe_validates(name: str) -> None:
    assert preset_config(name).to_dict() == train_config_from_dict(PRESETS[name]).to_dict()


def test_the_gpu_cifar_config_is_the_demo_recipe() -> None:
    """configs/cifar10_gpu_resnet18.toml says it runs the MoCo CIFAR demo: its [train] must agree with PRESETS."""
    train = tomllib.loads((CONFIGS[0].parent / "cifar10_gpu_resnet18.toml").read_text())["train"]
    speed_and_bookkeeping = {"bf16", "channels_last", "knn_every_epochs"}
    config, demo = train_config_from_dict(train).to_dict(), preset_config("cifar_demo").to_dict()
    differing = {k for k in config if config[k] != demo[k]}
    assert differing <= speed_and_bookkeeping, {k: (config[k], demo[k]) for k in differing - speed_and_bookkeeping}


@pytest.mark.parametrize("section, values, message", [
    ("data", {"seed": -1}, "config key 'data.seed': must be >= 0"),
    ("data", {"image_size": 4}, "config key 'data.image_size': must be 0 (the images' own size) or >= 8"),
    ("data", {"max_test": 1}, "config key 'data.max_test': must be 0 (all) or >= 2"),
    ("data", {"stream": 1}, "config key 'data.stream': expected bool, got int"),
    ("export", {"variants": ["fp16", "int8_cpu"]}, "config key 'export.variants': must include 'fp32'"),
    ("export", {"variants": []}, "config key 'export.variants': an empty list not allowed"),
    ("export", {"variants": ["fp32", "fp32"]}, "config key 'export.variants': lists a variant twice"),
    ("export", {"calibration_images": 0}, "config key 'export.calibration_images': must be >= 1"),
    ("export", {"parity_images": 1}, "config key 'export.parity_images': must be >= 2"),
    ("export", {"opset": 9}, "config key 'export.opset': must lie in [13, 21]"),
    ("export", {"exporter": "onnx"}, "config key 'export.exporter': must be one of"),
    ("export", {"int8_stem": "int4"}, "config key 'export.int8_stem': not allowed; choose from"),
    ("export", {"int8_stem": "fp32", "dla_batch": 8}, "config key 'export.int8_stem': 'fp32' cannot run on the DLA"),
    ("export", {"variantz": ["fp32"]}, "config key 'export.variantz': unknown key; did you mean 'variants'?"),
    ("train", {"epochs": 0}, "config key 'train.epochs': must be >= 1"),
    ("evaluate", {"retrieval_ks": [0]}, "config key 'evaluate.retrieval_ks': must be a non-empty list of ranks"),
    ("evaluate", {"num_threads": "2"}, "config key 'evaluate.num_threads': expected int or null, got str"),
])
def test_one_error_style_for_every_section(section: str, values: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        VALIDATORS[section](values)
    assert str(err.value).startswith(message), str(err.value)


def test_int8_stem_auto_is_float_on_gpu_and_int8_for_dla() -> None:
    """The stem conv stays FP32 unless a DLA batch is asked for (DLA has no FP32); the choice reaches the quantizer."""
    cases = [({}, True, True), ({"dla_batch": 8}, False, True), ({"int8_stem": "int8"}, False, False),
             ({"int8_stem": "fp32"}, True, True)]
    for values, trt_float, cpu_float in cases:
        quant = export_settings_from_dict(values).bundle_config().quant_configs
        assert (quant["int8_trt"].float_input_convs, quant["int8_cpu"].float_input_convs) == (trt_float, cpu_float), \
            values


def test_calibration_method_auto_is_each_flavours_own() -> None:
    """auto: entropy for int8_trt (TensorRT's preferred calibrator), percentile for int8_cpu; a method names both."""
    quant = export_settings_from_dict({}).bundle_config().quant_configs
    assert (quant["int8_trt"].calibrate_method, quant["int8_cpu"].calibrate_method) == ("entropy", "percentile")
    quant = export_settings_from_dict({"calibration_method": "minmax"}).bundle_config().quant_configs
    assert {q.calibrate_method for q in quant.values()} == {"minmax"}


# ---------------------------------------------------------------------------------------------- non-finite floats
# Issue 18: `inf` passed validation and failed at the first step (exit 3) while `nan` was refused up front. Every
# float a config section holds, at any depth (evaluate.extra_knn's temperatures), is now refused when not finite.

def _section_classes() -> dict[str, type]:
    from edge_encoder.evaluate.suite import EvalConfig
    from edge_encoder.export.config import ExportSettings
    from edge_encoder.imagedata.config import DataSettings
    from edge_encoder.train.config import TrainConfig

    return {"data": DataSettings, "train": TrainConfig, "export": ExportSettings, "evaluate": EvalConfig}


def _holds_float(hint: object) -> bool:
    import typing

    return hint is float or any(_holds_float(a) for a in typing.get_args(hint) if a is not Ellipsis)


def _user_value(hint: object, bad: float) -> object:
    """A TOML-like value of type ``hint`` whose floats are all ``bad`` (ints 1, strings 'x')."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _user_value(next(a for a in args if _holds_float(a)), bad)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return [_user_value(a, bad) for a in args]
        return [_user_value(args[0], bad)]
    return {float: bad, int: 1, str: "x", bool: False}[hint]  # type: ignore[index]


def _float_keys() -> list[tuple[str, str, object]]:
    import dataclasses
    import typing

    keys = []
    for section, cls in _section_classes().items():
        hints = typing.get_type_hints(cls)
        keys += [(section, f.name, hints[f.name]) for f in dataclasses.fields(cls) if _holds_float(hints[f.name])]
    return keys


FLOAT_KEYS = _float_keys()


def test_the_walk_finds_the_float_keys() -> None:
    found = {f"{s}.{k}" for s, k, _ in FLOAT_KEYS}
    assert {"data.test_fraction", "train.temperature", "train.base_lr", "train.key_momentum",
            "evaluate.knn_temperature", "evaluate.extra_knn", "evaluate.index_recall_target"} <= found, found
    assert len(found) >= 20


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("section, key, hint", FLOAT_KEYS, ids=[f"{s}.{k}" for s, k, _ in FLOAT_KEYS])
def test_every_float_key_refuses_inf_and_nan(section: str, key: str, hint: object, bad: float) -> None:
    with pytest.raises(ValueError) as err:
        VALIDATORS[section]({key: _user_value(hint, bad)})
    assert str(err.value).startswith(f"config key '{section}.{key}': must be a finite number, got "), str(err.value)


def test_a_toml_inf_from_the_command_line_is_refused_by_name() -> None:
    from edge_encoder.core.errors import UsageError
    from edge_encoder.settings import parse_override, validate_config

    (section, key), value = parse_override("train.base_lr=inf")
    with pytest.raises(UsageError, match=r"config key 'train.base_lr': must be a finite number, got inf"):
        validate_config({section: {key: value}}, "x")


@pytest.mark.parametrize("section, key, value", [
    ("train", "temperature", 1e-30), ("train", "temperature", 1e-3), ("train", "temperature", 11.0),
    ("evaluate", "knn_temperature", 1e-30), ("evaluate", "knn_temperature", 100.0),
    ("evaluate", "extra_knn", [[200, 1e-4]]),
])
def test_temperatures_outside_the_published_range_are_refused(section: str, key: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"config key '{section}.{key}': .*0.01, 10"):
        VALIDATORS[section]({key: value})


@pytest.mark.parametrize("value", [0.01, 0.07, 0.2, 1.0, 10.0])
def test_published_temperatures_are_accepted(value: float) -> None:
    assert train_config_from_dict({"temperature": value}).temperature == value
    assert eval_config_from_dict({"knn_temperature": value, "extra_knn": [[200, value]]}).knn_temperature == value
