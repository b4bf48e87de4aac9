"""No slower after the redesign: today's code against the code before it, in one process.

The package as it was before the layered redesign (git revision BASELINE, 0.1.0) is unpacked into
a temporary folder under the name `bptt_old` and imported beside `bptt_cli`, so that both run in
the same process on the same arrays, their runs interleaved (one of each per round, the order
alternating), and the ratio of each pair is taken (this machine is shared and noisy).

1. gradients(): forward + backward of the softmax cross-entropy, float32, at the three sizes of
   bench_bptt.py (`make bench`), new / old time (target: within 5%, <= 1.05), and the new code
   against torch.nn.RNN + Linear (the ratio `make bench` reports).
2. trace: the gradient signal back through time at B = 1, T = 100,000, H = 64 (bench_trace.py's
   size), new / old time.
3. watching while training (bench_train.py's size, B = 32, T = 100, H = 128, recall, Adam): the
   cost of watching every step (rho, the start fraction, log ||dL/dh_t||), new / old time.
4. training on text (d2l's setting): H = 256, T = 35, B = 32, plain SGD, lr 1, clip 1, float64,
   sequential partitioning with the state carried between batches: steps per second of the old
   `fit` (which ran a second forward pass per step for h_T), the new one, and torch.nn.RNN +
   Linear with the same loop (target: new >= torch).

Run:  .venv/bin/python benchmarks/bench_redesign.py [--repeats 9] [--steps 40]
The table goes to stdout, the JSON to benchmarks/results/bench_redesign.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread for numpy and torch alike (the commands' default)

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import bptt_cli  # noqa: E402
from bptt_cli.analyses import tasks as new_tasks  # noqa: E402
from bptt_cli.analyses.training import loop as new_loop  # noqa: E402
from bptt_cli.analyses.training import optim as new_optim  # noqa: E402

BASELINE = "0200c06"  # the last commit before the redesign
SIZES = [(32, 100, 64, 128, 64), (32, 1000, 64, 256, 64), (1, 1000, 16, 64, 16)]  # (B, T, D, H, V)
RESULTS = ROOT / "benchmarks" / "results" / "bench_redesign.json"
WORDS = (
    "the time traveller for so it will be convenient to speak of him was expounding a recondite matter to us "
    "his grey eyes shone and twinkled and his usually pale face was flushed and animated"
).split()


def load_old(rev: str, into: Path):  # noqa: ANN201 - the old package, a module
    """git archive `rev`'s bptt_cli into `into`/bptt_old, with its imports renamed."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "bptt_cli"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    shutil.move(into / "bptt_cli", into / "bptt_old")
    for f in (into / "bptt_old").rglob("*.py"):
        f.write_text(f.read_text().replace("bptt_cli", "bptt_old"))
    sys.path.insert(0, str(into))
    import bptt_old.bptt
    import bptt_old.model
    import bptt_old.optim
    import bptt_old.tasks
    import bptt_old.trace
    import bptt_old.train

    return bptt_old


def paired(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each function per round, one warm-up each, the order alternating between rounds."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def torch_gradient_step(p, x: np.ndarray, targets: np.ndarray):  # noqa: ANN001, ANN201
    T, B, D = x.shape
    H, V = p.hidden_size, p.output_size
    rnn, head = torch.nn.RNN(D, H), torch.nn.Linear(H, V)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p.W_x))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p.W_h))
        rnn.bias_ih_l0.copy_(torch.from_numpy(p.b))
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(p.W_y))
        head.bias.copy_(torch.from_numpy(p.c))
    xt, yt = torch.from_numpy(x), torch.from_numpy(targets.reshape(-1))
    weights = [*rnn.parameters(), *head.parameters()]

    def step() -> None:
        for w in weights:
            w.grad = None
        hs, _ = rnn(xt)
        loss = torch.nn.functional.cross_entropy(head(hs).reshape(T * B, V), yt, reduction="sum") / B
        loss.backward()

    return step


def gradient_section(old, repeats: int) -> list[dict]:  # noqa: ANN001
    rows = []
    for B, T, D, H, V in SIZES:
        rng = np.random.default_rng(0)
        p = bptt_cli.init_params(rng, input_size=D, hidden_size=H, output_size=V, spectral_radius=0.9, dtype="float32")
        x = rng.normal(size=(T, B, D)).astype(np.float32)
        targets = rng.integers(0, V, size=(T, B))
        q = old.model.Params(**p.as_dict())
        new_res = bptt_cli.gradients(p, x, targets)
        old_res = old.bptt.gradients(q, x, targets)
        assert np.allclose(new_res.grads.W_h, old_res.grads.W_h, rtol=0, atol=0), "the same numbers, bit for bit"
        fns = {
            "old": lambda q=q, x=x, t=targets: old.bptt.gradients(q, x, t),
            "new": lambda p=p, x=x, t=targets: bptt_cli.gradients(p, x, t),
            "torch": torch_gradient_step(p, x, targets),
        }
        t = paired(fns, repeats)
        rows.append(
            {
                "size": {"B": B, "T": T, "D": D, "H": H, "V": V},
                "old_ms": 1e3 * statistics.median(t["old"]),
                "new_ms": 1e3 * statistics.median(t["new"]),
                "torch_ms": 1e3 * statistics.median(t["torch"]),
                "new_over_old": median_ratio(t["new"], t["old"]),
                "new_over_torch": median_ratio(t["new"], t["torch"]),
                "old_over_torch": median_ratio(t["old"], t["torch"]),
            }
        )
    return rows


