"""The sweep engine: solve independent points on a local process pool or a Ray cluster.

``run(fn, points)`` returns ``[fn(p) for p in points]``, in order, whichever backend ran
them: ``workers=1`` in this process, else a pool of local processes, or the Ray cluster
at ``ray_address`` (``"local"`` starts one on this machine). ``fn`` must be a module-level
function (it is pickled to the workers). Ray is an optional extra:
``pip install 'autoplan[ray]'``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from rich.console import Console
from rich.progress import Progress

from autoplan.errors import InputError


def _quiet_worker() -> None:
    """A worker ignores Ctrl-C while idle (no traceback from its queue read); a running
    plan still stops on it, as the planner handles SIGINT while it searches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _local(fn: Callable, points: Sequence, workers: int) -> Iterator[tuple[int, object]]:
    if workers == 1:
        yield from ((i, fn(p)) for i, p in enumerate(points))
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_quiet_worker)
    try:
        futures = {pool.submit(fn, p): i for i, p in enumerate(points)}
        for f in as_completed(futures):
            yield futures[f], f.result()
    except KeyboardInterrupt:  # Ctrl-C: no more points; the running ones stop early
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def import_ray():
    """The ``ray`` module, or one line saying how to install the optional extra."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs the optional extra: pip install 'autoplan[ray]' "
                         "(ray>=2.40)") from None
    return ray


def _ray(fn: Callable, points: Sequence, address: str,
         workers: int | None) -> Iterator[tuple[int, object]]:
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kw = {"num_cpus": workers} if address == "local" and workers else {}
        try:
            ray.init(address=None if address == "local" else address,
                     include_dashboard=False, log_to_driver=False, **kw)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise InputError(f"--ray {address}: cannot connect: "
                             f"{' '.join(str(e).split())[:300]}") from None
        started = True
    try:
        remote = ray.remote(num_cpus=1)(fn)
        refs = {remote.remote(p): i for i, p in enumerate(points)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                yield refs[r], ray.get(r)
    finally:
        if started:
            ray.shutdown()


def run(fn: Callable, points: Sequence, *, workers: int | None = None,
        ray_address: str | None = None, progress: bool = False,
        label: str = "solving") -> list:
    """``[fn(p) for p in points]`` on the chosen backend, with a progress bar on a
    terminal (stderr) and nothing when piped."""
    if not points:
        return []
    if ray_address is not None:
        results = _ray(fn, points, ray_address, workers)
    else:
        n = max(1, min(workers or os.cpu_count() or 1, len(points)))
        results = _local(fn, points, n)
    out: list = [None] * len(points)
    console = Console(stderr=True)  # a bar only on a terminal (else it leaves a blank line)
    with Progress(console=console, transient=True,
                  disable=not progress or not console.is_terminal) as bar:
        task = bar.add_task(label, total=len(points))
        for i, value in results:
            out[i] = value
            bar.advance(task)
    return out
