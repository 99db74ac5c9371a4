"""A run's settings: the presets, the ``--set`` override syntax, and validation into one typed ``Settings``.

A config is a dict of sections (``name``, ``[data]``, ``[train]``, ``[export]``, ``[evaluate]``) read from a TOML
preset (``configs/*.toml``, shipped with the wheel as package data) and changed by overrides; each section is
validated by the stage that owns it (``imagedata.config``, ``train.config``, ``export.config``,
``evaluate.suite``) and the result is frozen. Errors are :class:`core.errors.UsageError` naming the file, key or
value (exit 2). How the command line fills a config (flags, ``--set``) lives in ``commands/options.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_encoder.core.errors import UsageError

if TYPE_CHECKING:  # the stage validators import the training stack (torch): see validate_config
    from edge_encoder.evaluate.suite import EvalConfig
    from edge_encoder.export.config import ExportSettings
    from edge_encoder.imagedata.config import DataSettings
    from edge_encoder.train.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "digits_cpu.toml"
# The default without --config when the images are files (folder:, images:, list: specs): the digits preset
# would shrink photos to its 16 px (commands.options.default_preset).
PHOTO_CONFIG = CONFIG_DIR / "photos_cpu.toml"
SECTIONS = ("name", "data", "train", "export", "evaluate")
STAGE_SECTIONS = SECTIONS[1:]


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one run, one frozen dataclass per section, each owned by its stage."""

    name: str
    data: DataSettings
    train: TrainConfig
    export: ExportSettings
    evaluate: EvalConfig

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain values (``config.json``, the report's ``config``)."""
        return {"name": self.name, "data": self.data.to_dict(), "train": self.train.to_dict(),
                "export": self.export.to_dict(), "evaluate": self.evaluate.to_dict()}


def validate_config(config: dict[str, Any], name: str | None) -> Settings:
    """Every section through its stage's validator (``core.config.config_from_dict``), before anything runs;
    ``name`` (when given) replaces the config's ``name``."""
    # Imported here, not at the top: the presets and the override syntax above serve the parsers of every command,
    # which the base install (no torch) builds for `edge-encoder --help`; only validation needs the stages.
    from edge_encoder.evaluate.suite import eval_config_from_dict
    from edge_encoder.export.config import export_settings_from_dict
    from edge_encoder.imagedata.config import data_settings_from_dict
    from edge_encoder.train.config import train_config_from_dict

    try:
        data = data_settings_from_dict(config.get("data", {}))
        train = train_config_from_dict(config.get("train", {}))
        export = export_settings_from_dict(config.get("export", {}))
        evaluation = eval_config_from_dict(config.get("evaluate", {}))
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    run_name = name or config.get("name") or "run"
    if not isinstance(run_name, str) or not run_name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"run name {run_name!r} must use letters, digits, '-', '_' or '.' only")
    return Settings(run_name, data, train, export, evaluation)


def shipped_presets() -> list[str]:
    """The names of the presets shipped in ``configs/`` (``cifar10_cpu``, ``digits_cpu``, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def preset_path(text: str) -> Path:
    """``--config`` as a file path, or a shipped preset's name (``cifar10_cpu``: ``configs/cifar10_cpu.toml``, which
    an installed wheel carries as package data) when no such file exists."""
    path = Path(text).expanduser()
    shipped = CONFIG_DIR / f"{text}.toml"
    if not path.exists() and path.name == text and shipped.is_file():
        return shipped
    return path


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML preset into ``{section: {key: value}}`` (every stage section present); errors name the file."""
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        with path.open("rb") as handle:
            config = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise UsageError(f"config file {path}: unknown section(s) {sorted(unknown)}; allowed: {list(SECTIONS)}")
    for section in STAGE_SECTIONS:
        config.setdefault(section, {})
        if not isinstance(config[section], dict):
            raise UsageError(f"config file {path}: section [{section}] must be a table")
    return config


def parse_override(text: str) -> tuple[tuple[str, str], Any]:
    """``"train.epochs=5"`` -> (("train", "epochs"), 5); values are TOML literals, bare words are strings."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or parts[0] not in STAGE_SECTIONS or not parts[1]:
        raise UsageError(f"override {text!r} must look like SECTION.KEY=VALUE with SECTION in {list(STAGE_SECTIONS)}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return (parts[0], parts[1]), value


def apply_overrides(config: dict[str, Any], texts: Iterable[str], *, sections: Iterable[str] = STAGE_SECTIONS,
                    fixed: dict[tuple[str, str], tuple[Any, str]] | None = None) -> dict[str, Any]:
    """Apply ``--set SECTION.KEY=VALUE`` overrides to ``config`` (in place; returned), the one override parser of
    every command. ``sections`` are those the command takes; ``fixed`` maps a key the command sets itself to
    ``(its value, why)``: an override giving another value (any value, when its value is None) is refused."""
    sections = tuple(sections)
    for text in texts:
        (section, key), value = parse_override(text)
        if section not in sections:
            raise UsageError(f"override {text!r}: this command takes {'/'.join(s + '.KEY' for s in sections)} only")
        pinned, why = (fixed or {}).get((section, key), (value, ""))
        if why and (pinned is None or value != pinned):
            raise UsageError(f"override {text!r}: {why}")
        config.setdefault(section, {})[key] = value
    return config
