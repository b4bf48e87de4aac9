"""How fast is `bptt.gradients`? Against torch.nn.RNN on the CPU and against the serial floor.

Float32, forward + backward of the softmax cross-entropy loss (sum over time, mean over the batch),
tanh RNN with an output layer, for three sizes (B, T, D, H, V). Every column is the median of
--repeats runs after one warm-up run, and the runs of all columns are interleaved (one run of each
per round), so that load from other processes on a shared machine hits every column alike.

Columns:
  bptt    bptt_cli.bptt.gradients(method="efficient")
  torch   the same network (same weights) as torch.nn.RNN(tanh) + nn.Linear + cross_entropy,
          forward + backward, with torch.set_num_threads equal to numpy's BLAS threads
  floor   the part no implementation can parallelise over time: 2T products (B, H) x (H, H),
          one after the other, made the way the fastest loop makes them (np.dot into a buffer)
  naive   gradients(method="naive"), the O(T^2) path enumeration, at the first size only
  f64     gradients() in float64 (for the float64 / float32 ratio)

Memory: the peak of everything numpy allocates during one float32 gradients() call at the
largest size (tracemalloc; numpy reports its buffers to it), against what BPTT must keep:
pre-activations and states (T B H each) plus the parameters and their gradients.

Run:  .venv/bin/python benchmarks/bench_bptt.py   (or `make bench`); --help for the options.
The table goes to stdout, the JSON to benchmarks/results/bench_bptt.json.
"""

import argparse
import ctypes
import glob
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

SIZES = [  # (B, T, D, H, V)
    (32, 100, 64, 128, 64),
    (32, 1000, 64, 256, 64),
    (1, 1000, 16, 64, 16),
]
GOALS = {
    "torch_ratio_b32": 0.5,  # bptt / torch at both B = 32 sizes: at least 2x faster
    "torch_ratio_b1": 0.25,  # bptt / torch at B = 1: at least 4x faster
    "floor_ratio": 1.6,  # bptt / floor at B = 32, T = 1000, H = 256
    "f64_ratio": 2.2,  # float64 / float32 time
    "memory_ratio": 1.5,  # peak / kept arrays at the largest size
}
ROOT = Path(__file__).resolve().parents[1]
SETTLE_SECONDS = 0.25


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per column (median; at least 7)")
    ap.add_argument(
        "--threads", type=int, default=None, help="BLAS / torch threads (default: numpy's BLAS default, the CPUs)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_bptt.json")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch column")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", default="0,1,2", help="which of the three sizes to run (indices, for quick checks)")
    args = ap.parse_args()
    if args.repeats < 7:
        ap.error("--repeats must be at least 7")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be at least 1")
    return args


ARGS = parse_args()
if ARGS.threads is not None:
    # must be set before numpy loads OpenBLAS
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, str(ROOT))
import benchinfo  # noqa: E402 - benchmarks/benchinfo.py, beside this script

from bptt_cli import gradients, init_params  # noqa: E402

try:
    import torch
except ImportError:  # the column is skipped with a note
    torch = None


def blas_threads() -> int | None:
    """numpy's OpenBLAS thread count, read from the bundled library (None if it cannot be found)."""
    libs = glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "*openblas*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                return int(fn())
    return None


def machine() -> dict:
    return benchinfo.machine(torch=None if torch is None else torch.__version__)


# ---------------------------------------------------------------------------- the problems


def problem(B: int, T: int, D: int, H: int, V: int, dtype: str, seed: int):
    rng = np.random.default_rng(seed)
    params = init_params(rng, input_size=D, hidden_size=H, output_size=V, spectral_radius=0.9, dtype=dtype)
    x = rng.normal(size=(T, B, D)).astype(params.dtype)  # (T, B, D)
    targets = rng.integers(0, V, size=(T, B))  # (T, B)
    return params, x, targets


def torch_step(params, x: np.ndarray, targets: np.ndarray):
    """The same network in torch (weights copied), and a closure doing one forward + backward."""
    T, B, D = x.shape
    H, V = params.hidden_size, params.output_size
    rnn = torch.nn.RNN(D, H, nonlinearity="tanh")  # time-major, like bptt
    head = torch.nn.Linear(H, V)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(params.W_x))
        rnn.weight_hh_l0.copy_(torch.from_numpy(params.W_h))
        rnn.bias_ih_l0.copy_(torch.from_numpy(params.b))
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(params.W_y))
        head.bias.copy_(torch.from_numpy(params.c))
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(targets.reshape(-1))
    weights = [*rnn.parameters(), *head.parameters()]

    def step():
        for w in weights:
            w.grad = None
        hs, _ = rnn(xt)  # (T, B, H)
        logits = head(hs).reshape(T * B, V)
        loss = torch.nn.functional.cross_entropy(logits, yt, reduction="sum") / B  # sum over t, mean over b
        loss.backward()
        return loss

    return step, rnn


