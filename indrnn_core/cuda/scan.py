"""Time-parallel ``numba.cuda`` kernels: one thread per (sequence, segment, hidden unit) instead of one per column,
for inputs with too few columns to fill the GPU (a single long sequence). See ``indrnn_core.time_parallel`` for
the math, the accuracy and when they are chosen; ``indrnn_core.cpu.scan`` is the CPU counterpart.

Each sequence's ``L`` visits are cut into ``ceil(L / seg)`` segments of ``seg = time_parallel.CUDA_SEGMENT``
visits (the last one shorter). Three launches per direction, then (backward) the fixed-order sum:
1. maps: each (segment, unit) thread composes its segment's map (forward ``clip(k*h + m, lo, hi)``, backward
   ``A*carry + M``) into a workspace;
2. boundaries: each (sequence, unit) thread applies the maps in order, writing every segment's start (and
   the padding, the empty sequences' final state, backward ``gh0``); a map that overflowed (|u| > 1) is replaced
   by walking its segment with the step formula (``_activations.map_ok``);
3. runs: each (segment, unit) thread runs the sequential kernel's step formula from its start.
Backward's per-segment partial sums of ``gu``/``gb`` are summed per unit in a fixed order (sequences ascending,
segments ascending): deterministic, no atomics. The segment count depends on ``L`` and the config only.
"""

import math

import numpy as np
from numba import cuda

from .._activations import ACT_RELU, activate, carry_map_ok, derivative_from_output, map_ok
from .. import time_parallel as tp
from . import _launch, config
from .recurrence import _load, _placeholder, _store, _visit_time


