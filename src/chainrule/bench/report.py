"""Printing benchmark rows as a table, and writing them (with the header) as JSON.

Rows are plain dicts (see :mod:`chainrule.bench.ad` for the fields a suite may fill). The table
shows the common columns that any row has; every field of every row goes to the JSON file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "format_markdown",
    "COLUMNS",
    "format_header",
    "format_table",
    "format_targets",
    "to_jsonable",
    "write_json",
]

# (row key, column title); a column is printed when at least one row has the key.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("suite", "suite"),
    ("name", "name"),
    ("impl", "impl"),
    ("size", "size"),
    ("ms", "median ms"),
    ("first_call_ms", "1st call ms"),
    ("ratio", "ratio"),
    ("vs", "vs"),
    ("x_fwd", "x fwd"),
    ("gbps", "GB/s"),
    ("meets_target", "target"),
    ("note", "note"),
)


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "meets_target":
        return "ok" if value else "MISSED"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if key in ("ratio", "ratio_paired"):
            return f"{v:.3f}"
        if key == "x_fwd":
            return f"{v:.2f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) >= 1:
            return f"{v:.3f}"
        return f"{v:.4f}"
    return str(value)


def format_header(header: Mapping[str, Any]) -> str:
    """``key: value`` lines, one per header entry."""
    width = max((len(k) for k in header), default=0)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in header.items())


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width text table of the rows (the columns of :data:`COLUMNS` that occur)."""
    cols = [(k, t) for k, t in COLUMNS if any(k in r for r in rows)]
    if any("error" in r for r in rows):
        cols.append(("error", "error"))
    cells = [[_fmt(k, r.get(k)) for k, _ in cols] for r in rows]
    widths = [max([len(t)] + [len(c[i]) for c in cells]) for i, (_, t) in enumerate(cols)]
    numeric = {"ms", "first_call_ms", "ratio", "x_fwd", "gbps"}

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if k in numeric else v.ljust(w)
            for (k, _), v, w in zip(cols, values, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line([t for _, t in cols]), line(["-" * w for w in widths])]
    out.extend(line(c) for c in cells)
    return "\n".join(out)


def format_targets(rows: Sequence[Mapping[str, Any]], quick: bool = False) -> str:
    """One line counting the rows that meet their target, then one line per row that misses.

    With ``quick`` (tiny sizes, 3 repetitions: per-call dispatch dominates and the figures are
    noise) the targets are not judged.
    """
    judged = [r for r in rows if "meets_target" in r]
    if not judged:
        return "targets: none set by these suites"
    if quick:
        return f"targets: {len(judged)} rows have one; not judged in a --quick run (smoke test)"
    missed = [r for r in judged if not r["meets_target"]]
    lines = [f"targets: {len(judged) - len(missed)} of {len(judged)} met"]
    for r in missed:
        what = ", ".join(f"{k}={_fmt(k, r[k])}" for k in ("ratio", "x_fwd") if r.get(k) is not None)
        lines.append(
            f"  MISSED {r.get('suite')}: {r.get('name')} [{r.get('impl')}, {r.get('size', '')}] "
            f"{what} (target {r.get('target', '?')})"
        )
    return "\n".join(lines)


def format_markdown(
    header: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], quick: bool = False
) -> str:
    """The header as a list and the rows as a Markdown table, for ``docs/benchmarks/``."""
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in header.items()]
    cols = [(k, t) for k, t in COLUMNS if any(k in r for r in rows)]
    lines += ["", "| " + " | ".join(t for _, t in cols) + " |"]
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        cells = [_fmt(k, r.get(k)).replace("|", "/") for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "```", format_targets(rows, quick=quick), "```"]
    return "\n".join(lines) + "\n"


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy/JAX scalars become Python numbers, NaN/inf become strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float) or hasattr(obj, "__float__"):
        try:
            v = float(obj)
        except (TypeError, ValueError):
            return str(obj)
        if isinstance(obj, float) or getattr(obj, "ndim", 0) == 0:
            return v if math.isfinite(v) else str(v)
    return str(obj)


def write_json(
    path: str | Path,
    header: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    errors: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Write ``{"header", "rows", "errors"}`` to ``path`` (parents created), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = to_jsonable({"header": header, "rows": list(rows), "errors": list(errors)})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
