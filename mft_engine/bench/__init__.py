"""The code behind `mft bench` (benchmarks/bench_*.py wrap the same functions for pytest-benchmark)."""
