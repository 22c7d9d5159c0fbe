"""The invalidation bus: how the policy administrator tells enforcement points that epochs moved.

``InvalidationBus`` is the interface; :class:`InProcessBus` delivers synchronously
to in-process subscribers (the embedded default and tests). Loopback and NATS
JetStream implementations carry the same :class:`~trustfabric.policy.decision.Invalidation`
messages between processes and hosts.
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from trustfabric.policy.decision import Invalidation
from trustfabric.subscriptions import add_subscriber

Subscriber = Callable[[Invalidation], None]


class InvalidationBus(Protocol):
    def publish(self, invalidation: Invalidation) -> None: ...

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register ``callback``; returns a function that unsubscribes it."""
        ...


class InProcessBus:
    """Synchronous fan-out to callbacks in this process.

    A subscriber that raises does not stop delivery to the others; the failure is
    counted (``delivery_errors``) so that a broken subscriber is visible, and the
    subscriber's own enforcement point must fail closed on it.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self.published = 0
        self.delivery_errors = 0

    def publish(self, invalidation: Invalidation) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
            self.published += 1
        for callback in subscribers:
            try:
                callback(invalidation)
            except Exception:  # noqa: BLE001 - one bad subscriber must not starve the rest
                self.delivery_errors += 1

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        return add_subscriber(self._subscribers, self._lock, callback)
