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
    """Write the figure (format from the suffix, PNG by default), close it, return the path.

    Written to a temporary name and renamed, so an interrupted save leaves no half file.
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=110, bbox_inches="tight")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        pyplot().close(fig)
    return path
