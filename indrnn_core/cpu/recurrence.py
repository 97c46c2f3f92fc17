"""``numba.njit`` kernels for the element-wise recurrence, then their host launchers.

Every kernel visits sequence ``n`` at *visit index* ``s``: forward visits ``s = 0, 1, ..., lengths[n]-1`` at time
``t = s`` (or ``t = lengths[n]-1-s`` when ``reverse``); backward visits the same steps in the opposite order. At
``s >= lengths[n]`` the kernel writes the padding position ``t = s`` with zeros, so every output element is written.

Loop order follows the memory layout so the innermost loop (hidden units, ``j``) is unit-stride and vectorises,
and the loop just outside it walks contiguous memory:
- time-major ``[T, B, H]``: time outside, batch inside (each step reads one contiguous ``[B, H]`` slab);
- batch-first ``[B, T, H]``: batch outside, time inside (each sequence is one contiguous ``[T, H]`` slab).
The batch is split into one chunk per thread (``prange``); chunks never share a sequence, so results do not
depend on the thread count. Arrays arrive in their own layout (not as transposed views), and the launchers hand
the kernels C-contiguous arrays only (``_types``: a copy for other strides), so one specialisation per dtype runs.

The activation is chosen once per row (``_forward_row_from``/``_backward_row_from``), passing the activation function
itself to the row loop: each loop then compiles with one activation inlined and vectorises. (A per-element branch on
the activation code, as the CUDA kernels use, runs 2x slower here.)
Numba does no bounds checks: these launchers are only reached through ``indrnn_core._dispatch``, which validates
shapes, dtypes and lengths first.
"""

import numba
import numpy as np
from numba import njit, prange

from .. import _activations as A
from . import narrow
from ._llvm import prefetch_read, prefetch_write
from ._types import kernel_inputs, launch_backward, launch_forward


@njit(inline="always")
def _at_time_major(t, n, j):
    """Index of unit j of sequence n at time t in a [T, B, H] array."""
    return (t, n, j)


@njit(inline="always")
def _at_batch_first(t, n, j):
    """Index of unit j of sequence n at time t in a [B, T, H] array."""
    return (n, t, j)


@njit(inline="always")
def _at_state(t, n, j):
    """Index of unit j of sequence n in a [B, H] state (h0): no time axis."""
    return (n, j)


@njit(inline="always")
def _next_visit(n, s, lo, hi, T, batch_first):
    """The (sequence n, visit index s) pair after (n, s) among sequences lo..hi-1, in memory order: batch-first
    walks each sequence's steps, time-major each step's sequences. One flat loop keeps a single copy of each body;
    counters, not a division per step, say where it is."""
    if batch_first:
        s += 1
        if s == T:
            s = 0
            n += 1
    else:
        n += 1
        if n == hi:
            n = lo
            s += 1
    return n, s


# The row loops below index the full arrays element by element (``a[at(t, n, j)]``) instead of slicing a row view
# per step: every view Numba creates inside a loop costs an atomic increment and decrement of its array's reference
# count, and with two threads on the same arrays those atomics contended for one cache line. Measured (perf) on a
# single sequence, T=10^6, H=1: 85% of the sequential backward's time was those atomics (126 ns per step).
# ``at`` is the layout's index function, passed as a function so each layout compiles its own loop. The unit loops
# count from 0 (``j = j0 + jj``, ``j0`` known non-negative from ``max(j0, 0)``): a loop over ``range(j0, j1)`` left
# Numba's negative-index wraparound in the loop and ran scalar (4.7 against 1.2 ms for a forward at T=784, B=64,
# H=128 float32).

@njit(inline="always")
def _forward_row_with(f, at, x, out, t, n, prev, at_prev, t_prev, u, bias, j0, j1, one):
    for jj in range(j1 - j0):
        j = j0 + jj
        out[at(t, n, j)] = f(x[at(t, n, j)] + u[j] * prev[at_prev(t_prev, n, j)] + bias[j], one)


