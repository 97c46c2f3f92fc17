"""``numba.cuda`` kernels for the element-wise recurrence, then their host launchers.

One thread per (sequence n, hidden unit j) column walks the time axis; at each step the threads of a warp touch
consecutive ``j`` of one row, so loads and stores coalesce in both layouts. Visit index ``s`` is as in the CPU
kernels: forward visits ``t = s`` (``t = lengths[n]-1-s`` when reversed) and writes zeros at padding ``t = s >=
lengths[n]``; backward visits the same steps in the opposite order. Gradient sums of ``u`` and ``b`` are written
as per-column partials [B, H] and summed over B in a fixed order by a second kernel: deterministic, no atomics.
Optional inputs (``b``, ``h0``, ``grad_hn``) arrive as 1-element placeholders with a flag, to avoid allocating
and clearing device memory for zeros.
"""

import numpy as np
from numba import cuda

from .._activations import activate, derivative_from_output
from . import config


@cuda.jit(device=True, inline=True)
def _load(a, batch_first, t, n, j):
    return a[n, t, j] if batch_first else a[t, n, j]


@cuda.jit(device=True, inline=True)
def _store(a, batch_first, t, n, j, value):
    if batch_first:
        a[n, t, j] = value
    else:
        a[t, n, j] = value


@cuda.jit
def _forward_kernel(x, u, bias, has_bias, h0, has_h0, lengths, reverse, act, batch_first, out):
    i = cuda.grid(1)
    B, H = lengths.shape[0], u.shape[0]
    if i >= B * H:
        return
    n, j = i // H, i % H
    T = x.shape[1] if batch_first else x.shape[0]
    zero = u.dtype.type(0)
    one = u.dtype.type(1)
    uj = u[j]
    bj = bias[j] if has_bias else zero
    prev = h0[n, j] if has_h0 else zero
    length = lengths[n]
    for s in range(T):
        if s < length:
            t = length - 1 - s if reverse else s
            prev = activate(_load(x, batch_first, t, n, j) + uj * prev + bj, act, one)
            _store(out, batch_first, t, n, j, prev)
        else:
            _store(out, batch_first, s, n, j, zero)


@cuda.jit
def _backward_kernel(grad_h, h, u, h0, has_h0, lengths, reverse, act, batch_first, grad_hn, has_grad_hn,
                     gx, gu_part, gb_part, gh0):
    i = cuda.grid(1)
    B, H = lengths.shape[0], u.shape[0]
    if i >= B * H:
        return
    n, j = i // H, i % H
    T = h.shape[1] if batch_first else h.shape[0]
    zero = u.dtype.type(0)
    one = u.dtype.type(1)
    uj = u[j]
    carry = grad_hn[n, j] if has_grad_hn else zero  # dL/dh at the visited step, from later steps
    acc_u = zero
    acc_b = zero
    length = lengths[n]
    h_cur = zero
    for s in range(T - 1, -1, -1):
        if s >= length:
            _store(gx, batch_first, s, n, j, zero)
            continue
        t = length - 1 - s if reverse else s
        if s == length - 1:
            h_cur = _load(h, batch_first, t, n, j)
        if s == 0:
            h_prev = h0[n, j] if has_h0 else zero
        else:
            h_prev = _load(h, batch_first, t + 1 if reverse else t - 1, n, j)
        g = (_load(grad_h, batch_first, t, n, j) + carry) * derivative_from_output(h_cur, act, one)
        _store(gx, batch_first, t, n, j, g)
        acc_u += g * h_prev
        acc_b += g
        carry = g * uj
        h_cur = h_prev  # the next visit's output is this visit's previous state: load it once
    gh0[n, j] = carry
    gu_part[n, j] = acc_u
    gb_part[n, j] = acc_b


@cuda.jit
def _sum_rows_kernel(part, out):
    """out[j] = sum over n of part[n, j], in a fixed order."""
    j = cuda.grid(1)
    if j >= out.shape[0]:
        return
    acc = part.dtype.type(0)
    for n in range(part.shape[0]):
        acc += part[n, j]
    out[j] = acc


@cuda.jit
def _final_state_kernel(h, h0, has_h0, lengths, reverse, batch_first, out):
    i = cuda.grid(1)
    B, H = out.shape
    if i >= B * H:
        return
    n, j = i // H, i % H
    length = lengths[n]
    if length == 0:
        out[n, j] = h0[n, j] if has_h0 else h.dtype.type(0)
    else:
        out[n, j] = _load(h, batch_first, 0 if reverse else length - 1, n, j)


