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
from . import _launch, config

# Visits loaded ahead of the dependent chain in each thread (registers per thread grow with it). Measured on an
# H100 (python -m benchmarks.chunk_sweep, 2026-11-23), fwd+bwd at T=784/3000/10000 with B=64, H=128: 8 -> 16 cut
# 13-24% (0.265 -> 0.231, 0.889 -> 0.711, 2.888 -> 2.279 ms), within 3% at B=256/H=1024; at 32 and 64 the
# forward kernel ran 3x slower.
CHUNK = 16


@cuda.jit(device=True, inline=True)
def _load(a, batch_first, t, n, j):
    return a[n, t, j] if batch_first else a[t, n, j]


@cuda.jit(device=True, inline=True)
def _store(a, batch_first, t, n, j, value):
    if batch_first:
        a[n, t, j] = value
    else:
        a[t, n, j] = value


@cuda.jit(device=True, inline=True)
def _visit_time(s, length, reverse):
    """The time step of visit ``s`` of a sequence of ``length`` valid steps."""
    return length - 1 - s if reverse else s


@cuda.jit
def _forward_kernel(x, u, bias, has_bias, h0, has_h0, lengths, has_lengths, reverse, act, batch_first, out,
                    final, has_final):
    i = cuda.grid(1)
    B, H = x.shape[0] if batch_first else x.shape[1], u.shape[0]
    if i >= B * H:
        return
    n, j = i // H, i % H
    T = x.shape[1] if batch_first else x.shape[0]
    zero = u.dtype.type(0)
    one = u.dtype.type(1)
    uj = u[j]
    bj = bias[j] if has_bias else zero
    prev = h0[n, j] if has_h0 else zero
    length = lengths[n] if has_lengths else T
    # The recurrence is a chain of dependent steps, so one load in flight per thread leaves the GPU waiting on
    # memory latency. Load CHUNK steps of x first (they do not depend on h), then run the chain over them.
    xs = cuda.local.array(CHUNK, u.dtype)
    full = length - length % CHUNK
    for s0 in range(0, full, CHUNK):
        for k in range(CHUNK):
            xs[k] = _load(x, batch_first, _visit_time(s0 + k, length, reverse), n, j)
        for k in range(CHUNK):
            prev = activate(xs[k] + uj * prev + bj, act, one)
            _store(out, batch_first, _visit_time(s0 + k, length, reverse), n, j, prev)
    for s in range(full, length):
        t = _visit_time(s, length, reverse)
        prev = activate(_load(x, batch_first, t, n, j) + uj * prev + bj, act, one)
        _store(out, batch_first, t, n, j, prev)
    for s in range(length, T):  # padding
        _store(out, batch_first, s, n, j, zero)
    if has_final:  # the last visited step's output, or h0 (zeros) when the sequence has no steps
        final[n, j] = prev


@cuda.jit
def _backward_kernel(grad_h, h, u, h0, has_h0, lengths, has_lengths, reverse, act, batch_first, grad_hn,
                     has_grad_hn, gx, part, gh0):
    i = cuda.grid(1)
    B, H = gh0.shape[0], u.shape[0]
    if i >= B * H:
        return
    n, j = i // H, i % H
    T = h.shape[1] if batch_first else h.shape[0]
    zero = u.dtype.type(0)
    one = u.dtype.type(1)
    uj = u[j]
    h0nj = h0[n, j] if has_h0 else zero
    carry = grad_hn[n, j] if has_grad_hn else zero  # dL/dh at the visited step, from later steps
    acc_u = zero
    acc_b = zero
    length = lengths[n] if has_lengths else T
    for s in range(length, T):  # padding
        _store(gx, batch_first, s, n, j, zero)
    # Visits run s = length-1 down to 0. Each needs grad_h at its step and h at the step visited before it in the
    # forward pass (h0 at s = 0); as in the forward kernel, a CHUNK of them is loaded before the dependent chain.
    gs = cuda.local.array(CHUNK, u.dtype)
    hps = cuda.local.array(CHUNK, u.dtype)
    h_cur = _load(h, batch_first, _visit_time(length - 1, length, reverse), n, j) if length > 0 else zero
    s_hi = length - 1
    while s_hi >= CHUNK - 1:
        for k in range(CHUNK):
            s = s_hi - k
            gs[k] = _load(grad_h, batch_first, _visit_time(s, length, reverse), n, j)
            hps[k] = _load(h, batch_first, _visit_time(s - 1, length, reverse), n, j) if s > 0 else h0nj
        for k in range(CHUNK):
            g = (gs[k] + carry) * derivative_from_output(h_cur, act, one)
            _store(gx, batch_first, _visit_time(s_hi - k, length, reverse), n, j, g)
            acc_u += g * hps[k]
            acc_b += g
            carry = g * uj
            h_cur = hps[k]  # the next visit's output is this visit's previous state
        s_hi -= CHUNK
    for s in range(s_hi, -1, -1):
        t = _visit_time(s, length, reverse)
        h_prev = _load(h, batch_first, _visit_time(s - 1, length, reverse), n, j) if s > 0 else h0nj
        g = (_load(grad_h, batch_first, t, n, j) + carry) * derivative_from_output(h_cur, act, one)
        _store(gx, batch_first, t, n, j, g)
        acc_u += g * h_prev
        acc_b += g
        carry = g * uj
        h_cur = h_prev
    gh0[n, j] = carry
    part[0, n, j] = acc_u
    part[1, n, j] = acc_b


