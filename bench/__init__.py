"""Benchmarks of the Director layer against direct Parsl, measured in one run."""
