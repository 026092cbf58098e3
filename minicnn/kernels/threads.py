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
import contextlib
import functools
import os
import threading

import numba
import numpy as np

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


def over_blocks(run_block, count, work_per_item, alone=False, threads=None):
    """Call ``run_block(first, last)`` on consecutive blocks covering [0, count), one per
    thread, at most one per MIN_WORK_PER_THREAD of work; the calling thread runs the first
    block itself. Returns the blocks' results in order.

    ``alone``: the blocks are whole pipelines of their own (a network's share of an
    inference batch, ``minicnn.inference``), so each runs on its thread alone: BLAS
    single-threaded and every kernel it calls on that thread too.
    ``threads``: at most this many blocks (default: ``thread_count()``)."""
    blocks = block_count(count, work_per_item, threads)
    if blocks == 1:
        return [run_block(0, count)]
    bounds = [count * b // blocks for b in range(blocks + 1)]
    with single_threaded_blas() if alone else contextlib.nullcontext():
        run = _on_one_thread(run_block) if alone else run_block
        others = [thread_pool().submit(run, bounds[b], bounds[b + 1])
                  for b in range(1, blocks)]
        try:
            results = [run(bounds[0], bounds[1])]
        except BaseException:
            concurrent.futures.wait(others)     # no block left running behind an error
            raise
        return results + [future.result() for future in others]


def block_count(count, work_per_item, threads=None):
    """How many blocks ``over_blocks`` cuts ``count`` items into."""
    most = min(threads or thread_count(), pool_size() + 1)
    return max(1, min(most, count, (count * work_per_item) // MIN_WORK_PER_THREAD))


def over_shares(run_share, count, min_per_share, threads=None):
    """``over_blocks`` for whole pipelines (``alone``): the batch of ``count`` samples in
    one share per thread, each of at least ``min_per_share`` samples (a thread runs every
    operation's Python, so a share must bring enough arithmetic to pay for it)."""
    return over_blocks(run_share, count, _work_per_sample(min_per_share), alone=True,
                       threads=threads)


def share_count(count, min_per_share, threads=None):
    """How many shares ``over_shares`` cuts ``count`` samples into."""
    return block_count(count, _work_per_sample(min_per_share), threads)


def _work_per_sample(min_per_share):
    return MIN_WORK_PER_THREAD // min_per_share      # min_per_share samples fill one share


def _on_one_thread(run_block):
    """``run_block`` with this thread's kernels limited to this thread (Numba's thread
    count is per thread, so the other blocks are not affected)."""
    def run(first, last):
        previous = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return run_block(first, last)
        finally:
            numba.set_num_threads(previous)
    return run


def pool_size():
    """Threads in the pool besides the caller's: NUMBA_NUM_THREADS − 1."""
    return max(1, numba.config.NUMBA_NUM_THREADS - 1)


def thread_pool():
    """The pool's threads are made on first use and live as long as the process."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=pool_size(), thread_name_prefix="minicnn-kernels")
        return _pool


@functools.lru_cache(maxsize=None)
def _blas_controllers():
    """threadpoolctl's handles on the BLAS libraries loaded (NumPy's OpenBLAS, ...)."""
    import numpy                              # noqa: F401  (its BLAS loaded first)
    from threadpoolctl import ThreadpoolController
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


_blas_lock = threading.Lock()
_blas_users = 0
_blas_restore = ()


@contextlib.contextmanager
def single_threaded_blas():
    """Inside the block, BLAS runs every call on the thread that makes it (≈ 1 µs to set
    and to restore), so several threads can each run GEMMs of their own at once. The
    setting is the process's: nested or concurrent blocks share it, the last one out
    restores what the first one in found."""
    global _blas_users, _blas_restore
    with _blas_lock:
        if _blas_users == 0:
            controllers = _blas_controllers()
            _blas_restore = tuple((c, c.get_num_threads()) for c in controllers)
            for controller in controllers:
                controller.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for controller, count in _blas_restore:
                    controller.set_num_threads(count)


# ----------------------------------------------------------------------------- GEMMs
# A convolution alternates GEMMs with Numba kernels on the same cores: Winograd's tile
# transforms, im2col and col2im around every GEMM of a block. OpenBLAS runs a
# multi-threaded GEMM on threads of its own, and each of them busy-waits for its next GEMM
# for about 0.1 s after finishing one (2²⁸ cycles, OPENBLAS_THREAD_TIMEOUT's default), so
# while the next transform runs on the caller and a pool thread, a spinning BLAS thread
# holds one of the two cores: in a ResNet-18 training process a fifth of all CPU samples
# (perf, software clock) were OpenBLAS's worker waiting. So a training step runs with BLAS
# single-threaded throughout (``kernel_threads_only``), and ``gemm`` cuts each large GEMM
# into one share per thread of the kernels' pool, whose threads sleep when they wait.
# ResNet-18 CIFAR training at batch 64, one process, steps alternating, median of 8:
# 1,115 → 980 ms and 1,066 → 1,012 ms (AMD EPYC, OpenBLAS SkylakeX kernels).
# It has to be the whole step: cutting GEMMs inside an otherwise multi-threaded step made
# it slower (60 → 43 images/s), as every other GEMM woke OpenBLAS's worker, which then
# spun beside both shares; and switching BLAS's thread count costs ≈ 30 µs each time.
# Below GEMM_OWN_THREADS_MIN_WORK multiply-adds a GEMM runs on the caller alone: a share
# must pay for a pool thread's round trip (≈ 15 µs).
GEMM_OWN_THREADS_MIN_WORK = 1 << 22


def kernel_threads_only():
    """The scope of a training step or an evaluation: BLAS single-threaded (the kernels'
    threads run every GEMM ``gemm`` cuts), restored afterwards; see above."""
    return single_threaded_blas()


def gemm(a, b, out=None):
    """``a @ b`` for the convolutions' GEMMs: 2-D, or batched over a leading axis of both
    (b may be 2-D then), into ``out`` if given. Inside ``kernel_threads_only`` on the
    CPU, a large one is cut into one share per thread — the batch, or the longer of the
    output's two axes — each running single-threaded BLAS on its thread; elsewhere (and
    on a thread that runs a share of its own) it is NumPy's or CuPy's matmul."""
    if type(a) is not np.ndarray:                       # CuPy: cuBLAS as it is
        from minicnn.backend import get_array_module
        return get_array_module(a).matmul(a, b, out=out)
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = a.shape[0] if a.ndim == 3 else 1
    if (_blas_users == 0 or thread_count() == 1
            or batch * M * K * N < GEMM_OWN_THREADS_MIN_WORK):
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty(((batch,) if a.ndim == 3 else ()) + (M, N), dtype=np.result_type(a, b))
    if batch > 1:
        def share(first, last):
            np.matmul(a[first:last], b[first:last] if b.ndim == 3 else b, out=out[first:last])
        count, work = batch, M * K * N
    else:
        a2, b2, out2 = (a[0], b[0] if b.ndim == 3 else b, out[0]) if a.ndim == 3 else (a, b, out)
        if M >= N:
            def share(first, last):
                np.matmul(a2[first:last], b2, out=out2[first:last])
            count, work = M, K * N
        else:
            def share(first, last):
                np.matmul(a2, b2[:, first:last], out=out2[:, first:last])
            count, work = N, M * K
    over_blocks(share, count, work)
    return out


def _forget_pool_in_child():
    """A forked child has none of its parent's threads: a pool it inherited would take
    blocks and never run them. It makes its own on first use."""
    global _pool, _pool_lock, _blas_lock, _blas_users
    _pool, _pool_lock = None, threading.Lock()
    _blas_lock, _blas_users = threading.Lock(), 0


os.register_at_fork(after_in_child=_forget_pool_in_child)
