"""Field-level protection: client identifiers and names replaced by keyed, deterministic tokens.

A principal allowed to *analyse* a dataset but not to *identify* its clients (the
analytics service on trade history) gets records whose client fields
(:data:`CLIENT_FIELDS`) are ``tok_`` + HMAC-SHA256(segment key, value) truncated to
128 bits: the same client always gets the same token within a segment (joins and counts
still work), and nobody without the segment's key can go back. Records are JSON: one
object, a list of them, or one JSON object per line. Pure: the key is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from trustfabric.data.errors import SealedFormatError

CLIENT_FIELDS = frozenset({"client_id", "client_name", "client", "account", "cl_ord_id"})
TOKEN_PREFIX = "tok_"


def token_for(key: bytes, value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return TOKEN_PREFIX + hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def _walk(key: bytes, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (token_for(key, v) if k in CLIENT_FIELDS and v is not None else _walk(key, v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(key, v) for v in value]
    return value


def tokenize_records(key: bytes, plaintext: bytes) -> bytes:
    """The records with every client field tokenized; anything that is not JSON records is refused."""
    try:
        text = plaintext.decode("utf-8")
        stripped = text.strip()
        if stripped.startswith(("{", "[")) and "\n" not in stripped:
            return json.dumps(_walk(key, json.loads(stripped)), separators=(",", ":")).encode()
        lines = [json.dumps(_walk(key, json.loads(line)), separators=(",", ":")) for line in text.splitlines()
                 if line.strip()]
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SealedFormatError("analysis needs JSON records (client fields cannot be tokenized otherwise)",
                                reason="data.not_records") from exc
    return ("\n".join(lines) + "\n").encode() if lines else b""