@njit(inline="always")
def _forward_row_from(act, at, x, out, t, n, prev, at_prev, t_prev, u, bias, j0, j1, one):
    """h[t, n, j0:j1] = act(x + u * prev + bias), ``prev`` read at ``at_prev(t_prev, n, j)``."""
    if act == A.ACT_RELU:
        _forward_row_with(A.relu, at, x, out, t, n, prev, at_prev, t_prev, u, bias, j0, j1, one)
    elif act == A.ACT_TANH:
        _forward_row_with(A.tanh, at, x, out, t, n, prev, at_prev, t_prev, u, bias, j0, j1, one)
    elif act == A.ACT_SIGMOID:
        _forward_row_with(A.sigmoid, at, x, out, t, n, prev, at_prev, t_prev, u, bias, j0, j1, one)
    else:
        _forward_row_with(A.identity, at, x, out, t, n, prev, at_prev, t_prev, u, bias, j0, j1, one)


@njit(inline="always")
def _forward_rows(at, x, u, bias, h0, lengths, reverse, act, batch_first, out, final, write_final, lo, hi, j0, j1):
    """Sequences lo..hi-1, hidden units j0..j1-1. With ``write_final``, ``final[n]`` [B, H] receives sequence n's
    final state: its last visited row, or h0[n] when it has no steps."""
    T = x.shape[1] if batch_first else x.shape[0]
    one = u.dtype.type(1)
    j0 = max(j0, 0)
    n, s = lo, 0
    for _ in range(T * (hi - lo)):
        length = lengths[n]
        if s >= length:
            for jj in range(j1 - j0):
                j = j0 + jj
                out[at(s, n, j)] = 0
            if write_final and s == 0:
                for jj in range(j1 - j0):
                    j = j0 + jj
                    final[n, j] = h0[n, j]
        else:
            t = length - 1 - s if reverse else s
            if s == 0:
                _forward_row_from(act, at, x, out, t, n, h0, _at_state, t, u, bias, j0, j1, one)
            else:
                _forward_row_from(act, at, x, out, t, n, out, at, t + 1 if reverse else t - 1, u, bias, j0, j1, one)
            if write_final and s == length - 1:
                for jj in range(j1 - j0):
                    j = j0 + jj
                    final[n, j] = out[at(t, n, j)]
        n, s = _next_visit(n, s, lo, hi, T, batch_first)


# A work item is a chunk of the batch and, when there are fewer sequences than threads (``chunks`` > B), a block
# of hidden units: columns are independent, so every element sees the same arithmetic (and gu, gb the same sums)
# however the work is split. Blocks start on a multiple of COLUMN_ALIGN elements (64 bytes in float32: a cache
# line), so no two threads write the same line of a contiguous row.
COLUMN_ALIGN = 16