def trace_section(old, repeats: int) -> dict:  # noqa: ANN001
    B, T, H, D, V = 1, 100_000, 64, 8, 8
    rng = np.random.default_rng(0)
    p = bptt_cli.init_params(rng, input_size=D, hidden_size=H, output_size=V)
    x = rng.normal(size=(T, B, D))
    tg = rng.integers(0, V, size=(T, B))
    q = old.model.Params(**p.as_dict())
    new_r = bptt_cli.trace(p, x, tg, jacobian="bound")
    old_r = old.trace.trace(q, x, tg, jacobian="bound")
    assert np.allclose(new_r.last.log_mean, old_r.last.log_mean, rtol=1e-12, atol=0), "the same signal"
    t = paired(
        {
            "old": lambda: old.trace.trace(q, x, tg, jacobian="bound"),
            "new": lambda: bptt_cli.trace(p, x, tg, jacobian="bound"),
        },
        repeats,
    )
    return {
        "size": {"B": B, "T": T, "H": H},
        "old_s": statistics.median(t["old"]),
        "new_s": statistics.median(t["new"]),
        "new_over_old": median_ratio(t["new"], t["old"]),
    }


def watch_section(old, repeats: int, steps: int) -> dict:  # noqa: ANN001
    """ms per step of fit with watching at every step (log_every 1, no held-out metric), old and new."""
    B, T, H = 32, 100, 128
    task = new_tasks.make_task("recall", seq_len=T, delay=10, alphabet=8)
    old_task = old.tasks.make_task("recall", seq_len=T, delay=10, symbols=8)
    p = bptt_cli.init_params(np.random.default_rng(0), input_size=8, hidden_size=H, output_size=8)
    q = old.model.Params(**p.as_dict())

    def rate(fit, t, opt, params, watch):  # noqa: ANN001, ANN202
        stamps = {}
        fit(
            params,
            t,
            steps=steps,
            rng=np.random.default_rng(0),
            optimizer=opt,
            batch_size=B,
            log_every=1,
            eval_every=10**9,
            watch=watch,
            callback=lambda row: stamps.__setitem__(row["step"], time.perf_counter()) if "event" not in row else None,
        )
        return (stamps[steps - 1] - stamps[2]) / (steps - 3)

    runs = {
        "old": lambda: rate(old.train.fit, old_task, old.optim.Optimizer("adam", lr=1e-3), q, False),
        "old watching": lambda: rate(old.train.fit, old_task, old.optim.Optimizer("adam", lr=1e-3), q, True),
        "new": lambda: rate(new_loop.fit, task, new_optim.Optimizer("adam", lr=1e-3), p, False),
        "new watching": lambda: rate(new_loop.fit, task, new_optim.Optimizer("adam", lr=1e-3), p, True),
    }
    for fn in runs.values():
        fn()
    sec: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sec[name].append(runs[name]())
    return {
        "size": {"B": B, "T": T, "H": H, "steps_per_call": steps},
        "ms_per_step": {k: 1e3 * statistics.median(v) for k, v in sec.items()},
        "overhead_old": median_ratio(sec["old watching"], sec["old"]) - 1,
        "overhead_new": median_ratio(sec["new watching"], sec["new"]) - 1,
    }


def text_file(folder: Path, n_chars: int = 200_000) -> Path:
    rng = np.random.default_rng(0)
    words, size = [], 0
    while size < n_chars:
        w = WORDS[int(rng.integers(len(WORDS)))]
        words.append(w)
        size += len(w) + 1
    path = folder / "text.txt"
    path.write_text(" ".join(words) + "\n", encoding="utf-8")
    return path


def torch_text_steps(task, params, steps: int, batch: int) -> float:  # noqa: ANN001
    """Steps per second of the same loop in torch: the batches from bptt's own task code, the state
    carried (detached) between batches, SGD with clip_grad_norm_."""
    V, H = params.output_size, params.hidden_size
    rnn, head = torch.nn.RNN(V, H).double(), torch.nn.Linear(H, V).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(params.W_x))
        rnn.weight_hh_l0.copy_(torch.from_numpy(params.W_h))
        rnn.bias_ih_l0.copy_(torch.from_numpy(params.b))
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(params.W_y))
        head.bias.copy_(torch.from_numpy(params.c))
    weights = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.SGD(weights, lr=1.0)
    rng = np.random.default_rng(0)
    position, h = 0, None
    t0 = 0.0
    for step in range(1, steps):
        if step == 3:
            t0 = time.perf_counter()  # the same window as ours: steps 3 .. steps - 1
        b, position = new_tasks.sample_batch(task, rng, batch, position)
        if b.reset:
            h = None
        x, y, m = torch.from_numpy(b.x), torch.from_numpy(b.targets), torch.from_numpy(b.mask)
        hs, h_last = rnn(x, h)
        nll = torch.nn.functional.cross_entropy(head(hs).reshape(-1, V), y.reshape(-1), reduction="none")
        loss = (m.reshape(-1) * nll).sum() / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        opt.step()
        h = h_last.detach()
    return (steps - 3) / (time.perf_counter() - t0)


