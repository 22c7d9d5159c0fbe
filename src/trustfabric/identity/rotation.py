"""Renewal of a workload's certificate before it expires.

A :class:`CertificateRenewer` holds a workload's current credentials and renews
them once about half their lifetime has passed (``renew_fraction``), driven by an
injected :class:`~trustfabric.clock.Clock`: :meth:`tick` is called by the
workload's loop (or :meth:`run`), never by sleeping inside the logic. If renewal
fails (CA unreachable, attestation refused) the old credentials keep being used
while valid and renewal is retried every ``retry_s``; :meth:`current` never hands
out an expired certificate - with none valid it raises ``cert.expired``, and the
workload cannot connect (fail closed). Listeners hear about each new credential
so that TLS contexts can load it for *new* connections, leaving open ones alone.

:func:`renewal_delay` is the schedule of an asynchronous renewer (a floor
service's renew loop, which re-attests with a fresh posture report each time):
the first attempt at ``fraction`` of the lifetime, then retries with exponential
backoff, each at most a quarter of the time left before expiry so that several
attempts fit before the certificate lapses.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.identity.errors import CertificateError, IdentityError
from trustfabric.identity.workload import WorkloadCredentials

__all__ = ["CertificateRenewer", "Obtain", "renewal_delay"]

Obtain = Callable[[float], WorkloadCredentials]
"""Obtain fresh credentials at time ``now`` (new key + CSR + attested issuance)."""


def renewal_delay(not_before: float, not_after: float, now: float, failures: int, *, fraction: float = 0.5,
                  retry_s: float = 1.0, max_retry_s: float = 30.0, min_s: float = 0.2) -> float:
    """Seconds from ``now`` until the next renewal attempt of a certificate valid ``[not_before, not_after]``.

    ``failures`` counts the attempts failed since the last renewal: none, the attempt is
    due at ``fraction`` of the lifetime; ``n``, it waits ``retry_s * 2**(n-1)`` (at most
    ``max_retry_s``), cut to a quarter of the time left before expiry, never below ``min_s``.
    """
    if failures <= 0:
        return max(0.0, not_before + (not_after - not_before) * fraction - now)
    backoff = min(max_retry_s, retry_s * 2.0 ** min(failures - 1, 30))
    left = not_after - now
    if left > 0:
        backoff = min(backoff, left / 4)
    return max(min_s, backoff)


class CertificateRenewer:
    def __init__(
        self,
        obtain: Obtain,
        clock: Clock = SYSTEM_CLOCK,
        *,
        renew_fraction: float = 0.5,
        retry_s: float = 10.0,
        initial: WorkloadCredentials | None = None,
    ) -> None:
        if not 0.0 < renew_fraction < 1.0:
            raise ValueError("renew_fraction must be in (0, 1)")
        self._obtain = obtain
        self._clock = clock
        self._fraction = renew_fraction
        self._retry_s = retry_s
        self._listeners: list[Callable[[WorkloadCredentials], None]] = []
        self._credentials: WorkloadCredentials | None = initial
        self._next_attempt = 0.0
        self.renewals = 0
        self.failures = 0
        self.last_error: IdentityError | None = None
        if initial is None:
            self._renew(self._clock.now())

    def renew_at(self, creds: WorkloadCredentials) -> float:
        """When ``creds`` is due for renewal (``renew_fraction`` of its lifetime)."""
        return creds.not_before + (creds.not_after - creds.not_before) * self._fraction

    @property
    def due_at(self) -> float:
        if self._credentials is None:
            return self._next_attempt
        return max(self.renew_at(self._credentials), self._next_attempt)

    def subscribe(self, callback: Callable[[WorkloadCredentials], None]) -> None:
        self._listeners.append(callback)

    def _renew(self, now: float) -> bool:
        try:
            fresh = self._obtain(now)
        except IdentityError as exc:
            self.failures += 1
            self.last_error = exc
            self._next_attempt = now + self._retry_s
            return False
        if not fresh.valid_at(now):
            self.failures += 1
            self.last_error = CertificateError("renewal returned a certificate not valid now", reason="cert.expired")
            self._next_attempt = now + self._retry_s
            return False
        self._credentials = fresh
        self._next_attempt = 0.0
        self.renewals += 1
        for listener in list(self._listeners):
            listener(fresh)
        return True

    def tick(self, now: float | None = None) -> bool:
        """Renew if due; return True when new credentials were obtained."""
        moment = self._clock.now() if now is None else now
        if self._credentials is not None and moment < self.due_at:
            return False
        if self._credentials is None and moment < self._next_attempt:
            return False
        return self._renew(moment)

    def current(self, now: float | None = None) -> WorkloadCredentials:
        """The credentials to present now; never expired (``cert.expired`` when none is valid)."""
        moment = self._clock.now() if now is None else now
        creds = self._credentials
        if creds is None or not creds.valid_at(moment):
            raise CertificateError("no valid workload certificate (renewal failing)", reason="cert.expired")
        return creds

    async def run(self, stop: asyncio.Event, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Tick until ``stop`` is set, sleeping until the next due time (at most ``retry_s``)."""
        while not stop.is_set():
            self.tick()
            delay = max(0.05, min(self.due_at - self._clock.now(), self._retry_s))
            await sleep(delay)
