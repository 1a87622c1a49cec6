"""Graded evaluation of the tiers and the router against a running server: `router-eval` (see cli.py)."""
