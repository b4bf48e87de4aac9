"""Results -> a strict JSON document, or rich tables. No numbers are computed here."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table


def jsonable(obj: Any) -> tuple[Any, int]:
    """Convert to plain JSON types; return (value, count of non-finite numbers made null).

    numpy arrays become lists, complex numbers {"re", "im"}, paths strings, dataclasses dicts.
    NaN and +-inf become None: strict JSON has no token for them.
    """
    count = 0

    def conv(o: Any) -> Any:
        nonlocal count
        if o is None or isinstance(o, (bool, str)):
            return o
        if isinstance(o, np.bool_):
            return bool(o)
        if isinstance(o, (int, np.integer)):
            return int(o)
        if isinstance(o, (float, np.floating)):
            f = float(o)
            if math.isfinite(f):
                return f
            count += 1
            return None
        if isinstance(o, (complex, np.complexfloating)):
            return {"re": conv(float(o.real)), "im": conv(float(o.imag))}
        if isinstance(o, np.ndarray):
            if o.ndim == 0:  # a 0-d array is a scalar; iterating it raises
                return conv(o.item())
            return [conv(v) for v in o.tolist()] if o.ndim == 1 else [conv(v) for v in o]
        if isinstance(o, Path):
            return str(o)
        if is_dataclass(o) and not isinstance(o, type):
            return conv(asdict(o))
        if isinstance(o, dict):
            return {str(k): conv(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        raise TypeError(f"cannot put {type(o).__name__} into JSON")

    return conv(obj), count


def document(command: str, config: dict, results: dict, *, verdict: dict | None = None) -> dict:
    """The one JSON document a command prints: command, version, config, results (, verdict).

    `nonfinite_as_null` counts the NaN/inf numbers replaced by null, so a reader knows.
    """
    from bptt_cli import __version__

    doc: dict[str, Any] = {"command": command, "version": __version__, "config": config, "results": results}
    if verdict is not None:
        doc["verdict"] = verdict
    value, count = jsonable(doc)
    value["nonfinite_as_null"] = count
    return value


def dumps(doc: dict, *, indent: int | None = 2) -> str:
    """Strict JSON text (raises on NaN/inf rather than writing invalid tokens)."""
    return json.dumps(doc, indent=indent, allow_nan=False)


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table cell: general format, 'nan'/'inf' spelled out, None as '-'."""
    if x is None:
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (complex, np.complexfloating)):
        if x.imag == 0:
            return fmt(x.real, digits)
        sign = "+" if x.imag >= 0 else "-"
        return f"{fmt(x.real, digits)}{sign}{fmt(abs(x.imag), digits)}i"
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if not math.isfinite(f):
            return str(f)
        return f"{f:.{digits}g}"
    return str(x)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str | None = None) -> Table:
    """A rich table; numeric cells are formatted with `fmt` and right-aligned."""
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    rows = [list(r) for r in rows]
    for j, name in enumerate(columns):
        numeric = rows and all(isinstance(r[j], (int, float, complex, np.number)) or r[j] is None for r in rows)
        t.add_column(name, justify="right" if numeric else "left")
    for r in rows:
        t.add_row(*[c if isinstance(c, str) else fmt(c) for c in r])
    return t
