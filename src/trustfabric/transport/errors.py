"""The transport's exceptions, each with a stable reason code.

Everything the TLS layer, the frame codec or a socket can raise is translated
into one of these at the transport's boundary; ``ssl.SSLError``,
``msgspec.DecodeError`` and ``OSError`` never reach the caller::

    TransportError (trustfabric.errors)      transport.error            (retryable: see each class)
    ├── FrameError                           frame.oversized | frame.malformed |
    │                                        frame.unknown_type | frame.truncated | frame.timeout |
    │                                        frame.too_deep
    ├── HandshakeRefused                     handshake.* / cert.* (see reason constants below)
    │                                        raised when a peer's certificate is not acceptable
    ├── ConnectionClosed                     transport.closed | transport.idle | transport.reset |
    │                                        transport.flush_refused | or the peer's error reason
    ├── TransportTimeout                     transport.handshake_timeout | transport.timeout
    └── AdmissionRefused                     admission.* (a listener's cap: see transport/admission.py)
"""

from __future__ import annotations

from trustfabric.errors import TransportError

# Frame reason codes.
FRAME_OVERSIZED = "frame.oversized"
FRAME_MALFORMED = "frame.malformed"
FRAME_UNKNOWN_TYPE = "frame.unknown_type"
FRAME_TRUNCATED = "frame.truncated"
FRAME_TOO_DEEP = "frame.too_deep"  # arrays/maps nested beyond the bound (refused before decoding)
FRAME_TIMEOUT = "frame.timeout"  # a frame started but not finished in time (slow-loris)

# Handshake / peer-certificate reason codes.
CERT_MISSING = "cert.missing"  # the peer presented no certificate
CERT_WRONG_TRUST_DOMAIN = "cert.wrong_trust_domain"  # chain or SPIFFE ID outside our domain
CERT_EXPIRED = "cert.expired"
CERT_NOT_YET_VALID = "cert.not_yet_valid"
CERT_REVOKED = "cert.revoked"
CERT_SAN = "cert.san"  # not exactly one SPIFFE URI SAN
CERT_MALFORMED = "cert.malformed"  # the peer's certificate could not be parsed
CERT_INVALID = "cert.invalid"  # any other verification failure
HANDSHAKE_FAILED = "handshake.failed"  # TLS protocol failure (version, alert, garbage)
HANDSHAKE_TIMEOUT = "transport.handshake_timeout"
PEER_UNEXPECTED = "cert.unexpected_peer"  # a valid identity, but not the one the client dialled

# Connection reason codes.
CLOSED = "transport.closed"
IDLE = "transport.idle"
RESET = "transport.reset"
FLUSH_REFUSED = "transport.flush_refused"  # the pre-flush hook failed: nothing leaves
TIMEOUT = "transport.timeout"


class FrameError(TransportError):
    """A frame could not be decoded or encoded. ``decoded`` holds the good frames before it.

    Retryable: the damaged connection is closed; a new one starts from a clean stream.
    """

    reason = FRAME_MALFORMED
    retryable = True

    def __init__(self, detail: str = "", *, reason: str | None = None, decoded: list | None = None) -> None:
        super().__init__(detail, reason=reason)
        self.decoded = decoded or []


class HandshakeRefused(TransportError):
    """The peer's certificate (or the TLS handshake itself) was refused.

    ``presented`` is the SPIFFE ID the refused certificate carried, when it could be
    read (what an alert about the refusal names); empty otherwise.

    Retryable only as a TLS protocol failure (``handshake.failed``: the peer went away
    mid-handshake, a reset); a refused certificate or identity is final.
    """

    reason = HANDSHAKE_FAILED

    def __init__(self, detail: str = "", *, reason: str | None = None, presented: str = "") -> None:
        super().__init__(detail, reason=reason, retryable=(reason or HANDSHAKE_FAILED) == HANDSHAKE_FAILED)
        self.presented = presented


class ConnectionClosed(TransportError):
    """The connection is closed; ``reason`` says why (ours or the peer's error code). Retryable."""

    reason = CLOSED
    retryable = True


class TransportTimeout(TransportError):
    reason = TIMEOUT
    retryable = True


class AdmissionRefused(TransportError):
    """A connection refused by a listener's admission control before its handshake (a cap was reached)."""

    reason = "admission.refused"
    retryable = True  # the listener is at a cap now; it frees as connections end
