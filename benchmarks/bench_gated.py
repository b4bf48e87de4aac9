"""How fast are the GRU and LSTM of core/layers.py? Against torch.nn.GRU / nn.LSTM and the product floor.

Float32, one layer, forward + backward of the softmax cross-entropy (sum over time, mean over the
batch) on a linear output layer: `NetCell(params).gradients(x, targets)` (core/netcell.py), the
whole public call with its validation. Two sizes (B, T, D, H, V), bench_bptt.py's first and third
with their D and V: (32, 100, 64, 128, 64) and (1, 1000, 16, 64, 16). One process, one BLAS thread
on every side (the environment variables are set before numpy loads; torch.set_num_threads(1));
every column is the median of --repeats runs after one warm-up, the columns interleaved round by
round, so that load from other processes hits them alike; the ratios are medians of the per-round
ratios.

Columns:
  bptt      NetCell.gradients, method 'efficient'
  torch     the same network (same weights) as torch.nn.GRU / nn.LSTM + nn.Linear + cross_entropy,
            forward + backward, as torch runs it by default (its LSTM on the CPU is oneDNN's fused
            kernel: one call for the whole sequence, forward and backward)
  torch-1   the same with oneDNN off (torch.backends.mkldnn.flags(enabled=False)): one cell step at a
            time, as torch runs its GRU anyway
  floor     every matrix product bptt makes, with the same shapes and the same number of calls, and
            nothing else: per step the products with W_hh forward and backward; per chunk of steps the
            input projection, the gate gradients' products with x, h and ones; the output layer's
            products. Random float32 data, the same process.

The gradients of bptt and torch are checked to agree (max over the arrays of max |diff| / max |torch|).

Run:  .venv/bin/python benchmarks/bench_gated.py   (--help for the options)
The table goes to stdout, the JSON to benchmarks/results/bench_gated.json.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads OpenBLAS: one BLAS thread on every side

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import benchinfo  # noqa: E402 - benchmarks/benchinfo.py, beside this script

from bptt_cli.core import layers as ly  # noqa: E402
from bptt_cli.core.net import GATES, init_net_params  # noqa: E402
from bptt_cli.core.netcell import NetCell  # noqa: E402

try:
    import torch
except ImportError:  # the torch columns are skipped with a note
    torch = None

SIZES = [  # (B, T, D, H, V): bench_bptt.py's first and third
    (32, 100, 64, 128, 64),
    (1, 1000, 16, 64, 16),
]
KINDS = ("gru", "lstm")
GOALS = {"torch_ratio": 1.0, "floor_ratio": 1.5}  # bptt / torch < 1 at both sizes; bptt / floor <= 1.5
SETTLE_SECONDS = 0.05


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per column (median; at least 7)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_gated.json")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch columns")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", default="0,1", help="which sizes to run (indices, for quick checks)")
    ap.add_argument("--kinds", default="gru,lstm")
    args = ap.parse_args()
    if args.repeats < 7:
        ap.error("--repeats must be at least 7")
    return args


def machine() -> dict:
    return benchinfo.machine(torch=None if torch is None else torch.__version__)


# ---------------------------------------------------------------------------- the sides


def problem(kind: str, B: int, T: int, D: int, H: int, V: int, seed: int):
    rng = np.random.default_rng(seed)
    params = init_net_params(rng, kind=kind, input_size=D, hidden_size=H, output_size=V, dtype="float32")
    x = rng.normal(size=(T, B, D)).astype(np.float32)  # (T, B, D)
    targets = rng.integers(0, V, size=(T, B))  # (T, B)
    return params, x, targets


def torch_side(params, x: np.ndarray, targets: np.ndarray, *, onednn: bool):
    """The same network in torch (weights copied), and a closure doing one forward + backward."""
    T, B, D = x.shape
    H, V = params.hidden_size, params.output_size
    mod = (torch.nn.GRU if params.kind == "gru" else torch.nn.LSTM)(D, H)  # time-major, like bptt
    head = torch.nn.Linear(H, V)
    la = params.layers[0]
    with torch.no_grad():
        for name, arr in (("weight_ih", la.W_ih), ("weight_hh", la.W_hh), ("bias_ih", la.b_ih), ("bias_hh", la.b_hh)):
            getattr(mod, f"{name}_l0").copy_(torch.from_numpy(arr))
        head.weight.copy_(torch.from_numpy(params.W_y))
        head.bias.copy_(torch.from_numpy(params.c))
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(targets.reshape(-1))
    weights = [*mod.parameters(), *head.parameters()]

    def step():
        with torch.backends.mkldnn.flags(enabled=onednn):
            for w in weights:
                w.grad = None
            hs, _ = mod(xt)  # (T, B, H)
            loss = torch.nn.functional.cross_entropy(head(hs).reshape(T * B, V), yt, reduction="sum") / B
            loss.backward()
        return loss

    return step, mod, head


def agreement(params, x, targets, step, mod, head) -> float:
    """max over every gradient of max |bptt - torch| / max |torch| (both float32)."""
    ours = NetCell(params).gradients(x, targets).grads
    step()
    names = {"W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0", "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0"}
    pairs = [(getattr(ours.layers[0], k), getattr(mod, v).grad.numpy()) for k, v in names.items()]
    pairs += [(ours.W_y, head.weight.grad.numpy()), (ours.c, head.bias.grad.numpy())]
    return max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in pairs)


def floor_side(kind: str, B: int, T: int, D: int, H: int, V: int):
    """Every product of one NetCell.gradients call, in the same shapes and order, on random data."""
    rng = np.random.default_rng(1)
    f32 = np.float32
    GH = GATES[kind] * H
    Kf = ly.chunk_steps(T, B, GH, 4)  # the forward's and the backward's chunks, as core/layers.py picks them
    Kb = ly.chunk_steps(T, B, {"gru": 5, "lstm": 6}[kind] * H, 4)
    x = rng.normal(size=(T, B, D)).astype(f32)  # (T, B, D)
    W_i = rng.normal(size=(GH, D)).astype(f32)  # (G H, D)
    W_h = rng.normal(size=(GH, H)).astype(f32) / H  # (G H, H)
    W_hT = np.ascontiguousarray(W_h.T)  # (H, G H)
    W_y = rng.normal(size=(V, H)).astype(f32)  # (V, H)
    h = rng.normal(size=(H, B)).astype(f32)  # (H, B)
    g = rng.normal(size=(GH, B)).astype(f32)  # (G H, B)
    pre = np.empty((T, GH, B), dtype=f32)  # (T, G H, B)
    out_f = np.empty((GH, B), dtype=f32)
    out_b = np.empty((H, B), dtype=f32)
    rows = rng.normal(size=(T * B, H)).astype(f32)  # (T B, H) h_t as rows
    M = rng.normal(size=(GH, Kb * B)).astype(f32)  # one chunk's gate gradients as (G H, k B)
    ones = np.ones(Kb * B, dtype=f32)
    nx = 3 * H if kind == "gru" else GH  # the GRU's x and h_{t-1} each take 3 of its 4 slots
    M_x, M_h = M[:nx], M[GH - nx :]

    def step():
        for lo in range(0, T, Kf):  # forward: the input projection per chunk, one product per step
            hi = min(T, lo + Kf)
            ly._project(W_i, x[lo:hi], pre[lo:hi])
            for _ in range(lo, hi):
                np.dot(W_h, h, out=out_f)
        yT = W_y @ rows.T  # the output layer: y, dW_y, dc, dl_t/dh_t
        yT @ rows
        np.ones(T * B, dtype=f32) @ yT.T
        yT.T @ W_y
        for hi in range(T, 0, -Kb):  # backward: one product per step, the chunk's shares after it
            lo = max(0, hi - Kb)
            for _ in range(lo, hi):
                np.dot(W_hT, g, out=out_b)
            n = (hi - lo) * B
            M_x[:, :n] @ x[lo:hi].reshape(n, D)
            M_h[:, :n] @ rows[lo * B : hi * B]
            M[:, :n] @ ones[:n]

    return step


def median_times(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median seconds per function and the per-round times; one warm-up each, then `repeats`
    interleaved rounds (the order rotated every round)."""
    for fn in fns.values():
        fn()
        time.sleep(SETTLE_SECONDS)
    names = list(fns)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
            time.sleep(SETTLE_SECONDS)
    return {name: float(np.median(ts)) for name, ts in times.items()}, times


