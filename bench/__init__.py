"""Benchmarks: each figure is a ratio to a baseline measured in the same run (see bench/__main__.py)."""

# Raw components measured by one benchmark for another in the same run (the on-paper AWS overhead uses the
# sandbox's agent start and the transfer rates), by name, in seconds or MB/s.
MEASURED: dict[str, float] = {}