def check_torch_agrees(params, x, targets, step, rnn) -> float:
    """Relative difference of dL/dW_h between bptt and torch (both float32): the same network."""
    ours = gradients(params, x, targets).grads.W_h
    step()
    theirs = rnn.weight_hh_l0.grad.numpy()
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def floor_step(B: int, T: int, H: int, dtype: str):
    rng = np.random.default_rng(1)
    W = rng.normal(size=(H, H)).astype(dtype)  # (H, H)
    h = rng.normal(size=(B, H)).astype(dtype)  # (B, H)
    out = np.empty_like(h)

    def step():
        for _ in range(2 * T):
            np.dot(h, W, out=out)

    return step


def settle() -> None:
    """Let the other library's idle worker threads stop spinning before the next column runs.

    OpenBLAS workers busy-wait for about 0.1 s after a product and torch's OpenMP workers spin too;
    on a 2-CPU machine a column timed right after the other library's run loses a CPU to them.
    """
    time.sleep(SETTLE_SECONDS)


def median_times(fns: dict, repeats: int, *, settle_between: bool = True) -> dict:
    """Median seconds per function; one warm-up each, then `repeats` interleaved rounds."""
    pause = settle if settle_between else (lambda: None)
    for fn in fns.values():
        fn()
        pause()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            pause()
    return {name: float(np.median(ts)) for name, ts in times.items()}


def peak_memory(B: int, T: int, D: int, H: int, V: int, seed: int) -> dict:
    """Peak bytes numpy allocates in one gradients() call, against the arrays BPTT must keep."""
    params, x, targets = problem(B, T, D, H, V, "float32", seed)
    item = params.dtype.itemsize
    param_bytes = sum(v.nbytes for v in params.as_dict().values())
    kept = 2 * T * B * H * item + 2 * param_bytes  # a and h (T B H each), params and grads
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    res = gradients(params, x, targets)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del res
    return {"peak_bytes": peak, "kept_bytes": kept, "ratio": peak / kept}


def fixed_overhead(repeats: int) -> dict:
    """gradients() at the tiny sizes `bptt paths` times (linear RNN, half-square loss, B = 1, H = 4,
    float64): the per-call cost and the log-log slope of time against T over T = 25..400 (1.0 when
    all the cost is per step, less when a fixed part weighs in at small T)."""
    lengths = [1, 25, 50, 100, 200, 400]
    rng = np.random.default_rng(0)
    params = init_params(rng, input_size=3, hidden_size=4, output_size=0, spectral_radius=0.9)
    fns = {}
    for T in lengths:
        x = rng.normal(size=(T, 1, 3))  # (T, B, D)
        fns[T] = lambda xx=x: gradients(params, xx, None, loss="half-square", activation="identity")
    t = median_times(fns, max(repeats, 51), settle_between=False)
    Ts = np.array(lengths[1:], dtype=float)
    slope = float(np.polyfit(np.log(Ts), np.log([t[T] for T in lengths[1:]]), 1)[0])
    return {"seconds": {str(T): t[T] for T in lengths}, "exponent_25_400": slope}


# ---------------------------------------------------------------------------- main


def main() -> None:
    threads = ARGS.threads or blas_threads() or os.cpu_count()
    info = machine()
    use_torch = torch is not None and not ARGS.no_torch
    if use_torch:
        torch.set_num_threads(threads)
    note = None if use_torch else "torch column skipped: torch is not installed" if torch is None else "--no-torch"
    rows = []
    chosen = sorted({int(i) for i in ARGS.sizes.split(",")})
    for i, (B, T, D, H, V) in enumerate(SIZES):
        if i not in chosen:
            continue
        p32, x32, tg = problem(B, T, D, H, V, "float32", ARGS.seed)
        p64, x64, _ = problem(B, T, D, H, V, "float64", ARGS.seed)
        fns = {
            "bptt": lambda p=p32, x=x32, t=tg: gradients(p, x, t),
            "floor": floor_step(B, T, H, "float32"),
            "f64": lambda p=p64, x=x64, t=tg: gradients(p, x, t),
        }
        agree = None
        if use_torch:
            step, rnn = torch_step(p32, x32, tg)
            agree = check_torch_agrees(p32, x32, tg, step, rnn)
            fns["torch"] = step
        if i == 0:
            fns["naive"] = lambda p=p32, x=x32, t=tg: gradients(p, x, t, method="naive")
        t = median_times(fns, ARGS.repeats)
        row = {
            "B": B,
            "T": T,
            "D": D,
            "H": H,
            "V": V,
            "seconds": t,
            "bptt_over_torch": t["bptt"] / t["torch"] if "torch" in t else None,
            "bptt_over_floor": t["bptt"] / t["floor"],
            "f64_over_f32": t["f64"] / t["bptt"],
            "naive_over_bptt": t["naive"] / t["bptt"] if "naive" in t else None,
            "torch_dW_h_rel_diff": agree,
        }
        rows.append(row)
        print(f"measured B={B} T={T} H={H}", file=sys.stderr)
    B, T, D, H, V = SIZES[1]
    mem = peak_memory(B, T, D, H, V, ARGS.seed)
    overhead = fixed_overhead(ARGS.repeats)
    goals = evaluate(rows, mem)
    doc = {
        "benchmark": "bench_bptt",
        "config": {"repeats": ARGS.repeats, "threads": threads, "seed": ARGS.seed, "dtype": "float32"},
        "machine": {
            **info,
            "loadavg_1min_end": os.getloadavg()[0],
            "blas_threads": blas_threads(),
            "torch_threads": threads if use_torch else None,
        },
        "note": note,
        "sizes": rows,
        "memory": {"B": B, "T": T, "D": D, "H": H, "V": V, **mem},
        "fixed_overhead": overhead,
        "goals": goals,
    }
    print_table(doc)
    ARGS.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = ARGS.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, ARGS.out)
    print(f"\nwrote {ARGS.out.relative_to(ROOT) if ARGS.out.is_relative_to(ROOT) else ARGS.out}")