# ---- host side ------------------------------------------------------------------------------------------------

def require_gpu(name):
    """Raise a clear ValueError (naming the argument) when CUDA arrays arrive but no usable GPU/driver exists."""
    if not cuda.is_available():
        raise ValueError(f"{name} is a CUDA array but no usable CUDA GPU/driver was found; pass NumPy arrays to "
                         "run on the CPU, or install a CUDA driver and `pip install indrnn-core[cuda]`")


def as_device_array(a):
    """A Numba device array viewing ``a`` (no copy), or None. No synchronisation: the kernels run on the stream the
    caller names (``stream=``, e.g. torch's current stream), which orders them after the producer's work."""
    if a is None or not hasattr(a, "__cuda_array_interface__"):
        return a  # None, or already a simulator device array
    return cuda.as_cuda_array(a, sync=False)


def _stream(stream):
    """A Numba stream from None (default stream), an int handle (e.g. torch's ``cuda_stream``), or a stream."""
    if stream is None or (isinstance(stream, int) and stream == 0):
        return cuda.default_stream()
    if isinstance(stream, int):
        return cuda.external_stream(stream)
    if hasattr(stream, "cuda_stream"):  # a torch.cuda.Stream or a CuPy stream
        return cuda.external_stream(stream.cuda_stream)
    return stream


def device_empty(shape, dtype, stream=None):
    return cuda.device_array(shape, dtype=dtype, stream=_stream(stream))


def copy_to_host(a):
    return as_device_array(a).copy_to_host()


def _grid(n_threads):
    tpb = int(config.THREADS_PER_BLOCK)
    return max(1, (n_threads + tpb - 1) // tpb), tpb


def _placeholder(a, dtype, ndim, stream):
    """(array, present) for an optional input: a 1-element device array stands in for None."""
    if a is not None:
        return a, True
    return cuda.to_device(np.zeros((1,) * ndim, dtype=dtype), stream=stream), False


def forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out, stream=None):
    """Fill device array ``out`` (``x``'s shape) with the recurrence; see ``indrnn_core.cpu.forward_into``."""
    stream = _stream(stream)
    B, H = lengths.shape[0], u.shape[0]
    if B * H == 0:
        return
    b, has_b = _placeholder(b, u.dtype, 1, stream)
    h0, has_h0 = _placeholder(h0, u.dtype, 2, stream)
    d_lengths = cuda.to_device(lengths, stream=stream)
    blocks, tpb = _grid(B * H)
    _forward_kernel[blocks, tpb, stream](x, u, b, has_b, h0, has_h0, d_lengths, reverse, act, batch_first, out)


def backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0, stream=None):
    """Fill device arrays ``gx``, ``gu``, ``gb``, ``gh0``; see ``indrnn_core.cpu.backward_into``."""
    stream = _stream(stream)
    B, H = lengths.shape[0], u.shape[0]
    if H == 0:
        return
    h0, has_h0 = _placeholder(h0, u.dtype, 2, stream)
    grad_hn, has_grad_hn = _placeholder(grad_hn, u.dtype, 2, stream)
    d_lengths = cuda.to_device(lengths, stream=stream)
    # Partials accumulate in the data type (float32 at least): one per column, summed afterwards in fixed order.
    gu_part = cuda.device_array((B, H), dtype=u.dtype, stream=stream)
    gb_part = cuda.device_array((B, H), dtype=u.dtype, stream=stream)
    if B > 0:
        blocks, tpb = _grid(B * H)
        _backward_kernel[blocks, tpb, stream](grad_h, h, u, h0, has_h0, d_lengths, reverse, act, batch_first,
                                              grad_hn, has_grad_hn, gx, gu_part, gb_part, gh0)
    blocks, tpb = _grid(H)
    _sum_rows_kernel[blocks, tpb, stream](gu_part, gu)
    _sum_rows_kernel[blocks, tpb, stream](gb_part, gb)


def final_state_into(h, h0, lengths, reverse, batch_first, out, stream=None):
    stream = _stream(stream)
    B, H = out.shape
    if B * H == 0:
        return
    h0, has_h0 = _placeholder(h0, h.dtype, 2, stream)
    d_lengths = cuda.to_device(lengths, stream=stream)
    blocks, tpb = _grid(B * H)
    _final_state_kernel[blocks, tpb, stream](h, h0, has_h0, d_lengths, reverse, batch_first, out)
