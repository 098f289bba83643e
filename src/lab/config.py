"""Load a section of ``params.yaml`` into frozen dataclasses, strictly.

``params.yaml`` is the one source of values. Its top level holds ``profile`` (smoke | paper | tiny),
``seed`` and one mapping per stage or paper. A section may carry ``profiles: {tiny: {...}, paper: {...}}``
whose keys are deep-merged over the section's own keys when that profile is active, so switching
``profile`` switches every stage at once (``dvc exp run -S profile=tiny``).

Every error names the file and the dotted key: unknown keys (with a close-match hint), wrong types
(``"true"`` is not a bool: DVC templating turns booleans into strings, so we refuse them here),
missing keys and missing sections.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin

import yaml

from lab.paths import repo_root

PROFILES = ("smoke", "paper", "tiny")
T = TypeVar("T")

# section name -> dataclass; filled by @section in lab.sections (and later method schemas).
SECTIONS: dict[str, type] = {}


class ConfigError(ValueError):
    """A params file does not match its schema; the message names file and key."""


def section(name: str):
    """Register a frozen dataclass as the schema of ``params.yaml`` section ``name``."""

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
            raise TypeError(f"{cls.__name__} must be a frozen dataclass")
        SECTIONS[name] = cls
        return cls

    return register


def params_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path) if path is not None else repo_root() / "params.yaml"


def read_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The raw mapping in ``params.yaml`` (no validation)."""
    p = params_path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def active_profile(path: str | os.PathLike | None = None, raw: Mapping[str, Any] | None = None) -> str:
    raw = read_params(path) if raw is None else raw
    profile = raw.get("profile", "smoke")
    if profile not in PROFILES:
        raise ConfigError(f"{params_path(path)}: profile: expected one of {PROFILES}, got {profile!r}")
    return profile


def load(name: str, profile: str | None = None, path: str | os.PathLike | None = None):
    """Section ``name`` of ``params.yaml`` for ``profile`` (default: the file's ``profile``)."""
    import lab.sections  # noqa: F401  (registers the schemas)

    file = params_path(path)
    raw = read_params(file)
    profile = profile or active_profile(file, raw)
    if profile not in PROFILES:
        raise ConfigError(f"{file}: profile: expected one of {PROFILES}, got {profile!r}")
    if name not in SECTIONS:
        raise ConfigError(f"{file}: no schema for section {name!r}; known: {sorted(SECTIONS)}")
    if name not in raw:
        raise ConfigError(f"{file}: missing section {name!r}")
    values = resolve_profile(raw[name], profile, f"{file}: {name}")
    return build(SECTIONS[name], values, f"{file}: {name}")


def load_all(profile: str | None = None, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Every registered section that ``params.yaml`` holds, validated for ``profile``."""
    import lab.sections  # noqa: F401

    raw = read_params(path)
    file = params_path(path)
    for key in raw:
        if key not in SECTIONS and key not in ("profile", "seed"):
            raise ConfigError(f"{file}: unknown top-level key {key!r}{_hint(key, [*SECTIONS, 'profile', 'seed'])}")
    return {name: load(name, profile, path) for name in SECTIONS if name in raw}


def resolve_profile(values: Any, profile: str, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    values = dict(values)
    overrides = values.pop("profiles", None) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}.profiles: expected a mapping of profile -> overrides")
    for p in overrides:
        if p not in PROFILES:
            raise ConfigError(f"{where}.profiles: unknown profile {p!r}{_hint(p, PROFILES)}")
    return _merge(values, overrides.get(profile) or {}, f"{where}.profiles.{profile}")


def _merge(base: dict, over: Mapping, where: str) -> dict:
    if not isinstance(over, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(over).__name__}")
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v, f"{where}.{k}")
        else:
            out[k] = v
    return out


def build(cls: type[T], values: Any, where: str) -> T:
    """Instantiate dataclass ``cls`` from a plain mapping, checking every key and type."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{_hint(str(key), fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in values:
            kwargs[name] = _coerce(hints[name], values[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing key {name!r}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} ({value!r})")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        kt, vt = args or (str, Any)
        return types.MappingProxyType(
            {_coerce(kt, k, f"{where}.{k}"): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
        )
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected a bool (true/false, unquoted), got {type(value).__name__} ({value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an int, got {type(value).__name__} ({value!r})")
        return value
    if tp is float:
        # YAML reads 1e-4 as a string (YAML 1.1 needs a dot): accept only real numbers, say so.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (write 1.0e-4, not 1e-4, for YAML)" if isinstance(value, str) else ""
            raise ConfigError(f"{where}: expected a float, got {type(value).__name__} ({value!r}){hint}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} ({value!r})")
        return value
    raise TypeError(f"{where}: unsupported schema type {tp!r}")


def _hint(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {sorted(known)})"


def as_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a config dataclass to ``{"a.b": value}`` for MLflow params."""
    out: dict[str, Any] = {}
    if dataclasses.is_dataclass(obj):
        items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    elif isinstance(obj, Mapping):
        items = obj.items()
    else:
        return {prefix.rstrip("."): obj}
    for k, v in items:
        key = f"{prefix}{k}"
        if dataclasses.is_dataclass(v) or isinstance(v, Mapping):
            out.update(as_flat_dict(v, key + "."))
        elif isinstance(v, tuple):
            out[key] = ",".join(map(str, v))
        else:
            out[key] = v
    return out


def as_plain(obj: Any) -> Any:
    """A config dataclass as plain dicts/lists (JSON- and papermill-friendly)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: as_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_plain(v) for v in obj]
    return obj
