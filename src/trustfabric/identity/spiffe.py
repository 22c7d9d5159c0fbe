"""SPIFFE IDs, parsed and formatted strictly per the SPIFFE ID specification.

``spiffe://<trust-domain>/<path>``: the scheme is exactly lowercase ``spiffe``;
the trust domain is non-empty, lowercase ``[a-z0-9.-_]`` only (so no port,
userinfo, percent-encoding or upper case); the path is a sequence of non-empty
segments of ``[A-Za-z0-9.-_]`` that are never ``.`` or ``..``; no trailing slash,
query or fragment; at most 2048 bytes in all (trust domain at most 255).

trustfabric's workload IDs are ``spiffe://<env>.<firm>/<segment>/<service>``; the
parser accepts any valid SPIFFE ID, and :attr:`SpiffeId.segment` /
:attr:`SpiffeId.service` read the first and last path segments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trustfabric.identity.errors import IdentityError, SpiffeIdError

__all__ = ["SpiffeId", "SpiffeIdError", "IdentityError", "SCHEME", "MAX_LENGTH"]

SCHEME = "spiffe://"
MAX_LENGTH = 2048
MAX_TRUST_DOMAIN_LENGTH = 255
_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]+")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if valid, else raise :class:`SpiffeIdError`."""
    if not isinstance(trust_domain, str) or not trust_domain:
        raise SpiffeIdError("trust domain is empty")
    if len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise SpiffeIdError("trust domain longer than 255 characters")
    if not _TRUST_DOMAIN_RE.fullmatch(trust_domain):
        raise SpiffeIdError(f"trust domain {trust_domain!r} has characters outside [a-z0-9.-_]")
    return trust_domain


def validate_path(path: str) -> str:
    """Validate a path (``""`` or ``/seg/seg...``)."""
    if path == "":
        return path
    if not path.startswith("/"):
        raise SpiffeIdError("path must start with '/'")
    for segment in path[1:].split("/"):
        _check_segment(segment)
    return path


def _check_segment(segment: str) -> None:
    if segment == "":
        raise SpiffeIdError("empty path segment (double or trailing slash)")
    if segment in (".", ".."):
        raise SpiffeIdError(f"path segment {segment!r} is not allowed")
    if not _SEGMENT_RE.fullmatch(segment):
        raise SpiffeIdError(f"path segment {segment!r} has characters outside [A-Za-z0-9.-_]")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A valid SPIFFE ID. Build with :meth:`parse` or :meth:`workload`."""

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        validate_path(self.path)
        if len(SCHEME) + len(self.trust_domain) + len(self.path) > MAX_LENGTH:
            raise SpiffeIdError(f"SPIFFE ID longer than {MAX_LENGTH} bytes")

    @classmethod
    def parse(cls, text: str) -> "SpiffeId":
        """Parse ``text`` strictly; raise :class:`SpiffeIdError` (``spiffe.invalid``)."""
        if not isinstance(text, str):
            raise SpiffeIdError("SPIFFE ID must be a string")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_LENGTH:
            raise SpiffeIdError(f"SPIFFE ID longer than {MAX_LENGTH} bytes")
        if not text.startswith(SCHEME):
            raise SpiffeIdError(f"{text[:64]!r} does not start with 'spiffe://'")
        rest = text[len(SCHEME):]
        slash = rest.find("/")
        trust_domain, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        return cls(trust_domain, path)

    @classmethod
    def workload(cls, trust_domain: str, segment: str, service: str) -> "SpiffeId":
        """``spiffe://<trust_domain>/<segment>/<service>``."""
        _check_segment(segment)
        _check_segment(service)
        return cls(trust_domain, f"/{segment}/{service}")

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path[1:].split("/")) if self.path else ()

    @property
    def segment(self) -> str:
        """The first path segment (the network segment of a workload), or ``""``."""
        segments = self.segments
        return segments[0] if segments else ""

    @property
    def service(self) -> str:
        """The last path segment when the path has two or more, else ``""``."""
        segments = self.segments
        return segments[-1] if len(segments) >= 2 else ""

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"
