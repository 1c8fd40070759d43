"""Benchmarks (`make bench`): measured side by side in one run, on loopback only."""
