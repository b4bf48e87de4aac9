"""Where a sweep's points run: in this process, on local worker processes, or on a Dask cluster.

Every executor runs the same function on the same arguments and hands each finished point to
`on_done` in this process (the one that writes sweep.jsonl), so a point is written once however
it ran. What each does when a worker is lost:

- `ProcessExecutor`: a worker that dies (killed, out of memory) breaks the pool; the points that
  had not come back are run again on a new pool, each at most `retries` more times.
- `DaskExecutor`: the scheduler reruns a lost worker's tasks elsewhere (dask's
  `distributed.scheduler.allowed-failures`); a point whose task killed `retries` + 1 workers is
  reported as failed.

Points are the unit of work: each is seconds of numpy on one BLAS thread (bptt_cli/blas.py), so
the executors keep one point per worker process and one thread per worker.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

Task = tuple[str, tuple]  # (the point's key, the arguments of the point function)
Done = Callable[[str, dict], None]

INSTALL_CLUSTER = (
    "pip install -e '.[cluster]'  (dask and distributed; from a source checkout) or pip install 'dask[distributed]'"
)


def _worker_start() -> None:
    """A local worker: one BLAS thread, and Ctrl-C left to the sweep (which stops the workers)."""
    from bptt_cli.blas import default_threads, set_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(default_threads())


def _ready() -> int:
    """A worker's first task: bptt's analyses imported, so that the first point costs what any other does."""
    import bptt_cli.analyses.spectrum  # noqa: F401 - the imports are the point
    import bptt_cli.analyses.trace  # noqa: F401
    import bptt_cli.analyses.train  # noqa: F401
    import bptt_cli.analyses.truncation  # noqa: F401

    return os.getpid()


def dask_setup(worker: Any) -> None:
    """A LocalCluster worker's preload (this module): Ctrl-C reaches the whole process group,
    and the sweep stops its cluster itself; without this every worker would print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class SerialExecutor:
    """Every point in this process, one after the other (`--workers 1`)."""

    name = "serial"
    workers = 1

    def start(self) -> None:
        return None

    def run(self, fn: Callable[..., dict], tasks: Sequence[Task], on_done: Done) -> list[str]:
        for key, args in tasks:
            on_done(key, fn(*args))
        return []

    def close(self) -> None:
        return None


class ProcessExecutor:
    """Local worker processes (concurrent.futures), started from a forkserver that has bptt loaded."""

    name = "processes"

    def __init__(self, workers: int, retries: int = 2) -> None:
        self.workers, self.retries = workers, retries
        self._pool: cf.ProcessPoolExecutor | None = None
        self._busy = False

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["bptt_cli.analyses.sweep"])
        return cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_start)

    def start(self) -> None:
        """Start every worker process (and the forkserver) before the first point."""
        if self._pool is None:
            self._pool = self._new_pool()
            for f in [self._pool.submit(_ready) for _ in range(self.workers)]:
                f.result()

    def run(self, fn: Callable[..., dict], tasks: Sequence[Task], on_done: Done) -> list[str]:
        """Run the tasks; return the keys of those that failed every retry (a lost worker each time)."""
        pending = dict(tasks)
        attempts = dict.fromkeys(pending, 0)
        failed: list[str] = []
        self._busy = True
        while pending:
            if self._pool is None:
                self._pool = self._new_pool()
            futures = {self._pool.submit(fn, *args): key for key, args in pending.items()}
            broken = False
            for future in cf.as_completed(futures):
                key = futures[future]
                try:
                    value = future.result()
                except cf.process.BrokenProcessPool:
                    broken = True
                    continue
                del pending[key]
                on_done(key, value)
            if not broken:
                break
            self._shutdown()
            for key in list(pending):  # a worker died: every point that did not come back is run again
                attempts[key] += 1
                if attempts[key] > self.retries:
                    failed.append(key)
                    del pending[key]
        self._busy = False
        return failed

    def _shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """End the workers: when idle, as the pool ends them; mid-run (Ctrl-C, an error), at once,
        cancelling what has not started."""
        if not self._busy:
            self._shutdown()
            return
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())  # the pool's own worker processes
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except (ProcessLookupError, AttributeError, TypeError):
                pass


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ValueError(
            f"--scheduler needs dask's distributed scheduler, not installed here: {INSTALL_CLUSTER}"
        ) from None
    return distributed


class DaskExecutor:
    """A Dask cluster: an existing scheduler (tcp://HOST:PORT) or a LocalCluster started here ('local').

    The workers must have bptt installed (the same version): the point function is imported
    there by name.
    """

    name = "dask"

    def __init__(self, scheduler: str, workers: int, *, timeout: float = 10.0, retries: int = 2) -> None:
        distributed = _import_distributed()
        self.scheduler, self.retries, self.cluster = scheduler, retries, None
        logging.getLogger("distributed").setLevel(logging.ERROR)
        try:
            if scheduler == "local":
                import dask

                # the nanny's MALLOC_TRIM_THRESHOLD_ (65536) also fixes glibc's mmap threshold, so
                # every array of a point is mapped and unmapped afresh: its workers ran bptt's
                # points slower than this process does (benchmarks/README.md, "Sweeps")
                environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
                environ.pop("MALLOC_TRIM_THRESHOLD_", None)
                dask.config.set(
                    {
                        "distributed.scheduler.allowed-failures": retries,
                        "distributed.nanny.pre-spawn-environ": environ,
                        # the statistical profiler samples every worker's stack every 10 ms: on a
                        # machine whose cores all run points, that time is taken from the points
                        "distributed.worker.profile.enabled": False,
                    }
                )
                self.cluster = distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                    preload=[__name__],  # dask_setup: the workers leave Ctrl-C to the sweep
                )
                self.client = distributed.Client(self.cluster, timeout=timeout)
            else:
                self.client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as e:
            self.close()
            raise OSError(
                f"--scheduler {scheduler}: no Dask scheduler answered within {timeout:g} s ({type(e).__name__}: {e})"
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            self.close()
            raise OSError(
                f"--scheduler {scheduler}: the scheduler has no workers (waited {timeout:g} s); start some with "
                f"`dask worker {scheduler} --nthreads 1`"
            ) from None
        info = self.client.scheduler_info()
        self.workers = len(info.get("workers", {})) or workers
        self.dashboard = self.client.dashboard_link  # what the scheduler reports (served where bokeh is installed)

    def start(self) -> None:
        """bptt imported on every worker before the first point."""
        self.client.run(_ready)

    def run(self, fn: Callable[..., dict], tasks: Sequence[Task], on_done: Done) -> list[str]:
        distributed = _import_distributed()
        futures = {}
        for key, args in tasks:
            # pure=False: a resumed sweep's point runs again; the key names it on the dashboard
            name = hashlib.sha1(key.encode()).hexdigest()[:12]
            f = self.client.submit(fn, *args, key=f"bptt-point-{name}-{os.getpid()}", pure=False)
            futures[f] = key
        failed = []
        for future in distributed.as_completed(futures):
            key = futures[future]
            try:
                value = future.result()
            except distributed.KilledWorker:  # the task killed more workers than the scheduler allows
                failed.append(key)
                continue
            on_done(key, value)
            future.release()
        return failed

    def close(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            client.close()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.close()


def make_executor(workers: int, scheduler: str | None, *, timeout: float = 10.0, retries: int = 2) -> Any:
    """The executor for `--workers N` and `--scheduler ADDRESS|local`."""
    if scheduler is not None:
        return DaskExecutor(scheduler, workers, timeout=timeout, retries=retries)
    if workers == 1:
        return SerialExecutor()
    return ProcessExecutor(workers, retries)
