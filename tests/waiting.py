"""The one wait-until of the tests: poll a condition until it holds, bounded, instead of a fixed sleep.

A fixed sleep either wastes time (the condition held long before) or flakes (a loaded machine
needed longer). ``wait_until`` (blocking) and ``eventually`` (asyncio) poll ``predicate`` every
``interval_s`` and return as soon as it is true; after ``timeout_s`` they fail the test with
an ``AssertionError`` that names what was awaited. Both return the predicate's last (true)
value, so a test can wait for a value and use it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_INTERVAL_S = 0.01


def _timed_out(what: str, timeout_s: float) -> AssertionError:
    return AssertionError(f"not reached within {timeout_s:g} s: {what}")


def wait_until(predicate: Callable[[], T], timeout_s: float = DEFAULT_TIMEOUT_S, *, what: str = "condition",
               interval_s: float = DEFAULT_INTERVAL_S) -> T:
    """Block until ``predicate()`` is truthy (its value is returned); AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s)
        time.sleep(interval_s)


async def eventually(predicate: Callable[[], T], timeout_s: float = DEFAULT_TIMEOUT_S, *, what: str = "condition",
                     interval_s: float = DEFAULT_INTERVAL_S) -> T:
    """The asyncio twin of ``wait_until``: yields to the loop between polls."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s)
        await asyncio.sleep(interval_s)
