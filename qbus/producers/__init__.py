"""Producers: what puts jobs on the bus."""
