"""What the speed scripts share: the median time of a call, and the peak resident memory.

    median_time(fn, reps, sync=None, warmup=1)   median seconds of fn() (sync() after each call
                                                  where the work is asynchronous: a GPU)
    peak_rss_mib()                                this process's peak resident memory, MiB
"""
import time

import numpy as np


def median_time(fn, reps, sync=None, warmup=1):
    """Median seconds of fn() over `reps` calls after `warmup` calls, each ended by sync() if
    given (a device's work is asynchronous: the host clock means something only after a
    synchronisation)."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def peak_rss_mib():
    """Peak resident memory of this process (VmHWM), MiB. Not ru_maxrss: that survives exec, so
    a child would start from its parent's peak."""
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
