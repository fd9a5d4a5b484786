"""Typed configuration: dataclasses, filled from YAML files and ``key=value`` overrides.

    cfg = load_config(DemoConfig, "configs/demo.yaml", ["lake.shard_max_count=64", "seed=3"])
    cfg = with_overrides(cfg, {"lake.shard_max_count": 64, "seed": 3})   # the same, typed

* Every field has a type; values are checked and converted (``"3"`` -> 3 for an int field,
  ``"true"`` -> True, ``"[1,2]"`` -> [1, 2]) and a wrong one is an error naming the key and file.
* Unknown keys are errors (a typo must not be silently ignored), with the valid keys listed.
  A dataclass's own value checks (``__post_init__`` raising ValueError) are config errors too.
* A dataclass may define a classmethod ``expand_config(data, where) -> dict`` that fills its
  mapping before the keys are checked (an augmentation ``preset``'s values under the keys given).
* A YAML file may say ``defaults: [other.yaml, ...]`` (paths relative to it): those are merged
  first, this file on top.
* ``to_dict(cfg)`` gives the resolved config (for logging to MLflow and saving beside results).
* Where a config is (:func:`find_config`, the one rule for every config path a command takes or
  defaults to): the path as given, if it exists (relative to the working directory); otherwise
  the packaged config of that name. The packaged configs are the repository's ``configs/``
  folder, installed as the package ``pipeline.configs`` (``configs/tiny/pretrain_tcb.yaml`` and
  ``tiny/pretrain_tcb.yaml`` both name ``tiny/pretrain_tcb.yaml`` there).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from pipeline.core.errors import PipelineError

# The checkout this package runs from, where one is meant (an editable install; in a regular
# install this is site-packages' parent). Configs are found by find_config, not from here.
REPO = Path(__file__).resolve().parents[2]
# the package the repository's configs/ folder is installed as (pyproject.toml, setup.py)
PACKAGED_CONFIGS = "pipeline.configs"

T = TypeVar("T")


class ConfigError(PipelineError, ValueError):
    """A bad configuration: the message names the key, the source and what is expected."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {list(value)!r}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        return Path(value)
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def _build(cls: type[T], data: dict, where: str) -> T:
    expand = getattr(cls, "expand_config", None)
    if expand is not None:
        data = expand(data, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a required field without a default, a value check
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def packaged_configs() -> Path:
    """The folder of the packaged configs (an editable install: the checkout's ``configs/``)."""
    try:
        root = importlib.resources.files(PACKAGED_CONFIGS)
    except ModuleNotFoundError:
        raise ConfigError(f"the packaged configs ({PACKAGED_CONFIGS}) are not installed; "
                          "reinstall the project (pip install -e . or pip install .)") from None
    return Path(str(root))


def find_config(name: str | Path) -> Path:
    """Config file ``name``: the path as given if it exists (relative to the working directory),
    else the packaged config of that name, with or without a leading ``configs/``."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_absolute():
        raise ConfigError(f"{name}: config file not found; pass an existing config file")
    root = packaged_configs()
    parts = path.parts
    packaged = root.joinpath(*parts[1:]) if len(parts) > 1 and parts[0] == "configs" else root / path
    if packaged.is_file():
        return packaged
    raise ConfigError(f"{name}: config file not found in the working directory ({Path.cwd()}) "
                      f"nor among the packaged configs ({root}); pass an existing file or a "
                      "packaged name such as configs/tiny/pretrain_tcb.yaml")


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping, with its ``defaults:`` files merged underneath."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing --config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}); fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    merged: dict = {}
    for parent in data.pop("defaults", []) or []:
        merged = _deep_merge(merged, read_yaml(path.parent / parent))
    return _deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. lake.shard_max_count=64")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _set_key(data: dict, keys: list[str], value: Any, what: str) -> None:
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {what}: {k} is not a section")
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = _deep_merge({}, data)
    for text in overrides:
        keys, value = parse_override(text)
        _set_key(data, keys, value, repr(text))
    return data


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Build ``cls`` from defaults, then the YAML file (if any; :func:`find_config`), then
    ``key=value`` overrides."""
    data = read_yaml(find_config(path)) if path else {}
    data = apply_overrides(data, list(overrides))
    try:
        return _build(cls, data, "")
    except ConfigError as e:
        src = f"{path}" if path else "defaults"
        if overrides:
            src += f" + overrides {list(overrides)}"
        raise ConfigError(f"{e} (config: {src})") from None


def from_dict(cls: type[T], data: dict, overrides: list[str] | tuple[str, ...] = (),
              where: str = "") -> T:
    """Build ``cls`` from plain data (e.g. a config stored in a checkpoint) plus overrides."""
    data = apply_overrides(dict(data), list(overrides))
    try:
        return _build(cls, data, "")
    except ConfigError as e:
        raise ConfigError(f"{e} (config: {where or 'stored config'})") from None


def with_overrides(cfg: T, values: dict[str, Any]) -> T:
    """``cfg`` with dotted keys set to typed values (``{"batch.size": 16, "dist.compile": True}``),
    checked as ``key=value`` overrides are: an unknown key or a value of the wrong type is an
    error naming the key. ``cfg`` itself is left as it was."""
    data = to_dict(cfg)
    for key, value in values.items():
        _set_key(data, key.split("."), value, repr(key))
    try:
        return _build(type(cfg), data, "")
    except ConfigError as e:
        raise ConfigError(f"{e} (overrides {dict(values)!r})") from None


def to_dict(cfg: Any) -> dict:
    """The resolved config as plain data (paths and tuples made YAML-friendly)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_keys(cfg: Any, prefix: str = "") -> list[str]:
    """The dotted keys a ``key=value`` override may set in the config dataclass ``cfg``."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += config_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def config_text(cfg: Any, source: str) -> str:
    """A command's ``--print-config``: the resolved config as YAML, then its valid keys as YAML
    comments (the whole text still loads as the config)."""
    keys = "\n".join(f"#   {k}" for k in config_keys(cfg))
    return (f"# resolved config ({source})\n{dump_yaml(cfg)}"
            f"# valid keys (override any with key=value; a list as key=[a,b]):\n{keys}\n")
