"""matplotlib figures, always on the Agg backend: plots go to files, no window ever opens.

matplotlib is imported lazily (it costs ~0.3 s), only by a command that writes a plot.
Each command's figures live in their own module here (plots.paths, plots.spectrum, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend forced, whatever MPLBACKEND says."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    """Write the figure (format from the suffix, PNG by default) atomically, close it, return the path."""
    from bptt_cli.io.atomic import atomic_write

    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format=path.suffix.lstrip("."), dpi=110, bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return path
