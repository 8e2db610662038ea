"""salesflow benchmarks: `python -m bench.run [--smoke] [--only NAME]` (see bench/README.md)."""
