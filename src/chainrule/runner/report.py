"""Plots and ``report.md`` assembly from saved results (so ``chainrule report`` can rebuild)."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

from chainrule.runner.store import atomic_write_bytes, write_csv

__all__ = ["md_table", "fmt", "save_figures", "write_tables", "point_label"]

MAX_REPORT_ROWS = 40


def fmt(v: Any) -> str:
    """A compact cell: 4 significant digits for floats, ``–`` for null."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | dict):
        s = str(v)
        return s if len(s) <= 40 else s[:37] + "..."
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(
    rows: list[dict[str, Any]], max_rows: int = MAX_REPORT_ROWS, csv_name: str = ""
) -> str:
    """Rows of dicts as a markdown table (the first ``max_rows``; a note points to the CSV)."""
    if not rows:
        return "_(empty table)_\n"
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows[:max_rows]:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    if len(rows) > max_rows:
        where = f" in `{csv_name}`" if csv_name else ""
        lines.append(f"\n_First {max_rows} of {len(rows)} rows; all of them{where}._")
    return "\n".join(lines) + "\n"


def point_label(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "(no sweep)"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "plot"


def save_figures(figs: dict[str, Any], plots_dir: Path, prefix: str = "") -> list[str]:
    """Save each figure as ``plots_dir/<prefix><key>.png`` (atomically); return the file names."""
    names = []
    for key, fig in figs.items():
        name = f"{prefix}{_safe(key)}.png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        atomic_write_bytes(plots_dir / name, buf.getvalue())
        names.append(name)
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:  # figures made with pyplot stay registered until closed
            pyplot.close(fig)
    return names


def write_tables(points: list[dict[str, Any]], tables_dir: Path) -> dict[str, list[dict]]:
    """One CSV per table name; with a sweep, rows of every point, prefixed by its overrides."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        for name, rows in (p["results"].get("tables") or {}).items():
            for row in rows:
                merged.setdefault(name, []).append({**p["overrides"], **row})
    for name, rows in merged.items():
        write_csv(tables_dir / f"{_safe(name)}.csv", rows)
    return merged
