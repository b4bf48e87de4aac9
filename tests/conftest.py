"""Test set-up: BLAS on one thread, matplotlib on Agg, for this process and every subprocess.

A second OpenBLAS thread makes the small products of these tests slower, and on a shared
machine much slower (docs: benchmarks/README.md); the environment variables reach the
subprocesses the CLI tests start, and the runtime call covers a numpy already loaded.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BPTT_THREADS"):
    os.environ[_var] = "1"
os.environ["MPLBACKEND"] = "Agg"

from bptt_cli.blas import set_threads  # noqa: E402

set_threads(1)
