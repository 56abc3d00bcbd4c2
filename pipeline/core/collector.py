"""Pausing Python's cyclic garbage collector around bulk work that makes no cycles."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector while the block runs.

    For bulk work that allocates many small containers in no reference cycle (decoded JSON,
    index tuples): reference counting frees them, but each burst of allocations would
    otherwise trigger collections, and the objects that live through a few of them are
    promoted until a full collection walks the whole heap (a job's long-lived caches
    included). Let the block's objects die before it ends, e.g. by keeping them in the
    locals of a function called inside it. Nested and concurrent uses only ever re-enable
    a collector that was enabled when they began.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
