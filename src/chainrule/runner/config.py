"""Config files: YAML loading, ``--set`` overrides, schema validation, sweeps, multi-run files.

A single-run config has the top-level keys ``experiment``, ``seed``, ``output_dir``, ``devices``,
``sweep`` and ``params``; a multi-run config has ``runs`` (a list of sub-configs, each inline or
``include: other.yaml`` plus overrides) and optionally ``name``, ``seed``, ``output_dir`` and
``devices``. ``devices`` (``null``, ``all`` or a count) says over how many local devices the
sweep points run concurrently; ``sweep.seed`` sweeps the run's seed (each point its own).
Everything is validated before anything is written: an invalid config leaves no run directory.
Error messages are one line, name the key path (``params.depth``), say what was expected and
what was found, and suggest the nearest valid key or value.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chainrule.runner.context import MAX_SEED
from chainrule.runner.discovery import load_experiment
from chainrule.runner.errors import ConfigError, did_you_mean
from chainrule.runner.yamlio import dump_yaml as dump_yaml
from chainrule.runner.yamlio import load_yaml as load_yaml
from chainrule.runner.yamlio import parse_value as parse_value

__all__ = [
    "SINGLE_KEYS",
    "MULTI_KEYS",
    "RunSpec",
    "MultiSpec",
    "load_yaml",
    "parse_value",
    "apply_override",
    "resolve",
    "config_hash",
    "check_devices",
    "device_list",
    "dump_yaml",
]

SINGLE_KEYS = ("experiment", "seed", "output_dir", "devices", "sweep", "params")
MULTI_KEYS = ("name", "seed", "output_dir", "devices", "runs")
_ENTRY_KEYS = ("include", "experiment", "seed", "devices", "sweep", "params", "output_dir")
# A sweep over this key sweeps the run's seed, not a parameter (a parameter named ``seed`` is
# swept as ``params.seed``).
SEED_SWEEP_KEY = "seed"
DEFAULT_OUTPUT_DIR = "runs"
# Integer params whose field declares no upper bound (``le``/``lt``) are capped here: a typo
# like ``width: 1000000000`` is a config error, not an out-of-memory crash minutes later.
MAX_UNBOUNDED_INT = 10**6


# --------------------------------------------------------------------------------------------
# --set key.path=value


def apply_override(raw: dict, assignment: str) -> dict:
    """Return a copy of ``raw`` with ``key.path=value`` applied (lists indexed by number).

    ``sweep.<param path>=[...]`` sets one sweep entry (its key keeps its dots).
    """
    if "=" not in assignment:
        raise ConfigError(
            f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. --set params.depth=20"
        )
    path, text = assignment.split("=", 1)
    path = path.strip()
    if not path or any(not p for p in path.split(".")):
        raise ConfigError(f"--set {assignment!r}: empty key in {path!r}")
    value = parse_value(text)
    out = copy.deepcopy(raw)
    parts = path.split(".")
    # A sweep key is itself a dotted parameter path: keep it whole.
    sweep_at = next((i for i, p in enumerate(parts) if p == "sweep"), None)
    if sweep_at is not None and sweep_at < len(parts) - 1:
        parts = parts[: sweep_at + 1] + [".".join(parts[sweep_at + 1 :])]
    node: Any = out
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, where, assignment)]
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(
                f"--set {assignment!r}: {where} is a {type(node).__name__}, not a mapping"
            )
        if not isinstance(node, dict | list):
            raise ConfigError(
                f"--set {assignment!r}: {where} is {node!r}, not a mapping; cannot set "
                f"{'.'.join(parts[i + 1 :])} inside it"
            )
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, path, assignment)] = value
    else:
        node[last] = value
    return out


def _list_index(node: list, part: str, where: str, assignment: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"--set {assignment!r}: {where} must be an index 0..{len(node) - 1} of a list "
            f"of {len(node)}"
        )
    return int(part)


# --------------------------------------------------------------------------------------------
# Pydantic errors -> one line with the key path, expected, found, suggestion


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated so the walker can see the underlying type."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _is_model(tp: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(model: Any, loc: tuple) -> tuple[Any, Any]:
    """Follow ``loc`` through a pydantic model: ``(annotation, FieldInfo or None)`` at its end."""
    tp: Any = model
    info = None
    for part in loc:
        tp = _unwrap(tp)
        if _is_model(tp) and isinstance(part, str) and part in tp.model_fields:
            info = tp.model_fields[part]
            tp = info.annotation
        elif isinstance(part, int) and typing.get_origin(tp) in (list, tuple, set):
            args = typing.get_args(tp)
            tp = args[0] if args else Any
            info = None
        elif typing.get_origin(tp) is dict:
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else Any
            info = None
        else:
            return None, None
    return tp, info


def _type_name(tp: Any) -> str:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if _is_model(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _constraints(info: Any) -> str:
    if info is None:
        return ""
    parts = []
    for m in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{sym} {getattr(m, attr)}")
        if getattr(m, "min_length", None) is not None:
            parts.append(f"length >= {m.min_length}")
        if getattr(m, "max_length", None) is not None:
            parts.append(f"length <= {m.max_length}")
    return " ".join(parts)


def _literals(tp: Any) -> list[str]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) is typing.Literal:
        return [str(a) for a in typing.get_args(tp)]
    out: list[str] = []
    for a in typing.get_args(tp) or ():
        out += _literals(a)
    return out


def _loc_str(prefix: str, loc: tuple) -> str:
    s = prefix
    for part in loc:
        if isinstance(part, int):
            s += f"[{part}]"
        else:
            s = f"{s}.{part}" if s else str(part)
    return s


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def format_validation_error(err: Any, model: Any, prefix: str, context: str = "") -> ConfigError:
    """Turn a pydantic ``ValidationError`` into a one-line :class:`ConfigError`."""
    msgs = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = _loc_str(prefix, loc)
        kind = e["type"]
        if kind == "extra_forbidden":
            parent, _ = _walk(model, loc[:-1])
            parent = _unwrap(parent)
            valid = list(parent.model_fields) if _is_model(parent) else []
            hint = did_you_mean(loc[-1], valid)
            listing = f" Valid keys: {', '.join(valid)}." if valid else ""
            msgs.append(f"{path}: unknown key.{hint}{listing}")
            continue
        tp, info = _walk(model, loc)
        expected = " ".join(
            x for x in (_type_name(tp) if tp is not None else "", _constraints(info)) if x
        )
        if kind == "missing":
            msgs.append(f"{path}: required key is missing (expected {expected or 'a value'}).")
            continue
        hint = ""
        if isinstance(e.get("input"), str):
            hint = did_you_mean(e["input"], _literals(tp))
        exp = f" (expected {expected})" if expected else ""
        msgs.append(f"{path}: {e['msg']}{exp}; found {_short(e.get('input'))}.{hint}")
    head = f"{context}: " if context else ""
    return ConfigError(head + " ".join(msgs))


def validate_model(model: Any, data: Any, prefix: str, context: str = "") -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise format_validation_error(e, model, prefix, context) from None


def validate_params(model: Any, data: Any, prefix: str = "params", context: str = "") -> Any:
    """Validate an experiment's params strictly, as the JSON data model (YAML is JSON's).

    Strict: ``true`` or ``"8"`` is not an int and ``8.5`` not an int either (an int is a float);
    lists fill tuples. Integer fields without an upper bound of their own are capped at
    ``MAX_UNBOUNDED_INT``.

    Raises:
        ConfigError: the key path, the expected type or range, the value found.
    """
    from pydantic import ValidationError

    try:
        text = json.dumps(data, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{context + ': ' if context else ''}{prefix}: {e}") from None
    try:
        out = model.model_validate_json(text, strict=True)
    except ValidationError as e:
        raise format_validation_error(e, model, prefix, context) from None
    _check_int_caps(model, out, prefix, context)
    _check_ranges(out, prefix, context)
    return out


_RANGE_PAIRS = (
    (re.compile(r"^min_(.+)$"), "max_{}"),
    (re.compile(r"^(.+)_min$"), "{}_max"),
    (re.compile(r"^(.+)_low$"), "{}_high"),
    (re.compile(r"^(.+)_lo$"), "{}_hi"),
)


def _check_ranges(inst: Any, prefix: str, context: str) -> None:
    """A range given by two fields (``min_x``/``max_x``, ``x_min``/``x_max``, ``x_low``/
    ``x_high``, ``x_lo``/``x_hi``) must have its lower end <= its upper end."""
    from pydantic import BaseModel

    fields = type(inst).model_fields
    for name in fields:
        value = getattr(inst, name)
        if isinstance(value, BaseModel):
            _check_ranges(value, f"{prefix}.{name}", context)
            continue
        for pattern, upper in _RANGE_PAIRS:
            m = pattern.match(name)
            other = upper.format(m.group(1)) if m else None
            if other is None or other not in fields:
                continue
            lo, hi = value, getattr(inst, other)
            if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
                head = f"{context}: " if context else ""
                raise ConfigError(
                    f"{head}{prefix}.{name}: the range's lower end {lo!r} is above its upper "
                    f"end {prefix}.{other} = {hi!r}; expected {name} <= {other}."
                )


def _has_upper_bound(info: Any) -> bool:
    return any(
        getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None
        for m in getattr(info, "metadata", ())
    )


def _ints(value: Any) -> list[tuple[str, int]]:
    """(suffix, value) for every int in ``value`` (lists and tuples walked, bools skipped)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [("", value)]
    if isinstance(value, list | tuple):
        return [(f"[{i}]{s}", v) for i, item in enumerate(value) for s, v in _ints(item)]
    return []


