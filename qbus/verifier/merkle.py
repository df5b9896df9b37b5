"""Merkle batches of result hashes: the tree whose root the anchor contract records.

The convention (docs/chain.md; ``QbusAnchor.verifyInclusion`` computes the same):

* leaf = keccak256(0x00 ‖ the 32 bytes of the result hash's sha256 digest);
* node = keccak256(0x01 ‖ left ‖ right), children in leaf-index order (not sorted);
* a level with an odd number of nodes pairs its last node with itself;
* the proof of leaf ``i`` is its sibling at each level from the bottom up, and bit ``k``
  of ``i`` says whether the node at level ``k`` is a right (1) or left (0) child.

The 0x00/0x01 prefixes keep a leaf from ever hashing like an inner node, so no inner
node can be passed off as a leaf with a shorter proof. Duplicating a lone node (instead
of promoting it) keeps every proof exactly ``ceil(log2(count))`` long and verifiable from
the leaf index alone; the position ``count`` (a copy of the last leaf) would then verify
too, so checkers that know the batch's count (the contract does) also require
``index < count``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qbus.errors import MissingOptionalLibraryError

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak256 (not NIST SHA3-256) of ``data``."""
    try:
        from eth_hash.auto import keccak
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingOptionalLibraryError("eth-hash", "chain", "Merkle anchoring") from exc
    return keccak(data)


def digest_bytes(result_hash: str) -> bytes:
    """The 32 digest bytes of a ``sha256:<hex>`` result hash (bare hex accepted too).

    Raises:
        ValueError: Not a sha256 hex digest.
    """
    text = result_hash.removeprefix("sha256:").removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"not a sha256 result hash: {result_hash!r}")
    return raw


def leaf_hash(result_hash: str) -> bytes:
    """The Merkle leaf of a result hash: keccak256(0x00 ‖ digest)."""
    return keccak256(LEAF_PREFIX + digest_bytes(result_hash))


def node_hash(left: bytes, right: bytes) -> bytes:
    """An inner node: keccak256(0x01 ‖ left ‖ right)."""
    return keccak256(NODE_PREFIX + left + right)


@dataclass(frozen=True)
class MerkleTree:
    """A built tree: ``levels[0]`` are the leaves, ``levels[-1] == [root]``."""

    levels: tuple[tuple[bytes, ...], ...]

    @property
    def root(self) -> bytes:
        """The 32-byte root."""
        return self.levels[-1][0]

    @property
    def count(self) -> int:
        """Number of leaves."""
        return len(self.levels[0])

    def proof(self, index: int) -> list[bytes]:
        """Sibling hashes of leaf ``index``, from the leaf level up.

        Raises:
            IndexError: ``index`` is not a leaf of this tree.
        """
        if not 0 <= index < self.count:
            raise IndexError(f"leaf {index} is not in a tree of {self.count}")
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            path.append(level[sibling] if sibling < len(level) else level[index])
            index //= 2
        return path


def build_tree(leaves: Sequence[bytes]) -> MerkleTree:
    """The Merkle tree over ``leaves`` (already hashed with ``leaf_hash``), in their order.

    Raises:
        ValueError: No leaves, or a leaf that is not 32 bytes.
    """
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    for i, leaf in enumerate(leaves):
        if len(leaf) != 32:
            raise ValueError(f"leaf {i} is {len(leaf)} bytes, not 32")
    levels = [tuple(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        levels.append(
            tuple(
                node_hash(level[i], level[i + 1] if i + 1 < len(level) else level[i])
                for i in range(0, len(level), 2)
            )
        )
    return MerkleTree(tuple(levels))


def root_from_proof(leaf: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """The root that ``leaf`` at ``index`` with ``proof`` hashes up to."""
    node = leaf
    for sibling in proof:
        node = node_hash(sibling, node) if index & 1 else node_hash(node, sibling)
        index >>= 1
    return node


def verify_proof(
    leaf: bytes,
    proof: Sequence[bytes],
    index: int,
    root: bytes,
    *,
    count: int | None = None,
) -> bool:
    """True when ``leaf`` sits at ``index`` under ``root``.

    Args:
        leaf: The leaf (``leaf_hash(result_hash)``).
        proof: Sibling hashes from the leaf level up.
        index: The leaf's position in its batch.
        root: The anchored root.
        count: The batch's size when known (from the chain): then ``index`` must be
            inside it and the proof exactly as long as the tree is deep.
    """
    if index < 0 or index >> len(proof):  # more index bits than levels
        return False
    if count is not None and (not 0 <= index < count or len(proof) != depth(count)):
        return False
    return root_from_proof(leaf, proof, index) == root


def depth(count: int) -> int:
    """Levels above the leaves in a tree of ``count`` leaves: ceil(log2(count))."""
    if count < 1:
        raise ValueError("a batch has at least one leaf")
    return (count - 1).bit_length()
