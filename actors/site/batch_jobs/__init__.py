"""Batch schedulers that extra jobs of a run go to."""
