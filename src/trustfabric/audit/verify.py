"""Recompute the whole central log and check it against its signed tree heads.

What ``trustfabric audit verify`` promises (and the first bad *position* it names):

* every tree head's Ed25519 signature is valid           -> the head's tree size (forged head)
* record indices run 0, 1, 2, ... without a gap           -> the first missing index (deleted)
* each record's stored leaf hash is SHA-256(0x00||bytes),
  its bytes decode, and its source/seq columns match      -> that index (edited)
* each source's sequence numbers strictly increase        -> that index (reordered, re-inserted)
* the Merkle root of the first N records equals every
  signed head of size N                                   -> the first index after the last
                                                             head that still matched (a rewrite
                                                             whose leaf hashes were recomputed)
* the log is at least as long as its largest signed head  -> the log's size (truncated)

Tree heads held by a witness (``trustfabric audit checkpoint --export``) can be passed in
too: someone who can write the database could delete records AND the heads covering them,
which only a head kept elsewhere reveals.

Records after the latest signed head are the *unsigned tail*: reported, not an error (the
next checkpoint signs them); a record inserted or altered before a signed head is an error.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass
from typing import Sequence

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustfabric.audit import merkle
from trustfabric.audit.errors import TamperDetected, TreeHeadError
from trustfabric.audit.events import decode_event
from trustfabric.audit.log import AuditStore
from trustfabric.audit.treehead import TreeHead, verify_tree_head


@dataclass(frozen=True, slots=True)
class VerifyReport:
    size: int
    root_hash: str
    signed_size: int
    unsigned_tail: int
    tree_heads_checked: int


def verify_log(store: AuditStore, public_key: Ed25519PublicKey,
               witnessed: Sequence[TreeHead] = ()) -> VerifyReport:
    """Raise :class:`TamperDetected` at the first bad position; a report when intact.

    ``witnessed`` are tree heads kept outside the log (exported to a witness): they catch
    someone who deletes both records and the heads that covered them from the store.
    """
    heads = sorted([*store.tree_heads(), *witnessed], key=lambda h: (h.tree_size, h.timestamp_ns))
    for head in heads:
        try:
            verify_tree_head(head, public_key)
        except TreeHeadError as exc:
            raise TamperDetected(f"tree head of size {head.tree_size} is forged: {exc.detail}",
                                 position=head.tree_size, reason="audit.tamper.tree_head") from None
    by_size: dict[int, list] = {}
    for head in heads:
        by_size.setdefault(head.tree_size, []).append(head)
    compact = merkle.CompactRange()
    history: dict[str, tuple[array, array]] = {}  # per source: its seqs and their indices
    last_good = 0  # size of the last signed head that matched
    if 0 in by_size and not _heads_match(by_size[0], compact):
        raise TamperDetected("the signed head of the empty log has another root", position=0,
                             reason="audit.tamper.rewritten")
    for record in store.records():
        index = compact.size
        if record.index != index:
            raise TamperDetected(f"record {index} is missing (next stored index is {record.index})",
                                 position=index, reason="audit.tamper.deleted")
        if merkle.leaf_hash(record.data) != record.leaf_hash:
            raise TamperDetected(f"record {index} does not hash to its leaf", position=index,
                                 reason="audit.tamper.edited")
        try:
            event = decode_event(record.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise TamperDetected(f"record {index} is not an audit event", position=index,
                                 reason="audit.tamper.edited") from None
        if (event.source, event.seq) != (record.source, record.seq):
            raise TamperDetected(f"record {index}: columns disagree with its bytes", position=index,
                                 reason="audit.tamper.edited")
        seqs, indices = history.setdefault(event.source, (array("q"), array("q")))
        if seqs and event.seq <= seqs[-1]:
            # The first bad position is where this source's first higher sequence number sits.
            first = indices[bisect.bisect_right(seqs, event.seq)]
            raise TamperDetected(f"record {index}: {event.source} seq {event.seq} after {seqs[-1]} "
                                 f"(first out of place at {first})", position=first, reason="audit.tamper.reordered")
        seqs.append(event.seq)
        indices.append(index)
        compact.append(record.leaf_hash)
        if compact.size in by_size:
            if not _heads_match(by_size[compact.size], compact):
                raise TamperDetected(
                    f"records [{last_good}, {compact.size}) do not match the signed tree head of size {compact.size}",
                    position=last_good, reason="audit.tamper.rewritten")
            last_good = compact.size
    size = compact.size
    signed = heads[-1].tree_size if heads else 0
    if size < signed:
        raise TamperDetected(f"the log has {size} records but a signed tree head covers {signed}",
                             position=size, reason="audit.tamper.truncated")
    return VerifyReport(size, compact.root().hex(), signed, size - signed, len(heads))


def _heads_match(heads: list, compact: merkle.CompactRange) -> bool:
    root = compact.root().hex()
    return all(h.root_hash == root for h in heads)
