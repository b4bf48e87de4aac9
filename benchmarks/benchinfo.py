"""What every benchmark records about the machine it ran on (a shared machine: the load too)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine(**extra: Any) -> dict:
    """cpu, the 1-minute load average (other processes skew every column), cpus, Python, numpy,
    the platform, and what the benchmark adds (torch's version, ...)."""
    import numpy as np

    return {
        "cpu": cpu_model(),
        "loadavg_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        **extra,
    }
