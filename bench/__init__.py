"""Benchmarks: the pytest-benchmark suites, the GPU report and the device-check script.

Shared pieces live once: `cases` says what is timed (shapes, dtypes, layouts, the callables of
each implementation and mode, the bytes or FLOPs they move), `timing` says how. Both
`bench_*.py` (pytest-benchmark) and `report` (markdown + JSON) are built on them.
"""