@cuda.jit
def _sum_rows_kernel(part, gu, gb):
    """gu[j], gb[j] = sums over n of part[0, n, j], part[1, n, j], in a fixed order (n ascending)."""
    j = cuda.grid(1)
    if j >= gu.shape[0]:
        return
    acc_u = part.dtype.type(0)
    acc_b = part.dtype.type(0)
    B = part.shape[1]
    # One load in flight per thread would leave this kernel waiting on memory latency B times (~0.1 ms at B=64 on
    # an H100, more than the backward kernel at short T): load CHUNK rows first, then add them in order.
    us = cuda.local.array(CHUNK, part.dtype)
    bs = cuda.local.array(CHUNK, part.dtype)
    full = B - B % CHUNK
    for n0 in range(0, full, CHUNK):
        for k in range(CHUNK):
            us[k] = part[0, n0 + k, j]
            bs[k] = part[1, n0 + k, j]
        for k in range(CHUNK):
            acc_u += us[k]
            acc_b += bs[k]
    for n in range(full, B):
        acc_u += part[0, n, j]
        acc_b += part[1, n, j]
    gu[j] = acc_u
    gb[j] = acc_b


@cuda.jit
def _final_state_kernel(h, h0, has_h0, lengths, has_lengths, reverse, batch_first, out):
    i = cuda.grid(1)
    B, H = out.shape
    if i >= B * H:
        return
    n, j = i // H, i % H
    length = lengths[n] if has_lengths else (h.shape[1] if batch_first else h.shape[0])
    if length == 0:
        out[n, j] = h0[n, j] if has_h0 else h.dtype.type(0)
    else:
        out[n, j] = _load(h, batch_first, 0 if reverse else length - 1, n, j)


# ---- host side ------------------------------------------------------------------------------------------------

_GPU_FOUND = []  # [True] once a usable GPU was found: asking the driver again costs microseconds per call


def require_gpu(name):
    """Raise a clear ValueError (naming the argument) when CUDA arrays arrive but no usable GPU/driver exists."""
    if _GPU_FOUND:
        return
    if cuda.is_available():
        _GPU_FOUND.append(True)
    else:
        raise ValueError(f"{name} is a CUDA array but no usable CUDA GPU/driver was found; pass NumPy arrays to "
                         "run on the CPU, or install a CUDA driver and `pip install indrnn-core[cuda]`")


def as_device_array(a, name="array"):
    """``a`` as the launchers take it, read once, never copied or synchronised: a :class:`DeviceView` on a real
    GPU (the simulator's own array under the simulator), or None. The kernels run on the stream the caller names
    (``stream=``, e.g. torch's current stream), which orders them after the producer's work."""
    return _launch.view(a, name)


def device_empty(shape, dtype, stream=None):
    return cuda.device_array(shape, dtype=dtype, stream=_launch.stream_pair(stream)[0])


def copy_to_host(a):
    return _launch.numba_array(_launch.view(a)).copy_to_host()