def evaluate(rows: list[dict], mem: dict) -> list[dict]:
    """Each goal: the measured value, the target and whether it is met (None if not measured)."""
    out = []

    def goal(name: str, value, target: float, size: str) -> None:
        met = None if value is None else bool(value <= target)
        out.append({"goal": name, "size": size, "value": value, "target": target, "met": met})

    for r in rows:
        size = f"B={r['B']} T={r['T']} H={r['H']}"
        target = GOALS["torch_ratio_b32"] if r["B"] == 32 else GOALS["torch_ratio_b1"]
        goal("bptt / torch", r["bptt_over_torch"], target, size)
        if (r["B"], r["T"], r["H"]) == (32, 1000, 256):
            goal("bptt / floor", r["bptt_over_floor"], GOALS["floor_ratio"], size)
        goal("float64 / float32", r["f64_over_f32"], GOALS["f64_ratio"], size)
    goal("peak / kept memory", mem["ratio"], GOALS["memory_ratio"], "B=32 T=1000 H=256")
    return out


def print_table(doc: dict) -> None:
    m = doc["machine"]
    print(f"bptt gradients() vs torch.nn.RNN and the serial floor  (float32, xent, tanh; median of {ARGS.repeats})")
    print(f"{m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, numpy {m['numpy']}, torch {m['torch']}, ", end="")
    print(f"threads {doc['config']['threads']}")
    print(f"load average (1 min) {m['loadavg_1min']:.2f} at the start, {m['loadavg_1min_end']:.2f} at the end")
    if doc["note"]:
        print(f"note: {doc['note']}")
    head = [
        "B",
        "T",
        "D",
        "H",
        "V",
        "bptt ms",
        "torch ms",
        "floor ms",
        "naive ms",
        "bptt/torch",
        "bptt/floor",
        "f64/f32",
    ]
    print()
    print(" ".join(f"{h:>10}" for h in head))
    for r in doc["sizes"]:
        ms = [f"{r['seconds'][k] * 1e3:.2f}" if k in r["seconds"] else "-" for k in ("bptt", "torch", "floor", "naive")]
        ratios = [r[k] for k in ("bptt_over_torch", "bptt_over_floor", "f64_over_f32")]
        cells = [r["B"], r["T"], r["D"], r["H"], r["V"], *ms, *("-" if v is None else f"{v:.2f}" for v in ratios)]
        print(" ".join(f"{c:>10}" for c in cells))
    mem = doc["memory"]
    mib = 1 << 20
    print(
        f"\nmemory at B={mem['B']} T={mem['T']} H={mem['H']}: peak {mem['peak_bytes'] / mib:.1f} MiB, "
        f"kept arrays {mem['kept_bytes'] / mib:.1f} MiB, ratio {mem['ratio']:.2f}"
    )
    ov = doc["fixed_overhead"]
    per = ", ".join(f"T={k}: {v * 1e6:.0f} us" for k, v in ov["seconds"].items())
    print(f"small calls (bptt paths: B=1, H=4, half-square): {per}")
    print(f"  time ~ T^{ov['exponent_25_400']:.2f} over T = 25..400")
    print("\ngoals:")
    for g in doc["goals"]:
        verdict = "not measured" if g["met"] is None else "met" if g["met"] else "NOT MET"
        value = "-" if g["value"] is None else f"{g['value']:.2f}"
        print(f"  {g['goal']:<20} {g['size']:<20} {value:>6} (target <= {g['target']}): {verdict}")


if __name__ == "__main__":
    main()
