"""Speed and memory measurements: ``python -m benchmarks`` (whole suite) and
``python benchmarks/ops.py`` (per-operation table)."""
