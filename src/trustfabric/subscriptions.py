"""Subscriptions to in-process change feeds: a list of callbacks kept under its owner's lock.

The revocation set, the in-process invalidation bus and the control plane each tell
their subscribers of changes; :func:`add_subscriber` is how each of them takes a
subscriber and hands back the function that removes it (once; a second call does
nothing). The owner copies its list under the same lock before calling anyone, so
a subscriber may unsubscribe while being called.
"""

from __future__ import annotations

from typing import Callable, ContextManager, TypeVar

T = TypeVar("T")


def add_subscriber(subscribers: list[T], lock: ContextManager, callback: T) -> Callable[[], None]:
    """Append ``callback`` to ``subscribers`` under ``lock``; returns the function that removes it."""
    with lock:
        subscribers.append(callback)

    def unsubscribe() -> None:
        with lock:
            if callback in subscribers:
                subscribers.remove(callback)

    return unsubscribe
