"""``numba.njit`` kernels for the element-wise recurrence, then their host launchers.

Every kernel visits sequence ``n`` at *visit index* ``s``: forward visits ``s = 0, 1, ..., lengths[n]-1`` at time
``t = s`` (or ``t = lengths[n]-1-s`` when ``reverse``); backward visits the same steps in the opposite order. At
``s >= lengths[n]`` the kernel writes the padding position ``t = s`` with zeros, so every output element is written.

Loop order follows the memory layout so the innermost loop (hidden units, ``j``) is unit-stride and vectorises,
and the loop just outside it walks contiguous memory:
- time-major ``[T, B, H]``: time outside, batch inside (each step reads one contiguous ``[B, H]`` slab);
- batch-first ``[B, T, H]``: batch outside, time inside (each sequence is one contiguous ``[T, H]`` slab).
The batch is split into one chunk per thread (``prange``); chunks never share a sequence, so results do not
depend on the thread count. Arrays arrive in their own layout (not as transposed views) so Numba sees C-contiguous
arrays on the fast path; any other strides compile a general (slower, still correct) specialisation.

Activation codes are loop-invariant integers: LLVM unswitches the branch out of the inner loop.
Numba does no bounds checks: these launchers are only reached through ``indrnn_core._dispatch``, which validates
shapes, dtypes and lengths first.
"""

import numba
import numpy as np
from numba import njit, prange

from .._activations import activate, derivative_from_output


@njit(inline="always")
def _row(a, batch_first, t, n):
    """The ``[H]`` row of sequence ``n`` at time ``t``, in either layout."""
    return a[n, t] if batch_first else a[t, n]


@njit(inline="always")
def _forward_step(x, u, bias, h0, lengths, reverse, act, batch_first, out, s, n, one):
    length = lengths[n]
    if s >= length:
        _row(out, batch_first, s, n)[:] = 0
        return
    t = length - 1 - s if reverse else s
    prev = h0[n] if s == 0 else _row(out, batch_first, t + 1 if reverse else t - 1, n)
    xt = _row(x, batch_first, t, n)
    ht = _row(out, batch_first, t, n)
    for j in range(u.shape[0]):
        ht[j] = activate(xt[j] + u[j] * prev[j] + bias[j], act, one)


@njit(inline="always")
def _forward_chunk(x, u, bias, h0, lengths, reverse, act, batch_first, out, lo, hi):
    """Sequences lo..hi-1, in the loop order that walks memory contiguously (see the module docstring)."""
    T = x.shape[1] if batch_first else x.shape[0]
    one = u.dtype.type(1)
    if batch_first:
        for n in range(lo, hi):
            for s in range(T):
                _forward_step(x, u, bias, h0, lengths, reverse, act, batch_first, out, s, n, one)
    else:
        for s in range(T):
            for n in range(lo, hi):
                _forward_step(x, u, bias, h0, lengths, reverse, act, batch_first, out, s, n, one)


