"""Launching the compiled kernels with few Python layers between the caller and ``cuLaunchKernel``.

Numba's ``kernel[grid, block, stream](*args)`` re-types every argument, wraps each array in a device-array object,
looks up the CUDA context several times and checks the grid size on every call. On an H100 host that costs
0.3-0.4 ms per launch (``python -m benchmarks.cuda_probe``), more than the kernels themselves take at short T, so a
training step at T=100 was host-bound. Here:

* each CUDA array is read once into a :class:`DeviceView` (pointer, shape, byte strides, dtype, read-only flag),
  from its ``__cuda_array_interface__`` or a Numba device array's fields: validation and launch read the view;
* each kernel is compiled once per (CUDA context, float dtype) with every array typed as layout ``"A"`` (strided
  indexing, right for any strides: contiguity is never assumed, so no view can pick a wrong specialisation);
* a launch packs the views into the kernel's parameter list as Numba's own launcher does (an array is ``meminfo,
  parent, nitems, itemsize, data, *shape, *strides``) and calls ``cuda.core.launch`` on the caller's stream.

Numba's simulator has no compiled kernels: there (and on a numba-cuda without ``cuda.core`` launches) the views
are turned back into the simulator's arrays and the kernel is called the usual way, so the simulator tests run
the same kernels through the same launchers.
"""

import ctypes
import threading

import numpy as np
from numba import cuda
from numba.cuda.cudadrv import devicearray as _devicearray

from .._device_view import DeviceView, c_strides, is_bfloat16

try:  # numba-cuda >= 0.2x launches through cuda.core
    from cuda.bindings import driver as _cudrv
    from cuda.core import LaunchConfig as _LaunchConfig, Stream as _CoreStream, launch as _core_launch
except ImportError:  # pragma: no cover - older numba-cuda: the dispatcher path below serves every launch
    _core_launch = None

try:
    from numba.cuda.core.config import ENABLE_CUDASIM as _SIM
except ImportError:  # older numba-cuda
    from numba.core.config import ENABLE_CUDASIM as _SIM
SIMULATOR = bool(_SIM)  # NUMBA_ENABLE_CUDASIM=1: kernels run in Numba's CUDA simulator, on host arrays


_NUMBA_ARRAYS = tuple(getattr(_devicearray, name) for name in ("DeviceNDArray", "FakeCUDAArray")  # real, simulator
                      if hasattr(_devicearray, name))
_TYPESTR = {}  # typestr -> NumPy dtype (np.dtype() parses the string each time)


def view(a, name="array"):
    """A :class:`DeviceView` of CUDA array ``a`` (no copy, no synchronisation), or ``a`` itself when it is None or
    under the simulator, whose arrays live in host memory. ``name`` names ``a`` in errors."""
    if a is None or type(a) is DeviceView:
        return a
    if SIMULATOR:
        return a if isinstance(a, _NUMBA_ARRAYS) else cuda.as_cuda_array(a, sync=False)
    if isinstance(a, _NUMBA_ARRAYS):
        ptr = a.device_ctypes_pointer.value or 0
        return DeviceView(ptr, tuple(a.shape), tuple(a.strides), np.dtype(a.dtype), False, a)
    cai = a.__cuda_array_interface__
    if cai.get("mask") is not None:
        raise ValueError(f"{name} must not be a masked CUDA array (its interface has a mask)")
    shape = tuple(cai["shape"])
    typestr = cai["typestr"]
    dtype = _TYPESTR.get(typestr)
    if dtype is None:
        dtype = _TYPESTR[typestr] = np.dtype(typestr)
    strides = cai.get("strides")
    if strides is None:  # C-contiguous
        strides = c_strides(shape, dtype.itemsize)
    ptr, readonly = cai["data"]
    return DeviceView(ptr or 0, shape, tuple(strides), dtype, bool(readonly), a)


def numba_array(a):
    """A Numba device array over the same memory as ``a`` (a view, or anything :func:`view` takes)."""
    if a is None or isinstance(a, _NUMBA_ARRAYS):
        return a
    return cuda.as_cuda_array(a, sync=False)


_UINT16 = np.dtype(np.uint16)


def bits(a):
    """A bfloat16 array's memory as uint16 (its bit patterns), the way the kernels take bfloat16: neither NumPy
    nor Numba has a bfloat16 type, and the simulator has no bfloat16 intrinsics. No copy. None stays None."""
    if a is None:
        return None
    if type(a) is DeviceView:
        return DeviceView(a.ptr, a.shape, a.strides, _UINT16, a.readonly, a.owner)
    return a.view(_UINT16)  # a simulator array (host memory)


def retag(a, dtype):
    """A fresh uint16 device array ``a`` (from :func:`device_empty`) presented as ``dtype`` (bfloat16)."""
    if SIMULATOR:
        return a.view(dtype)
    return DeviceView(a.device_ctypes_pointer.value or 0, tuple(a.shape), tuple(a.strides), dtype, False, a)


def storage_views(dtype, arrays):
    """``arrays`` as the kernels take data of ``dtype``: bfloat16 ones as their uint16 bits, others unchanged."""
    return tuple(bits(a) for a in arrays) if is_bfloat16(dtype) else tuple(arrays)


