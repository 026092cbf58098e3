"""Timing helpers every benchmark shares: warm up, repeat, report the median."""
import statistics
import time


def measure(function, repeat=5, warmup=1, min_time=0.0):
    """Run ``function`` ``warmup`` times untimed, then ``repeat`` times timed.

    Returns (median, minimum, maximum) in seconds. ``min_time`` keeps repeating a very
    fast function until that much time was spent, so tiny ops are not timer noise.
    """
    for _ in range(warmup):
        function()
    times = []
    started = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - started < min_time:
        t0 = time.perf_counter()
        function()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def gemm_rate(m, k, n, dtype="float32", repeat=5, xp=None):
    """GFLOP/s of matmul on an (m×k)·(k×n) product: NumPy's BLAS sgemm, or with
    ``xp=cupy`` cuBLAS (synchronised after each product, so the work is timed, not the
    launch)."""
    import numpy as np
    xp = np if xp is None else xp
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((m, k)).astype(dtype))
    b = xp.asarray(rng.standard_normal((k, n)).astype(dtype))
    if xp is np:
        product = lambda: a @ b  # noqa: E731
    else:
        def product():
            a @ b
            xp.cuda.Device().synchronize()
    median, _, _ = measure(product, repeat=repeat, min_time=0.2)
    return 2.0 * m * k * n / median / 1e9