@njit(cache=True, parallel=True)
def _forward_parallel(x, u, bias, h0, lengths, reverse, act, batch_first, out, chunks):
    B = lengths.shape[0]
    for c in prange(chunks):
        _forward_chunk(x, u, bias, h0, lengths, reverse, act, batch_first, out, c * B // chunks,
                       (c + 1) * B // chunks)


@njit(cache=True)
def _forward_serial(x, u, bias, h0, lengths, reverse, act, batch_first, out):
    _forward_chunk(x, u, bias, h0, lengths, reverse, act, batch_first, out, 0, lengths.shape[0])


@njit(inline="always")
def _backward_step(grad_h, h, u, h0, lengths, reverse, act, batch_first, gx, gu_part, gb_part, carry, s, n, one):
    """Visit index ``s`` runs from T-1 down to 0; ``carry[n]`` holds dL/dh at the step being visited coming from
    later steps (it starts as grad_hn[n] and ends as dL/dh0[n])."""
    length = lengths[n]
    if s >= length:
        _row(gx, batch_first, s, n)[:] = 0
        return
    t = length - 1 - s if reverse else s
    prev = h0[n] if s == 0 else _row(h, batch_first, t + 1 if reverse else t - 1, n)
    ht = _row(h, batch_first, t, n)
    dht = _row(grad_h, batch_first, t, n)
    gxt = _row(gx, batch_first, t, n)
    c = carry[n]
    gu_n = gu_part[n]
    gb_n = gb_part[n]
    for j in range(u.shape[0]):
        g = (dht[j] + c[j]) * derivative_from_output(ht[j], act, one)
        gxt[j] = g
        gu_n[j] += g * prev[j]
        gb_n[j] += g
        c[j] = g * u[j]


@njit(inline="always")
def _backward_chunk(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                    lo, hi):
    """Sequences lo..hi-1. ``gu_part``/``gb_part`` [B, H] (float64) receive per-sequence partial sums; ``carry``
    [B, H] starts as a copy of grad_hn and ends as dL/dh0."""
    T = h.shape[1] if batch_first else h.shape[0]
    one = u.dtype.type(1)
    for n in range(lo, hi):
        carry[n, :] = grad_hn[n]
        gu_part[n, :] = 0
        gb_part[n, :] = 0
    if batch_first:
        for n in range(lo, hi):
            for s in range(T - 1, -1, -1):
                _backward_step(grad_h, h, u, h0, lengths, reverse, act, batch_first, gx, gu_part, gb_part,
                               carry, s, n, one)
    else:
        for s in range(T - 1, -1, -1):
            for n in range(lo, hi):
                _backward_step(grad_h, h, u, h0, lengths, reverse, act, batch_first, gx, gu_part, gb_part,
                               carry, s, n, one)


@njit(cache=True, parallel=True)
def _backward_parallel(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                       chunks):
    B = lengths.shape[0]
    for c in prange(chunks):
        _backward_chunk(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                        c * B // chunks, (c + 1) * B // chunks)


@njit(cache=True)
def _backward_serial(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry):
    _backward_chunk(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                    0, lengths.shape[0])


@njit(cache=True)
def _sum_rows(part, out):
    """Column sums of ``part`` [B, H] in a fixed order (row 0, 1, ...): deterministic, unlike atomics."""
    B, H = part.shape
    for j in range(H):
        acc = 0.0
        for n in range(B):
            acc += part[n, j]
        out[j] = acc


# Below this many elements (T*B*H) the kernels run on the calling thread: waking Numba's thread pool costs tens of
# microseconds when idle and milliseconds on a loaded machine, more than the work itself (T=1 cell loops).
PARALLEL_MIN_ELEMENTS = 1 << 16


def _chunks(x, batch):
    """How many threads to split the batch over; 1 means run serially."""
    if x.size < PARALLEL_MIN_ELEMENTS:
        return 1
    return max(1, min(batch, numba.get_num_threads()))


def forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out):
    """Fill ``out`` (``x``'s shape: [T, B, H], or [B, T, H] when ``batch_first``) with the recurrence over ``x``.
    ``u`` [H]; ``b`` [H] and ``h0`` [B, H] may be None (zeros); ``lengths`` int64 [B]; ``act`` an ACT_* code.
    Inputs must already be validated."""
    B, H = lengths.shape[0], u.shape[0]
    if b is None:
        b = np.zeros(H, dtype=u.dtype)
    if h0 is None:
        h0 = np.zeros((B, H), dtype=u.dtype)
    chunks = _chunks(x, B)
    if chunks == 1:
        _forward_serial(x, u, b, h0, lengths, reverse, act, batch_first, out)
    else:
        _forward_parallel(x, u, b, h0, lengths, reverse, act, batch_first, out, chunks)


def backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0):
    """Fill ``gx`` (``h``'s shape), ``gu`` [H], ``gb`` [H] and ``gh0`` [B, H]. Inputs must already be validated."""
    B, H = lengths.shape[0], u.shape[0]
    if h0 is None:
        h0 = np.zeros((B, H), dtype=u.dtype)
    if grad_hn is None:
        grad_hn = np.zeros((B, H), dtype=u.dtype)
    # Partial sums accumulate in float64 whatever the data type: over 10^4 steps float32 sums drift.
    gu_part = np.empty((B, H), dtype=np.float64)
    gb_part = np.empty((B, H), dtype=np.float64)
    chunks = _chunks(h, B)
    if chunks == 1:
        _backward_serial(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, gh0)
    else:
        _backward_parallel(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, gh0,
                           chunks)
    _sum_rows(gu_part, gu)
    _sum_rows(gb_part, gb)
