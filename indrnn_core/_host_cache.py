"""Reused host memory for the kernels' large CPU outputs.

Why: a fresh buffer of many megabytes is fresh pages from the OS (glibc serves such sizes with ``mmap`` and gives
them back on ``free``), which the kernel then faults in and the OS zeroes, page by page, on first touch. For
memory-bound kernels that costs as much as the kernels themselves: at T=1000, B=256, H=256 float32, fwd+bwd with
freshly allocated outputs took +60-80% over the same kernels writing reused buffers (the benchmark's "allocating
outputs" rows). So, like a GPU framework's caching allocator, large outputs come from here: NumPy arrays over
blocks that return to this cache when the last array or tensor viewing them is gone, and are handed out again,
already faulted in, to the next request of about the same size.

A block is reused only once nothing refers to it: NumPy views, ``torch.from_numpy`` tensors and DLPack exports all
keep it alive. Only buffers of at least ``min_bytes`` take this path; idle blocks beyond ``max_idle_bytes`` are
released, least recently returned first; ``clear()`` releases them all. ``indrnn_core.host_cache`` is the one
instance: ``indrnn_core.host_cache.max_idle_bytes = 0`` keeps nothing idle (every large output fresh from the OS).

Where a framework allocates the buffers itself (XLA on the CPU: one temporary block per run of a compiled program,
~100 MB for a Keras training step at T=784, B=64, H=128), the cache cannot serve them; :func:`retain_freed_memory`
asks the C allocator to keep freed memory instead, which the JAX adapter does on its first CPU kernel call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import platform
import threading
import weakref

import numpy as np

_SLACK = 4  # a block serves a request of at least (1 - 1/_SLACK) of its size: at most 25% unused


def _default_max_idle_bytes() -> int:
    """An eighth of physical memory (1 GiB where that is unknown)."""
    try:
        return max(256 << 20, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8)
    except (AttributeError, ValueError, OSError):
        return 1 << 30


class _Lease:
    """Exposes one block as an array of the requested shape and dtype, and gives the block back when it dies (that
    is, when the last array viewing it dies: every view's ``base`` chain ends here)."""

    __slots__ = ("_cache", "_block", "__array_interface__")

    def __init__(self, cache: "HostCache", block: np.ndarray, address: int, shape: tuple, dtype: np.dtype):
        self._cache, self._block = cache, (block, address)
        self.__array_interface__ = {"data": (address, False), "shape": shape, "typestr": dtype.str, "version": 3}

    def __del__(self):
        try:
            self._cache._give_back(self._block)
        except Exception:  # interpreter shutdown: nothing left to give back to
            pass


class HostCache:
    """Hands out NumPy arrays for large kernel outputs, reusing the memory of dead ones.

    Attributes:
        max_idle_bytes: most bytes kept idle for reuse (default: an eighth of physical memory); 0 keeps nothing.
        min_bytes: smaller requests get a plain ``np.empty`` (default 4 MiB: below that the C allocator reuses
            memory by itself).
    """

    def __init__(self, max_idle_bytes: int | None = None, min_bytes: int = 4 << 20):
        self.max_idle_bytes = _default_max_idle_bytes() if max_idle_bytes is None else int(max_idle_bytes)
        self.min_bytes = int(min_bytes)
        self._idle: list[tuple[np.ndarray, int]] = []  # (block, its address), least recently returned first
        self._idle_bytes = 0
        # Reentrant: a lease can die (and give its block back) from the garbage collector while this thread holds
        # the lock.
        self._lock = threading.RLock()
        _CACHES.add(self)

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` (like ``np.empty``)."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes or nbytes == 0:  # checked first: small outputs are on every short call's path
            return np.empty(shape, dtype)
        shape = tuple(int(s) for s in shape)
        entry = self._take(nbytes)
        if entry is None:
            block = np.empty(nbytes, np.uint8)  # NumPy advises huge pages for blocks this large
            entry = (block, block.__array_interface__["data"][0])
        return np.asarray(_Lease(self, entry[0], entry[1], shape, dtype))

    def _take(self, nbytes: int):
        with self._lock:
            for i in range(len(self._idle) - 1, -1, -1):  # most recently returned first: likeliest in cache
                size = self._idle[i][0].nbytes
                if nbytes <= size and size - size // _SLACK <= nbytes:
                    self._idle_bytes -= size
                    return self._idle.pop(i)
        return None

    def _give_back(self, entry) -> None:
        with self._lock:
            self._idle.append(entry)
            self._idle_bytes += entry[0].nbytes
            while self._idle_bytes > self.max_idle_bytes:
                self._idle_bytes -= self._idle.pop(0)[0].nbytes

    @property
    def idle_bytes(self) -> int:
        """Bytes held idle for reuse now."""
        return self._idle_bytes

    def clear(self) -> None:
        """Release every idle block (arrays still alive are untouched and return later)."""
        with self._lock:
            self._idle.clear()
            self._idle_bytes = 0


_CACHES: "weakref.WeakSet[HostCache]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (e.g. a DataLoader worker) must not inherit a lock that a thread of the parent held: that
    thread does not exist in the child, so nothing would ever release it."""
    for cache in _CACHES:
        cache._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

host_cache = HostCache()


# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_RETAINED: list[bool] = []  # [result] once retain_freed_memory has run


def retain_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse instead of returning it to the OS; True if it now does.

    Why: XLA's CPU runtime allocates one temporary block per run of a compiled program (~100 MB for a Keras
    training step at T=784, B=64, H=128, float32) and frees it at the end. glibc serves a block that large with
    ``mmap`` and unmaps it on ``free``, so every step faults ~25,000 fresh pages in and the OS zeroes them: at that
    shape the step took 92 ms with and 47 ms without (measured with ``MALLOC_*`` variables, same machine, loaded).
    Three settings together stop it (any two leave the faults): one arena (a worker thread's arena cannot hold
    a block over 64 MB and maps it instead), no ``mmap`` for large blocks, and no trimming of the heap's top.

    The cost: the process keeps its peak heap size (as GPU frameworks' caching allocators do), and threads share
    one malloc arena. Applied once per process, on Linux with glibc only (elsewhere a no-op returning False).
    Set ``INDRNN_CORE_RETAIN_FREED_MEMORY=0`` to keep the allocator's defaults: the JAX adapter then leaves it alone.
    """
    if _RETAINED:
        return _RETAINED[0]
    ok = False
    if os.environ.get("INDRNN_CORE_RETAIN_FREED_MEMORY", "1") != "0" and platform.system() == "Linux" \
            and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            # (mallopt returns 1 on success; the trim threshold is an int: 2 GiB - 1 is the largest)
            ok = all(libc.mallopt(param, value) == 1 for param, value in
                     ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
        except (OSError, AttributeError):
            ok = False
    _RETAINED.append(ok)
    return ok
