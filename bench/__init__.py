"""Benchmarks (`python -m bench`, `make bench`): loopback only, bounded in time, figures printed."""
