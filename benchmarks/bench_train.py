"""Training speed of bptt against PyTorch, and the cost of watching the gradients, in one process.

Issue 5's targets, at B = 32, T = 100, H = 128 on the recall task (K = 8, delay 10):
1. steps per second of `train.fit` (numpy, full BPTT, Adam) against the same model and
   optimiser in PyTorch (torch.nn.RNN(tanh) + torch.nn.Linear, torch.optim.Adam, CPU, the
   same number of threads, the same batches): goal, bptt is faster;
2. the overhead of watching at log_every = 1 (rho by warm-started power iteration, the start
   fraction from trace.trace on 4 sequences, log ||dL/dh_t|| from the adjoints): goal <= 30%
   of a step. The held-out metric (a forward pass over 256 sequences) is reported apart: it
   runs every `eval_every` steps, not necessarily at every log step.
3. the wall time of the embedded default run (TrainConfig()), which must stay under 60 s.

The variants are timed alternately, `--repeats` rounds, so load from other processes on a
shared machine hits all of them alike; the table gives medians (steps per second from the
callback's timestamps, the first `--warmup` steps excluded) and the median per-round ratios.
Results go to benchmarks/results/bench_train.json.

    .venv/bin/python benchmarks/bench_train.py [--steps 60] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _threads_from_argv() -> str:
    """--threads must be known before numpy and torch are imported (BLAS reads it at load time)."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


THREADS = _threads_from_argv()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = THREADS

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bptt_cli import Params, init_params  # noqa: E402
from bptt_cli.analyses import tasks  # noqa: E402
from bptt_cli.analyses.train import TrainConfig  # noqa: E402
from bptt_cli.analyses.training import loop as train  # noqa: E402
from bptt_cli.analyses.training import optim  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_train.json"
NEVER = 10**9


def numpy_steps_per_second(task, params, *, steps: int, warmup: int, batch: int, seed: int, **kw) -> float:
    """Steps per second of train.fit between the end of step `warmup` and the end of step `steps`."""
    stamps: dict[int, float] = {}
    train.fit(
        params,
        task,
        steps=steps,
        rng=np.random.default_rng(seed),
        optimizer=optim.Optimizer("adam", lr=1e-3),
        batch_size=batch,
        log_every=1,
        callback=lambda row: stamps.setdefault(row["step"], time.perf_counter()),
        **kw,
    )
    return (steps - warmup) / (stamps[steps] - stamps[warmup])


class TorchRNN(torch.nn.Module):
    def __init__(self, params: Params) -> None:
        super().__init__()
        H, D = params.W_x.shape
        V = params.W_y.shape[0]
        self.rnn = torch.nn.RNN(D, H, nonlinearity="tanh", bias=True)
        self.out = torch.nn.Linear(H, V)
        with torch.no_grad():  # the same initial weights; torch has two biases, b = b_ih + b_hh
            self.rnn.weight_ih_l0.copy_(torch.from_numpy(params.W_x))
            self.rnn.weight_hh_l0.copy_(torch.from_numpy(params.W_h))
            self.rnn.bias_ih_l0.copy_(torch.from_numpy(params.b))
            self.rnn.bias_hh_l0.zero_()
            self.out.weight.copy_(torch.from_numpy(params.W_y))
            self.out.bias.copy_(torch.from_numpy(params.c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hs, _ = self.rnn(x)  # (T, B, H)
        return self.out(hs)  # (T, B, V)


def torch_steps_per_second(task, params, *, steps: int, warmup: int, batch: int, seed: int) -> float:
    """The same loop in PyTorch: draw the batch (same numpy task code), masked mean xent, Adam."""
    model = TorchRNN(params).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    start = 0.0
    for step in range(1, steps + 1):
        b, _ = tasks.sample_batch(task, rng, batch)
        x = torch.from_numpy(b.x)
        targets = torch.from_numpy(b.targets)
        mask = torch.from_numpy(b.mask)
        y = model(x)
        nll = torch.nn.functional.cross_entropy(y.reshape(-1, y.shape[-1]), targets.reshape(-1), reduction="none")
        loss = (mask.reshape(-1) * nll).sum() / batch  # the same L as losses.loss_and_grad
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == warmup:
            start = time.perf_counter()
    return (steps - warmup) / (time.perf_counter() - start)


def default_run_seconds() -> tuple[float, float]:
    """Wall time and final held-out accuracy of the embedded default run (TrainConfig(), no plots)."""
    import tempfile

    from bptt_cli.analyses.train import run

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run(TrainConfig(out=Path(tmp) / "run", plots=False))
        return time.perf_counter() - t0, res.fit.final_metric


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads for numpy and torch alike")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, T, H = args.batch, args.seq_len, args.hidden
    task = tasks.make_task("recall", seq_len=T, delay=10, alphabet=8)
    params = init_params(np.random.default_rng(args.seed), input_size=8, hidden_size=H, output_size=8)
    common = dict(steps=args.steps, warmup=args.warmup, batch=B, seed=args.seed)
    variants = {
        "bptt (no watching)": lambda: numpy_steps_per_second(task, params, watch=False, eval_every=NEVER, **common),
        "bptt, watching every step": lambda: numpy_steps_per_second(
            task, params, watch=True, eval_every=NEVER, **common
        ),
        "bptt, watching + held-out metric every step": lambda: numpy_steps_per_second(
            task, params, watch=True, eval_every=1, **common
        ),
        "pytorch (nn.RNN + Linear, Adam)": lambda: torch_steps_per_second(task, params, **common),
    }
    for fn in variants.values():  # warm-up: lazy imports, first-touch pages
        fn()
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            rates[name].append(fn())
    base = rates["bptt (no watching)"]

    def ratio(name: str, f) -> float:  # noqa: ANN001
        return statistics.median(f(a, b) for a, b in zip(base, rates[name], strict=True))

    speedup = ratio("pytorch (nn.RNN + Linear, Adam)", lambda a, b: a / b)
    watch = ratio("bptt, watching every step", lambda a, b: a / b - 1)
    watch_eval = ratio("bptt, watching + held-out metric every step", lambda a, b: a / b - 1)
    default_s, default_acc = default_run_seconds()

    print(f"B = {B}, T = {T}, H = {H}, float64, {args.threads} thread(s), {args.repeats} rounds of {args.steps} steps")
    print(f"{'variant':46s} {'steps/s (median)':>17s}  {'ms/step':>8s}")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"{name:46s} {med:17.1f}  {1e3 / med:8.2f}")
    print(f"bptt / pytorch speed (median of rounds): {speedup:.2f}x   (goal: > 1)")
    print(f"watching overhead at log_every 1: {100 * watch:.1f}% of a step   (goal: <= 30%)")
    print(f"  with the held-out metric (256 sequences) every step too: {100 * watch_eval:.1f}%")
    print(f"embedded default run (500 steps): {default_s:.1f} s, accuracy {default_acc:.3f}")

    doc = {
        "benchmark": "bench_train",
        "config": {
            **vars(args),
            "out": str(args.out),
            "task": "recall",
            "delay": 10,
            "alphabet": 8,
            "dtype": "float64",
        },
        "machine": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "torch": torch.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "steps_per_second": {k: {"median": statistics.median(v), "all": v} for k, v in rates.items()},
        "bptt_over_pytorch": speedup,
        "watch_overhead": watch,
        "watch_and_metric_overhead": watch_eval,
        "default_run": {"seconds": default_s, "accuracy": default_acc, "steps": 500},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
