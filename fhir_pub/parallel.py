"""An ordered parallel map over forked workers: what the build and the validator use to spread work.

The workers are forked, so they inherit the work function and everything it reaches (compiled validators,
the file listing, the index definitions) without pickling; only each item and each result cross between
processes. Results come back in item order, with a few items in flight per worker, so what the caller
makes of them never depends on the number of workers.
"""

from __future__ import annotations

import collections
import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

IN_FLIGHT = 3  # items per worker handed out ahead of the one the caller waits for

_inherited: Callable[[Any], Any] | None = None  # the work a forked worker runs


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def spans(count: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` bounds cutting ``range(count)`` into spans of ``size`` (the last may be shorter)."""
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def _run_inherited(item: Any) -> Any:
    assert _inherited is not None
    return _inherited(item)


def ordered_map(work: Callable[[T], R], items: Sequence[T], workers: int = 1) -> Iterator[R]:
    """``work(item)`` for every item, in order: here for one worker, else in ``workers`` forked processes.

    Where ``fork`` is not available the items are worked here, one after the other.
    """
    global _inherited
    if workers <= 1 or len(items) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from (work(item) for item in items)
        return
    # Frozen first, what the workers inherit is left out of their garbage collections: collecting never
    # walks (nor copies, writing its headers) the parent's objects again.
    # https://docs.python.org/3/library/gc.html#gc.freeze
    _inherited = work
    gc.freeze()
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            _inherited = None
            pending: collections.deque[Any] = collections.deque()
            for item in items:
                pending.append(pool.apply_async(_run_inherited, (item,)))
                if len(pending) >= IN_FLIGHT * workers:  # bounded: results wait for the caller
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()
    finally:
        _inherited = None
        gc.unfreeze()