def per_round(times: dict, a: str, b: str) -> float | None:
    if a not in times or b not in times:
        return None
    return float(np.median(np.array(times[a]) / np.array(times[b])))


# ---------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    use_torch = torch is not None and not args.no_torch
    if use_torch:
        torch.set_num_threads(1)
    note = None if use_torch else "torch columns skipped: torch is not installed" if torch is None else "--no-torch"
    info = machine()
    rows = []
    chosen = sorted({int(i) for i in args.sizes.split(",")})
    for kind in args.kinds.split(","):
        for i, (B, T, D, H, V) in enumerate(SIZES):
            if i not in chosen:
                continue
            params, x, targets = problem(kind, B, T, D, H, V, args.seed)
            cell = NetCell(params)
            fns = {"bptt": lambda c=cell, x=x, t=targets: c.gradients(x, t), "floor": floor_side(kind, B, T, D, H, V)}
            agree = None
            if use_torch:
                step, mod, head = torch_side(params, x, targets, onednn=True)
                agree = agreement(params, x, targets, step, mod, head)
                fns["torch"] = step
                fns["torch-1"] = torch_side(params, x, targets, onednn=False)[0]
            t, all_times = median_times(fns, args.repeats)
            rows.append(
                {
                    "kind": kind,
                    "B": B,
                    "T": T,
                    "D": D,
                    "H": H,
                    "V": V,
                    "seconds": t,
                    "bptt_over_torch": per_round(all_times, "bptt", "torch"),
                    "bptt_over_torch_unfused": per_round(all_times, "bptt", "torch-1"),
                    "bptt_over_floor": per_round(all_times, "bptt", "floor"),
                    "torch_over_floor": per_round(all_times, "torch", "floor"),
                    "torch_grad_rel_diff": agree,
                }
            )
            print(f"measured {kind} B={B} T={T} H={H}", file=sys.stderr)
    doc = {
        "benchmark": "bench_gated",
        "config": {"repeats": args.repeats, "threads": 1, "seed": args.seed, "dtype": "float32"},
        "machine": {**info, "loadavg_1min_end": os.getloadavg()[0], "torch_threads": 1 if use_torch else None},
        "note": note,
        "sizes": rows,
        "goals": evaluate(rows),
    }
    print_table(doc, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


def evaluate(rows: list[dict]) -> list[dict]:
    """Each goal: the measured value, the target and whether it is met (None if not measured)."""
    out = []
    for r in rows:
        size = f"{r['kind']} B={r['B']} T={r['T']} H={r['H']}"
        for name, value, target, strict in (
            ("bptt / torch", r["bptt_over_torch"], GOALS["torch_ratio"], True),
            ("bptt / floor", r["bptt_over_floor"], GOALS["floor_ratio"], False),
        ):
            met = None if value is None else bool(value < target if strict else value <= target)
            out.append({"goal": name, "size": size, "value": value, "target": target, "met": met})
    return out


def print_table(doc: dict, repeats: int) -> None:
    m = doc["machine"]
    print(f"bptt NetCell.gradients vs torch and the product floor  (float32, xent, one layer; median of {repeats})")
    print(f"{m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, numpy {m['numpy']}, torch {m['torch']}, threads 1")
    print(f"load average (1 min) {m['loadavg_1min']:.2f} at the start, {m['loadavg_1min_end']:.2f} at the end")
    if doc["note"]:
        print(f"note: {doc['note']}")
    head = ["cell", "B", "T", "D", "H", "V", "bptt ms", "torch ms", "torch-1 ms", "floor ms"]
    head += ["bptt/torch", "bptt/torch-1", "bptt/floor", "torch/floor", "grad diff"]
    print()
    print(" ".join(f"{h:>12}" for h in head))
    for r in doc["sizes"]:
        sec = r["seconds"]
        ms = [f"{sec[k] * 1e3:.2f}" if k in sec else "-" for k in ("bptt", "torch", "torch-1", "floor")]
        keys = ("bptt_over_torch", "bptt_over_torch_unfused", "bptt_over_floor", "torch_over_floor")
        ratios = ["-" if r[k] is None else f"{r[k]:.2f}" for k in keys]
        diff = "-" if r["torch_grad_rel_diff"] is None else f"{r['torch_grad_rel_diff']:.1e}"
        cells = [r["kind"], r["B"], r["T"], r["D"], r["H"], r["V"], *ms, *ratios, diff]
        print(" ".join(f"{c:>12}" for c in cells))
    print("\ngoals:")
    for g in doc["goals"]:
        verdict = "not measured" if g["met"] is None else "met" if g["met"] else "NOT MET"
        value = "-" if g["value"] is None else f"{g['value']:.2f}"
        target = f"< {g['target']}" if g["goal"] == "bptt / torch" else f"<= {g['target']}"
        print(f"  {g['goal']:<14} {g['size']:<24} {value:>6} (target {target}): {verdict}")


if __name__ == "__main__":
    main()
