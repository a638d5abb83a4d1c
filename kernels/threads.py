"""Threads for the CPU kernels: one fork and one join per layer, BLAS held to one thread.

The work of a layer is a list of pieces (kernels/conv_relu.py: runs of output rows, or of
filters) split into one contiguous run per thread; each thread does its pieces (Numba kernels
that release the GIL) and returns. The kernels split only their outputs, never a sum: every
output number is computed by one thread in an order that the layer's shape alone sets, so the
numbers are the same on 1, 2 or 16 threads (tests/test_kernels_conv.py). Fine-grained
alternatives (a parallel loop inside every kernel, a multithreaded GEMM) synchronise the threads
thousands of times a step, and on a busy machine every synchronisation waits for a time slice.

BLAS is held to one thread meanwhile, and the network holds it so for a whole forward and
backward (engine.choose_engine): OpenBLAS's threads, once woken by a multithreaded GEMM, spin
for a while after it and take a core from the kernels' own threads.
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba

THREADS = numba.config.NUMBA_NUM_THREADS   # the CPU's cores, or $NUMBA_NUM_THREADS

_POOL = None                # the worker threads (THREADS - 1 of them), made on first use
_POOL_LOCK = threading.Lock()
_BLAS = None                # threadpoolctl's controllers of the process's BLAS libraries


@contextmanager
def blas_threads(n):
    """Hold every BLAS library of the process to n threads (threadpoolctl) for the block."""
    from threadpoolctl import ThreadpoolController
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController().select(user_api="blas").lib_controllers
    libs = _BLAS
    old = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, k in zip(libs, old):
            lib.set_num_threads(k)


def parallel_runs(work, items, threads=None):
    """Split `items` into one contiguous run per thread and call work(t, run) for each, run 0 in
    this thread and the others in a pool, BLAS single-threaded meanwhile; returns the results in
    thread order. One fork and one join, whatever the number of items."""
    global _POOL
    threads = min(threads or THREADS, len(items)) or 1
    bounds = [len(items) * t // threads for t in range(threads + 1)]
    runs = [items[bounds[t]:bounds[t + 1]] for t in range(threads)]
    if threads == 1:
        return [work(0, runs[0])]
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads - 1:
            if _POOL is not None:
                _POOL.shutdown(wait=False)            # a smaller pool: its threads end
            _POOL = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="tinyunet")
    with blas_threads(1):
        futures = [_POOL.submit(work, t, runs[t]) for t in range(1, threads)]
        first = work(0, runs[0])
        return [first] + [f.result() for f in futures]
