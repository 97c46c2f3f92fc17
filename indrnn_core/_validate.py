"""Input validation shared by ``forward``, ``backward`` and ``final_state``.

Numba kernels do no bounds checks, so everything a kernel relies on is checked here, before any launch, and each
failure names the argument and what was expected. Arrays are classified by device: ``numpy.ndarray`` is the CPU;
anything exposing ``__cuda_array_interface__`` (Numba device arrays, CuPy, PyTorch CUDA tensors) is CUDA.
"""

import sys
from collections.abc import Sequence

import numpy as np

from ._activations import ACTIVATION_CODES
from ._device_view import is_bfloat16

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
FLOAT32 = np.dtype(np.float32)


def is_cuda_array(a):
    """True for objects exposing ``__cuda_array_interface__`` (and Numba simulator device arrays)."""
    if isinstance(a, np.ndarray):
        return False
    # The class first: a property there (Numba, torch, CuPy arrays) is found without being evaluated, and building
    # the interface costs microseconds per read. An instance attribute (a plain holder object) is checked after.
    if hasattr(type(a), "__cuda_array_interface__") or hasattr(a, "__cuda_array_interface__"):
        return True
    # Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) hands out host-backed arrays without the interface.
    sim = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return sim is not None and isinstance(a, sim.FakeCUDAArray)


def device_of(name, a):
    """'cpu' or 'cuda'; a TypeError naming ``name`` for anything that is not an array."""
    if isinstance(a, np.ndarray):
        return "cpu"
    if is_cuda_array(a):
        return "cuda"
    raise TypeError(f"{name} must be a NumPy array or a CUDA array (with __cuda_array_interface__), "
                    f"got {type(a).__name__}")


def common_device(named_arrays):
    """The one device of all non-None arrays in ``named_arrays`` ({name: array}); ValueError if they differ."""
    if all(a is None or type(a) is np.ndarray for a in named_arrays.values()):
        return "cpu"  # the common case, checked first: it is on every CPU call's path
    devices = {name: device_of(name, a) for name, a in named_arrays.items() if a is not None}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"all arrays must be on one device, got {where}")
    return next(iter(devices.values()))


def check_dtype(named_arrays):
    """The one floating dtype shared by all non-None arrays ({name: array}, first one sets it)."""
    dtype = None
    first = None
    for name, a in named_arrays.items():
        if a is None:
            continue
        dt = a.dtype if type(a) is np.ndarray else dtype_of(a)
        if dt not in FLOAT_DTYPES:  # the message check_dtypes gives (data may be half on CUDA; u and b not)
            hint = "" if name in ("u", "b") else " (float16 or bfloat16 on CUDA)"
            raise TypeError(f"{name} must have dtype float32 or float64{hint}, got {_dtype_name(dt)}")
        if dtype is None:
            dtype, first = dt, name
        elif dt != dtype:
            raise TypeError(f"all arrays must share one dtype: {first} is {dtype} but {name} is {dt}")
    return dtype


def is_half(dtype):
    """float16 or bfloat16: storage dtypes the CUDA kernels read and write, doing their math in float32."""
    return dtype == np.float16 or is_bfloat16(dtype)


def _dtype_name(dt):
    return "bfloat16" if is_bfloat16(dt) else str(dt)


