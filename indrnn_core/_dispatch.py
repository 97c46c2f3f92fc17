"""The public kernel API: validate every argument, then route NumPy arrays to ``indrnn_core.cpu`` and CUDA arrays
to ``indrnn_core.cuda`` (imported only when a CUDA array arrives)."""

import numpy as np

from . import cpu
from . import _validate as v
from . import time_parallel as tp
from .cpu import scan as cpu_scan
from ._host_cache import host_cache


def _cuda_module(name):
    from . import cuda as _cuda

    _cuda.require_gpu(name)  # checks once per process that a GPU is usable; a clear error if not
    return _cuda


def _u_abs_max(u, device):
    """max |u| as a host float (0 when H = 0): the automatic time-parallel rule needs it."""
    if u.shape[0] == 0:
        return 0.0
    if u.shape[0] == 1 and device == "cpu":  # (the single-column case: no ufuncs, ~1.5 us less)
        return abs(float(u[0]))
    if device == "cuda":
        from . import cuda as _cuda

        u = _cuda.copy_to_host(u)
    return float(np.abs(u).max())


def _lengths(lengths, T, B, device, stream):
    """``lengths`` as the kernels take it: a checked host int64 [B] array (all T when None) or, for an int64 CUDA
    array while ``stream`` is being captured into a CUDA graph (no value may be read back then), that device array
    itself, checked for shape and dtype only (the CUDA kernels clamp it to [0, T]). An eager CUDA ``lengths`` is
    copied to the host and checked (that waits for the stream), then used on the device as it is when int64."""
    if device != "cuda" or lengths is None or not v.is_cuda_array(lengths):
        return v.host_lengths(lengths, T, B)
    from . import cuda as _cuda

    d_lengths = _cuda.as_device_array(lengths, "lengths")
    v.check_device_lengths(d_lengths, B)
    int64 = np.dtype(d_lengths.dtype) == np.int64
    if _cuda.is_capturing(stream):
        if not int64:
            raise TypeError(f"lengths must be int64 during CUDA graph capture, got {np.dtype(d_lengths.dtype)}")
        return d_lengths
    host = v.host_lengths(lengths, T, B)
    return d_lengths if int64 and B and host.min() < T else host


def _host(lengths, T, B):
    """Host lengths for the time-parallel kernels (which take them on the host)."""
    if isinstance(lengths, np.ndarray):
        return lengths
    from . import cuda as _cuda

    return v.host_lengths(_cuda.copy_to_host(lengths), T, B)


def _cuda_empty(cuda, shape, dtype, stream, name):
    """A device array the core allocates itself (Numba's allocator): refused during CUDA graph capture."""
    if cuda.is_capturing(stream):
        raise ValueError(f"{name}: during CUDA graph capture pass out= buffers from the capturing framework's "
                         "allocator (nothing may be allocated here)")
    return cuda.device_empty(shape, dtype, stream)


def _time_parallel(time_parallel, dtype, device, T, B, H, act, forward, u, arrays, lengths, batch_first):
    """Whether to run the time-parallel kernels: float32/float64 data only. ``arrays``: the [T, B, H] arrays the
    kernels would read and write (the CPU's lanes kernels take only some layouts)."""
    if v.is_half(dtype):
        if time_parallel:
            raise ValueError("time_parallel=True runs float32/float64 data only; pass time_parallel=None or False "
                             "for float16/bfloat16")
        return False
    return tp.choose(time_parallel, device, T, B, H, act, forward, lambda: _u_abs_max(u, device),
                     lambda: device == "cpu" and cpu_scan.lanes_take(arrays, lengths, batch_first))


