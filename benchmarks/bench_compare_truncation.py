"""Wall time of `bptt compare-truncation` on its defaults, and each strategy's cost against full BPTT.

Issue 6's target: the default run prints the table and writes the plots in under a minute. The
command is run as a user runs it (a fresh `python -m bptt_cli` process, plots included), for the
default task (recall) and for `--task influence`; wall time and the child's CPU time (user + sys,
which load from other processes inflates much less) are recorded. From the same run's JSON: each
strategy's time per gradient estimate relative to full BPTT (measured in that one process) and
its share of backward Jacobian-vector products. Results go to benchmarks/results/.

    .venv/bin/python benchmarks/bench_compare_truncation.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "bench_compare_truncation.json"
TARGET_S = 60.0


def run_once(args: list[str]) -> tuple[float, float, dict]:
    """(wall s, child CPU s, JSON document) of one command run in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "bptt_cli", "compare-truncation", "--json", "--out", tmp, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"the command failed: {p.stderr.strip()}")
        doc = json.loads(p.stdout)
        if not all(Path(f).is_file() for f in doc["results"]["plots"]):
            raise SystemExit("a plot listed in the output was not written")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    runs = []
    for name, extra in (("recall (default)", []), ("influence", ["--task", "influence"])):
        walls, cpus, doc = [], [], None
        for _ in range(args.repeats):
            wall, cpu, doc = run_once(extra)
            walls.append(wall)
            cpus.append(cpu)
        stats = doc["results"]["statistics"]
        full_s = next(s["seconds"] for s in stats if s["strategy"] == "full")
        runs.append(
            dict(
                run=name,
                args=extra,
                wall_s=statistics.median(walls),
                wall_max_s=max(walls),
                cpu_s=statistics.median(cpus),
                strategies=[
                    dict(
                        strategy=s["strategy"],
                        time_vs_full=s["seconds"] / full_s,
                        backward_share=s["backward_share"],
                        rel_bias=s["rel_bias"],
                        rel_bias_se=s["rel_bias_se"],
                        cosine=s["cosine"],
                    )
                    for s in stats
                ],
            )
        )

    print(f"bptt compare-truncation on its defaults, {args.repeats} runs each (target: under {TARGET_S:.0f} s wall)")
    print(f"{'run':18s} {'wall s (median)':>16s} {'wall s (max)':>13s} {'CPU s':>7s}")
    for r in runs:
        print(f"{r['run']:18s} {r['wall_s']:16.1f} {r['wall_max_s']:13.1f} {r['cpu_s']:7.1f}")
    for r in runs:
        print(f"\n{r['run']}: cost of one estimate")
        print(f"{'strategy':12s} {'time / full':>11s} {'backward share':>15s} {'rel. bias':>10s} {'cos':>7s}")
        for s in r["strategies"]:
            print(
                f"{s['strategy']:12s} {s['time_vs_full']:11.2f} {s['backward_share']:15.3f} "
                f"{s['rel_bias']:10.4f} {s['cosine']:7.3f}"
            )
    machine = dict(
        python=platform.python_version(),
        numpy=np.__version__,
        cpus=os.cpu_count(),
        platform=platform.platform(),
        load_average=os.getloadavg(),
        note="2-core VM shared with other processes; wall time includes Python start-up and the plots",
    )
    doc = dict(
        benchmark="bench_compare_truncation",
        target=f"default run (table + plots) under {TARGET_S:.0f} s wall",
        repeats=args.repeats,
        runs=runs,
        passed=all(r["wall_max_s"] < TARGET_S for r in runs),
        machine=machine,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\n{'passed' if doc['passed'] else 'FAILED'}; wrote {args.out}")


if __name__ == "__main__":
    main()
