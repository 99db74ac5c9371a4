import pytest
from edge_encoder.train.config import (
    PRESETS,
    TrainConfig,
    preset_config,
    train_config_from_dict,
)


def test_defaults_roundtrip_through_dict() -> None:
    config = TrainConfig()
    assert train_config_from_dict(config.to_dict()) == config


def test_unknown_key_is_named_with_suggestion() -> None:
    with pytest.raises(ValueError, match=r"config key 'train.batch_sise': unknown key; did you mean 'batch_size'"):
        train_config_from_dict({"batch_sise": 64})
    with pytest.raises(ValueError, match="config key 'train.tempreature': unknown key"):
        preset_config("moco_v2", tempreature=0.1)  # an override goes through the same validator


@pytest.mark.parametrize("key, value, expected", [
    ("batch_size", True, "expected int, got bool"),  # bool is not an int
    ("batch_size", 3.0, "expected int, got float"),
    ("base_lr", "0.1", "expected float, got str"),
    ("symmetric", 1, "expected bool, got int"),
    ("bf16", 1, "expected str or bool, got int"),
    ("method", 2, "expected str, got int"),
    ("data_workers", 2.0, "expected int or str, got float"),
])
def test_wrong_types_name_key_expected_and_given(key: str, value: object, expected: str) -> None:
    with pytest.raises(ValueError, match=rf"config key 'train.{key}': {expected}"):
        train_config_from_dict({key: value})


def test_int_accepted_for_float() -> None:
    config = train_config_from_dict({"base_lr": 1, "temperature": 1})
    assert config.base_lr == 1.0 and isinstance(config.base_lr, float)


@pytest.mark.parametrize("overrides, key", [
    ({"queue_size": 0}, "queue_size"),
    ({"key_momentum": 1.01}, "key_momentum"),
    ({"key_momentum": -0.1}, "key_momentum"),
    ({"batch_size": 1}, "batch_size"),
    ({"temperature": 0.0}, "temperature"),
    ({"method": "simclr"}, "method"),
    ({"optimizer": "adam"}, "optimizer"),
    ({"grayscale_prob": 1.5}, "grayscale_prob"),
    ({"crop_min_scale": 0.0}, "crop_min_scale"),
    ({"warmup_epochs": 20.0, "epochs": 10}, "warmup_epochs"),
    ({"bf16": "maybe"}, "bf16"),
    ({"split_bn_groups": 0}, "split_bn_groups"),
    ({"keep_last": 0}, "keep_last"),
    ({"data_workers": -1}, "data_workers"),
    ({"data_workers": "many"}, "data_workers"),
])
def test_range_errors_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ValueError, match=f"config key 'train.{key}': "):
        train_config_from_dict(overrides)


def test_queue_size_ignored_without_queue() -> None:
    assert train_config_from_dict({"method": "moco_v3", "queue_size": 0}).queue_size == 0


def test_presets_hold_the_published_defaults() -> None:
    """The reference values written beside each preset (train/config.py PRESETS)."""
    v1, v2, v3, demo = (preset_config(n) for n in ("moco_v1", "moco_v2", "moco_v3", "cifar_demo"))
    assert (v1.method, v1.temperature, v1.queue_size, v1.key_momentum) == ("moco_v1", 0.07, 65536, 0.999)
    assert (v1.base_lr * v1.batch_size / 256, v1.weight_decay, v1.epochs) == (0.03, 1e-4, 200)
    assert (v1.color_jitter_prob, v1.hue_strength, v1.blur_prob) == (1.0, 0.4, 0.0)
    assert (v2.method, v2.temperature, v2.blur_prob, v2.grayscale_prob) == ("moco_v2", 0.2, 0.5, 0.2)
    assert (v2.queue_size, v2.key_momentum, v2.crop_min_scale, v2.epochs) == (65536, 0.999, 0.2, 200)
    assert (v3.method, v3.symmetric, v3.key_momentum_schedule, v3.optimizer) == ("moco_v3", True, "cosine", "lars")
    assert (v3.temperature, v3.key_momentum, v3.proj_hidden_dim, v3.proj_dim, v3.pred_hidden_dim) == (1.0, 0.99, 4096, 256, 4096)
    assert (v3.base_lr, v3.batch_size, v3.weight_decay, v3.warmup_epochs, v3.epochs) == (0.6, 4096, 1e-6, 10.0, 100)
    assert (v3.crop_min_scale, v3.split_bn_groups, v3.ddp_bn) == (0.2, 1, "sync")
    assert (demo.method, demo.width, demo.stem, demo.proj_dim) == ("moco_v1", 64, "cifar", 128)  # no MLP head
    assert (demo.queue_size, demo.key_momentum, demo.temperature, demo.batch_size) == (4096, 0.99, 0.1, 512)
    assert demo.base_lr * demo.batch_size / 256 == pytest.approx(0.06)  # lr 0.06 at batch 512
    assert (demo.weight_decay, demo.split_bn_groups, demo.epochs, demo.crop_min_scale) == (5e-4, 8, 200, 0.08)
    assert (demo.symmetric, demo.blur_prob) == (False, 0.0)
    assert set(PRESETS) == {"moco_v1", "moco_v2", "moco_v3", "cifar_demo"}
    with pytest.raises(ValueError, match="unknown train preset 'byol'"):
        preset_config("byol")
