"""RFC 9162 Merkle tree: roots, inclusion and consistency proofs, and their refusals."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfabric.audit import merkle
from trustfabric.audit.errors import ConsistencyProofError, InclusionProofError, ProofError


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"record-{i}".encode()) for i in range(n)]


def reference_root(hs: list[bytes]) -> bytes:
    """MTH written literally from RFC 9162 2.1.1 (recursive)."""
    n = len(hs)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hs[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + reference_root(hs[:k]) + reference_root(hs[k:])).digest()


def test_leaf_and_node_hash_domain_separation() -> None:
    assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert merkle.root([]) == hashlib.sha256(b"").digest()


def test_known_vector_from_certificate_transparency() -> None:
    # The 8-leaf test tree of the Certificate Transparency reference implementations.
    data = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57", b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"]
    hs = [merkle.leaf_hash(d) for d in data]
    assert merkle.root(hs).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert merkle.root(hs[:1]).hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


@pytest.mark.parametrize("n", list(range(0, 70)) + [127, 128, 129, 1000])
def test_root_and_compact_range_match_reference(n: int) -> None:
    hs = leaves(n)
    compact = merkle.CompactRange()
    compact.extend(hs)
    assert merkle.root(hs) == reference_root(hs) == compact.root()


def test_every_inclusion_and_consistency_proof_verifies_up_to_size_40() -> None:
    hs = leaves(40)
    for size in range(1, 41):
        r = merkle.root(hs[:size])
        for i in range(size):
            merkle.verify_inclusion(hs[i], i, size, merkle.inclusion_proof(i, hs[:size]), r)
        for size1 in range(0, size + 1):
            proof = merkle.consistency_proof(size1, hs[:size])
            merkle.verify_consistency(size1, size, proof, merkle.root(hs[:size1]), r)


@st.composite
def tree_and_index(draw):
    size = draw(st.integers(min_value=1, max_value=300))
    index = draw(st.integers(min_value=0, max_value=size - 1))
    return size, index


ALL = leaves(301)


@settings(max_examples=150, deadline=None)
@given(tree_and_index(), st.data())
def test_inclusion_refuses_any_alteration(ti, data) -> None:
    size, index = ti
    hs = ALL[:size]
    r = merkle.root(hs)
    proof = merkle.inclusion_proof(index, hs)
    merkle.verify_inclusion(hs[index], index, size, proof, r)
    with pytest.raises(InclusionProofError):  # another leaf
        merkle.verify_inclusion(merkle.leaf_hash(b"forged"), index, size, proof, r)
    with pytest.raises(InclusionProofError):  # another root
        merkle.verify_inclusion(hs[index], index, size, proof, merkle.leaf_hash(b"x"))
    if proof:
        pos = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[pos] = bytes([bad[pos][0] ^ 1]) + bad[pos][1:]
        with pytest.raises(InclusionProofError):  # altered element
            merkle.verify_inclusion(hs[index], index, size, bad, r)
        with pytest.raises(InclusionProofError):  # truncated
            merkle.verify_inclusion(hs[index], index, size, proof[:-1], r)
    with pytest.raises(InclusionProofError):  # extended
        merkle.verify_inclusion(hs[index], index, size, proof + [hs[0]], r)
    other = data.draw(st.integers(0, size - 1))
    if other != index and hs[other] != hs[index]:
        with pytest.raises(InclusionProofError):  # wrong index
            merkle.verify_inclusion(hs[index], other, size, proof, r)
    with pytest.raises(InclusionProofError):  # index out of range
        merkle.verify_inclusion(hs[index], size, size, proof, r)
    wrong_size = data.draw(st.integers(index + 1, 301))
    if len(merkle.inclusion_proof(index, ALL[:wrong_size])) != len(proof):
        with pytest.raises(InclusionProofError):  # a size whose path has another shape
            merkle.verify_inclusion(hs[index], index, wrong_size, proof, r)
    if wrong_size != size:
        with pytest.raises(InclusionProofError):  # the root of another size
            merkle.verify_inclusion(hs[index], index, wrong_size, proof, merkle.root(ALL[:wrong_size]))


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 300), st.data())
def test_consistency_refuses_any_alteration(size2, data) -> None:
    size1 = data.draw(st.integers(1, size2 - 1))
    hs = ALL[:size2]
    r1, r2 = merkle.root(hs[:size1]), merkle.root(hs)
    proof = merkle.consistency_proof(size1, hs)
    merkle.verify_consistency(size1, size2, proof, r1, r2)
    pos = data.draw(st.integers(0, len(proof) - 1))
    bad = list(proof)
    bad[pos] = bytes([bad[pos][0] ^ 1]) + bad[pos][1:]
    with pytest.raises(ConsistencyProofError):
        merkle.verify_consistency(size1, size2, bad, r1, r2)
    with pytest.raises(ConsistencyProofError):  # truncated
        merkle.verify_consistency(size1, size2, proof[:-1], r1, r2)
    with pytest.raises(ConsistencyProofError):  # extended
        merkle.verify_consistency(size1, size2, proof + [r1], r1, r2)
    with pytest.raises(ConsistencyProofError):  # another old root
        merkle.verify_consistency(size1, size2, proof, merkle.leaf_hash(b"x"), r2)
    with pytest.raises(ConsistencyProofError):  # another new root
        merkle.verify_consistency(size1, size2, proof, r1, merkle.leaf_hash(b"x"))
    forked = hs[: size1 - 1] + [merkle.leaf_hash(b"rewritten")] + hs[size1:]
    with pytest.raises(ConsistencyProofError):  # a history rewritten below size1
        merkle.verify_consistency(size1, size2, merkle.consistency_proof(size1, forked), r1, merkle.root(forked))
    with pytest.raises(ConsistencyProofError):  # sizes out of order
        merkle.verify_consistency(size2, size1, proof, r2, r1)


def test_edge_cases_refused() -> None:
    hs = leaves(4)
    r = merkle.root(hs)
    merkle.verify_consistency(4, 4, [], r, r)
    merkle.verify_consistency(0, 4, [], merkle.EMPTY_ROOT, r)
    for call in (
        lambda: merkle.verify_consistency(4, 4, [hs[0]], r, r),
        lambda: merkle.verify_consistency(4, 4, [], r, hs[0]),
        lambda: merkle.verify_consistency(2, 4, [], merkle.root(hs[:2]), r),
        lambda: merkle.verify_consistency(-1, 4, [], r, r),
        lambda: merkle.verify_inclusion(hs[0], 0, 0, [], r),
        lambda: merkle.verify_inclusion(hs[0], -1, 4, [], r),
        lambda: merkle.verify_inclusion(b"short", 0, 1, [], b"short"),
        lambda: merkle.verify_inclusion(hs[0], 0, 4, [b"x"], r),
        lambda: merkle.verify_inclusion(hs[0], 0, 1, None, hs[0]),  # not a list: typed, not a TypeError
        lambda: merkle.verify_inclusion(hs[0], 0, 1, b"", hs[0]),
        lambda: merkle.verify_consistency(1, 2, None, hs[0], r),
        lambda: merkle.verify_consistency(1, 2, hs[1], hs[0], merkle.root(hs[:2])),
    ):
        with pytest.raises(ProofError):
            call()
    with pytest.raises(InclusionProofError):
        merkle.inclusion_proof(4, hs)
    with pytest.raises(ConsistencyProofError):
        merkle.consistency_proof(5, hs)
