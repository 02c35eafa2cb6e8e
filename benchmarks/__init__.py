"""Benchmarks of issue 2, section 8: `make bench` runs them all (benchmarks.run_all)."""
