"""Helpers for scripts/bench.py, the benchmark behind `make bench`."""
