"""Benchmark and report scripts, run as modules from the project root:
`python -m benchmarks.public_benchmark ...` (benchmarks/README.md lists them)."""
