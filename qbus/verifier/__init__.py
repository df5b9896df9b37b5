"""Verification of engine results: statistics against the exact reference, result hashes."""

from qbus.verifier.hashing import result_hash, statevector_digest
from qbus.verifier.statistics import check_counts, check_statevector

__all__ = ["check_counts", "check_statevector", "result_hash", "statevector_digest"]
