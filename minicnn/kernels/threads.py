"""Threads for the CPU kernels: a range of independent items cut into one block per thread.

A kernel written as a plain serial loop over ``first … last − 1`` (rows of an output,
samples of a batch) and compiled with ``@njit(nogil=True)`` runs on several cores when
each thread calls it on its own block::

    over_blocks(lambda first, last: kernel(x, y, first, last), count=N, work_per_item=...)

Blocks write disjoint parts of the output (a kernel that scatters, such as col2im, is cut
by samples, which share nothing), so no two threads write one address.

Why not Numba's ``parallel=True``: a ``prange`` kernel takes about three times as long to
compile (LeNet-5's first training step on an empty cache spent ≈ 10 of its ≈ 11 CPU-seconds
compiling five of them), and its OpenMP workers spin between kernels, taking turns with
BLAS's own spinning threads on a busy two-core machine. A Python pool thread that waits
sleeps. Work too small to share (LeNet-5's pooling at batch 64) runs on the calling
thread alone (see MIN_WORK_PER_THREAD).
"""
import concurrent.futures
import os
import threading

import numba

# Below this much work per thread (the unit is the kernel's own: one copied value, one
# multiply-add, one compared value; 2¹⁹ of them take ≈ 0.1–0.5 ms on one core) a block is
# not worth handing over: a pool thread's round trip (submit, run nothing, result) took
# ≈ 15 µs median, 20 µs at the 90th percentile, on a busy two-core machine, and a block
# handed over also gives up the caller's warm cache.
MIN_WORK_PER_THREAD = 1 << 19

_pool = None
_pool_lock = threading.Lock()


def thread_count():
    """Threads the CPU kernels may use: Numba's setting (NUMBA_NUM_THREADS,
    ``numba.set_num_threads``), which the benchmarks and the distributed launcher set."""
    return numba.get_num_threads()


def over_blocks(run_block, count, work_per_item):
    """Call ``run_block(first, last)`` on consecutive blocks covering [0, count), one per
    thread, at most one per MIN_WORK_PER_THREAD of work; the calling thread runs the first
    block itself. Returns the blocks' results in order."""
    blocks = max(1, min(thread_count(), count, (count * work_per_item) // MIN_WORK_PER_THREAD))
    if blocks == 1:
        return [run_block(0, count)]
    bounds = [count * b // blocks for b in range(blocks + 1)]
    others = [_thread_pool().submit(run_block, bounds[b], bounds[b + 1])
              for b in range(1, blocks)]
    results = [run_block(bounds[0], bounds[1])]
    return results + [future.result() for future in others]


def _thread_pool():
    """The pool's threads are made on first use and live as long as the process."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1),
                thread_name_prefix="minicnn-kernels")
        return _pool


def _forget_pool_in_child():
    """A forked child has none of its parent's threads: a pool it inherited would take
    blocks and never run them. It makes its own on first use."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)
