"""Benchmarks with real processes: `python -m bench` (see README, "Performance")."""