def _check_int_caps(model: Any, inst: Any, prefix: str, context: str) -> None:
    from pydantic import BaseModel

    for name, info in type(inst).model_fields.items():
        value = getattr(inst, name)
        path = f"{prefix}.{name}"
        if isinstance(value, BaseModel):
            _check_int_caps(type(value), value, path, context)
            continue
        if _has_upper_bound(info):
            continue
        for suffix, v in _ints(value):
            if abs(v) > MAX_UNBOUNDED_INT:
                head = f"{context}: " if context else ""
                raise ConfigError(
                    f"{head}{path}{suffix}: {v} is beyond the runner's bound for a size or count "
                    f"(|value| <= {MAX_UNBOUNDED_INT}); an experiment that needs more declares "
                    f"its own le= bound on the field."
                )


# --------------------------------------------------------------------------------------------
# Top-level schemas


def _single_schema() -> Any:
    from pydantic import BaseModel, ConfigDict, Field

    class RunConfig(BaseModel):
        """Top level of a single-run config file."""

        model_config = ConfigDict(extra="forbid", strict=True)
        experiment: str = Field(description="module name in experiments/")
        seed: int = Field(0, ge=0, le=MAX_SEED, description="derives every PRNG key of the run")
        output_dir: str = Field(DEFAULT_OUTPUT_DIR, description="parent of the run directory")
        devices: Any = Field(None, description="null, 'all' or a count of local devices")
        sweep: dict[str, list[Any]] = Field(
            default_factory=dict, description="param path -> list of values (a grid)"
        )
        params: dict[str, Any] = Field(default_factory=dict, description="experiment params")

    return RunConfig


