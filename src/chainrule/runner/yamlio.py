"""YAML in and out: the safe loader (numbers as numbers, no duplicate keys, merge keys)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from chainrule.runner.errors import ConfigError

__all__ = ["load_yaml", "parse_value", "dump_yaml"]


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-3`` as a float and rejects duplicate keys.

    Merge keys (``<<: *base``) are valid YAML and accepted: keys written in the mapping
    itself override the merged ones (that is what a merge means); only a key written twice
    in the same mapping is a duplicate.

    PyYAML implements YAML 1.1, whose float pattern needs a dot, so ``1e-3`` would load as the
    string ``"1e-3"``; the extra resolver below accepts exponent-only forms too.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(
                f"{mark.name}:{mark.line + 1}: duplicate key {key!r} (first at line "
                f"{seen[key].line + 1}); keep one of them."
            )
        seen[key] = key_node.start_mark
    # SafeConstructor.construct_mapping flattens the merge keys, then builds the mapping.
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> Any:
    """Load one YAML file with the safe loader (no Python objects), numbers as numbers."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value as YAML (``10`` -> int, ``1e-3`` -> float, ``[a, b]`` -> list)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506
    except yaml.YAMLError:
        return text


def dump_yaml(data: Any) -> str:
    """Block-style YAML, keys in insertion order (what ``config.yaml`` in a run holds)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
