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
accepted for either and stored as the annotated container). ``bool`` is never accepted as a number.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


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


def _coerce(section: str, key: str, value: Any, hint: Any) -> Any:
    try:
        return _convert(value, hint)
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
            return float(value)
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
