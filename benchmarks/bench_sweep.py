"""How fast does `bptt sweep` run a grid? Points per second with 1 and 2 workers, and what the
executors cost per point, on CPU-bound points of about one second.

The grid: `bptt sweep trace -H 256 -T 5000 -B 8 --lyapunov 0 --grid seed=0:N-1:N` (each point a
trace of one second or so: numpy, one BLAS thread). One process drives every side, round after
round, the sides interleaved so that load from other processes hits them alike:

  direct        the points' analyses called one after the other in this process, no sweep at all
  serial        `--workers 1`: the sweep in this process (grid, sweep.jsonl, fsync per point)
  processes-2   `--workers 2`: two local worker processes (forkserver)
  dask-1        `--scheduler local --workers 1`: a LocalCluster of one worker process
  dask-2        `--scheduler local --workers 2`

Each sweep side writes its own sweep.jsonl (a new folder per round). What a sweep pays once,
not per point, is timed on its own and left out of the sides' times: starting the executor and
its workers (the forkserver and the pool; the LocalCluster, bptt imported on every worker) and
stopping it. A side's time is its points, from the first submitted to the last written.

Figures (medians over rounds):
  speedup           serial / processes-2 and dask-1 / dask-2: points per second, 2 workers vs 1
  overhead/point    (side - direct) / N / (direct / N): what the executor adds per point, as a
                    share of one point (serial and dask-1: one worker each, so the same work)
  estimate          a grid of 10,000 spectrum points at H = 1024 (`bptt sweep spectrum -H 1024
                    --input-scale 0.01 --grid ...`), from one such point's measured time, on this
                    machine's workers and on a 32-worker cluster at the measured efficiency

Run:  .venv/bin/python benchmarks/bench_sweep.py [--points 8] [--rounds 3]
Prints the table and writes benchmarks/results/bench_sweep.json.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread, as bptt runs by default

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import benchinfo  # noqa: E402 - benchmarks/benchinfo.py, beside this script

from bptt_cli.analyses import sweep  # noqa: E402
from bptt_cli.analyses.executors import DaskExecutor, ProcessExecutor, SerialExecutor  # noqa: E402
from bptt_cli.cli.commands.sweep import plan  # noqa: E402

TRACE = ["-H", "256", "-T", "5000", "-B", "8", "--lyapunov", "0"]
BIG = ["-H", "1024", "--input-scale", "0.01"]
GOALS = {"speedup": 1.8, "dask_overhead": 0.05}


class Kept:
    """An executor that sweep.run does not stop: its stopping is timed apart."""

    def __init__(self, executor) -> None:
        self.executor = executor
        self.name, self.workers = executor.name, executor.workers

    def start(self) -> None:
        self.executor.start()

    def run(self, *args):
        return self.executor.run(*args)

    def close(self) -> None:
        return None


def timed_sweep(config: sweep.SweepConfig, planned: list, make) -> tuple[float, float, float]:
    """(start-up, the points, stopping) seconds of one sweep on the executor `make()` returns."""
    start = time.perf_counter()
    executor = make()
    executor.start()
    ready = time.perf_counter()
    result = sweep.run(config, planned, executor=Kept(executor))
    done = time.perf_counter()
    executor.close()
    assert len(result.points) == len(planned) and not result.failed and not result.missing
    return ready - start, done - ready, time.perf_counter() - done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=8, help="points per sweep (even)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_sweep.json")
    args = ap.parse_args()
    N = args.points
    axes, seed, planned = plan("trace", TRACE, [f"seed=0:{N - 1}:{N}"])
    info = benchinfo.machine(cores=os.cpu_count(), load_start=os.getloadavg()[0])
    sides = {
        "serial": lambda: SerialExecutor(),
        "processes-2": lambda: ProcessExecutor(2),
        "dask-1": lambda: DaskExecutor("local", 1, timeout=60),
        "dask-2": lambda: DaskExecutor("local", 2, timeout=60),
    }
    times: dict[str, list[float]] = {k: [] for k in ("direct", *sides)}
    startup: dict[str, list[float]] = {k: [] for k in sides}
    stopping: dict[str, list[float]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):

            def config(name: str, workers: int, r: int = r) -> sweep.SweepConfig:
                return sweep.SweepConfig("trace", tuple(TRACE), axes, seed, Path(tmp) / f"{name}-{r}", workers)

            start = time.perf_counter()
            for p in planned:
                sweep.run_point("trace", p.config)
            times["direct"].append(time.perf_counter() - start)
            for name, make in sides.items():
                workers = 1 if name == "serial" else int(name[-1])
                up, points, down = timed_sweep(config(name, workers), planned, make)
                startup[name].append(up)
                times[name].append(points)
                stopping[name].append(down)
            print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)

        # one spectrum point at H = 1024, for the estimate
        _, _, big = plan("spectrum", BIG, ["spectral-radius=1.5,3"])
        point_times = []
        for p in big:
            start = time.perf_counter()
            sweep.run_point("spectrum", p.config)
            point_times.append(time.perf_counter() - start)

    med = {k: statistics.median(v) for k, v in times.items()}
    per_point = med["direct"] / N
    speed_proc = statistics.median(s / p for s, p in zip(times["serial"], times["processes-2"], strict=True))
    speed_dask = statistics.median(a / b for a, b in zip(times["dask-1"], times["dask-2"], strict=True))
    overhead = {
        k: statistics.median((t - d) / d for t, d in zip(times[k], times["direct"], strict=True))
        for k in ("serial", "dask-1")
    }
    big_point = statistics.median(point_times)
    # the parallel efficiency measured here (2 workers), assumed for a cluster of whole machines,
    # and the LocalCluster's measured overhead per point on top
    efficiency = min(1.0, speed_proc / 2)
    est_machine = 10_000 * big_point / (info["cores"] * efficiency)
    est_cluster = 10_000 * big_point * (1 + max(0.0, overhead["dask-1"])) / (32 * efficiency)

    print()
    print(f"bptt sweep: {N} trace points (-H 256 -T 5000 -B 8), median of {args.rounds} rounds")
    print(f"{info['cpu']}, {info['cores']} CPUs, Python {info['python']}, numpy {info['numpy']}")
    print()
    print(f"{'side':>12} {'s':>8} {'points/s':>9} {'overhead/point':>15}")
    for k, t in med.items():
        share = (t - med["direct"]) / med["direct"]
        print(f"{k:>12} {t:8.2f} {N / t:9.3f} {share:15.1%}")
    print()
    print(f"one point (direct): {per_point:.3f} s")
    for k in sides:
        up, down = statistics.median(startup[k]), statistics.median(stopping[k])
        print(f"once per sweep, {k}: start {up:.2f} s, stop {down:.2f} s")
    print(f"speedup with 2 workers: processes {speed_proc:.2f}x, dask {speed_dask:.2f}x (goal >= {GOALS['speedup']})")
    print(
        f"LocalCluster overhead per point: {overhead['dask-1']:.1%} of a point (goal <= {GOALS['dask_overhead']:.0%})"
    )
    print(f"serial sweep overhead per point: {overhead['serial']:.1%}")
    print(f"spectrum -H 1024 point: {big_point:.2f} s -> 10,000 points: {est_machine / 3600:.1f} h on this machine "
          f"({info['cores']} workers), {est_cluster / 3600:.2f} h on 32 workers")  # fmt: skip

    info["load_end"] = os.getloadavg()[0]
    doc = {
        "benchmark": "bench_sweep",
        "machine": info,
        "config": {"points": N, "rounds": args.rounds, "trace": TRACE, "big": BIG},
        "times": times,
        "startup": startup,
        "stopping": stopping,
        "median": med,
        "point_seconds": per_point,
        "speedup": {"processes": speed_proc, "dask": speed_dask},
        "overhead": overhead,
        "big_point_seconds": point_times,
        "estimate_10000_points_seconds": {"this_machine": est_machine, "cluster_32": est_cluster},
        "goals": GOALS,
        "met": {
            "speedup": min(speed_proc, speed_dask) >= GOALS["speedup"],
            "dask_overhead": overhead["dask-1"] <= 0.05,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
