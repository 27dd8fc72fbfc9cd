"""What this process may use of the machine."""
from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (``taskset``, a container's cpuset), not every
    CPU of the machine, so that a job pinned to one core sizes its threads and worker pools to one.

    Returns
    -------
    int
        At least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap, and up to this much free memory stays at its top.
HEAP_MMAP_BYTES, HEAP_TRIM_BYTES = 32 << 20, 64 << 20
_kept = False


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of returning it to the kernel (glibc only).

    A scorer holds a task's clips together (their waveforms, spectra, network inputs: tens of 0.1-1 MB
    arrays) and frees them together. glibc gives the top of its heap back to the kernel once more than
    twice its largest recent block lies free there, so every task had its memory mapped afresh,
    each page zeroed on a fault: about a hundred faults a clip, 0.3-0.6 ms of a ``ser batch`` worker's
    8-9 ms (session 30, alternating runs in one process). Blocks up to :data:`HEAP_MMAP_BYTES` now come
    from the heap, which keeps up to :data:`HEAP_TRIM_BYTES` free for the next task.

    Returns
    -------
    bool
        True where the setting took (Linux with glibc); elsewhere a no-op.
    """
    global _kept
    if _kept:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):     # not glibc (macOS, Windows, musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_BYTES))
    return _kept
