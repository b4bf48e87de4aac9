"""The RNN-vs-LSTM demonstration of docs/rnn-vs-lstm.md, regenerated from the real CLI.

    python -m tools.demo_rnn_vs_lstm [--seeds 0,1,2] [--work DIR] [--steps 3000] [--no-docs]
    python -m tools.demo_rnn_vs_lstm --replot docs/img/rnn-vs-lstm.json   # figure and table only

For every seed, learning rate (0.001 and 0.01) and cell (rnn, gru, lstm), one at a time:

    bptt train --task recall --alphabet 2 --delay 40 -T 60 --steps 3000 --clip 1 --lr LR \\
        --seed S --cell CELL --no-plots --json -q --out WORK/CELL-lrLR-seedS
    bptt trace --model WORK/CELL-lrLR-seedS/model.npz --json -q

(the trace runs on the checkpoint's task: the recall task's held-out set). Then it draws
docs/img/rnn-vs-lstm.png from the first seed's runs: the last loss's signal
||dl_T/ds_{T-k}|| / ||dl_T/ds_T|| of each trained model against the steps back k, one panel per
learning rate, one curve per cell (the LSTM's cell path c dashed), a line at the delay; and in
a third panel the signal that reached step 1 during training (metrics.jsonl's start_fraction).
It writes every number to docs/img/rnn-vs-lstm.json and the results table between the markers
in docs/rnn-vs-lstm.md (so the table is regenerated, never pasted). Deterministic: bptt's
runs are seeded; the work folder is a temporary one unless --work names one to keep. One seed
takes about 3 minutes on one core, three seeds about 9.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELLS = ("rnn", "gru", "lstm")
LRS = (0.001, 0.01)
TASK = {"alphabet": 2, "delay": 40, "seq_len": 60}
CLIP = 1.0
STEPS = 3000
BEGIN, END = "<!-- rnn-vs-lstm:begin -->", "<!-- rnn-vs-lstm:end -->"
COLORS = {"rnn": "tab:red", "gru": "tab:green", "lstm": "tab:blue"}
NAMES = {"rnn": "tanh RNN", "gru": "GRU", "lstm": "LSTM"}
FLOOR = 1e-30  # the training panel's bottom edge
SMOOTH = 9  # log steps (of 10 training steps) in the running median of the training panel


def bptt_exe() -> str:
    """The `bptt` of this interpreter's environment (the checkout's venv), else the one on PATH."""
    here = Path(sys.executable).parent / "bptt"
    found = str(here) if here.exists() else shutil.which("bptt")
    if found is None:
        raise SystemExit("no `bptt` next to this Python or on PATH: install the checkout (pip install -e .)")
    return found


def run_json(args: list[str]) -> dict:
    """Run one bptt command (one BLAS thread) and return the JSON document it prints."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "BPTT_THREADS": "1", "MPLBACKEND": "Agg"}
    p = subprocess.run([bptt_exe(), *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"`bptt {shlex.join(args)}` failed (exit {p.returncode}):\n{p.stderr.strip()}")
    return json.loads(p.stdout)


def train_args(cell: str, lr: float, seed: int, steps: int, out: Path) -> list[str]:
    return [
        "train",
        "--task",
        "recall",
        "--alphabet",
        str(TASK["alphabet"]),
        "--delay",
        str(TASK["delay"]),
        "-T",
        str(TASK["seq_len"]),
        "--steps",
        str(steps),
        "--clip",
        f"{CLIP:g}",
        "--lr",
        f"{lr:g}",
        "--seed",
        str(seed),
        "--cell",
        cell,
        "--no-plots",
        "--json",
        "-q",
        "--out",
        str(out),
    ]


def _ln(values: list) -> list[float]:
    """JSON logs (null for -inf/nan) as floats."""
    return [-math.inf if v is None else float(v) for v in values]


def one_run(cell: str, lr: float, seed: int, steps: int, work: Path) -> dict:
    """Train and trace one model; return its numbers (and the curves for the figure)."""
    folder = work / f"{cell}-lr{lr:g}-seed{seed}"
    if folder.exists():
        shutil.rmtree(folder)  # a fresh run folder: a rerun never resumes or mixes two runs
    t0 = time.perf_counter()
    tr = run_json(train_args(cell, lr, seed, steps, folder))
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    tc = run_json(["trace", "--model", str(folder / "model.npz"), "--json", "-q"])
    t_trace = time.perf_counter() - t0
    res, ps = tr["results"], tc["results"]["per_step"]
    T, d = TASK["seq_len"], TASK["delay"]
    last = _ln(ps["last"]["ln_mean"])  # index i is step t = i + 1
    ref = last[T - 1]  # ln ||dl_T/ds_T||
    back = [v - ref for v in last[::-1]]  # index k: ln of the signal k steps back, relative to k = 0
    parts = {name: [v - ref for v in _ln(p["ln_mean"])[::-1]] for name, p in ps["parts"].items()}
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    metric_rows = [(r["step"], r["metric"]) for r in rows if r.get("metric") is not None]
    start = [(r["step"], r["start_fraction"]) for r in rows if r.get("start_fraction") is not None]
    gates = {k.split(".", 1)[1]: sum(v) / len(v) for k, v in ps.items() if k.startswith("l0.mean_")}
    ev = tc["verdict"]["evidence"]
    out = {
        "cell": cell,
        "lr": lr,
        "seed": seed,
        "accuracy": res["final_metric"],
        "chance": res["chance"],
        "best_accuracy_during_training": max(m for _, m in metric_rows),
        "signal_at_delay": math.exp(back[d]),
        "trace_signal_at_span": ev.get("signal_at_span"),
        "verdict": tc["verdict"]["label"],
        "fitted_gain": tc["results"]["fit"]["gain"],
        "gates": gates,
        "train_seconds": round(t_train, 1),
        "trace_seconds": round(t_trace, 1),
        "train_command": "bptt " + shlex.join(train_args(cell, lr, seed, steps, Path(f"runs/{folder.name}"))),
        "curves": {  # rounded: the figure needs no more, and the JSON stays small
            "ln_signal_back": [round(v, 4) for v in back],
            "ln_parts_back": {n: [round(v, 4) for v in p] for n, p in parts.items()},
            "start_fraction": [(n, float(f"{f:.4g}")) for n, f in start],
            "metric": [(n, round(m, 4)) for n, m in metric_rows],
        },
    }
    if "l0.c" in parts:
        out["c_signal_at_delay"] = math.exp(parts["l0.c"][d])
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0 or (1e-3 <= abs(x) < 1e4):
        return f"{x:.3g}"
    return f"{x:.1e}"


def _once(values: list[str], sep: str) -> str:
    """One value when every seed gave it, else each."""
    return values[0] if len(set(values)) == 1 else sep.join(values)


def table(runs: list[dict], command: str) -> str:
    """The markdown results table: one row per cell and learning rate, the seeds side by side."""
    d = TASK["delay"]
    seeds = sorted({r["seed"] for r in runs})
    sep = " / "
    lines = [
        f"Generated by `{command}`: recall with alphabet {TASK['alphabet']} (chance {runs[0]['chance']:.2f}), "
        f"delay {d}, T = {TASK['seq_len']}; {runs[0]['steps']} steps of Adam with `--clip {CLIP:g}`, H = 64, "
        f"batch 32; accuracy on the 256 held-out sequences. Each cell holds one value per seed "
        f"({', '.join(map(str, seeds))}); the trace is of the trained model on the held-out set.",
        "",
        f"| cell | lr | accuracy | best during training | signal {d} steps back | of it, the LSTM's c "
        "| fitted gain per step | mean gate | trace verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in CELLS:
        for lr in sorted({r["lr"] for r in runs}):
            rs = sorted((r for r in runs if r["cell"] == cell and r["lr"] == lr), key=lambda r: r["seed"])
            if not rs:
                continue
            gate = {"lstm": ("mean_forget", "forget f "), "gru": ("mean_update", "update z ")}.get(cell)
            row = [
                NAMES[cell],
                f"{lr:g}",
                "**" + sep.join(f"{r['accuracy']:.3f}" for r in rs) + "**",
                sep.join(f"{r['best_accuracy_during_training']:.3f}" for r in rs),
                sep.join(_fmt(r["signal_at_delay"]) for r in rs),
                sep.join(_fmt(r.get("c_signal_at_delay")) for r in rs) if cell == "lstm" else "-",
                sep.join(f"{r['fitted_gain']:.3f}" for r in rs),
                "-" if gate is None else gate[1] + sep.join(f"{r['gates'][gate[0]]:.2f}" for r in rs),
                _once([r["verdict"] for r in rs], sep),
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def figure(runs: list[dict], seed: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d, T = TASK["delay"], TASK["seq_len"]
    mine = [r for r in runs if r["seed"] == seed]
    lrs = sorted({r["lr"] for r in mine})
    fig, axes = plt.subplots(1, len(lrs) + 1, figsize=(5.2 * (len(lrs) + 1), 4.6))
    for ax, lr in zip(axes, lrs, strict=False):
        for r in (r for r in mine if r["lr"] == lr):
            k = list(range(T))
            y = [_exp(v) for v in r["curves"]["ln_signal_back"]]
            label = f"{NAMES[r['cell']]} (accuracy {r['accuracy']:.2f})"
            ax.semilogy(k, y, color=COLORS[r["cell"]], lw=2, label=label)
            c = r["curves"]["ln_parts_back"].get("l0.c")
            if c is not None:  # dl_T/dc_T is 0 (the loss reads h_T alone): the c path starts at k = 1
                kc = [i for i in k if c[i] is not None and math.isfinite(c[i])]
                ax.semilogy(
                    kc, [_exp(c[i]) for i in kc], color=COLORS[r["cell"]], lw=1.5, ls="--", label="LSTM: c path"
                )
        ax.axvline(d, color="k", ls=":", lw=1.2)
        ax.text(d, 0.98, f" delay {d}", transform=ax.get_xaxis_transform(), va="top", fontsize=9)
        ax.set_title(f"trained with lr {lr:g}: signal of the last loss")
        ax.set_xlabel("steps back k")
        ax.set_ylabel(r"$\|\partial l_T/\partial s_{T-k}\| \;/\; \|\partial l_T/\partial s_T\|$")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    ax = axes[-1]
    for r in mine:
        steps, frac = zip(*r["curves"]["start_fraction"], strict=True)
        ls = "-" if r["lr"] == lrs[0] else "--"
        y = [10**v for v in _running_median([math.log10(max(f, 1e-300)) for f in frac], SMOOTH)]
        ax.semilogy(steps, y, color=COLORS[r["cell"]], ls=ls, lw=1.5, label=f"{NAMES[r['cell']]}, lr {r['lr']:g}")
    ax.set_ylim(FLOOR / 10, 1e12)  # room above for the legend
    ax.set_title(f"during training: signal reaching step 1 ({T - 1} back)")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"$\|\partial l_T/\partial s_1\| \;/\; \|\partial l_T/\partial s_T\|$ (running median)")
    ax.grid(True, which="major", alpha=0.3)
    ax.text(0.01, 0.01, f"below {FLOOR:.0e}: drawn at {FLOOR:.0e}", transform=ax.transAxes, fontsize=7, color="0.4")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(
        f"recall with delay {d} (alphabet {TASK['alphabet']}, T = {T}), seed {seed}: "
        "a model learns when its signal reaches the delay"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _exp(v: float | None) -> float:
    """exp of a JSON log (None is the log of 0)."""
    return 0.0 if v is None else math.exp(v)


def _running_median(values: list[float], n: int) -> list[float]:
    """The median of each value and the n - 1 before it (fewer at the start)."""
    out = []
    for i in range(len(values)):
        window = sorted(values[max(0, i - n + 1) : i + 1])
        m = len(window)
        out.append(window[m // 2] if m % 2 else 0.5 * (window[m // 2 - 1] + window[m // 2]))
    return out


def rewrite_block(doc: Path, text: str) -> bool:
    """Replace what lies between the markers in `doc`; False when the file or a marker is missing."""
    if not doc.exists():
        return False
    s = doc.read_text(encoding="utf-8")
    i, j = s.find(BEGIN), s.find(END)
    if i < 0 or j < i:
        return False
    doc.write_text(s[: i + len(BEGIN)] + "\n" + text + "\n" + s[j:], encoding="utf-8")
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; the figure shows the first (default 0)")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"training steps per run (default {STEPS})")
    ap.add_argument("--work", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--img", type=Path, default=ROOT / "docs" / "img", help="where the .png and .json go")
    ap.add_argument(
        "--doc", type=Path, default=ROOT / "docs" / "rnn-vs-lstm.md", help="the page whose table to rewrite"
    )
    ap.add_argument("--no-docs", action="store_true", help="write nothing into docs/ (print the table only)")
    ap.add_argument("--replot", type=Path, default=None, help="no training: redraw the figure and table from this JSON")
    args = ap.parse_args()
    png, js = args.img / "rnn-vs-lstm.png", args.img / "rnn-vs-lstm.json"
    if args.replot is not None:
        doc = json.loads(args.replot.read_text(encoding="utf-8"))
        runs, command, seeds = doc["runs"], doc["generated_by"], doc["settings"]["seeds"]
        TASK.update({k: doc["settings"][k] for k in TASK})
    else:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        command = "python -m tools.demo_rnn_vs_lstm" + (f" --seeds {args.seeds}" if args.seeds != "0" else "")
        command += f" --steps {args.steps}" if args.steps != STEPS else ""
        t0 = time.perf_counter()
        runs = train_and_trace(seeds, args.steps, args.work)
        doc = {
            "generated_by": command,
            "settings": {"task": "recall", **TASK, "steps": args.steps, "clip": CLIP, "lrs": list(LRS), "seeds": seeds},
            "seconds": round(time.perf_counter() - t0, 1),
            "runs": _clean(runs),
        }
    md = table(runs, command)
    print(md)
    if args.no_docs:
        return
    figure(runs, seeds[0], png)
    if args.replot is None:
        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(_compact(json.dumps(doc, indent=1, allow_nan=False)) + "\n", encoding="utf-8")
    wrote = rewrite_block(args.doc, md)
    print(
        f"wrote {png}"
        + ("" if args.replot else f", {js}")
        + (f", the table in {args.doc}" if wrote else "")
        + (f" ({doc['seconds']:.0f} s)" if args.replot is None else ""),
        file=sys.stderr,
    )


def train_and_trace(seeds: list[int], steps: int, keep: Path | None) -> list[dict]:
    """Every run, one at a time, in `keep` (kept) or a temporary folder (removed)."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = keep if keep is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            for lr in LRS:
                for cell in CELLS:
                    r = one_run(cell, lr, seed, steps, work)
                    r["steps"] = steps
                    runs.append(r)
                    print(
                        f"{cell:4s} lr {lr:<5g} seed {seed}: accuracy {r['accuracy']:.3f} (chance {r['chance']:.2f}), "
                        f"signal {TASK['delay']} back {_fmt(r['signal_at_delay'])}, "
                        f"{r['train_seconds']:.0f} s + {r['trace_seconds']:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    return runs


def _compact(text: str) -> str:
    """Indented JSON with each innermost list of numbers on one line."""
    return re.sub(r"\[[-+.,\deEnul\s]*\]", lambda m: re.sub(r"\s+", "", m.group()), text)


def _clean(x: object) -> object:
    """Non-finite floats (the log of an exact zero) as null, as bptt's own JSON does."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


if __name__ == "__main__":
    main()