def _multi_schema() -> Any:
    from pydantic import BaseModel, ConfigDict, Field

    class MultiConfig(BaseModel):
        """Top level of a multi-run config file."""

        model_config = ConfigDict(extra="forbid", strict=True)
        name: str | None = Field(None, description="name of the parent run directory")
        seed: int | None = Field(
            None, ge=0, le=MAX_SEED, description="seed of sub-runs that set none"
        )
        output_dir: str = Field(DEFAULT_OUTPUT_DIR, description="parent of the run directory")
        devices: Any = Field(None, description="devices of sub-runs that set none")
        runs: list[dict[str, Any]] = Field(min_length=1, description="sub-configs")

    return MultiConfig


@dataclass
class RunSpec:
    """A validated single-run config."""

    experiment: str
    module: Any
    seed: int
    output_dir: str
    sweep: dict[str, list[Any]]
    params: Any  # the experiment's Params instance (base point)
    points: list[dict[str, Any]]  # sweep overrides per point ({} when no sweep)
    point_params: list[Any]  # Params per point
    source: str = ""
    devices: int | str | None = None  # None: sequential; "all" or a count: concurrent points
    point_seeds: list[int] = field(default_factory=list)  # seed per point (sweep.seed)

    def __post_init__(self) -> None:
        if not self.point_seeds:
            self.point_seeds = [self.seed] * len(self.points)

    def resolved(self) -> dict[str, Any]:
        """The resolved config: every default filled in (what config.yaml stores)."""
        return {
            "experiment": self.experiment,
            "seed": self.seed,
            "output_dir": self.output_dir,
            "devices": self.devices,
            "sweep": copy.deepcopy(self.sweep),
            "params": self.params.model_dump(mode="json"),
        }