@cuda.jit(device=True, inline=True)
def _segment_of(i, B, G, H):
    """Thread i of a (sequence, segment, unit) grid -> (n, g, j)."""
    j = i % H
    g = (i // H) % G
    return i // (H * G), g, j


@cuda.jit(device=True, inline=True)
def _bounds(g, seg, length):
    """Visits [s0, s1) of segment g; s0 >= s1 when the sequence has no such segment."""
    s0 = g * seg
    return s0, min(s0 + seg, length)


@cuda.jit
def _forward_maps_kernel(x, u, bias, has_bias, lengths, has_lengths, reverse, act, batch_first, seg, maps):
    """maps [4, B, G, H]: k, m, lo, hi of each segment's map h -> clip(k*h + m, lo, hi) (identity: k*h + m)."""
    B, G, H = maps.shape[1], maps.shape[2], maps.shape[3]
    i = cuda.grid(1)
    if i >= B * G * H:
        return
    n, g, j = _segment_of(i, B, G, H)
    T = x.shape[1] if batch_first else x.shape[0]
    length = lengths[n] if has_lengths else T
    s0, s1 = _bounds(g, seg, length)
    if s0 >= s1:
        return
    zero = u.dtype.type(0)
    uj = u[j]
    bj = bias[j] if has_bias else zero
    kk = u.dtype.type(1)
    mm = zero
    lo = u.dtype.type(-math.inf)
    hi = u.dtype.type(math.inf)
    for s in range(s0, s1):
        c = _load(x, batch_first, _visit_time(s, length, reverse), n, j) + bj
        if act == ACT_RELU:  # relu(u*clip(y, lo, hi) + c): u scales (u < 0: swaps) the bounds, relu raises them
            p = uj * lo if uj != zero else zero  # 0*inf would be NaN
            q = uj * hi if uj != zero else zero
            if uj < zero:
                p, q = q, p
            lo = max(p + c, zero)
            hi = max(q + c, zero)
        kk = uj * kk
        mm = uj * mm + c
    maps[0, n, g, j] = kk
    maps[1, n, g, j] = mm
    maps[2, n, g, j] = lo
    maps[3, n, g, j] = hi


@cuda.jit
def _forward_bounds_kernel(maps, x, u, bias, has_bias, h0, has_h0, lengths, has_lengths, reverse, act, batch_first,
                           seg, starts, out, final, has_final):
    """Per (sequence, unit): every segment's start state; the padding; an empty sequence's final state. A map that
    is not ``map_ok`` (overflowed, |u| > 1) gives way to the segment's steps, walked by the step formula."""
    B, G, H = maps.shape[1], maps.shape[2], maps.shape[3]
    i = cuda.grid(1)
    if i >= B * H:
        return
    n, j = i // H, i % H
    T = out.shape[1] if batch_first else out.shape[0]
    length = lengths[n] if has_lengths else T
    zero = out.dtype.type(0)
    one = out.dtype.type(1)
    state = h0[n, j] if has_h0 else zero
    for g in range((length + seg - 1) // seg):
        starts[n, g, j] = state
        if map_ok(maps[0, n, g, j], maps[1, n, g, j], maps[2, n, g, j], maps[3, n, g, j]):
            y = maps[0, n, g, j] * state + maps[1, n, g, j]
            if y < maps[2, n, g, j]:  # written with comparisons so that NaN propagates
                y = maps[2, n, g, j]
            if y > maps[3, n, g, j]:
                y = maps[3, n, g, j]
        else:
            y = state
            uj = u[j]
            bj = bias[j] if has_bias else zero
            s0, s1 = _bounds(g, seg, length)
            for s in range(s0, s1):
                y = activate(_load(x, batch_first, _visit_time(s, length, reverse), n, j) + uj * y + bj, act, one)
        state = y
    for s in range(length, T):
        _store(out, batch_first, s, n, j, zero)
    if has_final and length == 0:
        final[n, j] = state  # h0 (read above by this thread only: final may be h0 itself)


@cuda.jit
def _forward_run_kernel(x, u, bias, has_bias, lengths, has_lengths, reverse, act, batch_first, seg, starts, out,
                        final, has_final):
    B, G, H = starts.shape[0], starts.shape[1], starts.shape[2]
    i = cuda.grid(1)
    if i >= B * G * H:
        return
    n, g, j = _segment_of(i, B, G, H)
    T = x.shape[1] if batch_first else x.shape[0]
    length = lengths[n] if has_lengths else T
    s0, s1 = _bounds(g, seg, length)
    if s0 >= s1:
        return
    one = u.dtype.type(1)
    uj = u[j]
    bj = bias[j] if has_bias else u.dtype.type(0)
    prev = starts[n, g, j]
    for s in range(s0, s1):
        t = _visit_time(s, length, reverse)
        prev = activate(_load(x, batch_first, t, n, j) + uj * prev + bj, act, one)
        _store(out, batch_first, t, n, j, prev)
    if has_final and s1 == length:
        final[n, j] = prev


@cuda.jit
def _backward_maps_kernel(grad_h, h, u, lengths, has_lengths, reverse, act, batch_first, seg, maps):
    """maps [2, B, G, H]: A, M of each segment's map carry_in -> A*carry_in + M over its visits (descending)."""
    B, G, H = maps.shape[1], maps.shape[2], maps.shape[3]
    i = cuda.grid(1)
    if i >= B * G * H:
        return
    n, g, j = _segment_of(i, B, G, H)
    T = h.shape[1] if batch_first else h.shape[0]
    length = lengths[n] if has_lengths else T
    s0, s1 = _bounds(g, seg, length)
    if s0 >= s1:
        return
    one = u.dtype.type(1)
    uj = u[j]
    a = one
    m = u.dtype.type(0)
    for s in range(s1 - 1, s0 - 1, -1):
        t = _visit_time(s, length, reverse)
        d = derivative_from_output(_load(h, batch_first, t, n, j), act, one)
        a = a * d * uj
        m = (_load(grad_h, batch_first, t, n, j) + m) * d * uj
    maps[0, n, g, j] = a
    maps[1, n, g, j] = m


@cuda.jit
def _backward_bounds_kernel(maps, grad_h, h, u, lengths, has_lengths, reverse, act, batch_first, seg, grad_hn,
                            has_grad_hn, carries, gx, gh0):
    """Per (sequence, unit): the carry entering each segment (from its last visit), dL/dh0, the padding. A map
    that is not ``carry_map_ok`` (overflowed) gives way to the segment's steps, walked by the step formulas."""
    B, G, H = maps.shape[1], maps.shape[2], maps.shape[3]
    i = cuda.grid(1)
    if i >= B * H:
        return
    n, j = i // H, i % H
    T = gx.shape[1] if batch_first else gx.shape[0]
    length = lengths[n] if has_lengths else T
    zero = gx.dtype.type(0)
    one = gx.dtype.type(1)
    carry = grad_hn[n, j] if has_grad_hn else zero
    for g in range((length + seg - 1) // seg - 1, -1, -1):
        carries[n, g, j] = carry
        if carry_map_ok(maps[0, n, g, j], maps[1, n, g, j]):
            carry = maps[0, n, g, j] * carry + maps[1, n, g, j]
        else:
            uj = u[j]
            s0, s1 = _bounds(g, seg, length)
            for s in range(s1 - 1, s0 - 1, -1):
                t = _visit_time(s, length, reverse)
                gv = (_load(grad_h, batch_first, t, n, j) + carry) * derivative_from_output(
                    _load(h, batch_first, t, n, j), act, one)
                carry = gv * uj
    gh0[n, j] = carry
    for s in range(length, T):
        _store(gx, batch_first, s, n, j, zero)


@cuda.jit
def _backward_run_kernel(grad_h, h, u, h0, has_h0, lengths, has_lengths, reverse, act, batch_first, seg, carries,
                         gx, part):
    """Each segment backwards from its carry; ``part`` [2, B, G, H]: its sums of gx*h_prev and gx."""
    B, G, H = carries.shape[0], carries.shape[1], carries.shape[2]
    i = cuda.grid(1)
    if i >= B * G * H:
        return
    n, g, j = _segment_of(i, B, G, H)
    T = h.shape[1] if batch_first else h.shape[0]
    length = lengths[n] if has_lengths else T
    s0, s1 = _bounds(g, seg, length)
    zero = u.dtype.type(0)
    if s0 >= s1:
        part[0, n, g, j] = zero  # summed for every g < G: an absent segment adds nothing
        part[1, n, g, j] = zero
        return
    one = u.dtype.type(1)
    uj = u[j]
    carry = carries[n, g, j]
    acc_u = zero
    acc_b = zero
    for s in range(s1 - 1, s0 - 1, -1):
        t = _visit_time(s, length, reverse)
        if s > 0:
            prev = _load(h, batch_first, _visit_time(s - 1, length, reverse), n, j)
        else:
            prev = h0[n, j] if has_h0 else zero
        gv = (_load(grad_h, batch_first, t, n, j) + carry) * derivative_from_output(
            _load(h, batch_first, t, n, j), act, one)
        _store(gx, batch_first, t, n, j, gv)
        acc_u += gv * prev
        acc_b += gv
        carry = gv * uj
    part[0, n, g, j] = acc_u
    part[1, n, g, j] = acc_b


@cuda.jit
def _sum_segments_kernel(part, gu, gb):
    """gu[j], gb[j] = sums over (n, g) of part[0/1, n, g, j], n then g ascending: a fixed order."""
    j = cuda.grid(1)
    if j >= gu.shape[0]:
        return
    acc_u = part.dtype.type(0)
    acc_b = part.dtype.type(0)
    for n in range(part.shape[1]):
        for g in range(part.shape[2]):
            acc_u += part[0, n, g, j]
            acc_b += part[1, n, g, j]
    gu[j] = acc_u
    gb[j] = acc_b


# ---- host side ------------------------------------------------------------------------------------------------

def _grid(n_threads):
    tpb = int(config.THREADS_PER_BLOCK)
    return max(1, (n_threads + tpb - 1) // tpb), tpb


def _lengths(lengths, T, stream, ctx):
    if lengths.size == 0 or lengths.min() == T:
        return _placeholder(None, np.int64, 1, ctx)
    return _launch.view(cuda.to_device(lengths, stream=stream[0])), True


def _workspace(shape, dtype, stream):
    return _launch.view(cuda.device_array(shape, dtype=dtype, stream=stream[0]))


def _segment(T):
    seg = max(1, int(tp.CUDA_SEGMENT))
    return seg, max(1, (T + seg - 1) // seg)


def forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out, final=None, stream=None):
    """``recurrence.forward_into`` with the time-parallel kernels (``act`` relu or identity; inputs validated)."""
    stream, ctx = _launch.stream_pair(stream), _launch.context_handle()
    T = x.shape[1] if batch_first else x.shape[0]
    B, H = lengths.shape[0], u.shape[0]
    if B * H == 0:
        return
    seg, G = _segment(T)
    b, has_b = _placeholder(b, u.dtype, 1, ctx)
    h0, has_h0 = _placeholder(h0, u.dtype, 2, ctx)
    final, has_final = _placeholder(final, u.dtype, 2, ctx)
    d_lengths, has_lengths = _lengths(lengths, T, stream, ctx)
    maps = _workspace((4, B, G, H), u.dtype, stream)
    starts = _workspace((B, G, H), u.dtype, stream)
    blocks, tpb = _grid(B * G * H)
    _launch.launch(_forward_maps_kernel, blocks, tpb, stream,
                   (x, u, b, has_b, d_lengths, has_lengths, reverse, act, batch_first, seg, maps), u.dtype, ctx)
    _launch.launch(_forward_bounds_kernel, *_grid(B * H), stream,
                   (maps, x, u, b, has_b, h0, has_h0, d_lengths, has_lengths, reverse, act, batch_first, seg, starts,
                    out, final, has_final), u.dtype, ctx)
    _launch.launch(_forward_run_kernel, blocks, tpb, stream,
                   (x, u, b, has_b, d_lengths, has_lengths, reverse, act, batch_first, seg, starts, out, final,
                    has_final), u.dtype, ctx)


def backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0, stream=None):
    """``recurrence.backward_into`` with the time-parallel kernels (any activation; inputs validated)."""
    stream, ctx = _launch.stream_pair(stream), _launch.context_handle()
    T = h.shape[1] if batch_first else h.shape[0]
    B, H = lengths.shape[0], u.shape[0]
    if H == 0:
        return
    seg, G = _segment(T)
    h0, has_h0 = _placeholder(h0, u.dtype, 2, ctx)
    grad_hn, has_grad_hn = _placeholder(grad_hn, u.dtype, 2, ctx)
    d_lengths, has_lengths = _lengths(lengths, T, stream, ctx)
    part = _workspace((2, B, G, H), u.dtype, stream)
    if B > 0:
        maps = _workspace((2, B, G, H), u.dtype, stream)
        carries = _workspace((B, G, H), u.dtype, stream)
        blocks, tpb = _grid(B * G * H)
        _launch.launch(_backward_maps_kernel, blocks, tpb, stream,
                       (grad_h, h, u, d_lengths, has_lengths, reverse, act, batch_first, seg, maps), u.dtype, ctx)
        _launch.launch(_backward_bounds_kernel, *_grid(B * H), stream,
                       (maps, grad_h, h, u, d_lengths, has_lengths, reverse, act, batch_first, seg, grad_hn,
                        has_grad_hn, carries, gx, gh0), u.dtype, ctx)
        _launch.launch(_backward_run_kernel, blocks, tpb, stream,
                       (grad_h, h, u, h0, has_h0, d_lengths, has_lengths, reverse, act, batch_first, seg, carries,
                        gx, part), u.dtype, ctx)
    _launch.launch(_sum_segments_kernel, *_grid(H), stream, (part, gu, gb), u.dtype, ctx)
