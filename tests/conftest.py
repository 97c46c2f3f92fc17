"""Shared test setup.

- Without a GPU, the CUDA kernels run in Numba's simulator: NUMBA_ENABLE_CUDASIM must be set before numba is
  imported, which is why it happens here, first. With a GPU (``nvidia-smi`` works) they run on the real device.
- Hypothesis: bounded examples and no deadline (the first call of a kernel includes JIT compilation).
"""

import os
import shutil
import subprocess

import numpy as np
import pytest


def _has_gpu():
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _has_gpu():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
CUDA_SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _lock_simulator_shared_arrays():
    """Numba's simulator runs a block's threads as Python threads, and its ``cuda.shared.array`` looks the block's
    array up by call site and creates it when missing, unlocked: two threads can both miss and each get an array
    of its own, and the kernel then reads memory no other thread wrote (a tiled kernel's output came back partly
    uninitialised in one full run of the suite). The same lookup under a lock."""
    import sys
    import threading

    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory (one buffer), or the simulator's error
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)  # the simulator's key: the calling line
        with lock:
            res = self._allocations.get(key)
            if res is None:
                res = self._allocations[key] = np.empty(shape, dtype)
        return res

    kernelapi.FakeCUDAShared.array = array


if CUDA_SIMULATED:
    _lock_simulator_shared_arrays()

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=10, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class Device:
    """Moves NumPy arrays to a device and back, so one test body covers every kernel path: "cpu" (serial for
    small inputs, as in real use), "cpu-parallel" (the multi-threaded kernels even for tiny inputs) and "cuda"."""

    def __init__(self, name):
        self.name = name
        self.kind = "cuda" if name == "cuda" else "cpu"

    def put(self, a):
        if a is None or self.kind == "cpu":
            return a
        from numba import cuda

        return cuda.to_device(np.ascontiguousarray(a))

    def get(self, a):
        if a is None or self.kind == "cpu":
            return a
        return a.copy_to_host()

    def __repr__(self):
        return self.name


@pytest.fixture(params=["cpu", "cpu-parallel", "cuda"], scope="session")
def device(request):
    """Session-scoped so hypothesis tests may use it; pytest groups the tests of each param together, so the
    threshold patch below holds exactly while the "cpu-parallel" tests run."""
    from indrnn_core.cpu import recurrence

    old = recurrence.PARALLEL_MIN_ELEMENTS
    if request.param == "cpu-parallel":
        recurrence.PARALLEL_MIN_ELEMENTS = 0
    yield Device(request.param)
    recurrence.PARALLEL_MIN_ELEMENTS = old


@pytest.fixture(autouse=True, scope="session")
def small_cuda_blocks():
    """Shrink the CUDA block size so tiny test inputs span several blocks (exercising the tail guard), and run the
    block-tiled sequential kernels up to 1024 columns only: the tests' inputs are smaller except the awkward
    T=63, B*H=1500 edge case, which then tests the column kernels against the reference directly (and costs a
    third of the simulator time); tests/test_cuda_tiled.py checks the two kinds agree bit for bit."""
    from indrnn_core.cuda import config

    old = config.THREADS_PER_BLOCK, config.TILED_MAX_COLUMNS
    config.THREADS_PER_BLOCK, config.TILED_MAX_COLUMNS = 4, 1024
    yield 4
    config.THREADS_PER_BLOCK, config.TILED_MAX_COLUMNS = old
