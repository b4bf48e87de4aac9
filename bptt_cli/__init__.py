"""bptt: a gradient-dynamics analyzer for recurrent networks, written from scratch in numpy.

The library's public functions (docs/design.md section 2 has the layers):

    gradients, loss_value        exact BPTT (core/bptt.py)
    Params, init_params, forward the vanilla RNN (core/rnn.py)
    RNNCell                      the cell interface the analyses use (core/cells.py)
    trace                        the gradient signal back through time (core/signal.py)
    dominant_eigenvalue          lambda_1 of a recurrent matrix (core/eigen.py)
    lyapunov_exponents           along a trajectory (core/lyapunov.py)
"""

from bptt_cli._version import __version__
from bptt_cli.core.bptt import GradResult, NonFiniteError, gradients, loss_value
from bptt_cli.core.cells import RNNCell
from bptt_cli.core.eigen import dominant_eigenvalue
from bptt_cli.core.lyapunov import lyapunov_exponents
from bptt_cli.core.rnn import Params, Trajectory, forward, init_params
from bptt_cli.core.signal import trace

__all__ = [
    "GradResult",
    "NonFiniteError",
    "Params",
    "RNNCell",
    "Trajectory",
    "__version__",
    "dominant_eigenvalue",
    "forward",
    "gradients",
    "init_params",
    "loss_value",
    "lyapunov_exponents",
    "trace",
]