# ---- streams ----------------------------------------------------------------------------------------------------

_STREAMS = {}  # None or int handle -> (Numba stream, cuda.core stream): building them costs more than a kernel


def stream_pair(stream):
    """(Numba stream, cuda.core stream) for ``stream``: None (Numba's default stream), an int handle (e.g. torch's
    ``cuda_stream``), an object with ``cuda_stream`` (torch, CuPy) or a Numba stream. Under the simulator, where
    every launch runs to completion at once, the cuda.core stream is None."""
    if hasattr(stream, "cuda_stream"):
        stream = stream.cuda_stream
    if SIMULATOR:
        return (cuda.default_stream() if stream is None or isinstance(stream, int) else stream), None
    key = stream if stream is None or isinstance(stream, int) else _handle(stream)
    pair = _STREAMS.get(key)
    if pair is None:
        if len(_STREAMS) > 64:  # the wrappers own nothing: dropping them all is always safe
            _STREAMS.clear()
        handle = _handle(cuda.default_stream()) if key is None else key  # None: 0, or Numba's per-thread stream
        numba_stream = cuda.default_stream() if handle == 0 else cuda.external_stream(handle)
        pair = _STREAMS[key] = (numba_stream, _CoreStream.from_handle(handle) if _core_launch else None)
    return pair


def is_capturing(stream):
    """Whether the stream of :func:`stream_pair` ``stream`` is being captured into a CUDA graph (then nothing may
    synchronise, allocate outside the capturing framework's allocator, or copy from pageable host memory). One
    driver call; False under the simulator. An error from the query counts as capturing: the safe answer."""
    if SIMULATOR or _core_launch is None:
        return False
    err, status = _cudrv.cuStreamIsCapturing(_cudrv.CUstream(_handle(stream[0])))
    return err != _cudrv.CUresult.CUDA_SUCCESS or status != _cudrv.CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_NONE


def _handle(numba_stream):
    h = numba_stream.handle
    return int(getattr(h, "value", h) or 0)  # a ctypes pointer (older numba-cuda) or a driver handle


def context_handle():
    """The current CUDA context, as an int (created first when there is none; 0 under the simulator): compiled
    kernels and cached device arrays belong to one context. One driver call, not Numba's context lookup."""
    if SIMULATOR:
        return 0
    if _core_launch is None:  # pragma: no cover - older numba-cuda
        return cuda.current_context().handle.value
    err, ctx = _cudrv.cuCtxGetCurrent()
    if err != _cudrv.CUresult.CUDA_SUCCESS or not int(ctx):
        cuda.current_context()  # none current yet: Numba makes its (primary) context current, which torch shares
        err, ctx = _cudrv.cuCtxGetCurrent()
    return int(ctx)


# ---- launching --------------------------------------------------------------------------------------------------

_KERNELS = {}  # (dispatcher, context handle, dtype) -> cuda.core kernel
_COMPILE_LOCK = threading.Lock()
_CONFIGS = {}  # (blocks, threads) -> LaunchConfig


def _signature(args):
    from numba import from_dtype, types

    sig = []
    for a in args:
        if type(a) is DeviceView:
            sig.append(types.Array(from_dtype(a.dtype), len(a.shape), "A"))
        elif type(a) is bool:
            sig.append(types.boolean)
        elif type(a) is int:
            sig.append(types.int64)
        else:
            raise TypeError(f"unexpected kernel argument {type(a).__name__}")
    return tuple(sig)


def _compiled(dispatcher, args, dtype, ctx):
    kernel = _KERNELS.get((dispatcher, ctx, dtype))
    if kernel is None:
        with _COMPILE_LOCK:
            compiled = dispatcher.compile(_signature(args))
            kernel = _KERNELS[(dispatcher, ctx, dtype)] = compiled._codelibrary.get_cufunc().kernel
    return kernel


def launch(dispatcher, blocks, threads, stream, args, dtype, ctx):
    """``dispatcher[blocks, threads, stream](*args)`` for ``args`` of :class:`DeviceView` (arrays of ``dtype``
    floats and int64), bool and int, without Numba's per-call typing and wrapping. ``stream``: from
    :func:`stream_pair`; ``ctx``: :func:`context_handle`, read once by the caller."""
    numba_stream, core_stream = stream
    if SIMULATOR or core_stream is None:
        dispatcher[blocks, threads, numba_stream](*(numba_array(a) if type(a) is DeviceView else a
                                                    for a in args))
        return
    params = []
    for a in args:
        if type(a) is DeviceView:
            # Numba's array parameters: meminfo, parent, nitems, itemsize, data, shape..., strides... (bytes)
            params += (0, 0, a.size, a.dtype.itemsize, a.ptr, *a.shape, *a.strides)
        elif type(a) is int:
            params.append(ctypes.c_int64(a))
        else:  # bool, passed as Numba passes it
            params.append(a)
    config = _CONFIGS.get((blocks, threads))
    if config is None:
        config = _CONFIGS[(blocks, threads)] = _LaunchConfig(grid=blocks, block=threads)
    _core_launch(core_stream, config, _compiled(dispatcher, args, dtype, ctx), *params)
