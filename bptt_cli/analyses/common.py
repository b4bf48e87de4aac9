"""What every analysis config shares: its JSON form and the rule for writing plots."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from bptt_cli.core.validate import OptionError


def config_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as a plain dict (paths as strings, tuples as lists)."""
    out = {}
    for f in fields(config):
        v = getattr(config, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return out


def wants_plots(plots: bool | None, out: Path | None) -> bool:
    """Plots are written with --out; `--plots` without a folder is a usage error."""
    if plots and out is None:
        raise OptionError("`--plots` writes files: give `--out DIR`")
    return out is not None if plots is None else plots
