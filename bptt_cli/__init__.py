"""bptt: a gradient-dynamics analyzer for recurrent networks, written from scratch in numpy.

The library's public functions (docs/design.md section 2 has the layers):

    gradients, loss_value        exact BPTT (core/bptt.py)
    Params, init_params, forward the vanilla RNN (core/rnn.py)
    RNNCell                      the cell interface the analyses use (core/cells.py)
    trace                        the gradient signal back through time (core/signal.py)
    dominant_eigenvalue          lambda_1 of a recurrent matrix (core/eigen.py)
    lyapunov_exponents           along a trajectory (core/lyapunov.py)

They are imported on first use, so that `import bptt_cli` (and the console script's signal
handling, bptt_cli/entry.py) runs before numpy is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

from bptt_cli._version import __version__

_WHERE = {
    "GradResult": "bptt_cli.core.bptt",
    "NonFiniteError": "bptt_cli.core.bptt",
    "gradients": "bptt_cli.core.bptt",
    "loss_value": "bptt_cli.core.bptt",
    "RNNCell": "bptt_cli.core.cells",
    "dominant_eigenvalue": "bptt_cli.core.eigen",
    "lyapunov_exponents": "bptt_cli.core.lyapunov",
    "Params": "bptt_cli.core.rnn",
    "Trajectory": "bptt_cli.core.rnn",
    "forward": "bptt_cli.core.rnn",
    "init_params": "bptt_cli.core.rnn",
    "trace": "bptt_cli.core.signal",
}

__all__ = ["__version__", *sorted(_WHERE)]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bptt_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
