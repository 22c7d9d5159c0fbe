"""Merkle tree hashing, proofs and their verification, exactly as RFC 9162 (CT v2) section 2.1.

Pure functions over bytes: the central log, ``trustfabric audit prove`` and any third
party (an auditor, a witness) use this one module and nothing else to check a proof.

* ``leaf_hash(d)   = SHA-256(0x00 || d)``           (RFC 9162 2.1.1)
* node hash        ``SHA-256(0x01 || left || right)``
* ``root`` of the empty tree is ``SHA-256("")``.
* :func:`inclusion_proof` / :func:`consistency_proof` build PATH and PROOF (2.1.3.1, 2.1.4.1);
  :func:`verify_inclusion` / :func:`verify_consistency` follow 2.1.3.2 and 2.1.4.2 step
  by step, raise :class:`InclusionProofError` / :class:`ConsistencyProofError` on any
  failure and return ``None`` on success.
* :class:`CompactRange` keeps only the roots of the perfect subtrees covering
  ``[0, size)`` (at most log2(n) hashes), so appending a leaf and reading the root are
  O(log n): this is how the central log keeps its root while ingesting.

Edge cases RFC 9162 leaves to the caller, decided here: a consistency proof between equal
sizes must be empty and the roots equal; from size 0 it must be empty (the empty tree is
a prefix of every tree). Everything else (empty proof, sizes out of order) is refused.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from trustfabric.audit.errors import ConsistencyProofError, InclusionProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH of leaves [start, end) (end > start), iteratively via a compact range."""
    compact = CompactRange()
    for i in range(start, end):
        compact.append(hashes[i])
    return compact.root()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of a list of leaf hashes."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (RFC 9162 2.1.3.1): the audit path of leaf ``index``."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise InclusionProofError(f"leaf {index} is not in a tree of size {n}", reason="audit.proof.index")
    path: list[bytes] = []
    start, end, m = 0, n, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(_subtree_root(leaf_hashes, start + k, end))
            end = start + k
        else:
            path.append(_subtree_root(leaf_hashes, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(size1: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 9162 2.1.4.1) between the first ``size1`` leaves and all of them."""
    n = len(leaf_hashes)
    if not 0 <= size1 <= n:
        raise ConsistencyProofError(f"size {size1} is not within a tree of size {n}", reason="audit.proof.size")
    if size1 == 0 or size1 == n:
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, n, size1, True
    # SUBPROOF(m, D[start:end], complete), unrolled; proof elements are produced inner-last.
    while True:
        size = end - start
        if m == size:
            if not complete:
                proof.append(_subtree_root(leaf_hashes, start, end))
            break
        k = _split(size)
        if m <= k:
            proof.append(_subtree_root(leaf_hashes, start + k, end))
            end = start + k
        else:
            proof.append(_subtree_root(leaf_hashes, start, start + k))
            start, m, complete = start + k, m - k, False
    proof.reverse()
    return proof


def _check_hash(value: bytes, what: str, error: type[Exception]) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        raise error(f"{what} is not a {HASH_SIZE}-byte hash", reason="audit.proof.malformed")


def _check_proof(proof: Sequence[bytes], error: type[Exception]) -> None:
    if not isinstance(proof, (list, tuple)):
        raise error(f"the proof is a {type(proof).__name__}, not a list of hashes", reason="audit.proof.malformed")
    for p in proof:
        _check_hash(p, "proof element", error)


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root_hash: bytes) -> None:
    """RFC 9162 2.1.3.2: check that ``leaf`` is leaf ``index`` of the tree ``root_hash`` of ``tree_size``."""
    _check_hash(leaf, "leaf hash", InclusionProofError)
    _check_hash(root_hash, "root hash", InclusionProofError)
    _check_proof(proof, InclusionProofError)
    if not isinstance(index, int) or not isinstance(tree_size, int) or index < 0 or index >= tree_size:
        raise InclusionProofError(f"leaf index {index} is not below tree size {tree_size}", reason="audit.proof.index")
    fn, sn = index, tree_size - 1
    r = bytes(leaf)
    for p in proof:
        if sn == 0:
            raise InclusionProofError("the proof is longer than the tree is deep", reason="audit.proof.length")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InclusionProofError("the proof is shorter than the tree is deep", reason="audit.proof.length")
    if r != root_hash:
        raise InclusionProofError("the computed root does not match", reason="audit.proof.root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """RFC 9162 2.1.4.2: check that the tree ``root1`` of ``size1`` is a prefix of ``root2`` of ``size2``."""
    _check_hash(root1, "first root", ConsistencyProofError)
    _check_hash(root2, "second root", ConsistencyProofError)
    _check_proof(proof, ConsistencyProofError)
    if not isinstance(size1, int) or not isinstance(size2, int) or size1 < 0 or size2 < size1:
        raise ConsistencyProofError(f"sizes {size1} -> {size2} are not in order", reason="audit.proof.size")
    if size1 == size2:
        if proof:
            raise ConsistencyProofError("a proof between equal sizes must be empty", reason="audit.proof.length")
        if root1 != root2:
            raise ConsistencyProofError("equal sizes with different roots", reason="audit.proof.root")
        return
    if size1 == 0:
        if proof:
            raise ConsistencyProofError("a proof from the empty tree must be empty", reason="audit.proof.length")
        if root1 != EMPTY_ROOT:
            raise ConsistencyProofError("the empty tree has another root", reason="audit.proof.root")
        return
    # 1. an empty path fails
    if not proof:
        raise ConsistencyProofError("empty consistency proof", reason="audit.proof.length")
    path = list(proof)
    # 2. first an exact power of two: prepend first_hash
    if size1 & (size1 - 1) == 0:
        path.insert(0, bytes(root1))
    # 3.
    fn, sn = size1 - 1, size2 - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            raise ConsistencyProofError("the proof is longer than needed", reason="audit.proof.length")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ConsistencyProofError("the proof is shorter than needed", reason="audit.proof.length")
    if fr != root1:
        raise ConsistencyProofError("the first root does not match", reason="audit.proof.root")
    if sr != root2:
        raise ConsistencyProofError("the second root does not match", reason="audit.proof.root")


class CompactRange:
    """Roots of the perfect subtrees covering leaves [0, size), largest first.

    ``append`` merges equal-height neighbours like a binary counter; ``root`` folds the
    (at most log2 n) subtree roots right to left, which is MTH of RFC 9162 because its
    split point is always the largest power of two below n.
    """

    __slots__ = ("size", "_hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if bin(size).count("1") != len(hashes):
            raise ValueError("a compact range needs one hash per set bit of its size")
        self.size = size
        self._hashes = list(hashes)

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        h = leaf
        size = self.size
        hashes = self._hashes
        while size & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            size >>= 1
        hashes.append(h)
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        it = reversed(self._hashes)
        r = next(it)
        for h in it:
            r = _sha256(b"\x01" + h + r).digest()
        return r

    def copy(self) -> "CompactRange":
        return CompactRange(self.size, self._hashes)
