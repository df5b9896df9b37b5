"""Sandboxes that run engine code. ``inline`` runs it in the executor process."""
