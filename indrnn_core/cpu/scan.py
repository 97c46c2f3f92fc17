"""Time-parallel (``numba.njit(parallel=True)``) kernels: each sequence's steps split into segments that run at
once, for inputs with too few sequences to fill the cores (a single long sequence). See
``indrnn_core.time_parallel`` for the math, the accuracy and when they are chosen.

A sequence of ``L`` visits (visit index ``s`` as in ``recurrence``: time ``t = s``, or ``L-1-s`` when reversed)
is cut into ``G`` segments of ``seg = L // G`` visits; the last ``L - G*seg`` visits (the tail, fewer than G) run
sequentially. ``G`` depends only on ``L``, ``H`` and the config, never on the thread count, so results (gu and gb
included, summed in a fixed order) are the same on any number of threads and bit-identical on reruns.

Three phases per call, for every sequence at once:
1. maps (``prange`` over work items): each segment's composed map, per hidden unit: forward ``h -> clip(k*h + m,
   lo, hi)`` (relu; identity: ``k*h + m``), backward ``carry -> A*carry + M``;
2. boundaries (serial, O(G*H) per sequence): each segment's start, by applying the maps in visit order (forward)
   or reverse visit order (backward, after the tail), plus the tail; a map that overflowed (``|u| > 1``;
   ``_activations.map_ok``) is replaced by walking its segment with the step formula (``_walk_forward``,
   ``_walk_backward``);
3. runs (``prange``): every segment runs the sequential kernels' own step formulas from its start.

A work item is up to ``K = max(1, lane_elements // H)`` consecutive segments of one sequence. With a short row
(H < ``LANE_ORDER_MAX_H``) they run in lockstep and the inner loop runs across them (SIMD over segments, strided
loads: one step's latency no longer bounds the speed); with a longer row they run one after another and the inner
loop runs over H (contiguous). Either way each element sees the sequential kernels' arithmetic, so only the
segment starts carry extra rounding. Subnormal map coefficients and carries are flushed to zero
(``_activations.flush_subnormal``).

With B x H dividing 16 (below it), full-length contiguous time-major arrays, ``indrnn_core.cpu.narrow``'s lanes
kernels run the same segments in two passes over the data, 64 (segment, column) lanes at a time through
transposed tiles; the loops here handle every other case. Measured on a 2-core Xeon (BENCHMARKS.md): the scan
beats the sequential kernels at H=1 but not at H >= 16, where it reads the data twice;
``indrnn_core.time_parallel``'s automatic rule follows the measurements.
"""

import numpy as np
from numba import njit, prange

from .. import _activations as A
from ._types import launch_backward, launch_forward

# Rows shorter than this run the lane order (inner loop across segments); longer ones the row order (inner over H).
LANE_ORDER_MAX_H = 8


@njit(inline="always")
def _get_tm(a, t, n, j):
    return a[t, n, j]


@njit(inline="always")
def _set_tm(a, t, n, j, v):
    a[t, n, j] = v


@njit(inline="always")
def _time(s, L, reverse):
    return L - 1 - s if reverse else s


