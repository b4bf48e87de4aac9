"""Results -> strict JSON: the one document a command prints, and the conversion it needs.

Strict JSON has no token for NaN or infinity: they become null, and the document counts them
in `nonfinite_as_null` so that a reader knows (docs/json-schema.json is the contract).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bptt_cli._version import __version__


def jsonable(obj: Any) -> tuple[Any, int]:
    """Convert to plain JSON types; return (value, count of non-finite numbers made null).

    numpy arrays become lists, complex numbers {"re", "im"}, paths strings, dataclasses dicts.
    NaN and +-inf become None.
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
    """The document a command prints: command, version, config, results (, verdict), nonfinite_as_null."""
    doc: dict[str, Any] = {"command": command, "version": __version__, "config": config, "results": results}
    if verdict is not None:
        doc["verdict"] = verdict
    value, count = jsonable(doc)
    value["nonfinite_as_null"] = count
    return value


def error_document(command: str | None, message: str, exit_code: int, kept: dict | None = None) -> dict:
    """What stdout holds under --json when a command fails; `kept`: what an interrupted run left on disk."""
    error: dict[str, Any] = {"message": message, "exit_code": exit_code}
    if kept is not None:
        error["kept"] = kept
    return {"command": command, "version": __version__, "error": error}


def dumps(doc: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text (raises on NaN/inf rather than writing invalid tokens)."""
    return json.dumps(doc, indent=indent, allow_nan=False)


def loads_strict(text: str) -> Any:
    """Parse JSON, refusing the NaN / Infinity tokens Python's json would otherwise accept."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)
