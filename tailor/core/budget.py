"""Time budgets: how long one piece of work (one job item) may spend waiting on a backend.

The job runner opens a budget around each item; the model writer reads what is left of it and never waits
longer than that (a shorter timeout, no retry that cannot finish in time). So a model that hangs costs an
item at most its budget, after which the item falls back or is deferred as for any other timeout. Outside
a budget (the CLI, a test) nothing changes: the writer's own timeout and retries apply.

A context variable, not a thread-local: the agent runs its nodes on an event loop, and a context variable
follows the work into the tasks it starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["remaining", "within"]

_DEADLINE: ContextVar[float | None] = ContextVar("tailor_deadline", default=None)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Run the block under a budget of ``seconds`` (a nested budget can only shorten the outer one)."""
    outer = _DEADLINE.get()
    deadline = time.monotonic() + seconds
    token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left of the current budget (0 or less when spent), or None outside any budget."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()
