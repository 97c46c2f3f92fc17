"""``indrnn_core.host_cache``: large outputs reuse the memory of dead ones, and never of live ones."""
import gc
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import indrnn_core
from indrnn_core import reference
from indrnn_core._host_cache import HostCache

KIB = 1 << 10


def _span(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def _overlap(a, b):
    (s1, e1), (s2, e2) = _span(a), _span(b)
    return s1 < e2 and s2 < e1


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 7)), min_size=1, max_size=40),
       st.sampled_from([0, 8 * KIB, 64 * KIB]))
def test_live_arrays_never_share_memory(ops, max_idle):
    """Any sequence of allocations and releases: live arrays are disjoint and keep their contents, and the idle
    bytes stay within the cap."""
    cache = HostCache(max_idle_bytes=max_idle, min_bytes=1 * KIB)
    live, tag = [], 0
    for allocate, size, pick in ops:
        if allocate or not live:
            a = cache.empty((1 + size, 256), np.float32)  # 1 KiB .. 6 KiB: requests of different classes
            tag += 1
            a.fill(tag)
            live.append((a, tag))
        else:
            live.pop(pick % len(live))
        for i, (a, t) in enumerate(live):
            assert (a == t).all()
            assert not any(_overlap(a, b) for b, _ in live[i + 1:])
        assert cache.idle_bytes <= max_idle
        assert cache.idle_bytes == sum(block.nbytes for block, _ in cache._idle)


def test_views_keep_the_block_alive():
    cache = HostCache(min_bytes=0)
    a = cache.empty((4, 8), np.float64)
    view = a[1:3]
    address = _span(a)[0]
    del a
    b = cache.empty((4, 8), np.float64)  # the block is still viewed: it must not come back
    assert _span(b)[0] != address
    del view
    gc.collect()
    c = cache.empty((4, 8), np.float64)
    assert _span(c)[0] == address


def test_torch_tensors_keep_the_block_alive():
    torch = pytest.importorskip("torch")
    cache = HostCache(min_bytes=0)
    t = torch.from_numpy(cache.empty((16,), np.float32))
    address = t.data_ptr()
    assert _span(cache.empty((16,), np.float32))[0] != address
    del t
    assert _span(cache.empty((16,), np.float32))[0] == address


def test_reuse_bounds_and_cap():
    cache = HostCache(max_idle_bytes=100 * KIB, min_bytes=4 * KIB)
    small = cache.empty((1000,), np.uint8)  # under min_bytes: plain NumPy, owns its memory
    assert small.base is None and small.flags.owndata
    a = cache.empty((64 * KIB,), np.uint8)
    address = _span(a)[0]
    del a
    assert cache.idle_bytes == 64 * KIB
    big = cache.empty((96 * KIB,), np.uint8)  # larger than the idle block: a new one
    assert _span(big)[0] != address
    tiny = cache.empty((40 * KIB,), np.uint8)  # would waste over a quarter of the idle block: a new one
    assert _span(tiny)[0] != address
    close = cache.empty((56 * KIB,), np.uint8)  # within a quarter: reused
    assert _span(close)[0] == address
    del big, tiny, close  # 96 + 40 + 64 KiB returned: the oldest go beyond the 100 KiB cap
    assert cache.idle_bytes <= 100 * KIB
    cache.clear()
    assert cache.idle_bytes == 0


def test_core_outputs_overwrite_reused_memory(monkeypatch):
    """The core's own outputs (out=None) come from the cache: a reused block full of NaN is entirely rewritten."""
    monkeypatch.setattr(indrnn_core.host_cache, "min_bytes", 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3, 5))
    u, b, h0 = rng.uniform(0, 1, 5), rng.standard_normal(5), rng.standard_normal((3, 5))
    lengths = np.array([7, 0, 4])
    g = rng.standard_normal(x.shape)
    for _ in range(2):  # the second round gets the first round's blocks back, full of NaN
        h = indrnn_core.forward(x, u, b, h0, lengths=lengths)
        grads = indrnn_core.backward(g, h, u, h0, lengths=lengths)
        np.testing.assert_allclose(h, reference.forward(x, u, b, h0, lengths=lengths), rtol=1e-12, atol=1e-12)
        want = reference.backward(g, reference.forward(x, u, b, h0, lengths=lengths), u, h0, lengths=lengths)
        for got, exp in zip(grads, want):
            np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-12)
        for a in (h, *grads):
            a.fill(np.nan)
        del h, grads, a


def test_threads_share_the_cache_safely():
    """Threads allocating, filling, checking and dropping arrays at once (as DataParallel replicas or a threaded
    server would): no array is ever handed out while another one lives in its memory."""
    import threading

    cache = HostCache(max_idle_bytes=256 * KIB, min_bytes=1 * KIB)
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        live = []
        for step in range(300):
            a = cache.empty((int(rng.integers(1, 9)), 256), np.float32)
            a.fill(seed * 1000 + step)
            live.append((a, seed * 1000 + step))
            if len(live) > 3:
                live.pop(int(rng.integers(0, len(live))))
            if not all((b == tag).all() for b, tag in live):
                errors.append(seed)
                return

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.idle_bytes <= 256 * KIB


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_can_allocate_while_another_thread_holds_the_lock():
    """A child forked while another thread holds the cache's lock (as a DataLoader worker may be) gets a fresh lock
    instead of deadlocking on its first large output (the thread that would release it does not exist there)."""
    import signal
    import threading

    cache = HostCache(min_bytes=1 * KIB)
    held, release = threading.Event(), threading.Event()

    def hold():
        with cache._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        pid = os.fork()
        if pid == 0:  # child: exit 0 on success, 3 if stuck for 10 s
            try:
                signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
                signal.alarm(10)
                a = cache.empty((1024,), np.float32)
                a.fill(1)
                del a
                os._exit(0 if cache.idle_bytes == 4 * KIB else 1)
            finally:
                os._exit(2)
    finally:
        release.set()
        holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


_FAULTS_SCRIPT = """
import ctypes, resource, sys, threading
from indrnn_core._host_cache import retain_freed_memory
print(retain_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 100 << 20  # like XLA's temporary block for a Keras step at T=784, B=64, H=128
faults = []

def step():  # from a worker thread, as XLA allocates it
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(SIZE)
    ctypes.memset(p, 1, SIZE)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

for _ in range(3):
    t = threading.Thread(target=step); t.start(); t.join()
print(faults[-1])
"""


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc's mallopt")
def test_retain_freed_memory_stops_refaulting_a_large_block():
    """A 100 MB block freed and allocated again from a worker thread: with the setting applied, the third time
    touches pages already mapped (a handful of faults); with INDRNN_CORE_RETAIN_FREED_MEMORY=0 (glibc's defaults)
    it is mapped afresh and every one of its 25,600 pages faults (unless the kernel maps huge pages by default)."""
    def run(setting):
        env = dict(os.environ, INDRNN_CORE_RETAIN_FREED_MEMORY=setting)
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True,
                             timeout=600, check=True).stdout.split()
        return out[0] == "True", int(out[1])

    pages = (100 << 20) // os.sysconf("SC_PAGE_SIZE")
    applied, faults = run("1")
    assert applied and faults < pages // 20, faults
    applied, faults = run("0")
    assert not applied
    if not _huge_pages_always():
        assert faults >= pages * 9 // 10, faults
