"""Record-level threads: the records of a container encode and decode independently.

Why threads and not processes: every heavy step of a record (quantizer search, entropy
coder, inverse transform) is a compiled kernel that releases the GIL, so threads share
the update's arrays without copying them and still use every core. The bytes written and
the values decoded do not depend on the number of threads: each record is a pure
function of its input, and results are collected in record order.

``NNUPDATE_THREADS`` sets the number of threads (1 turns them off); the default is the
number of CPUs this process may run on, at most 8.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from . import progress

T = TypeVar("T")
R = TypeVar("R")

#: below this many elements in all, a thread pool costs more than it saves
MIN_PARALLEL_ELEMENTS = 1 << 16
MAX_THREADS = 8


def threads() -> int:
    """Threads to use: ``NNUPDATE_THREADS`` if set (>= 1), else the CPUs available (<= 8)."""
    env = os.environ.get("NNUPDATE_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS))


def ordered_map(fn: Callable[[T], R], items: Sequence[T], weights: Sequence[int], phase: str | None = None) -> list[R]:
    """``[fn(x) for x in items]``, on threads when the work is large enough.

    Work is handed out heaviest first (so one big record does not start last), results
    come back in ``items`` order, and when several items fail the error raised is the
    first one in that order, as in the serial loop. With a ``phase``, the weight done so
    far is reported (:mod:`nnupdate.progress`) as items finish.
    """
    total = sum(weights)
    workers = min(threads(), len(items))
    if workers <= 1 or total < MIN_PARALLEL_ELEMENTS:
        out, done = [], 0
        for x, weight in zip(items, weights):
            out.append(fn(x))
            done += weight
            if phase is not None:
                progress.report(phase, done, total)
        return out
    order = sorted(range(len(items)), key=lambda i: -weights[i])
    with _one_blas_thread(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nnupdate") as pool:
        futures = {i: pool.submit(fn, items[i]) for i in order}
        if phase is not None:
            index = {f: i for i, f in futures.items()}
            done = 0
            for future in as_completed(futures.values()):
                done += weights[index[future]]
                progress.report(phase, done, total)
        return [futures[i].result() for i in range(len(items))]


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """BLAS/LAPACK calls inside the records (numpy.linalg: a Gram matrix, an SVD) run on one
    thread while the records themselves use the cores: otherwise each worker's BLAS spawns
    threads of its own and they fight over the same cores (a transformer's encode ran at
    half speed). The libraries are the ones loaded at the first parallel call; numpy's is
    loaded at import, before any."""
    return _blas_controller().limit(limits=1, user_api="blas")  # type: ignore[no-any-return]
