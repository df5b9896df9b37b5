"""Parsing front ends: program text in any accepted format → the IR (docs/architecture.md)."""