def check_dtypes(data, params, device):
    """The dtype contract of ``forward``/``backward``: ``(storage dtype, parameter dtype)``.

    ``data`` ({name: array or None}: x, h0, grad_h, h, grad_hn, ...) share one storage dtype, set by the first
    present one: float32 or float64 anywhere, float16 or bfloat16 on CUDA only. ``params`` (u, b) have the
    parameter dtype: the storage dtype for float32/float64, float32 for half-precision storage (the kernels do
    their math and accumulate ``gu``/``gb`` in float32, which ``gu``/``gb`` keep, as torch autocast keeps its
    parameters and their gradients in float32). Each failure is a TypeError naming the argument."""
    dtype = first = None
    half = False
    for name, a in data.items():
        if a is None:
            continue
        dt = a.dtype if type(a) is np.ndarray else dtype_of(a)
        if dtype is None:
            if dt not in FLOAT_DTYPES:  # (the common float32/float64 case costs one lookup)
                if not is_half(dt):
                    raise TypeError(f"{name} must have dtype float32 or float64 (float16 or bfloat16 on CUDA), "
                                    f"got {_dtype_name(dt)}")
                if device == "cpu":
                    raise TypeError(f"{name} has dtype {_dtype_name(dt)}: half precision (float16, bfloat16) runs "
                                    "on CUDA only; pass float32 arrays on the CPU (or CUDA arrays)")
                half = True
            dtype, first = dt, name
        elif dt != dtype:
            if dt not in FLOAT_DTYPES and not is_half(dt):
                raise TypeError(f"{name} must have dtype float32 or float64 (float16 or bfloat16 on CUDA), "
                                f"got {_dtype_name(dt)}")
            raise TypeError(f"all arrays must share one dtype: {first} is {_dtype_name(dtype)} but {name} is "
                            f"{_dtype_name(dt)}")
    param_dtype = FLOAT32 if half else dtype
    for name, a in params.items():
        if a is None:
            continue
        dt = a.dtype if type(a) is np.ndarray else dtype_of(a)
        if param_dtype is None:
            param_dtype = dt
        if dt == param_dtype:
            continue
        if half:
            raise TypeError(f"{name} must have dtype float32 with {_dtype_name(dtype)} data in {first} "
                            f"(half-precision storage keeps u and b, and their gradients, in float32), got "
                            f"{_dtype_name(dt)}")
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {_dtype_name(dt)}")
        raise TypeError(f"all arrays must share one dtype: {first} is {_dtype_name(dtype)} but {name} is "
                        f"{_dtype_name(dt)}")
    return dtype, param_dtype


def dtype_of(a):
    """``a.dtype`` as a NumPy dtype, for any array type (TensorFlow's ``DType`` has ``as_numpy_dtype``)."""
    dt = a.dtype
    return np.dtype(getattr(dt, "as_numpy_dtype", dt))


def check_shape(name, a, expected):
    if a is not None and tuple(a.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(a.shape)}")


def sequence_shape(name, a, batch_first):
    """(T, B, H) of a sequence array laid out [T, B, H] or, with ``batch_first``, [B, T, H]."""
    if len(a.shape) != 3:
        layout = "[B, T, H] (batch_first=True)" if batch_first else "[T, B, H]"
        raise ValueError(f"{name} must be 3-D {layout}, got shape {tuple(a.shape)}")
    T, B, H = a.shape
    return (B, T, H) if batch_first else (T, B, H)


def check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def activation_code(activation):
    if not isinstance(activation, str) or activation not in ACTIVATION_CODES:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_CODES)}, got {activation!r}")
    return ACTIVATION_CODES[activation]


