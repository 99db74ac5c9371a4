"""One validator for every config section: unknown keys, types, then the section's own range checks.

Each stage owns its section as a frozen dataclass (``[data]`` -> ``imagedata.config.DataSettings``, ``[train]``
-> ``train.config.TrainConfig``, ``[export]`` -> ``export.config.ExportSettings``, ``[evaluate]`` ->
``evaluate.suite.EvalConfig``) whose ``__post_init__`` calls :func:`check_types` and then :func:`require` for its
ranges. User input goes through :func:`config_from_dict`. Every mistake is a ``ValueError`` in one style::

    config key 'train.batch_size': expected int, got bool (True)
    config key 'data.seed': must be >= 0, got -1
    config key 'export.variantz': unknown key; did you mean 'variants'? (known keys: ...)

Types come from the dataclass annotations: ``bool``, ``int``, ``float`` (an int is widened), ``str``, unions
(``int | None``, ``str | bool``), ``tuple[int, ...]`` / ``tuple[int, float]`` / ``list[str]`` (a TOML array is
accepted for either and stored as the annotated container). ``bool`` is never accepted as a number, and a
``float`` must be finite wherever it appears (TOML's ``inf``, ``-inf``, ``nan`` are refused here for every key:
``config key 'train.base_lr': must be a finite number, got inf``); ranges are the section's own.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

# The softmax temperature of the contrastive loss (train.temperature) and of the weighted kNN vote
# (evaluate.knn_temperature, evaluate.extra_knn). Published values lie in [0.05, 1]: MoCo v1 0.07, MoCo v2 0.2,
# MoCo v3 1.0 (ResNet) and 0.2 (ViT), the MoCo CIFAR-10 demo 0.1, SimCLR's sweep 0.05..1 (Chen et al. 2020,
# table 5); kNN votes 0.07 (Wu et al. 2018, DINO) and 0.1 (the MoCo demo). The range leaves a factor of 5 below and
# 10 above them. Below 0.01 the logits cos / T pass 100: the softmax is a hard max (one negative takes the whole
# gradient, which grows as 1 / T: T = 1e-30 ends in a non-finite loss at the first step), and the kNN weights
# exp(cos / T) overflow float64 below T = 1 / 709. Above 10 every logit lies within +-0.1 of the others: a
# near-uniform softmax that carries no signal.
TEMPERATURE_RANGE = (0.01, 10.0)


def require(ok: bool, section: str, key: str, message: str, value: Any) -> None:
    """Raise ``ValueError("config key 'section.key': message, got value")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"config key '{section}.{key}': {message}, got {value!r}")


def config_from_dict(section: str, cls: type[T], values: Mapping[str, Any]) -> T:
    """Build the frozen dataclass ``cls`` of config section ``section`` from user input.

    Unknown keys are refused (with the closest known names); types and ranges are checked by ``cls`` itself
    (its ``__post_init__`` calls :func:`check_types`), so code that builds ``cls(...)`` directly is checked alike.

    Raises:
        ValueError: ``values`` is not a table, a key is unknown, a value has the wrong type or range.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"config section [{section}] must be a table, got {type(values).__name__} ({values!r})")
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"config key '{section}.{key}': unknown key{hint} (known keys: {', '.join(sorted(known))})")
    return cls(**values)


def check_types(section: str, instance: Any) -> None:
    """Check every field of the frozen dataclass ``instance`` against its annotation and store the coerced value
    (int -> float where a float is expected, arrays -> the annotated tuple/list). Call it first in ``__post_init__``."""
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = _coerce(section, f.name, getattr(instance, f.name), hints[f.name])
        object.__setattr__(instance, f.name, value)


class _Mismatch(Exception):
    pass


class _NotFinite(Exception):
    """A float that is inf or nan: the right type, never a usable value (not tried against other union options)."""


def _coerce(section: str, key: str, value: Any, hint: Any) -> Any:
    try:
        return _convert(value, hint)
    except _NotFinite:
        raise ValueError(f"config key '{section}.{key}': must be a finite number, got {value!r}") from None
    except _Mismatch:
        raise ValueError(f"config key '{section}.{key}': expected {_describe(hint)}, got {type(value).__name__} "
                         f"({value!r})") from None


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` describes it, or ``_Mismatch``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _convert(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is Any:
        return value
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[int, float]
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_convert(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        items = [_convert(v, item) for v in value]
        return tuple(items) if (origin or hint) is tuple else items
    # bool is a subclass of int in Python, but `batch_size = true` is a mistake, not a 1.
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float's range
                raise _NotFinite from None
            if not math.isfinite(number):
                raise _NotFinite
            return number
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"config fields of type {hint!r} are not supported by core.config")  # a programming error


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "null"
    if origin in (tuple, list) or hint in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"[{', '.join(_describe(a) for a in args)}]"
        return f"a list of {_describe(args[0])}" if args else "a list"
    return getattr(hint, "__name__", str(hint))