def forward(x, u, b=None, h0=None, *, activation="relu", batch_first=False, lengths=None, reverse=False,
            out=None, final_state_out=None, stream=None, time_parallel=None):
    """Run the IndRNN recurrence over all steps: ``h_t = act(x_t + u * h_{t-1} + b)``, ``h_{-1} = h0``.

    Args:
        x: [T, B, H] (or [B, T, H] with ``batch_first``): the projected input ``W x_t`` (bias optional).
        u: [H] recurrent weights. b: [H] bias or None. h0: [B, H] initial state or None (zeros).
        activation: "relu", "tanh", "sigmoid" or "identity".
        lengths: [B] ints in [0, T] (host); sequence b runs over its first lengths[b] steps, the rest is 0.
        reverse: run each sequence from its last valid step down to step 0.
        out: optional writable buffer shaped like ``x`` to fill. stream: CUDA stream (int handle or Numba stream).
        final_state_out: optional writable [B, H] buffer that also receives each sequence's final state, as
            :func:`final_state` defines it, written by the same kernel pass.
        time_parallel: None (automatic: the time-parallel kernels when B x H is too small to fill the device and
            T is long, by the measured rule in ``indrnn_core.time_parallel``; on CUDA not until measured on a GPU),
            True (scan in time; relu and identity only: a tanh or sigmoid forward is sequential, and asking for a
            parallel one is a ValueError) or False (one thread per sequence or column walks the steps in order).

    Returns:
        h: every step's output, shaped like ``x``, on the device of ``x`` (``out`` when given).

    Example:
        >>> import numpy as np, indrnn_core
        >>> x = np.ones((3, 1, 2), np.float32)
        >>> indrnn_core.forward(x, u=np.full(2, 0.5, np.float32))[:, 0, 0]
        array([1.  , 1.5 , 1.75], dtype=float32)
    """
    act = v.activation_code(activation)
    batch_first = v.check_flag("batch_first", batch_first)
    reverse = v.check_flag("reverse", reverse)
    time_parallel = tp.check_option(time_parallel)
    tp.check_forward_activation(time_parallel, act, activation)
    device = v.common_device({"x": x, "u": u, "b": b, "h0": h0})
    if device == "cuda":
        cuda = _cuda_module("x")
        x, u, b, h0 = (cuda.as_device_array(a, n) for a, n in zip((x, u, b, h0), ("x", "u", "b", "h0")))
    dtype, _ = v.check_dtypes({"x": x, "h0": h0}, {"u": u, "b": b}, device)
    T, B, H = v.sequence_shape("x", x, batch_first)
    v.check_shape("u", u, (H,))
    v.check_shape("b", b, (H,))
    v.check_shape("h0", h0, (B, H))
    lengths = _lengths(lengths, T, B, device, stream)
    final = None if final_state_out is None else v.check_out("final_state_out", final_state_out, (B, H), dtype,
                                                             device)
    scan = _time_parallel(time_parallel, dtype, device, T, B, H, act, True, u,
                          (x,) if out is None else (x, out), lengths, batch_first)
    if device == "cpu":
        if out is None:
            out = host_cache.empty(x.shape, dtype)
        v.check_out("out", out, x.shape, dtype, device)
        (cpu_scan if scan else cpu).forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out, final)
        return out
    out_arr = _cuda_empty(cuda, x.shape, dtype, stream, "out") if out is None else out
    out_view = v.check_out("out", out_arr, x.shape, dtype, device)
    if scan:
        cuda.scan_forward_into(x, u, b, h0, _host(lengths, T, B), reverse, act, batch_first, out_view, final,
                               stream)
    else:
        cuda.forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out_view, final, stream)
    return out_arr


