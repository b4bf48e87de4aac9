"""numpy's BLAS thread count, set for the duration of a block.

bptt's matrices are small ((B, H) x (H, H) with H in the tens or hundreds): a second OpenBLAS
thread costs more in hand-offs than it saves, and on a shared machine it also waits for a core
(measured: the default `bptt train` took 1.4 s of training with one thread, 31 s with two). The
CLI therefore runs every command with one BLAS thread unless BPTT_THREADS says otherwise.
Without threadpoolctl (not a dependency) this talks to the OpenBLAS that numpy bundles; with
any other BLAS it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def default_threads() -> int:
    """BPTT_THREADS if set to a positive integer, else 1."""
    value = os.environ.get("BPTT_THREADS", "1")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"BPTT_THREADS must be a positive integer; got {value!r}") from None
    if n < 1:
        raise ValueError(f"BPTT_THREADS must be a positive integer; got {value!r}")
    return n


def _openblas() -> tuple[Any, Any] | None:
    """(set, get) of the thread count of the OpenBLAS numpy loaded, or None (another BLAS)."""
    import numpy as np

    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*")):
        try:
            lib = ctypes.CDLL(str(path))  # already loaded by numpy: the same handle
        except OSError:
            continue
        for suffix in ("scipy_openblas_{}_num_threads64_", "openblas_{}_num_threads64_", "openblas_{}_num_threads"):
            setter, getter = (getattr(lib, suffix.format(v), None) for v in ("set", "get"))
            if setter is not None and getter is not None:
                getter.restype = ctypes.c_int
                return setter, getter
    return None


def set_threads(n: int) -> bool:
    """Set numpy's OpenBLAS to `n` threads for the rest of the process; False for another BLAS."""
    api = _openblas()
    if api is None:
        return False
    api[0](ctypes.c_int(n))
    return True


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run the block with `n` BLAS threads, then restore the previous count.

    The training matrices are small (B x H with H ~ 64): a second BLAS thread costs more in
    hand-offs than it saves, and on a shared machine it waits for a core. No-op for a BLAS
    other than numpy's bundled OpenBLAS.
    """
    api = _openblas()
    if api is None:
        yield
        return
    setter, getter = api
    before = int(getter())
    setter(ctypes.c_int(n))
    try:
        yield
    finally:
        setter(ctypes.c_int(before))
