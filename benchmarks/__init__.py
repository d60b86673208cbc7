"""Benchmarks: figures, not tests. ``python -m benchmarks.run`` (``make bench``); see README.md."""