def host_lengths(lengths, T, B):
    """``lengths`` as a host int64 [B] array with values in [0, T] (all T when None). Accepts a NumPy integer
    array, a sequence of ints, or an integer CUDA array (copied to the host to be checked)."""
    if lengths is None:
        return _full_lengths(B, T)
    if is_cuda_array(lengths):
        from . import cuda as _cuda

        lengths = _cuda.copy_to_host(lengths)
    if isinstance(lengths, np.ndarray):
        arr = lengths
    elif isinstance(lengths, Sequence) and not isinstance(lengths, (str, bytes)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in lengths):
            raise TypeError("lengths must contain integers")
        arr = np.asarray(lengths, dtype=np.int64).reshape(len(lengths))
    else:
        raise TypeError(f"lengths must be a sequence or array of integers, got {type(lengths).__name__}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must have an integer dtype, got {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got {tuple(arr.shape)}")
    if B and (arr.min() < 0 or arr.max() > T):
        raise ValueError(f"lengths must lie in [0, {T}] (T={T}), got values from {arr.min()} to {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)


_FULL_LENGTHS = {}  # (B, T) -> int64 [B] of T: read by the kernels only, so one array serves every call


def _full_lengths(B, T):
    arr = _FULL_LENGTHS.get((B, T))
    if arr is None:
        if len(_FULL_LENGTHS) >= 64:  # shapes seen recently; dropping them all is always safe
            _FULL_LENGTHS.clear()
        arr = _FULL_LENGTHS[(B, T)] = np.full(B, T, dtype=np.int64)
    return arr


def check_writable(name, a):
    if isinstance(a, np.ndarray):
        writable = a.flags.writeable
    elif hasattr(a, "_ary"):  # a Numba simulator device array
        writable = a._ary.flags.writeable
    elif hasattr(a, "gpu_data"):  # a Numba device array: always writable (and its interface is slow to build)
        writable = True
    else:
        writable = not a.__cuda_array_interface__["data"][1]
    if not writable:
        raise ValueError(f"{name} must be writable, got a read-only array")


def check_out(name, a, shape, dtype, device):
    """An ``out=`` buffer: right type, device, shape, dtype, and writable. Returns it as the kernels take it (a
    Numba view of a CUDA buffer)."""
    if type(a) is np.ndarray and device == "cpu":  # the common case first: it is on every CPU call's path
        if not a.flags.writeable:
            raise ValueError(f"{name} must be writable, got a read-only array")
        check_shape(name, a, shape)
        if a.dtype != dtype:
            raise TypeError(f"{name} must have dtype {_dtype_name(dtype)}, got {_dtype_name(a.dtype)}")
        return a
    if device_of(name, a) != device:
        raise ValueError(f"{name} must be on {device} like the inputs, got an array on {device_of(name, a)}")
    check_writable(name, a)  # on the caller's object: its __cuda_array_interface__ carries the read-only flag
    if device == "cuda":  # a framework tensor's shape/dtype objects are its own: read them from a Numba view
        from . import cuda as _cuda

        a = _cuda.as_device_array(a, name)
    check_shape(name, a, shape)
    if np.dtype(a.dtype) != dtype:
        raise TypeError(f"{name} must have dtype {_dtype_name(dtype)}, got {_dtype_name(np.dtype(a.dtype))}")
    return a


def check_device_lengths(lengths, B):
    """Shape and integer dtype of ``lengths`` given as a CUDA array (its values are checked on the host, or, during
    CUDA graph capture, where nothing may be read back, clamped to [0, T] by the kernels)."""
    dt = np.dtype(lengths.dtype)
    if dt.kind not in "iu":
        raise TypeError(f"lengths must have an integer dtype, got {dt}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got {tuple(lengths.shape)}")


# ---- checks on shapes and dtypes alone, for adapters (run while a framework traces a call) -----------------------
def check_signature(x, u, b=None, h0=None, lengths=None, *, activation="relu", batch_first=False, reverse=False):
    """What ``forward`` checks first, on anything with ``.shape`` and ``.dtype`` (JAX tracers, TF tensors, NumPy
    arrays), so an adapter raises the core's messages while a framework traces the call, before any kernel runs.
    ``lengths`` may be concrete (a NumPy array or a sequence: values checked too) or a traced integer array
    (shape and dtype only: the kernel entry then checks the values). Returns ``(T, B, H, dtype)``."""
    activation_code(activation)
    check_flag("batch_first", batch_first)
    check_flag("reverse", reverse)
    dtype = check_dtype({"x": x, "u": u, "b": b, "h0": h0})
    T, B, H = sequence_shape("x", x, batch_first)
    check_shape("u", u, (H,))
    check_shape("b", b, (H,))
    check_shape("h0", h0, (B, H))
    check_lengths_signature(lengths, T, B)
    return T, B, H, dtype


def check_lengths_signature(lengths, T, B):
    """``lengths`` checked as far as it is known: all of it when concrete, shape and integer dtype when traced."""
    if lengths is None or isinstance(lengths, (np.ndarray, Sequence)):
        host_lengths(lengths, T, B)
        return
    if not (hasattr(lengths, "shape") and hasattr(lengths, "dtype")):
        raise TypeError(f"lengths must be a sequence or array of integers, got {type(lengths).__name__}")
    dt = dtype_of(lengths)
    if dt.kind not in "iu":
        raise TypeError(f"lengths must have an integer dtype, got {dt}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got {tuple(lengths.shape)}")


def output_shapes(x_shape, batch_first):
    """``forward``'s outputs for an input of ``x_shape``: ``(h shape, final state shape [B, H])``."""
    B = x_shape[0] if batch_first else x_shape[1]
    return tuple(x_shape), (B, x_shape[2])


def gradient_shapes(h_shape, batch_first):
    """``backward``'s outputs ``(gx, gu, gb, gh0)`` shapes for an output ``h`` of ``h_shape``."""
    B, H = (h_shape[0] if batch_first else h_shape[1]), h_shape[2]
    return tuple(h_shape), (H,), (H,), (B, H)