@dataclass
class MultiSpec:
    """A validated multi-run config."""

    name: str
    output_dir: str
    runs: list[RunSpec] = field(default_factory=list)
    seed: int | None = None
    devices: int | str | None = None

    def resolved(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "output_dir": self.output_dir,
            "devices": self.devices,
            "runs": [r.resolved() for r in self.runs],
        }


def config_hash(resolved: dict[str, Any]) -> str:
    """SHA-256 of the resolved config minus ``output_dir`` and ``devices``.

    Where a run goes and over how many devices its points are spread is not what it computes:
    a run resumed with other ``devices`` (or none) is the same run.
    """

    def strip(d: Any) -> Any:
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if k != "output_dir"}
        if isinstance(d, list):
            return [strip(v) for v in d]
        return d

    def top(d: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in d.items() if k != "devices"}
        if isinstance(out.get("runs"), list):
            out["runs"] = [top(r) if isinstance(r, dict) else r for r in out["runs"]]
        return out

    text = json.dumps(strip(top(resolved)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Resolution


def _set_path(data: dict, parts: list[str], value: Any) -> dict:
    out = copy.deepcopy(data)
    node = out
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value
    return out


def _check_sweep_path(params_model: Any, key: str) -> list[str]:
    """Split and check a sweep key against the Params model; return the path parts."""
    parts = key.split(".")
    if parts[0] == "params" and len(parts) > 1:
        parts = parts[1:]
    tp: Any = params_model
    for i, part in enumerate(parts):
        tp = _unwrap(tp)
        if not _is_model(tp):
            raise ConfigError(
                f"sweep.{key}: {'.'.join(parts[:i])} is not a group of parameters; "
                f"cannot sweep over {part!r} inside it."
            )
        if part not in tp.model_fields:
            where = ".".join(["params", *parts[:i]])
            valid = list(tp.model_fields)
            raise ConfigError(
                f"sweep.{key}: unknown parameter {part!r} in {where}."
                f"{did_you_mean(part, valid)} Valid keys: {', '.join(valid)}."
            )
        tp = tp.model_fields[part].annotation
    return parts


def check_devices(value: Any, where: str = "devices", context: str = "") -> int | str | None:
    """Validate a ``devices`` value's form: ``None`` (sequential), ``"all"`` or an int >= 1.

    How many devices exist is checked when the run starts (:func:`device_list`): a run
    directory made on a machine with 8 devices stays readable on one with 2.

    Raises:
        ConfigError: naming the key, what is expected and what was found.
    """
    if value is None or value == "all":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    head = f"{context}: " if context else ""
    hint = did_you_mean(value, ["all"]) if isinstance(value, str) else ""
    raise ConfigError(
        f"{head}{where}: expected 'all', an int >= 1 (a count of local devices) or null "
        f"(sequential); found {_short(value)}.{hint}"
    )


def device_list(devices: int | str | None, where: str = "devices") -> list[Any] | None:
    """The local devices a run's points are spread over; ``None`` for a sequential run.

    ``"all"`` is ``jax.local_devices()``; ``n`` its first ``n``.

    Raises:
        ConfigError: more devices asked for than this process has.
    """
    if devices is None:
        return None
    import jax

    local = jax.local_devices()
    if devices == "all":
        return list(local)
    if devices > len(local):
        kind = getattr(local[0], "platform", "?")
        raise ConfigError(
            f"{where}: expected 'all', an int in 1..{len(local)} (this process has "
            f"{len(local)} local {kind} device(s)) or null; found {devices}."
        )
    return list(local[:devices])


def _check_seeds(values: list[Any], where: str) -> None:
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
            raise ConfigError(
                f"{where}[{i}]: expected an int in [0, 2**64 - 1] (a seed); found {_short(v)}."
            )


def _resolve_single(
    raw: Any,
    source: str,
    context: str,
    seed_default: int | None,
    devices_default: int | str | None = None,
) -> RunSpec:
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{context or source}: a config must be a mapping with keys "
            f"{', '.join(SINGLE_KEYS)}; found {type(raw).__name__}"
        )
    raw = dict(raw)
    if seed_default is not None and "seed" not in raw:
        raw["seed"] = seed_default
    if devices_default is not None and raw.get("devices") is None:
        raw["devices"] = devices_default
    top = validate_model(_single_schema(), raw, "", context)
    devices = check_devices(top.devices, "devices", context)
    module = load_experiment(top.experiment, config_path=source or None, context=context)
    Params = module.Params
    base = validate_params(Params, top.params, "params", context)
    base_dict = top.params
    keys = list(top.sweep)
    paths = {k: _check_sweep_path(Params, k) for k in keys if k != SEED_SWEEP_KEY}
    ctx = f"{context}: " if context else ""
    for k in keys:
        values = top.sweep[k]
        if not values:
            raise ConfigError(f"{ctx}sweep.{k}: needs a non-empty list of values; found [].")
        if k == SEED_SWEEP_KEY:
            _check_seeds(values, f"{ctx}sweep.{k}")
            continue
        for i, v in enumerate(values):
            candidate = _set_path(base_dict, paths[k], v)
            try:
                validate_params(Params, candidate, "params")
            except ConfigError as e:
                raise ConfigError(f"{ctx}sweep.{k}[{i}] = {_short(v)}: {e}") from None
    points: list[dict[str, Any]] = []
    point_params = []
    point_seeds = []
    for combo in itertools.product(*(top.sweep[k] for k in keys)):
        overrides = dict(zip(keys, combo, strict=True))
        data = base_dict
        for k, v in overrides.items():
            if k != SEED_SWEEP_KEY:
                data = _set_path(data, paths[k], v)
        point_params.append(
            validate_params(Params, data, "params", f"{ctx}sweep point {overrides}")
        )
        points.append(overrides)
        point_seeds.append(overrides.get(SEED_SWEEP_KEY, top.seed))
    return RunSpec(
        experiment=top.experiment,
        module=module,
        seed=top.seed,
        output_dir=top.output_dir,
        sweep={k: list(v) for k, v in top.sweep.items()},
        params=base,
        points=points,
        point_params=point_params,
        source=source,
        devices=devices,
        point_seeds=point_seeds,
    )


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "sweep":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve(raw: Any, source: str | Path = "") -> RunSpec | MultiSpec:
    """Validate a loaded config (``--set`` overrides already applied) into a run spec.

    Raises:
        ConfigError: with the key path, the expected and found values and a suggestion.
    """
    source = str(source)
    if isinstance(raw, dict) and "runs" in raw:
        top = validate_model(_multi_schema(), raw, "")
        devices = check_devices(top.devices)
        base_dir = Path(source).parent if source else Path.cwd()
        specs = []
        for i, entry in enumerate(top.runs):
            where = f"runs[{i}]"
            unknown = [k for k in entry if k not in _ENTRY_KEYS]
            if unknown:
                raise ConfigError(
                    f"{where}.{unknown[0]}: unknown key.{did_you_mean(unknown[0], _ENTRY_KEYS)} "
                    f"Valid keys: {', '.join(_ENTRY_KEYS)}."
                )
            sub_source = source
            if "include" in entry:
                inc = entry["include"]
                if not isinstance(inc, str):
                    raise ConfigError(f"{where}.include: expected a file path; found {inc!r}.")
                inc_path = Path(inc) if Path(inc).is_absolute() else base_dir / inc
                included = load_yaml(inc_path)
                if isinstance(included, dict) and "runs" in included:
                    raise ConfigError(
                        f"{where}.include: {inc_path} is itself a multi-run config; include "
                        f"single-run configs only."
                    )
                if not isinstance(included, dict):
                    raise ConfigError(f"{where}.include: {inc_path} is not a mapping.")
                rest = {k: v for k, v in entry.items() if k != "include"}
                entry = _deep_merge(included, rest)
                sub_source = str(inc_path)
                where = f"runs[{i}] ({inc_path})"
            entry.pop("output_dir", None)  # sub-runs live inside the parent run directory
            specs.append(_resolve_single(entry, sub_source, where, top.seed, devices))
        name = top.name or (Path(source).stem if source else "multi")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"name: use letters, digits, '_', '-', '.' only; found {name!r}.")
        return MultiSpec(
            name=name, output_dir=top.output_dir, runs=specs, seed=top.seed, devices=devices
        )
    return _resolve_single(raw, source, "", None)
