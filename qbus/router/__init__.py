"""Routing policy: which engine runs a job."""
