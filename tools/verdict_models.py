"""The hand-built models of docs/verdicts.md (and tests/test_verdict_cases.py), written to a file.

    python -m tools.verdict_models nilpotent nil.npz     # a bptt checkpoint
    python -m tools.verdict_models contraction w.npy     # a W_h matrix

nilpotent: four 2 x 2 blocks N = 3 [1; 1][1, -1] on the diagonal of W_h (N^2 = 0: rho = 0,
sigma_max = 6) and a bias (1.5, 5) per block that saturates the second unit, so that
diag(f'(a_t)) N diag(f'(a_{t-1})) N ... does not vanish: along a real trajectory the gradient
grows although every eigenvalue of W_h is 0.

contraction: a 16 x 16 W_h = U diag(0.99 ... 0.1) V^T with random orthogonal U, V: sigma_max =
0.99, so every tanh Jacobian diag(f'(a_t)) W_h shrinks the signal by at least 1 %.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bptt_cli.core.rnn import Params
from bptt_cli.io.checkpoint import save_checkpoint


def nilpotent_params() -> Params:
    N = np.array([[3.0, -3.0], [3.0, -3.0]])
    rng = np.random.default_rng(0)
    return Params(
        W_x=rng.normal(size=(8, 1)),
        W_h=np.kron(np.eye(4), N),
        b=np.tile([1.5, 5.0], 4),
        W_y=rng.normal(size=(2, 8)),
        c=np.zeros(2),
    )


def contraction_matrix() -> np.ndarray:
    rng = np.random.default_rng(4)
    U, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    V, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    return U @ np.diag(np.linspace(0.99, 0.1, 16)) @ V.T


def write(kind: str, path: Path) -> Path:
    if kind == "nilpotent":
        return save_checkpoint(path, nilpotent_params(), {"kind": "example", "options": {"activation": "tanh"}})
    if kind == "contraction":
        np.save(path, contraction_matrix())
        return path
    raise SystemExit(f"unknown model {kind!r}: nilpotent or contraction")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(f"wrote {write(sys.argv[1], Path(sys.argv[2]))}")