def backward(grad_h, h, u, h0=None, *, activation="relu", batch_first=False, lengths=None, reverse=False,
             grad_hn=None, out=None, stream=None, workspace=None, time_parallel=None):
    """Back-propagation through time for ``forward``, from its output ``h`` (``x`` is never needed).

    Args:
        grad_h: dL/dh for every output, shaped like ``h`` ([T, B, H] or [B, T, H]).
        h: ``forward``'s output. u: [H]. h0: [B, H] or None: the same ``h0`` given to ``forward``.
        grad_hn: [B, H] or None: dL/d(final state) from outside, added at each sequence's last step.
        activation, batch_first, lengths, reverse: exactly as given to ``forward``.
        out: None or a tuple ``(gx, gu, gb, gh0)`` of writable buffers (any entry None to allocate).
        workspace: CUDA only (ignored on the CPU): None or a writable [2, B, H] device buffer of the data type for
            the per-sequence partial sums of ``gu`` and ``gb``; a framework passes one from its own caching
            allocator, since allocating it here costs more than the kernels at small T. Not used by the
            time-parallel kernels.
        time_parallel: None (automatic, as in :func:`forward`), True (scan in time: every activation) or False.

    Returns:
        (gx, gu, gb, gh0): dL/dx (= dL/d pre-activation, shaped like ``h``), dL/du [H], dL/db [H]
        (``gx`` summed over time and batch), dL/dh0 [B, H]. Sums use a fixed order: reruns are bit-identical.
    """
    act = v.activation_code(activation)
    batch_first = v.check_flag("batch_first", batch_first)
    reverse = v.check_flag("reverse", reverse)
    time_parallel = tp.check_option(time_parallel)
    names = ("gx", "gu", "gb", "gh0")
    if out is None:
        out = (None,) * 4
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise TypeError("out must be None or a tuple (gx, gu, gb, gh0) of arrays (entries may be None)")
    device = v.common_device({"grad_h": grad_h, "h": h, "u": u, "h0": h0, "grad_hn": grad_hn})
    if device == "cuda":
        cuda = _cuda_module("h")
        grad_h, h, u, h0, grad_hn = (cuda.as_device_array(a, n) for a, n in zip(
            (grad_h, h, u, h0, grad_hn), ("grad_h", "h", "u", "h0", "grad_hn")))
    dtype, param_dtype = v.check_dtypes({"grad_h": grad_h, "h": h, "h0": h0, "grad_hn": grad_hn}, {"u": u},
                                        device)
    T, B, H = v.sequence_shape("h", h, batch_first)
    v.check_shape("grad_h", grad_h, h.shape)
    v.check_shape("u", u, (H,))
    v.check_shape("h0", h0, (B, H))
    v.check_shape("grad_hn", grad_hn, (B, H))
    lengths = _lengths(lengths, T, B, device, stream)
    shapes = (h.shape, (H,), (H,), (B, H))
    dtypes = (dtype, param_dtype, param_dtype, dtype)  # gu, gb in u's dtype (float32 for half-precision data)
    if device == "cpu":
        out = tuple(host_cache.empty(s, dt) if o is None else o for o, s, dt in zip(out, shapes, dtypes))
    else:
        out = tuple(_cuda_empty(cuda, s, dt, stream, f"out[{i}] ({name})") if o is None else o
                    for i, (name, o, s, dt) in enumerate(zip(names, out, shapes, dtypes)))
    views = [v.check_out(f"out[{i}] ({name})", o, s, dt, device)
             for i, (name, o, s, dt) in enumerate(zip(names, out, shapes, dtypes))]
    scan = _time_parallel(time_parallel, dtype, device, T, B, H, act, False, u, (grad_h, h, views[0]), lengths,
                          batch_first)
    if device == "cpu":
        (cpu_scan if scan else cpu).backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn,
                                                  *views)
    elif scan:
        cuda.scan_backward_into(grad_h, h, u, h0, _host(lengths, T, B), reverse, act, batch_first, grad_hn, *views,
                                stream)
    else:
        if workspace is not None:
            workspace = v.check_out("workspace", workspace, (2, B, H), param_dtype, device)
        elif cuda.is_capturing(stream):
            raise ValueError("workspace: during CUDA graph capture backward needs a [2, B, H] workspace from the "
                             "capturing framework's allocator (nothing may be allocated here)")
        cuda.backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, *views, stream,
                           workspace=workspace)
    return out


def final_state(h, h0=None, lengths=None, reverse=False, batch_first=False, *, stream=None):
    """Each sequence's final state [B, H]: ``h`` at its last visited step (step ``lengths[b]-1``, or step 0 when
    ``reverse``), or ``h0[b]`` (zeros when None) when its length is 0. Same device as ``h``."""
    batch_first = v.check_flag("batch_first", batch_first)
    reverse = v.check_flag("reverse", reverse)
    device = v.common_device({"h": h, "h0": h0})
    if device == "cuda":
        cuda = _cuda_module("h")
        h, h0 = cuda.as_device_array(h, "h"), cuda.as_device_array(h0, "h0")
    dtype, _ = v.check_dtypes({"h": h, "h0": h0}, {}, device)
    T, B, H = v.sequence_shape("h", h, batch_first)
    v.check_shape("h0", h0, (B, H))
    lengths = _lengths(lengths, T, B, device, stream)
    if device == "cuda":
        out = _cuda_empty(cuda, (B, H), dtype, stream, "the result")
        cuda.final_state_into(h, h0, lengths, reverse, batch_first, cuda.as_device_array(out), stream)
        return out
    h_tm = np.swapaxes(h, 0, 1) if batch_first else h
    hn = np.zeros((B, H), dtype=dtype) if h0 is None else np.array(h0, dtype=dtype)
    ran = lengths > 0
    last = np.zeros(B, dtype=np.int64) if reverse else lengths - 1
    hn[ran] = h_tm[last[ran], np.flatnonzero(ran)]
    return hn
