"""bptt: a gradient-dynamics analyzer for vanilla RNNs, written from scratch in numpy."""

from bptt_cli.bptt import GradResult, NonFiniteError, gradients, loss_value
from bptt_cli.model import Params, Trajectory, forward, init_params

__version__ = "0.1.0"

__all__ = [
    "GradResult",
    "NonFiniteError",
    "Params",
    "Trajectory",
    "__version__",
    "forward",
    "gradients",
    "init_params",
    "loss_value",
]
