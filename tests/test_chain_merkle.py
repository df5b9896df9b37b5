"""The Merkle convention of anchored batches (qbus/verifier/merkle.py, docs/chain.md)."""

from __future__ import annotations

import hashlib

import pytest

from qbus.verifier.merkle import (
    build_tree,
    depth,
    keccak256,
    leaf_hash,
    node_hash,
    root_from_proof,
    verify_proof,
)


def result_hash(i: int) -> str:
    return "sha256:" + hashlib.sha256(f"result {i}".encode()).hexdigest()


def test_keccak_is_ethereums_not_nist_sha3():
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


def test_leaf_and_node_hashing_are_domain_separated():
    digest = bytes.fromhex(result_hash(1).removeprefix("sha256:"))
    assert leaf_hash(result_hash(1)) == keccak256(b"\x00" + digest)
    a, b = leaf_hash(result_hash(1)), leaf_hash(result_hash(2))
    assert node_hash(a, b) == keccak256(b"\x01" + a + b)
    assert node_hash(a, b) != node_hash(b, a)  # index order, not sorted pairs


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100])
def test_every_proof_verifies_and_has_the_trees_depth(count: int):
    leaves = [leaf_hash(result_hash(i)) for i in range(count)]
    tree = build_tree(leaves)
    assert tree.count == count
    for i, leaf in enumerate(leaves):
        proof = tree.proof(i)
        assert len(proof) == depth(count)
        assert verify_proof(leaf, proof, i, tree.root, count=count)
        assert verify_proof(leaf, proof, i, tree.root)


def test_three_leaves_pair_the_lone_node_with_itself():
    a, b, c = (leaf_hash(result_hash(i)) for i in range(3))
    tree = build_tree([a, b, c])
    assert tree.root == node_hash(node_hash(a, b), node_hash(c, c))
    assert tree.proof(2) == [c, node_hash(a, b)]


def test_wrong_leaf_index_proof_or_root_fails():
    leaves = [leaf_hash(result_hash(i)) for i in range(9)]
    tree = build_tree(leaves)
    proof = tree.proof(4)
    assert not verify_proof(leaves[5], proof, 4, tree.root)
    assert not verify_proof(leaves[4], proof, 5, tree.root)
    assert not verify_proof(leaves[4], [*proof[:-1], b"\0" * 32], 4, tree.root)
    assert not verify_proof(leaves[4], proof, 4, b"\1" * 32)
    assert not verify_proof(leaves[4], proof[:-1], 4, tree.root)


def test_an_inner_node_cannot_pass_as_a_leaf():
    leaves = [leaf_hash(result_hash(i)) for i in range(4)]
    tree = build_tree(leaves)
    inner = tree.levels[1][0]
    # The inner node with the upper half of leaf 0's proof reaches the root …
    assert root_from_proof(inner, tree.proof(0)[1:], 0) == tree.root
    # … but no result hash hashes to it as a leaf, and with the count the short proof fails.
    assert not verify_proof(inner, tree.proof(0)[1:], 0, tree.root, count=4)


def test_position_past_the_batch_is_refused_when_the_count_is_known():
    leaves = [leaf_hash(result_hash(i)) for i in range(3)]
    tree = build_tree(leaves)
    copy_proof = [leaves[2], node_hash(leaves[0], leaves[1])]
    assert not verify_proof(leaves[2], copy_proof, 3, tree.root, count=3)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="at least one leaf"):
        build_tree([])
    with pytest.raises(ValueError, match="not a sha256 result hash"):
        leaf_hash("sha256:abc")
    with pytest.raises(IndexError):
        build_tree([leaf_hash(result_hash(0))]).proof(1)