def _grid(n_threads):
    tpb = int(config.THREADS_PER_BLOCK)
    return max(1, (n_threads + tpb - 1) // tpb), tpb


_ZEROS = {}  # (CUDA context, dtype, ndim) -> a read-only 1-element zero array standing in for an absent input


def _placeholder(a, dtype, ndim, ctx):
    """(array, present) for an optional input. The stand-in for None is allocated once per CUDA context ``ctx``
    and dtype: an allocation and a host-to-device copy per call cost more than a short sequence's kernels."""
    if a is not None:
        return a, True
    key = (ctx, np.dtype(dtype).str, ndim)
    if key not in _ZEROS:
        _ZEROS[key] = _launch.view(cuda.to_device(np.zeros((1,) * ndim, dtype=dtype)))
    return _ZEROS[key], False


def _device_lengths(lengths, T, stream, ctx):
    """(device lengths, present): no copy when every sequence runs all ``T`` steps (the common case)."""
    if lengths.size == 0 or lengths.min() == T:
        return _placeholder(None, np.int64, 1, ctx)
    return _launch.view(cuda.to_device(lengths, stream=stream[0])), True


def forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out, final=None, stream=None):
    """Fill device array ``out`` (``x``'s shape) with the recurrence, and ``final`` [B, H] (when given) with each
    sequence's final state; see ``indrnn_core.cpu.forward_into``. Arrays come from :func:`as_device_array`."""
    stream, ctx = _launch.stream_pair(stream), _launch.context_handle()
    T = x.shape[1] if batch_first else x.shape[0]
    B, H = lengths.shape[0], u.shape[0]
    if B * H == 0:
        return
    b, has_b = _placeholder(b, u.dtype, 1, ctx)
    h0, has_h0 = _placeholder(h0, u.dtype, 2, ctx)
    d_lengths, has_lengths = _device_lengths(lengths, T, stream, ctx)
    blocks, tpb = _grid(B * H)
    final, has_final = _placeholder(final, u.dtype, 2, ctx)
    _launch.launch(_forward_kernel, blocks, tpb, stream,
                   (x, u, b, has_b, h0, has_h0, d_lengths, has_lengths, reverse, act, batch_first, out, final,
                    has_final), u.dtype, ctx)


def backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0, stream=None,
                  workspace=None):
    """Fill device arrays ``gx``, ``gu``, ``gb``, ``gh0``; see ``indrnn_core.cpu.backward_into``. ``workspace``:
    a [2, B, H] device array for the partial sums, or None to allocate one."""
    stream, ctx = _launch.stream_pair(stream), _launch.context_handle()
    T = h.shape[1] if batch_first else h.shape[0]
    B, H = lengths.shape[0], u.shape[0]
    if H == 0:
        return
    h0, has_h0 = _placeholder(h0, u.dtype, 2, ctx)
    grad_hn, has_grad_hn = _placeholder(grad_hn, u.dtype, 2, ctx)
    d_lengths, has_lengths = _device_lengths(lengths, T, stream, ctx)
    # Partials accumulate in the data type (float32 at least): one per column, summed afterwards in fixed order.
    if workspace is None:
        workspace = _launch.view(cuda.device_array((2, B, H), dtype=u.dtype, stream=stream[0]))
    if B > 0:
        blocks, tpb = _grid(B * H)
        _launch.launch(_backward_kernel, blocks, tpb, stream,
                       (grad_h, h, u, h0, has_h0, d_lengths, has_lengths, reverse, act, batch_first, grad_hn,
                        has_grad_hn, gx, workspace, gh0), u.dtype, ctx)
    blocks, tpb = _grid(H)
    _launch.launch(_sum_rows_kernel, blocks, tpb, stream, (workspace, gu, gb), u.dtype, ctx)


def final_state_into(h, h0, lengths, reverse, batch_first, out, stream=None):
    stream, ctx = _launch.stream_pair(stream), _launch.context_handle()
    T = h.shape[1] if batch_first else h.shape[0]
    B, H = out.shape
    if B * H == 0:
        return
    h0, has_h0 = _placeholder(h0, h.dtype, 2, ctx)
    d_lengths, has_lengths = _device_lengths(lengths, T, stream, ctx)
    blocks, tpb = _grid(B * H)
    _launch.launch(_final_state_kernel, blocks, tpb, stream,
                   (h, h0, has_h0, d_lengths, has_lengths, reverse, batch_first, out), h.dtype, ctx)
