"""Load a section of ``params.yaml`` into frozen dataclasses, strictly.

``params.yaml`` is the one source of values. Its top level holds ``profile`` (smoke | paper | tiny),
``seed`` and one mapping per stage or paper. A section may carry ``profiles: {tiny: {...}, paper: {...}}``
whose keys are deep-merged over the section's own keys when that profile is active, so switching
``profile`` switches every stage at once (``dvc exp run -S profile=tiny``).

Schemas: the core sections are :data:`lab.sections.CORE`; a paper's section ``<name>`` is
``lab.methods.<name>.config.SCHEMA``, imported only when that section is loaded (:func:`schema`), so loading
``first`` imports nothing of another paper, nor torch. :func:`schemas` lists every known section.

Every error names the file and the dotted key: unknown keys (with a close-match hint), wrong types
(``"true"`` is not a bool: DVC templating turns booleans into strings, so we refuse them here),
missing keys and missing sections.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib
import importlib.util
import os
import pkgutil
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin

import yaml

from lab import sections
from lab.paths import repo_root

PROFILES = ("smoke", "paper", "tiny")
T = TypeVar("T")

METHODS = "lab.methods"   # a paper's section schema: lab/methods/<section>/config.py (SECTION, SCHEMA)


class ConfigError(ValueError):
    """A params file does not match its schema; the message names file and key."""


def schema(name: str) -> type | None:
    """The frozen dataclass of section ``name``: a core section (:data:`lab.sections.CORE`), else
    ``lab.methods.<name>.config.SCHEMA`` (importing that module only); ``None`` when neither exists."""
    if name in sections.CORE:
        return sections.CORE[name]
    if not name.isidentifier():
        return None
    module = f"{METHODS}.{name}.config"
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:      # only "that module does not exist"; a broken import inside it raises
        if e.name and e.name.startswith(METHODS + ".") and (module + ".").startswith(e.name + "."):
            return None
        raise
    return _checked(mod, name)


def schemas() -> dict[str, type]:
    """Every known section: the core ones, then each ``lab/methods/<paper>/config.py`` (only those modules are
    imported, not the papers' wiring)."""
    import lab.methods

    out = dict(sections.CORE)
    for info in sorted(pkgutil.iter_modules(lab.methods.__path__), key=lambda m: m.name):
        if info.ispkg and importlib.util.find_spec(f"{METHODS}.{info.name}.config") is not None:
            out[info.name] = _checked(importlib.import_module(f"{METHODS}.{info.name}.config"), info.name)
    return out


def _checked(mod: types.ModuleType, name: str) -> type:
    cls = getattr(mod, "SCHEMA", None)
    if getattr(mod, "SECTION", None) != name:
        raise TypeError(f"{mod.__name__}: SECTION must be {name!r}, got {getattr(mod, 'SECTION', None)!r}")
    if cls is None or not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise TypeError(f"{mod.__name__}: SCHEMA must be a frozen dataclass, got {cls!r}")
    return cls


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


def load(name: str, profile: str | None = None, path: str | os.PathLike | None = None, *,
         dry_run: bool | None = None):
    """Section ``name`` of ``params.yaml`` for ``profile`` (default: the file's ``profile``). ``dry_run`` (default:
    ``LAB_PAPER_DRY_RUN``, :mod:`lab.preflight`): the paper profile with the section's ``paper_dry_run`` overlay."""
    file = params_path(path)
    raw = read_params(file)
    profile = profile or active_profile(file, raw)
    if profile not in PROFILES:
        raise ConfigError(f"{file}: profile: expected one of {PROFILES}, got {profile!r}")
    cls = schema(name)
    if cls is None:
        raise ConfigError(f"{file}: no schema for section {name!r}; known: {sorted(schemas())}")
    if name not in raw:
        raise ConfigError(f"{file}: missing section {name!r}")
    values = resolve_profile(raw[name], profile, f"{file}: {name}", dry_run=dry_run)
    return build(cls, values, f"{file}: {name}")


def load_all(profile: str | None = None, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Every known section (:func:`schemas`) that ``params.yaml`` holds, validated for ``profile``."""
    known = schemas()
    raw = read_params(path)
    file = params_path(path)
    for key in raw:
        if key not in known and key not in ("profile", "seed"):
            raise ConfigError(f"{file}: unknown top-level key {key!r}{_hint(key, [*known, 'profile', 'seed'])}")
    return {name: load(name, profile, path) for name in known if name in raw}


# Not a profile: merged over ``profiles.paper`` when the paper profile runs as a dry run (LAB_PAPER_DRY_RUN=1):
# the paper's architectures as random-init tiny models on tiny data (lab.preflight).
DRY_RUN_OVERLAY = "paper_dry_run"


def resolve_profile(values: Any, profile: str, where: str, dry_run: bool | None = None) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    values = dict(values)
    overrides = values.pop("profiles", None) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}.profiles: expected a mapping of profile -> overrides")
    for p in overrides:
        if p not in PROFILES and p != DRY_RUN_OVERLAY:
            raise ConfigError(f"{where}.profiles: unknown profile {p!r}{_hint(p, (*PROFILES, DRY_RUN_OVERLAY))}")
    merged = _merge(values, overrides.get(profile) or {}, f"{where}.profiles.{profile}")
    if profile == "paper" and DRY_RUN_OVERLAY in overrides:
        if dry_run is None:
            from lab.preflight import dry_run as _env_dry_run

            dry_run = _env_dry_run()
        if dry_run:
            merged = _merge(merged, overrides[DRY_RUN_OVERLAY] or {}, f"{where}.profiles.{DRY_RUN_OVERLAY}")
    return merged


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


# --------------------------------------------------------------------------------------------------------
# `python -m lab.config check`: the whole of params.yaml, every section under every profile. `make repro` runs
# it before `dvc repro` and every stage (lab.stage) before anything else, so a typo costs nothing: no output is
# removed (dvc.yaml outs are `persist: true`, see README) and no MLflow run is opened.
NON_SECTIONS = ("profile", "seed")


def pipeline_sections(dvc_yaml: str | os.PathLike) -> list[str]:
    """Sections the pipeline in ``dvc_yaml`` reads, in order: ``tracking`` (every stage logs), each stage's
    ``--section`` (default: the stage name) and the first part of each of its ``params:`` keys in
    ``params.yaml``. ``[]`` when there is no such file."""
    import shlex

    path = Path(dvc_yaml)
    if not path.is_file():
        return []
    try:
        stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    names = ["tracking"]
    for stage, spec in stages.items():
        spec = spec if isinstance(spec, dict) else {}
        cmd = shlex.split(spec.get("cmd", "")) if isinstance(spec.get("cmd"), str) else []
        if cmd[1:3] == ["-m", "lab.stage"]:
            names.append(cmd[cmd.index("--section") + 1] if "--section" in cmd[:-1] else str(stage))
        names += [p.split(".")[0] for p in spec.get("params") or [] if isinstance(p, str)]
    return [n for n in dict.fromkeys(names) if n not in NON_SECTIONS]


def check(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Validate every section of ``params.yaml`` for every profile in :data:`PROFILES`.

    Returns ``{profile: {section: config}}``. Raises :class:`ConfigError` listing every problem, one a line
    (naming the profile when only some profiles have it): a bad ``profile`` or ``seed``, an unknown top-level
    key, a section the pipeline reads (``dvc.yaml`` beside the file, :func:`pipeline_sections`) that is
    missing, and any unknown key, wrong type or missing key in any section under any profile.
    """
    file = params_path(path)
    raw = read_params(file)
    problems: dict[str, list[str | None]] = {}

    def problem(message: str, profile: str | None = None) -> None:
        problems.setdefault(message, []).append(profile)

    try:
        active_profile(file, raw)
    except ConfigError as e:
        problem(str(e))
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        problem(f"{file}: seed: expected an int, got {type(seed).__name__} ({seed!r})")
    for name in pipeline_sections(file.parent / "dvc.yaml"):
        if name not in raw:
            problem(f"{file}: missing section {name!r} (dvc.yaml's stages read it)")
    loaded: dict[str, dict[str, Any]] = {}
    for profile in PROFILES:
        try:
            loaded[profile] = load_all(profile, file)
            continue
        except ConfigError as e:
            first = str(e)
            problem(first, profile)
        for name in raw:  # load_all stops at the first problem: report every other broken section too
            if name in NON_SECTIONS or f"unknown top-level key {name!r}" in first:
                continue
            try:
                load(name, profile, file)
            except ConfigError as e:
                problem(str(e), profile)
    for name, values in raw.items():     # the paper dry-run overlays load too (LAB_PAPER_DRY_RUN=1)
        if isinstance(values, dict) and DRY_RUN_OVERLAY in (values.get("profiles") or {}) and schema(name):
            try:
                load(name, "paper", file, dry_run=True)
            except ConfigError as e:
                problem(str(e), "paper")
    if problems:
        lines = []
        for message, profiles in problems.items():
            named = sorted({p for p in profiles if p}, key=PROFILES.index)
            partial = named and len(named) < len(PROFILES)
            lines.append(message + (f" [profile {', '.join(named)}]" if partial else ""))
        raise ConfigError(lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n  " + "\n  ".join(lines))
    return loaded


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.config check [--params FILE]``: exit 0 when every section of every profile loads."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m lab.config", description="Validate params.yaml.")
    commands = parser.add_subparsers(dest="command", required=True)
    checker = commands.add_parser("check", help="validate every section of params.yaml under every profile")
    checker.add_argument("--params", default=None, help="the params file (default: params.yaml of the repo)")
    args = parser.parse_args(argv)
    try:
        loaded = check(args.params)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}\nnothing was run and no output was touched", file=sys.stderr)
        return 1
    sections_ = sorted({name for configs in loaded.values() for name in configs})
    print(f"{params_path(args.params)}: ok ({', '.join(sections_)} under {', '.join(PROFILES)})")
    return 0


if __name__ == "__main__":
    import sys

    from lab.config import main as _main  # the importable module, not a second copy's classes

    sys.exit(_main())