@njit(inline="always")
def _segments(L, H, groups, lane_elements, min_segment):
    """(K lanes per work item, G segments, seg visits per segment) for a sequence of L visits; G = 0: all serial."""
    K = max(1, lane_elements // max(H, 1))
    G = min(groups * K, L // max(min_segment, 1))
    if G < 2:
        return K, 0, 0
    return K, G, L // G


@njit
def _work_items(lengths, H, groups, lane_elements, min_segment):
    """Work items (sequence, first segment, end segment) of every sequence, plus each sequence's G and seg."""
    B = lengths.shape[0]
    G_of = np.zeros(B, dtype=np.int64)
    seg_of = np.zeros(B, dtype=np.int64)
    count = 0
    K = 1
    for n in range(B):
        K, G, seg = _segments(lengths[n], H, groups, lane_elements, min_segment)
        G_of[n], seg_of[n] = G, seg
        count += (G + K - 1) // K
    items = np.empty((count, 3), dtype=np.int64)
    i = 0
    for n in range(B):
        for g0 in range(0, G_of[n], K):
            items[i, 0], items[i, 1], items[i, 2] = n, g0, min(g0 + K, G_of[n])
            i += 1
    return items, G_of, seg_of, int(G_of.max()) if B else 0


# ---- forward --------------------------------------------------------------------------------------------------

@njit(inline="always")
def _compose_relu(kk, mm, lo, hi, uj, c, zero, tiny):
    """relu(u*clip(k*h + m, lo, hi) + c) = clip(u*k*h + u*m + c, lo', hi'): u scales (and for u < 0 swaps) the
    bounds, relu raises both to 0. ``u*bound`` is taken as 0 when u is 0 (0*inf would be NaN)."""
    p = uj * lo
    q = uj * hi
    p = zero if uj == zero else p
    q = zero if uj == zero else q
    lo2 = (p if p < q else q) + c  # lo <= hi, so min/max pick the scaled bounds for either sign: no branch
    hi2 = (q if p < q else p) + c
    return A.flush_subnormal(uj * kk, tiny), uj * mm + c, lo2 if lo2 > zero else zero, hi2 if hi2 > zero else zero


@njit(inline="always")
def _compose_identity(kk, mm, lo, hi, uj, c, zero, tiny):
    return A.flush_subnormal(uj * kk, tiny), uj * mm + c, lo, hi


@njit(inline="always")
def _apply_map(kk, mm, lo, hi, h):
    """clip(k*h + m, lo, hi), NaN-propagating (identity maps keep lo = -inf, hi = inf)."""
    y = kk * h + mm
    if y < lo:
        y = lo
    if y > hi:
        y = hi
    return y


@njit(inline="always")
def _starts(L, reverse, seg, g0, g1):
    """Each segment's first time step [g1-g0] and the time step per visit (+1, or -1 when reversed): visit i of
    segment g is at time ``t0[g - g0] + step * i``. Vector index arithmetic, no per-element branch."""
    t0 = np.empty(g1 - g0, dtype=np.int64)
    for g in range(g0, g1):
        t0[g - g0] = _time(g * seg, L, reverse)
    return t0, -1 if reverse else 1


@njit(inline="always")
def _forward_maps(get, compose, x, u, b, n, L, reverse, seg, g0, g1, mk, mm, mlo, mhi):
    """Segments g0..g1-1's maps into mk, mm, mlo, mhi [n, g]. The work happens in one local array (a single
    written array keeps the loops vectorisable, and neighbouring work items' entries of mk... would share cache
    lines), written back once. Short rows: the segments in lockstep, inner loop across them; long rows: one
    segment after another, inner loop over H."""
    H, K = u.shape[0], g1 - g0
    zero = u.dtype.type(0)
    tiny = u.dtype.type(np.finfo(u.dtype).tiny)
    t0, step = _starts(L, reverse, seg, g0, g1)
    if H < LANE_ORDER_MAX_H:
        mp = np.empty((4, H, K), u.dtype)
        mp[0], mp[1], mp[2], mp[3] = 1, 0, -np.inf, np.inf
        for i in range(seg):
            for j in range(H):
                uj, bj = u[j], b[j]
                for k in range(K):
                    c = get(x, t0[k] + step * i, n, j) + bj
                    mp[0, j, k], mp[1, j, k], mp[2, j, k], mp[3, j, k] = compose(
                        mp[0, j, k], mp[1, j, k], mp[2, j, k], mp[3, j, k], uj, c, zero, tiny)
        for k in range(K):
            for j in range(H):
                mk[n, g0 + k, j], mm[n, g0 + k, j] = mp[0, j, k], mp[1, j, k]
                mlo[n, g0 + k, j], mhi[n, g0 + k, j] = mp[2, j, k], mp[3, j, k]
    else:
        mp = np.empty((4, H), u.dtype)
        for k in range(K):
            mp[0], mp[1], mp[2], mp[3] = 1, 0, -np.inf, np.inf
            for i in range(seg):
                t = t0[k] + step * i
                for j in range(H):
                    c = get(x, t, n, j) + b[j]
                    mp[0, j], mp[1, j], mp[2, j], mp[3, j] = compose(mp[0, j], mp[1, j], mp[2, j], mp[3, j], u[j],
                                                                     c, zero, tiny)
            for j in range(H):
                mk[n, g0 + k, j], mm[n, g0 + k, j] = mp[0, j], mp[1, j]
                mlo[n, g0 + k, j], mhi[n, g0 + k, j] = mp[2, j], mp[3, j]


@njit(inline="always")
def _forward_run(get, put, f, x, u, b, n, L, reverse, seg, g0, g1, state, out):
    """Segments g0..g1-1 from ``state[n, g]`` (their starts), with the sequential kernels' step formula. Long
    rows: one segment after another reading the previous row back from ``out``, as the sequential kernel does."""
    H, K = u.shape[0], g1 - g0
    one = u.dtype.type(1)
    t0, step = _starts(L, reverse, seg, g0, g1)
    if H < LANE_ORDER_MAX_H:
        st = np.empty((H, K), u.dtype)
        for k in range(K):
            for j in range(H):
                st[j, k] = state[n, g0 + k, j]
        for i in range(seg):
            for j in range(H):
                uj, bj = u[j], b[j]
                for k in range(K):
                    t = t0[k] + step * i
                    v = f(get(x, t, n, j) + uj * st[j, k] + bj, one)
                    st[j, k] = v
                    put(out, t, n, j, v)
    else:
        for k in range(K):
            t = t0[k]
            for j in range(H):
                put(out, t, n, j, f(get(x, t, n, j) + u[j] * state[n, g0 + k, j] + b[j], one))
            for i in range(1, seg):
                t = t0[k] + step * i
                for j in range(H):
                    put(out, t, n, j, f(get(x, t, n, j) + u[j] * get(out, t - step, n, j) + b[j], one))


@njit(inline="always")
def _forward_serial_steps(get, put, f, x, u, b, n, L, reverse, s0, s1, state, out):
    """Visits s0..s1-1 of sequence n from ``state`` [H] (updated), one after another."""
    one = u.dtype.type(1)
    for s in range(s0, s1):
        t = _time(s, L, reverse)
        for j in range(u.shape[0]):
            v = f(get(x, t, n, j) + u[j] * state[j] + b[j], one)
            state[j] = v
            put(out, t, n, j, v)


# Each (layout, activation) pair gets its own compiled copy of the loops, made by binding the element accessors
# and the activation as closure constants: passed as arguments to a function that is not inlined, Numba would
# keep them as run-time values, which compiles slower code and cannot be cached.
def _forward_kernels(get, put, f, compose):
    @njit
    def maps(x, u, b, n, L, reverse, seg, g0, g1, mk, mm, mlo, mhi):
        _forward_maps(get, compose, x, u, b, n, L, reverse, seg, g0, g1, mk, mm, mlo, mhi)

    @njit
    def run(x, u, b, n, L, reverse, seg, g0, g1, state, out):
        _forward_run(get, put, f, x, u, b, n, L, reverse, seg, g0, g1, state, out)

    @njit
    def serial(x, u, b, n, L, reverse, s0, s1, state, out):
        _forward_serial_steps(get, put, f, x, u, b, n, L, reverse, s0, s1, state, out)

    return maps, run, serial


_fmaps_tm_relu, _frun_tm_relu, _fserial_tm_relu = _forward_kernels(_get_tm, _set_tm, A.relu, _compose_relu)
_fmaps_tm_id, _frun_tm_id, _fserial_tm_id = _forward_kernels(_get_tm, _set_tm, A.identity, _compose_identity)


@njit
def _forward_item(relu, phase, x, u, b, n, L, reverse, seg, g0, g1, mk, mm, mlo, mhi, state, out):
    """One work item of phase 1 (maps) or 3 (runs), or (phase 2) the serial visits g0..g1-1 from ``state[0, 0]``."""
    if phase == 1:
        if relu:
            _fmaps_tm_relu(x, u, b, n, L, reverse, seg, g0, g1, mk, mm, mlo, mhi)
        else:
            _fmaps_tm_id(x, u, b, n, L, reverse, seg, g0, g1, mk, mm, mlo, mhi)
    elif phase == 3:
        if relu:
            _frun_tm_relu(x, u, b, n, L, reverse, seg, g0, g1, state, out)
        else:
            _frun_tm_id(x, u, b, n, L, reverse, seg, g0, g1, state, out)
    elif relu:
        _fserial_tm_relu(x, u, b, n, L, reverse, g0, g1, state[0, 0], out)
    else:
        _fserial_tm_id(x, u, b, n, L, reverse, g0, g1, state[0, 0], out)


@njit
def _walk_forward(act, x, u, b, n, L, reverse, s0, s1, j, h):
    """h after visits s0..s1-1 of sequence n, unit j, from ``h``, by the sequential kernels' step formula (nothing
    written): a segment's end where its map is not ``A.map_ok``."""
    one = u.dtype.type(1)
    for s in range(s0, s1):
        h = A.activate(x[_time(s, L, reverse), n, j] + u[j] * h + b[j], act, one)
    return h


@njit(cache=True, parallel=True)
def forward(x, u, b, h0, lengths, reverse, act, out, final, write_final, groups, lane_elements,
            min_segment):
    """Fill ``out`` (and, with ``write_final``, ``final`` [B, H]) like ``recurrence.run_forward``, for ``act``
    relu or identity only. Every array is given (zeros for absent b/h0). ``final`` may be ``h0`` itself: it is
    written last."""
    T, B, H = x.shape[0], lengths.shape[0], u.shape[0]
    relu = act == A.ACT_RELU
    items, G_of, seg_of, G_max = _work_items(lengths, H, groups, lane_elements, min_segment)
    shape = (B, max(G_max, 1), H)
    mk, mm = np.empty(shape, u.dtype), np.empty(shape, u.dtype)
    mlo, mhi = np.empty(shape, u.dtype), np.empty(shape, u.dtype)
    state = np.empty(shape, u.dtype)
    for w in prange(items.shape[0]):  # 1. each segment's map
        n = items[w, 0]
        _forward_item(relu, 1, x, u, b, n, lengths[n], reverse, seg_of[n], items[w, 1], items[w, 2],
                      mk, mm, mlo, mhi, state, out)
    tail = np.empty((1, 1, H), u.dtype)
    for n in range(B):  # 2. segment starts, in visit order; then the tail, serially
        L, G, seg = lengths[n], G_of[n], seg_of[n]
        for j in range(H):
            tail[0, 0, j] = h0[n, j]
        for g in range(G):
            for j in range(H):
                state[n, g, j] = tail[0, 0, j]
                if A.map_ok(mk[n, g, j], mm[n, g, j], mlo[n, g, j], mhi[n, g, j]):
                    tail[0, 0, j] = _apply_map(mk[n, g, j], mm[n, g, j], mlo[n, g, j], mhi[n, g, j], tail[0, 0, j])
                else:
                    tail[0, 0, j] = _walk_forward(act, x, u, b, n, L, reverse, g * seg, (g + 1) * seg, j,
                                                  tail[0, 0, j])
        _forward_item(relu, 2, x, u, b, n, L, reverse, 0, G * seg, L, mk, mm, mlo, mhi, tail, out)
    for w in prange(items.shape[0]):  # 3. every segment from its start
        n = items[w, 0]
        _forward_item(relu, 3, x, u, b, n, lengths[n], reverse, seg_of[n], items[w, 1], items[w, 2],
                      mk, mm, mlo, mhi, state, out)
    for n in range(B):  # padding, then final states (last: ``final`` may be ``h0``)
        for s in range(lengths[n], T):
            for j in range(H):
                out[s, n, j] = 0
    if write_final:
        for n in range(B):
            L = lengths[n]
            for j in range(H):
                final[n, j] = h0[n, j] if L == 0 else out[_time(L - 1, L, reverse), n, j]


# ---- backward -------------------------------------------------------------------------------------------------

@njit(inline="always")
def _backward_maps(get, df, grad_h, h, u, n, L, reverse, seg, g0, g1, ma, mm):
    """Each segment's map carry_in -> A*carry_in + M over its visits (descending), as the sequential kernel
    carries: carry = ((grad_h + carry) * act'(h)) * u. One local array as in ``_forward_maps``."""
    H, K = u.shape[0], g1 - g0
    one = u.dtype.type(1)
    tiny = u.dtype.type(np.finfo(u.dtype).tiny)
    t0, step = _starts(L, reverse, seg, g0, g1)
    if H < LANE_ORDER_MAX_H:
        am = np.empty((2, H, K), u.dtype)
        am[0], am[1] = 1, 0
        for i in range(seg - 1, -1, -1):
            for j in range(H):
                uj = u[j]
                for k in range(K):
                    t = t0[k] + step * i
                    d = df(get(h, t, n, j), one)
                    am[0, j, k] = A.flush_subnormal(am[0, j, k] * d * uj, tiny)
                    am[1, j, k] = A.flush_subnormal((get(grad_h, t, n, j) + am[1, j, k]) * d * uj, tiny)
        for k in range(K):
            for j in range(H):
                ma[n, g0 + k, j], mm[n, g0 + k, j] = am[0, j, k], am[1, j, k]
    else:
        am = np.empty((2, H), u.dtype)
        for k in range(K):
            am[0], am[1] = 1, 0
            for i in range(seg - 1, -1, -1):
                t = t0[k] + step * i
                for j in range(H):
                    d = df(get(h, t, n, j), one)
                    am[0, j] = A.flush_subnormal(am[0, j] * d * u[j], tiny)
                    am[1, j] = A.flush_subnormal((get(grad_h, t, n, j) + am[1, j]) * d * u[j], tiny)
            for j in range(H):
                ma[n, g0 + k, j], mm[n, g0 + k, j] = am[0, j], am[1, j]


@njit(inline="always")
def _backward_step(get, put, df, grad_h, h, u, h0, gx, n, L, reverse, s, j, carry, one):
    """Visit s of sequence n, unit j: the sequential kernel's formulas. Returns (g, prev, new carry)."""
    t = _time(s, L, reverse)
    g = (get(grad_h, t, n, j) + carry) * df(get(h, t, n, j), one)
    put(gx, t, n, j, g)
    prev = h0[n, j] if s == 0 else get(h, _time(s - 1, L, reverse), n, j)
    return g, prev, A.flush_subnormal(g * u[j], u.dtype.type(np.finfo(u.dtype).tiny))


@njit(inline="always")
def _backward_run(get, put, df, grad_h, h, u, h0, gx, n, L, reverse, seg, g0, g1, carry, part_u, part_b):
    """Segments g0..g1-1 backwards from ``carry[n, g]`` (the carry entering their last visit); per-segment float64
    sums of gx*prev and gx into ``part_u``/``part_b`` [n, g]. Visit 0 (which reads h0) is taken out of the inner
    loops so that they hold no branch. Local arrays as in ``_forward_maps``; long rows read the carry back from
    the gx row just written, as the sequential kernel does. Carries are flushed as there
    (``_activations.flush_subnormal``)."""
    H, K = u.shape[0], g1 - g0
    one = u.dtype.type(1)
    tiny = u.dtype.type(np.finfo(u.dtype).tiny)
    t0, step = _starts(L, reverse, seg, g0, g1)
    if H < LANE_ORDER_MAX_H:
        c, pp = np.empty((H, K), u.dtype), np.zeros((2, H, K), np.float64)
        for k in range(K):
            for j in range(H):
                c[j, k] = carry[n, g0 + k, j]
        for i in range(seg - 1, 0, -1):
            for j in range(H):
                uj = u[j]
                for k in range(K):
                    t = t0[k] + step * i
                    gv = (get(grad_h, t, n, j) + c[j, k]) * df(get(h, t, n, j), one)
                    put(gx, t, n, j, gv)
                    pp[0, j, k] += gv * get(h, t - step, n, j)
                    pp[1, j, k] += gv
                    c[j, k] = A.flush_subnormal(gv * uj, tiny)
        for k in range(K):
            for j in range(H):
                part_u[n, g0 + k, j], part_b[n, g0 + k, j], carry[n, g0 + k, j] = pp[0, j, k], pp[1, j, k], c[j, k]
    else:
        pp = np.empty((2, H), np.float64)
        for k in range(K):
            pp[0], pp[1] = 0, 0
            if seg > 1:
                t = t0[k] + step * (seg - 1)
                for j in range(H):
                    gv = (get(grad_h, t, n, j) + carry[n, g0 + k, j]) * df(get(h, t, n, j), one)
                    put(gx, t, n, j, gv)
                    pp[0, j] += gv * get(h, t - step, n, j)
                    pp[1, j] += gv
            for i in range(seg - 2, 0, -1):
                t = t0[k] + step * i
                for j in range(H):
                    carried = A.flush_subnormal(get(gx, t + step, n, j) * u[j], tiny)
                    gv = (get(grad_h, t, n, j) + carried) * df(get(h, t, n, j), one)
                    put(gx, t, n, j, gv)
                    pp[0, j] += gv * get(h, t - step, n, j)
                    pp[1, j] += gv
            for j in range(H):
                part_u[n, g0 + k, j], part_b[n, g0 + k, j] = pp[0, j], pp[1, j]
                if seg > 1:
                    carry[n, g0 + k, j] = A.flush_subnormal(get(gx, t0[k] + step, n, j) * u[j], tiny)
    for g in range(g0, g1):  # each segment's first visit
        for j in range(H):
            gv, prev, carry[n, g, j] = _backward_step(get, put, df, grad_h, h, u, h0, gx, n, L, reverse, g * seg, j,
                                                      carry[n, g, j], one)
            part_u[n, g, j] += gv * prev
            part_b[n, g, j] += gv


@njit(inline="always")
def _backward_tail(get, put, df, grad_h, h, u, h0, gx, n, L, reverse, s_lo, carry, tail_u, tail_b):
    """Visits L-1 down to s_lo of sequence n, serially, from ``carry`` [H] (updated); sums into tail_u/tail_b [n]."""
    one = u.dtype.type(1)
    for s in range(L - 1, s_lo - 1, -1):
        for j in range(u.shape[0]):
            gv, prev, carry[j] = _backward_step(get, put, df, grad_h, h, u, h0, gx, n, L, reverse, s, j, carry[j],
                                                one)
            tail_u[n, j] += gv * prev
            tail_b[n, j] += gv


def _backward_kernels(get, put, df):
    @njit
    def maps(grad_h, h, u, n, L, reverse, seg, g0, g1, ma, mm):
        _backward_maps(get, df, grad_h, h, u, n, L, reverse, seg, g0, g1, ma, mm)

    @njit
    def run(grad_h, h, u, h0, gx, n, L, reverse, seg, g0, g1, carry, part_u, part_b):
        _backward_run(get, put, df, grad_h, h, u, h0, gx, n, L, reverse, seg, g0, g1, carry, part_u, part_b)

    @njit
    def tail(grad_h, h, u, h0, gx, n, L, reverse, s_lo, carry, tail_u, tail_b):
        _backward_tail(get, put, df, grad_h, h, u, h0, gx, n, L, reverse, s_lo, carry, tail_u, tail_b)

    return maps, run, tail


_bmaps_tm_relu, _brun_tm_relu, _btail_tm_relu = _backward_kernels(_get_tm, _set_tm, A.relu_derivative)
_bmaps_tm_tanh, _brun_tm_tanh, _btail_tm_tanh = _backward_kernels(_get_tm, _set_tm, A.tanh_derivative)
_bmaps_tm_sig, _brun_tm_sig, _btail_tm_sig = _backward_kernels(_get_tm, _set_tm, A.sigmoid_derivative)
_bmaps_tm_id, _brun_tm_id, _btail_tm_id = _backward_kernels(_get_tm, _set_tm, A.identity_derivative)


@njit
def _backward_maps_item(act, grad_h, h, u, n, L, reverse, seg, g0, g1, ma, mm):
    if act == A.ACT_RELU:
        _bmaps_tm_relu(grad_h, h, u, n, L, reverse, seg, g0, g1, ma, mm)
    elif act == A.ACT_TANH:
        _bmaps_tm_tanh(grad_h, h, u, n, L, reverse, seg, g0, g1, ma, mm)
    elif act == A.ACT_SIGMOID:
        _bmaps_tm_sig(grad_h, h, u, n, L, reverse, seg, g0, g1, ma, mm)
    else:
        _bmaps_tm_id(grad_h, h, u, n, L, reverse, seg, g0, g1, ma, mm)


@njit
def _backward_run_item(act, grad_h, h, u, h0, gx, n, L, reverse, seg, g0, g1, carry, part_u, part_b):
    if act == A.ACT_RELU:
        _brun_tm_relu(grad_h, h, u, h0, gx, n, L, reverse, seg, g0, g1, carry, part_u, part_b)
    elif act == A.ACT_TANH:
        _brun_tm_tanh(grad_h, h, u, h0, gx, n, L, reverse, seg, g0, g1, carry, part_u, part_b)
    elif act == A.ACT_SIGMOID:
        _brun_tm_sig(grad_h, h, u, h0, gx, n, L, reverse, seg, g0, g1, carry, part_u, part_b)
    else:
        _brun_tm_id(grad_h, h, u, h0, gx, n, L, reverse, seg, g0, g1, carry, part_u, part_b)


@njit
def _backward_tail_item(act, grad_h, h, u, h0, gx, n, L, reverse, s_lo, carry, tail_u, tail_b):
    if act == A.ACT_RELU:
        _btail_tm_relu(grad_h, h, u, h0, gx, n, L, reverse, s_lo, carry, tail_u, tail_b)
    elif act == A.ACT_TANH:
        _btail_tm_tanh(grad_h, h, u, h0, gx, n, L, reverse, s_lo, carry, tail_u, tail_b)
    elif act == A.ACT_SIGMOID:
        _btail_tm_sig(grad_h, h, u, h0, gx, n, L, reverse, s_lo, carry, tail_u, tail_b)
    else:
        _btail_tm_id(grad_h, h, u, h0, gx, n, L, reverse, s_lo, carry, tail_u, tail_b)


@njit
def _walk_backward(act, grad_h, h, u, n, L, reverse, s0, s1, j, carry):
    """The carry out of visits s1-1 down to s0 of sequence n, unit j, entering with ``carry``, by the sequential
    kernels' formulas (nothing written): where a segment's map is not ``A.carry_map_ok``."""
    one = u.dtype.type(1)
    tiny = u.dtype.type(np.finfo(u.dtype).tiny)
    for s in range(s1 - 1, s0 - 1, -1):
        t = _time(s, L, reverse)
        gv = (grad_h[t, n, j] + carry) * A.derivative_from_output(h[t, n, j], act, one)
        carry = A.flush_subnormal(gv * u[j], tiny)
    return carry


@njit(cache=True, parallel=True)
def backward(grad_h, h, u, h0, lengths, reverse, act, grad_hn, gx, gu, gb, gh0, groups, lane_elements,
             min_segment):
    """Fill ``gx``, ``gu``, ``gb`` and ``gh0`` like ``recurrence.run_backward``, for any activation. Every array is
    given (zeros for absent h0/grad_hn)."""
    T, B, H = h.shape[0], lengths.shape[0], u.shape[0]
    items, G_of, seg_of, G_max = _work_items(lengths, H, groups, lane_elements, min_segment)
    shape = (B, max(G_max, 1), H)
    ma, mm, carry = np.empty(shape, u.dtype), np.empty(shape, u.dtype), np.empty(shape, u.dtype)
    part_u, part_b = np.empty(shape, np.float64), np.empty(shape, np.float64)
    tail_u, tail_b = np.zeros((B, H), np.float64), np.zeros((B, H), np.float64)
    for w in prange(items.shape[0]):  # 1. each segment's map
        n = items[w, 0]
        _backward_maps_item(act, grad_h, h, u, n, lengths[n], reverse, seg_of[n], items[w, 1],
                            items[w, 2], ma, mm)
    c = np.empty(H, u.dtype)
    tiny = u.dtype.type(np.finfo(u.dtype).tiny)
    for n in range(B):  # 2. the tail (visited first), then the carries entering each segment, in reverse order
        L, G, seg = lengths[n], G_of[n], seg_of[n]
        for j in range(H):
            c[j] = grad_hn[n, j]
        _backward_tail_item(act, grad_h, h, u, h0, gx, n, L, reverse, G * seg, c, tail_u, tail_b)
        for g in range(G - 1, -1, -1):
            for j in range(H):
                carry[n, g, j] = c[j]
                if A.carry_map_ok(ma[n, g, j], mm[n, g, j]):
                    c[j] = A.flush_subnormal(ma[n, g, j] * c[j] + mm[n, g, j], tiny)
                else:
                    c[j] = _walk_backward(act, grad_h, h, u, n, L, reverse, g * seg, (g + 1) * seg, j, c[j])
        for j in range(H):
            gh0[n, j] = c[j]  # after segment 0 (or the tail when there are no segments): dL/dh0
    for w in prange(items.shape[0]):  # 3. every segment from its carry
        n = items[w, 0]
        _backward_run_item(act, grad_h, h, u, h0, gx, n, lengths[n], reverse, seg_of[n], items[w, 1],
                           items[w, 2], carry, part_u, part_b)
    for n in range(B):  # padding gets no gradient
        for s in range(lengths[n], T):
            for j in range(H):
                gx[s, n, j] = 0
    for j in range(H):  # fixed order: sequences ascending; within one, the tail then segments ascending
        acc_u = 0.0
        acc_b = 0.0
        for n in range(B):
            acc_u += tail_u[n, j]
            acc_b += tail_b[n, j]
            for g in range(G_of[n]):
                acc_u += part_u[n, g, j]
                acc_b += part_b[n, g, j]
        gu[j] = acc_u
        gb[j] = acc_b


# ---- host launchers -------------------------------------------------------------------------------------------

def _config():
    return int(cfg.CPU_GROUPS), int(cfg.CPU_LANE_ELEMENTS), int(cfg.CPU_MIN_SEGMENT)


def _narrow_lanes(a, lengths, arrays):
    """(G, seg) when ``narrow``'s lanes kernels take these time-major arrays (B*H dividing their block of lanes,
    full lengths, contiguous), else (0, 0)."""
    T, B, H = a.shape
    if not narrow.eligible(arrays, lengths, T, False):
        return 0, 0
    return narrow.lanes_segments(T, B * H, *_config())


def lanes_take(arrays, lengths, batch_first) -> bool:
    """Whether ``narrow``'s lanes kernels would run a time-parallel call on these validated [T, B, H] arrays
    (``[B, T, H]`` with ``batch_first``): the automatic rule asks (``indrnn_core.time_parallel``)."""
    if batch_first:
        arrays = [np.swapaxes(a, 0, 1) for a in arrays]
    return _narrow_lanes(arrays[0], lengths, arrays)[0] > 0


def forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out, final=None):
    """``recurrence.forward_into`` with the time-parallel kernel (``act`` relu or identity; inputs validated)."""
    launch_forward(_forward_into, x, u, b, h0, lengths, reverse, act, batch_first, out, final)


def _forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out, final):
    write_final = final is not None
    if not write_final:
        final = np.empty((1, 1), dtype=u.dtype)  # a stand-in of the right type, never written
    if batch_first:  # time-major views: one compiled layout (a batch of one is still C-contiguous this way)
        x, out = np.swapaxes(x, 0, 1), np.swapaxes(out, 0, 1)
    G, seg = _narrow_lanes(x, lengths, (x, out))
    if G:
        return narrow.lanes_forward_into(x, u, b, h0, reverse, act, out, final if write_final else None, G, seg)
    forward(x, u, b, h0, lengths, reverse, act, out, final, write_final, *_config())


def backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0):
    """``recurrence.backward_into`` with the time-parallel kernel (any activation; inputs validated; ``grad_h``
    ``h``'s shape: a broadcast one is copied out, which is cheap at the few columns this kernel is chosen for)."""
    launch_backward(_backward_into, grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0)


def _backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0):
    if batch_first:
        grad_h, h, gx = np.swapaxes(grad_h, 0, 1), np.swapaxes(h, 0, 1), np.swapaxes(gx, 0, 1)
    G, seg = _narrow_lanes(h, lengths, (grad_h, h, gx))
    if G:
        return narrow.lanes_backward_into(grad_h, h, u, h0, reverse, act, grad_hn, gx, gu, gb, gh0, G, seg)
    backward(grad_h, h, u, h0, lengths, reverse, act, grad_hn, gx, gu, gb, gh0, *_config())


# (at the end: ``narrow`` imports this module's ``_apply_map``)
from .. import time_parallel as cfg  # noqa: E402  (read at every call: tests shrink the config)
from . import narrow  # noqa: E402