@njit(inline="always")
def _item_count(chunks, B):
    batch_chunks = min(B, chunks)
    return batch_chunks * max(1, chunks // max(batch_chunks, 1))


@njit(inline="always")
def _column_edge(c, col_chunks, H):
    if c == 0:
        return 0
    if c == col_chunks:
        return H
    return min(H, (c * H // col_chunks + COLUMN_ALIGN - 1) // COLUMN_ALIGN * COLUMN_ALIGN)


@njit(inline="always")
def _work_item(c, chunks, B, H):
    """Work item c of ``_item_count(chunks, B)``: (sequences lo..hi-1, units j0..j1-1)."""
    batch_chunks = min(B, chunks)
    col_chunks = max(1, chunks // max(batch_chunks, 1))
    bc, cc = c // col_chunks, c % col_chunks
    lo, hi = bc * B // batch_chunks, (bc + 1) * B // batch_chunks
    return lo, hi, _column_edge(cc, col_chunks, H), _column_edge(cc + 1, col_chunks, H)


# The serial and parallel kernels both run work items through one ordinary (not inlined) function, compiled once
# for both: inlined into each (both layouts, every activation's row loop) they took ~20 s (forward) and ~60 s
# (backward) to compile per dtype, most of the suite's compiling.
@njit
def _forward_item(x, u, bias, h0, lengths, reverse, act, batch_first, out, final, write_final, c, chunks):
    lo, hi, j0, j1 = _work_item(c, chunks, lengths.shape[0], u.shape[0])
    if batch_first:
        _forward_rows(_at_batch_first, x, u, bias, h0, lengths, reverse, act, True, out, final, write_final,
                      lo, hi, j0, j1)
    else:
        _forward_rows(_at_time_major, x, u, bias, h0, lengths, reverse, act, False, out, final, write_final,
                      lo, hi, j0, j1)


@njit(cache=True, parallel=True)
def _forward_parallel(x, u, bias, h0, lengths, reverse, act, batch_first, out, final, write_final, chunks):
    for c in prange(_item_count(chunks, lengths.shape[0])):
        _forward_item(x, u, bias, h0, lengths, reverse, act, batch_first, out, final, write_final, np.int64(c),
                      np.int64(chunks))


@njit(cache=True)
def _forward_serial(x, u, bias, h0, lengths, reverse, act, batch_first, out, final, write_final):
    _forward_item(x, u, bias, h0, lengths, reverse, act, batch_first, out, final, write_final, np.int64(0),
                  np.int64(1))


_FLUSH_STEPS = 64


@njit(inline="always")
def _backward_row_with(df, at, grad_h, tg, ng, h, gx, t, n, prev, at_prev, t_prev, u, carry, block, j0, j1, one,
                       tiny):
    # Two loops, not one: a single loop writing four rows (gx, gu, gb, carry) while reading four needs more runtime
    # overlap checks than LLVM's vectoriser makes, so it ran scalar; split, each loop vectorises. The second reads
    # g back from gx (same values, bit for bit). Measured at T=784, B=64, H=128 float32, 2 threads: 6.95 -> 3.2 ms.
    for jj in range(j1 - j0):
        j = j0 + jj
        gx[at(t, n, j)] = (grad_h[at(tg, ng, j)] + carry[n, j]) * df(h[at(t, n, j)], one)
    for jj in range(j1 - j0):
        j = j0 + jj
        g = gx[at(t, n, j)]
        block[0, n, j] += g * prev[at_prev(t_prev, n, j)]
        block[1, n, j] += g
        carry[n, j] = A.flush_subnormal(g * u[j], tiny)


@njit(inline="always")
def _backward_row_from(act, at, grad_h, tg, ng, h, gx, t, n, prev, at_prev, t_prev, u, carry, block, j0, j1, one,
                       tiny):
    """One row of BPTT, units j0..j1-1: gx = (grad_h + carry) * act'(h); partial sums of gu (x ``prev``, read at
    ``at_prev(t_prev, n, j)``) and gb into ``block``; carry = gx * u (subnormal carries flushed to 0: see
    ``_activations.flush_subnormal``). ``grad_h`` is read at (tg, ng): (t, n), or (0, 0) for a constant row."""
    if act == A.ACT_RELU:
        _backward_row_with(A.relu_derivative, at, grad_h, tg, ng, h, gx, t, n, prev, at_prev, t_prev, u, carry, block,
                           j0, j1, one, tiny)
    elif act == A.ACT_TANH:
        _backward_row_with(A.tanh_derivative, at, grad_h, tg, ng, h, gx, t, n, prev, at_prev, t_prev, u, carry, block,
                           j0, j1, one, tiny)
    elif act == A.ACT_SIGMOID:
        _backward_row_with(A.sigmoid_derivative, at, grad_h, tg, ng, h, gx, t, n, prev, at_prev, t_prev, u, carry,
                           block, j0, j1, one, tiny)
    else:
        _backward_row_with(A.identity_derivative, at, grad_h, tg, ng, h, gx, t, n, prev, at_prev, t_prev, u, carry,
                           block, j0, j1, one, tiny)


# The backward walks time downwards, and each visit's rows of grad_h, h and gx are fresh lines from memory. Where a
# work item holds one sequence's row (B = 1 split by columns, or batch-first, where a sequence is one [T, H] slab),
# the kernel asks for the rows PREFETCH_STEPS visits ahead itself (``_llvm.prefetch_*``, one hint per line): the
# hardware prefetchers, seeing runs that go up within a row while the rows go down, fetched too little ahead.
# Measured (2026-11-27, this project's 2-core Xeon, 2 threads, float32, median time against the kernel without
# hints, alternating in one process): T=10^5, B=1, H=256 0.83-0.96x in three runs at 08:55-09:05 UTC and
# 0.87-1.04x in three at 09:55-10:08; T=784, B=64, H=128 batch-first 0.71-0.89x in the first three, 0.94-1.08x in
# the later three: the gain moves with the machine's state. 32 and 64 steps ahead did no better than 16, 8 no worse.
# Time-major slabs of several sequences are long ascending runs: no hints there.
PREFETCH_STEPS = 16


@njit(inline="always")
def _prefetch_rows(at, grad_h, constant_grad, h, gx, t, n, j0, j1):
    """Ask the caches for row (t, n), units j0..j1-1, of grad_h and h (to read) and gx (to write): one hint per
    64-byte line."""
    line = 64 // h.itemsize
    for jj in range(0, j1 - j0, line):
        j = j0 + jj
        if not constant_grad:
            prefetch_read(grad_h, at(t, n, j))
        prefetch_read(h, at(t, n, j))
        prefetch_write(gx, at(t, n, j))


@njit(inline="always")
def _backward_rows(at, grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                   block_part, lo, hi, j0, j1):
    """Sequences lo..hi-1, hidden units j0..j1-1. Visits run backwards (visit index s from T-1 down to 0).
    ``carry[n]`` holds dL/dh at the visited step coming from later steps: it starts as grad_hn[n] and ends as
    dL/dh0[n]. ``gu_part``/``gb_part`` [B, H] (float64) receive per-sequence sums. The inner loop accumulates in
    the data type into ``block_part`` [2, B, H] and flushes to float64 every ``_FLUSH_STEPS`` steps: float32
    speed, float64 accuracy over 10^4 steps. ``grad_h`` is ``h``'s shape, or a [1, 1, H] row read at every step."""
    T = h.shape[1] if batch_first else h.shape[0]
    one = u.dtype.type(1)
    tiny = u.dtype.type(np.finfo(u.dtype).tiny)
    constant_grad = grad_h.shape[0] * grad_h.shape[1] == 1  # a [1, 1, H] row: the same dL/dh at every step
    j0 = max(j0, 0)
    prefetch = batch_first or hi - lo == 1  # (time-major slabs of several sequences: the prefetchers keep up)
    for n in range(lo, hi):
        for jj in range(j1 - j0):
            j = j0 + jj
            carry[n, j] = grad_hn[n, j]
            gu_part[n, j] = 0
            gb_part[n, j] = 0
            block_part[0, n, j] = 0
            block_part[1, n, j] = 0
    n, s_forward = lo, 0
    for _ in range(T * (hi - lo)):
        s = T - 1 - s_forward
        length = lengths[n]
        if s >= length:
            for jj in range(j1 - j0):
                j = j0 + jj
                gx[at(s, n, j)] = 0
        else:
            t = length - 1 - s if reverse else s
            tg, ng = (0, 0) if constant_grad else (t, n)
            if prefetch:
                t_ahead = t + PREFETCH_STEPS if reverse else t - PREFETCH_STEPS  # visited that many visits later
                if 0 <= t_ahead < length:
                    _prefetch_rows(at, grad_h, constant_grad, h, gx, t_ahead, n, j0, j1)
            if s == 0:
                _backward_row_from(act, at, grad_h, tg, ng, h, gx, t, n, h0, _at_state, t, u, carry, block_part,
                                   j0, j1, one, tiny)
            else:
                _backward_row_from(act, at, grad_h, tg, ng, h, gx, t, n, h, at, t + 1 if reverse else t - 1, u,
                                   carry, block_part, j0, j1, one, tiny)
            if s % _FLUSH_STEPS == 0:  # s == 0 is every sequence's last visit, so everything is flushed
                for jj in range(j1 - j0):
                    j = j0 + jj
                    gu_part[n, j] += block_part[0, n, j]
                    gb_part[n, j] += block_part[1, n, j]
                    block_part[0, n, j] = 0
                    block_part[1, n, j] = 0
        n, s_forward = _next_visit(n, s_forward, lo, hi, T, batch_first)


@njit  # (see _forward_item)
def _backward_item(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                   block_part, c, chunks):
    lo, hi, j0, j1 = _work_item(c, chunks, lengths.shape[0], u.shape[0])
    if batch_first:
        _backward_rows(_at_batch_first, grad_h, h, u, h0, lengths, reverse, act, True, grad_hn, gx, gu_part,
                       gb_part, carry, block_part, lo, hi, j0, j1)
    else:
        _backward_rows(_at_time_major, grad_h, h, u, h0, lengths, reverse, act, False, grad_hn, gx, gu_part,
                       gb_part, carry, block_part, lo, hi, j0, j1)


@njit(cache=True, parallel=True)
def _backward_parallel(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                       block_part, chunks):
    for c in prange(_item_count(chunks, lengths.shape[0])):
        _backward_item(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                       block_part, np.int64(c), np.int64(chunks))


@njit(cache=True)
def _backward_serial(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                     block_part):
    _backward_item(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, carry,
                   block_part, np.int64(0), np.int64(1))


@njit(cache=True)
def _sum_rows(gu_part, gb_part, gu, gb):
    """gu, gb = column sums of the [B, H] partials, rows added in a fixed order (0, 1, ...): deterministic, unlike
    atomics. Row-wise loops keep the inner loop contiguous."""
    B, H = gu_part.shape
    acc_u = np.zeros(H, dtype=np.float64)
    acc_b = np.zeros(H, dtype=np.float64)
    for n in range(B):
        for j in range(H):
            acc_u[j] += gu_part[n, j]
            acc_b[j] += gb_part[n, j]
    for j in range(H):
        gu[j] = acc_u[j]
        gb[j] = acc_b[j]


# Below this many elements (T*B*H) the kernels run on the calling thread: waking Numba's thread pool costs tens of
# microseconds when idle and milliseconds on a loaded machine, more than the work itself (T=1 cell loops).
PARALLEL_MIN_ELEMENTS = 1 << 16


# With fewer sequences than threads, each sequence's units are split into blocks of at least this many, so a single
# long sequence with a wide row uses every core (measured: BENCHMARKS.md, issue 14's section).
COLUMN_MIN = 64


def _chunks(x, batch):
    """How many work items to split the work over (``_work_item``); 1 means run serially."""
    if x.size < PARALLEL_MIN_ELEMENTS:
        return 1
    threads = numba.get_num_threads()
    if batch >= threads:
        return max(1, threads)
    return max(1, batch * min(threads // max(batch, 1), x.shape[-1] // COLUMN_MIN))


@njit(cache=True)
def _chunks_of(size, batch, min_elements):
    """``_chunks`` for compiled callers, which pass the threshold (``numba.get_num_threads`` works there too)."""
    if size < min_elements:
        return 1
    return max(1, min(batch, numba.get_num_threads()))


# A few columns (B*H = 16..64, a multiple of 16) over many steps take ``narrow``'s register-blocked kernels; fewer
# steps than this stay here (the thread pool's wake-up would cost more than the steps).
NARROW_MIN_STEPS = 1024


def _narrow_rows(a, lengths, batch_first, arrays):
    """Whether ``narrow``'s rows kernels take this call (B*H = 16..64 columns, a multiple of 16). A single sequence
    with a wider row (B = 1, H = 256) takes the general kernels split across threads by columns, backward too: since
    the general backward row loop vectorises (``_backward_row_with``) it beats the rows kernels there, measured at
    T=10^5, H=256 float32 (alternating, loaded machine): 77 against 166 ms on one thread, 94 against 114 ms on two."""
    T = a.shape[1] if batch_first else a.shape[0]
    C = lengths.shape[0] * a.shape[-1]
    return T >= NARROW_MIN_STEPS and narrow.rows_applies(C) and narrow.eligible(arrays, lengths, T, batch_first)


def forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out, final=None):
    """Fill ``out`` (``x``'s shape: [T, B, H], or [B, T, H] when ``batch_first``) with the recurrence over ``x``,
    and ``final`` [B, H] (when given) with each sequence's final state. ``u`` [H]; ``b`` [H] and ``h0`` [B, H] may
    be None (zeros); ``lengths`` int64 [B]; ``act`` an ACT_* code. Inputs must already be validated. Arrays of any
    strides; the kernels see one type per dtype (``_types``)."""
    launch_forward(_forward_into, x, u, b, h0, lengths, reverse, act, batch_first, out, final)


def _forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out, final):
    B = lengths.shape[0]
    if x.shape[batch_first] >= NARROW_MIN_STEPS and _narrow_rows(x, lengths, batch_first, (x, out)):
        if batch_first:
            x, out = np.swapaxes(x, 0, 1), np.swapaxes(out, 0, 1)
        return narrow.rows_forward_into(x, u, b, h0, reverse, act, out, final)
    write_final = final is not None
    if not write_final:
        final = np.empty((1, 1), dtype=u.dtype)  # a stand-in of the right type (h0 may be read-only), never written
    elif x.size == 0:  # no step is visited: the final state is h0 (zeros when None)
        final[...] = h0
    run_forward(x, u, b, h0, lengths, reverse, act, batch_first, out, final, write_final, _chunks(x, B))


def constant_row(grad_h):
    """``grad_h`` as a C-contiguous ``[1, 1, H]`` row when it is one row broadcast over time and batch (zero strides
    on both axes: a framework's unused or summed-away output, e.g. torch's ``expand`` of a zero or of ``sum()``'s
    gradient), else ``grad_h`` itself. The kernels read a row as the same dL/dh at every step: a zero-stride
    array would take Numba's strided specialisation instead, measured 2.5x slower (17 against 7 ms at T=784,
    B=64, H=128 float32, 2 threads)."""
    if grad_h.ndim == 3 and grad_h.strides[0] == 0 and grad_h.strides[1] == 0 and grad_h.shape[0] * grad_h.shape[1] > 1:
        return np.ascontiguousarray(grad_h[:1, :1])
    return grad_h


def backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0):
    """Fill ``gx`` (``h``'s shape), ``gu`` [H], ``gb`` [H] and ``gh0`` [B, H]. Inputs must already be validated;
    ``grad_h`` is ``h``'s shape, or a ``[1, 1, H]`` row standing for the same dL/dh at every step. Arrays of any
    strides; the kernels see one type per dtype (``_types``)."""
    launch_backward(_backward_into, constant_row(grad_h), h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx,
                    gu, gb, gh0)


def _backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0):
    B = lengths.shape[0]
    if h.shape[batch_first] >= NARROW_MIN_STEPS and _narrow_rows(h, lengths, batch_first, (h, gx)):
        if grad_h.shape != h.shape:  # (the narrow kernels read full arrays; a row is C = 16..64 elements here)
            grad_h, = kernel_inputs(np.broadcast_to(grad_h, h.shape))
        if batch_first:
            grad_h, h, gx = np.swapaxes(grad_h, 0, 1), np.swapaxes(h, 0, 1), np.swapaxes(gx, 0, 1)
        return narrow.rows_backward_into(grad_h, h, u, h0, reverse, act, grad_hn, gx, gu, gb, gh0)
    run_backward(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0, _chunks(h, B))


# The compiled entry points: the launchers above call them from Python, and compiled callers (the JAX adapter's XLA
# FFI handlers, which run without the interpreter) call them directly. ``chunks`` (threads to split the batch
# over, 1 = serial) comes from the caller: ``_chunks`` reads PARALLEL_MIN_ELEMENTS at call time, which compiled
# code cannot.
@njit(cache=True)
def run_forward(x, u, b, h0, lengths, reverse, act, batch_first, out, final, write_final, chunks):
    """Fill ``out`` and, with ``write_final``, ``final`` [B, H]. Every array is given (zeros for absent b/h0)."""
    if chunks == 1:
        _forward_serial(x, u, b, h0, lengths, reverse, act, batch_first, out, final, write_final)
    else:
        _forward_parallel(x, u, b, h0, lengths, reverse, act, batch_first, out, final, write_final, chunks)


@njit(cache=True)
def run_backward(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0, chunks):
    """Fill ``gx``, ``gu``, ``gb`` and ``gh0``. Every array is given (zeros for absent h0/grad_hn); ``grad_h`` is
    ``h``'s shape or a ``[1, 1, H]`` row (the same dL/dh at every step)."""
    B, H = lengths.shape[0], u.shape[0]
    # Per-sequence sums end in float64 whatever the data type: over 10^4 steps float32 sums drift.
    gu_part = np.empty((B, H), dtype=np.float64)
    gb_part = np.empty((B, H), dtype=np.float64)
    block_part = np.empty((2, B, H), dtype=u.dtype)
    if chunks == 1:
        _backward_serial(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, gh0,
                         block_part)
    else:
        _backward_parallel(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu_part, gb_part, gh0,
                           block_part, chunks)
    _sum_rows(gu_part, gb_part, gu, gb)

