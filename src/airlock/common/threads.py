"""Running many small I/O tasks (one per chunk) on a thread pool, a few files at a time.

One big file is cut into chunks so every core hashes (hashlib and os.pread/pwrite release the
GIL); only ``window`` jobs (files) are open at once, so a bundle of thousands of files does not
exhaust file descriptors; and each job is finished (``done``) as soon as its last chunk is, in the
calling thread, so an interrupted run keeps every file it completed.

Example::

    run_jobs(entries, tasks=lambda e: [partial(copy_chunk, e, i) for i in range(n)],
             done=lambda e, results: finish(e, results), workers=2)
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

J = TypeVar("J")
T = TypeVar("T")
_PENDING = object()


def default_workers() -> int:
    """How many threads hash, copy and compress by default: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def run_jobs(
    jobs: Sequence[J],
    *,
    tasks: Callable[[J], list[Callable[[], T]]],
    done: Callable[[J, list[T | BaseException]], None],
    abort: Callable[[J], None] | None = None,
    workers: int,
    window: int | None = None,
    fatal: Callable[[BaseException], bool] = lambda exc: False,
) -> None:
    """Run every job's tasks; ``done(job, outcomes)`` gets each task's result or exception, in order.

    An exception for which ``fatal`` is true (a full disk), or raised by ``done``, stops the run:
    tasks not started are cancelled, ``abort`` is called for every job started but not done, and the
    exception propagates.
    """
    queue = deque(jobs)
    limit = window or max(2, workers * 2)
    started: dict[int, tuple[J, list[object], int]] = {}
    in_flight: dict[Future[T], tuple[int, int]] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="airlock-io")

    def fill() -> None:
        while queue and len(started) < limit:
            job = queue.popleft()
            key = id(job)
            job_tasks = tasks(job)
            started[key] = (job, [_PENDING] * len(job_tasks), len(job_tasks))
            if not job_tasks:
                _finish(key)
            for i, task in enumerate(job_tasks):
                in_flight[pool.submit(task)] = (key, i)

    def _finish(key: int) -> None:
        job, outcomes, _ = started.pop(key)
        done(job, outcomes)  # type: ignore[arg-type]  # every slot is filled: a T or an exception

    try:
        fill()
        while in_flight:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                key, i = in_flight.pop(future)
                exc = future.exception()
                if exc is not None and fatal(exc):
                    raise exc
                job, outcomes, left = started[key]
                outcomes[i] = exc if exc is not None else future.result()
                started[key] = (job, outcomes, left - 1)
                if left - 1 == 0:
                    _finish(key)
            fill()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        if abort is not None:
            for job, _, _ in started.values():
                abort(job)
        raise
    pool.shutdown(wait=True)
