"""How much memory this machine can give a command, and the refusal when a command would need more.

A command estimates the bytes its largest arrays need from its sizes (T, B, H, ...) before it
allocates any of them, and calls `check_fits`: an estimate beyond what is available is refused
with one line naming the options (or the file) that set the sizes, instead of a MemoryError
minutes in or the kernel's OOM killer. What is available: BPTT_MEMORY_LIMIT (bytes, or with a
K/M/G/T suffix) when set, else MemAvailable from /proc/meminfo, else the physical memory.
"""

from __future__ import annotations

import os
import re

from bptt_cli.core.validate import OptionError

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """'4G', '512M', '1000000' -> bytes; ValueError for anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise ValueError(f"BPTT_MEMORY_LIMIT={text!r}: expected a size such as 4G, 512M or 1000000 (bytes)")
    return int(float(m[1]) * _UNITS[m[2]])


def available_bytes() -> int:
    """The memory a command may use (module docstring)."""
    limit = os.environ.get("BPTT_MEMORY_LIMIT")
    if limit:
        return parse_size(limit)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return 2**63  # unknown: refuse nothing


def human(n: float) -> str:
    """Bytes for a person: 1.5 GiB, 820 MiB, 12 KiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def check_fits(need: float, what: str, *, usage: bool = True) -> None:
    """Refuse a command whose estimate `need` (bytes) exceeds what is available.

    what : the options (or the file) that set the sizes, as the user typed them, e.g.
        "--seq-len 100000000 with --batch 32 and H = 64"
    usage : the sizes come from options (OptionError, exit 2) rather than a file (ValueError, exit 1)
    """
    have = available_bytes()
    if need > have:
        message = (
            f"{what} needs about {human(need)} of memory; {human(have)} is available "
            "(BPTT_MEMORY_LIMIT sets the limit): use smaller sizes"
        )
        raise OptionError(message) if usage else ValueError(message)