def text_section(old, folder: Path, repeats: int, steps: int) -> dict:  # noqa: ANN001
    H, T, B = 256, 35, 32
    path = text_file(folder)
    task = new_tasks.make_task("text", text=path, seq_len=T)
    old_task = old.tasks.make_task("text", text=path, seq_len=T)
    params = bptt_cli.init_params(
        np.random.default_rng(0), input_size=task.input_size, hidden_size=H, output_size=task.output_size
    )

    def ours(fit, t, opt, p):  # noqa: ANN001, ANN202
        # steps per second between the callbacks of step 2 and step `steps - 1`: the final step's
        # held-out evaluation and the verdict's trace, which run once per fit, stay out
        stamps = {}

        def callback(row: dict) -> None:
            if "event" not in row:
                stamps[row["step"]] = time.perf_counter()

        fit(
            p,
            t,
            steps=steps,
            rng=np.random.default_rng(0),
            optimizer=opt,
            batch_size=B,
            clip=1.0,
            log_every=1,
            eval_every=10**9,
            watch=False,
            callback=callback,
        )
        return (steps - 3) / (stamps[steps - 1] - stamps[2])

    rates: dict[str, list[float]] = {"old": [], "new": [], "torch": []}
    q = old.model.Params(**params.as_dict())
    runs = {
        "old": lambda: ours(old.train.fit, old_task, old.optim.Optimizer("sgd", lr=1.0), q),
        "new": lambda: ours(new_loop.fit, task, new_optim.Optimizer("sgd", lr=1.0), params),
        "torch": lambda: torch_text_steps(task, params, steps, B),
    }
    for fn in runs.values():  # warm-up
        fn()
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            rates[name].append(runs[name]())
    # the final evaluation and trace of fit run once per call: they are part of every rate alike
    return {
        "setting": {
            "H": H,
            "T": T,
            "B": B,
            "V": task.output_size,
            "optimizer": "sgd",
            "lr": 1.0,
            "clip": 1.0,
            "steps_per_call": steps,
        },
        "steps_per_second": {k: statistics.median(v) for k, v in rates.items()},
        "new_over_old": median_ratio(rates["new"], rates["old"]),
        "new_over_torch": median_ratio(rates["new"], rates["torch"]),
        "old_over_torch": median_ratio(rates["old"], rates["torch"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--steps", type=int, default=40, help="training steps per timed call (text)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(BASELINE, Path(tmp))
        grads = gradient_section(old, args.repeats)
        tr = trace_section(old, max(3, args.repeats // 2))
        watch = watch_section(old, max(3, args.repeats // 2), args.steps)
        text = text_section(old, Path(tmp), max(3, args.repeats // 2), args.steps)
    print(f"gradients(), float32, one thread, median of {args.repeats} interleaved rounds")
    print(
        f"{'B':>3} {'T':>5} {'H':>4} | {'old ms':>8} {'new ms':>8} {'new/old':>8} | {'torch ms':>9} "
        f"{'new/torch':>9} {'old/torch':>9}"
    )
    for r in grads:
        s = r["size"]
        print(
            f"{s['B']:>3} {s['T']:>5} {s['H']:>4} | {r['old_ms']:8.2f} {r['new_ms']:8.2f} {r['new_over_old']:8.3f} | "
            f"{r['torch_ms']:9.2f} {r['new_over_torch']:9.3f} {r['old_over_torch']:9.3f}"
        )
    print(
        f"trace (B 1, T 100000, H 64): old {tr['old_s']:.3f} s, new {tr['new_s']:.3f} s, "
        f"new/old {tr['new_over_old']:.3f}"
    )
    ms = watch["ms_per_step"]
    print(
        f"watching every step (B 32, T 100, H 128): old {ms['old']:.2f} -> {ms['old watching']:.2f} ms "
        f"({100 * watch['overhead_old']:.0f}%), new {ms['new']:.2f} -> {ms['new watching']:.2f} ms "
        f"({100 * watch['overhead_new']:.0f}%)"
    )
    sp = text["steps_per_second"]
    print(
        f"text training (H 256, T 35, B 32, SGD, float64): steps/s old {sp['old']:.1f}, new {sp['new']:.1f}, "
        f"torch {sp['torch']:.1f}; new/old {text['new_over_old']:.3f}, new/torch {text['new_over_torch']:.3f}"
    )
    doc = {
        "benchmark": "bench_redesign",
        "baseline": BASELINE,
        "config": {"repeats": args.repeats, "steps": args.steps, "threads": 1},
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_1min": os.getloadavg()[0],
        },
        "gradients": grads,
        "trace": tr,
        "watching": watch,
        "text_training": text,
        "goals": {"new_over_old_max": 1.05, "text_new_over_torch_min": 1.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
