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
from .._device_view import DeviceView, is_bfloat16
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


# ---- storage conversions ---------------------------------------------------------------------------------------
# Half-precision data (x, h, h0, gradients) are stored in float16 or bfloat16 and every value is converted to
# float32 on load and back on store: the math, the carried state and the gu/gb partials stay float32, so storage
# halves the memory traffic of a memory-bound kernel without float16 rounding compounding along the chain.
# float16 is a Numba type (loads cast, stores round to nearest even). bfloat16 is not (NumPy has none, numba-cuda's
# bf16 intrinsics do not exist in the simulator): it travels as its uint16 bit pattern and is converted here with
# integer operations, the same code on a GPU and in the simulator; only the 32-bit reinterpretation differs.
if _launch.SIMULATOR:
    @cuda.jit(device=True)
    def _f32_from_bits(bits):
        return np.uint32(bits).view(np.float32)

    @cuda.jit(device=True)
    def _bits_from_f32(value):
        return np.float32(value).view(np.uint32)
else:
    from numba.cuda import libdevice

    @cuda.jit(device=True, inline=True)
    def _f32_from_bits(bits):
        return libdevice.int_as_float(np.int32(bits))

    @cuda.jit(device=True, inline=True)
    def _bits_from_f32(value):
        return np.uint32(libdevice.float_as_int(value))


@cuda.jit(device=True, inline=True)
def _bf16_to_f32(bits):
    """bfloat16 is the top half of a float32: exact."""
    return _f32_from_bits(np.uint32(bits) << np.uint32(16))


@cuda.jit(device=True, inline=True)
def _f32_to_bf16(value):
    """float32 -> bfloat16 bits, rounding to nearest even (as torch does); NaN becomes the canonical quiet NaN
    (rounding its bits could carry into the sign or make it inf). Kept to a few operations and a select: one more
    and the compiler stopped unrolling the forward kernel's chain, leaving its CHUNK buffer in local memory."""
    b = _bits_from_f32(value)
    rounded = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return np.uint16(rounded if value == value else np.uint32(0x7FC0))


@cuda.jit(device=True, inline=True)
def _same(value):
    return value


@cuda.jit(device=True, inline=True)
def _f16_to_f32(value):
    return np.float32(value)


# Storage name -> (load conversion, store conversion). "native": float32/float64 data, math in the data type.
# The store conversion of float16 is the array's own (Numba and NumPy round a float32 stored into float16).
STORAGE_CONVERSIONS = {"native": (_same, _same), "float16": (_f16_to_f32, _same), "bfloat16": (_bf16_to_f32,
                                                                                                _f32_to_bf16)}


def _recurrence_kernels(to_math, to_storage):
    """The forward and backward kernels for one storage format: data arrays (x, h, h0, out, final, grad_h, gx,
    grad_hn, gh0) are converted with ``to_math`` on load and ``to_storage`` on store; ``u``, ``bias`` and ``part``
    are in the math dtype. One pair per format, compiled only when that format is first launched."""

    @cuda.jit
    def forward_kernel(x, u, bias, has_bias, h0, has_h0, lengths, has_lengths, reverse, act, batch_first, out,
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
        prev = to_math(h0[n, j]) if has_h0 else zero
        # Clamped: lengths given on the device during CUDA graph capture cannot be checked on the host.
        length = min(max(lengths[n], 0), T) if has_lengths else T
        # The recurrence is a chain of dependent steps, so one load in flight per thread leaves the GPU waiting on
        # memory latency. Load CHUNK steps of x first (they do not depend on h), then run the chain over them.
        # The chain writes its outputs to a second buffer, stored (and converted) by a loop of its own: with the
        # bfloat16 rounding inside the chain loop the compiler stopped unrolling it and kept the buffers in local
        # memory (sm_90 PTX, numba-cuda 0.30).
        xs = cuda.local.array(CHUNK, u.dtype)
        ys = cuda.local.array(CHUNK, u.dtype)
        full = length - length % CHUNK
        for s0 in range(0, full, CHUNK):
            for k in range(CHUNK):
                xs[k] = to_math(_load(x, batch_first, _visit_time(s0 + k, length, reverse), n, j))
            for k in range(CHUNK):
                prev = activate(xs[k] + uj * prev + bj, act, one)
                ys[k] = prev
            for k in range(CHUNK):
                _store(out, batch_first, _visit_time(s0 + k, length, reverse), n, j, to_storage(ys[k]))
        for s in range(full, length):
            t = _visit_time(s, length, reverse)
            prev = activate(to_math(_load(x, batch_first, t, n, j)) + uj * prev + bj, act, one)
            _store(out, batch_first, t, n, j, to_storage(prev))
        for s in range(length, T):  # padding
            _store(out, batch_first, s, n, j, to_storage(zero))
        if has_final:  # the last visited step's output, or h0 (zeros) when the sequence has no steps
            final[n, j] = to_storage(prev)

    @cuda.jit
    def backward_kernel(grad_h, h, u, h0, has_h0, lengths, has_lengths, reverse, act, batch_first, grad_hn,
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
        h0nj = to_math(h0[n, j]) if has_h0 else zero
        carry = to_math(grad_hn[n, j]) if has_grad_hn else zero  # dL/dh at the visited step, from later steps
        acc_u = zero
        acc_b = zero
        length = min(max(lengths[n], 0), T) if has_lengths else T
        for s in range(length, T):  # padding
            _store(gx, batch_first, s, n, j, to_storage(zero))
        # Visits run s = length-1 down to 0. Each needs grad_h at its step and h at the step visited before it in
        # the forward pass (h0 at s = 0); as in the forward kernel, a CHUNK of them is loaded before the chain.
        gs = cuda.local.array(CHUNK, u.dtype)
        hps = cuda.local.array(CHUNK, u.dtype)
        h_cur = (to_math(_load(h, batch_first, _visit_time(length - 1, length, reverse), n, j)) if length > 0
                 else zero)
        s_hi = length - 1
        while s_hi >= CHUNK - 1:
            for k in range(CHUNK):
                s = s_hi - k
                gs[k] = to_math(_load(grad_h, batch_first, _visit_time(s, length, reverse), n, j))
                hps[k] = (to_math(_load(h, batch_first, _visit_time(s - 1, length, reverse), n, j)) if s > 0
                          else h0nj)
            for k in range(CHUNK):
                g = (gs[k] + carry) * derivative_from_output(h_cur, act, one)
                _store(gx, batch_first, _visit_time(s_hi - k, length, reverse), n, j, to_storage(g))
                acc_u += g * hps[k]
                acc_b += g
                carry = g * uj
                h_cur = hps[k]  # the next visit's output is this visit's previous state
            s_hi -= CHUNK
        for s in range(s_hi, -1, -1):
            t = _visit_time(s, length, reverse)
            h_prev = to_math(_load(h, batch_first, _visit_time(s - 1, length, reverse), n, j)) if s > 0 else h0nj
            g = (to_math(_load(grad_h, batch_first, t, n, j)) + carry) * derivative_from_output(h_cur, act, one)
            _store(gx, batch_first, t, n, j, to_storage(g))
            acc_u += g * h_prev
            acc_b += g
            carry = g * uj
            h_cur = h_prev
        gh0[n, j] = to_storage(carry)
        part[0, n, j] = acc_u
        part[1, n, j] = acc_b

    return forward_kernel, backward_kernel


# ---- block-tiled kernels: loader warps stream tiles through shared memory, one warp runs the chain ---------------
# With one thread per column and few columns (B x H = 8192 is ~2 warps per SM on an H100/H200) each warp keeps only
# its CHUNK loads in flight, far fewer bytes than the memory system needs to reach its bandwidth: measured on an
# H200 (2026-11-27) the column kernels ran at 4.9-10x the HBM floor at B x H = 4096-8192 (1.2x at 262144). Here a
# block serves ``lanes`` columns with 1 + ``loaders`` groups of ``lanes`` threads. The loader groups load tile
# it+1 of every column (visits in order) into shared memory and store tile it-1's results from it, while group 0
# runs the dependent chain over tile it, reading and writing shared memory only; one barrier per tile. Two
# buffers suffice: each loader thread stores its slots of tile it-1 before loading the same slots of tile it+1.
# The step formulas are the column kernels', in the same order, so results are bit-identical to theirs.
TILE_SHARED_BYTES = 32 * 1024  # per block (of the 48 KB a block may use statically): 7 blocks fit an SM
CHAIN_UNROLL = 8  # the chain reads this many visits from shared memory ahead of its dependent steps
# Under the simulator (see tiled_geometry): each block's threads are Python threads that the simulator polls, so
# its time grows with the blocks and barriers; 8 lanes and 16/8-visit tiles took half the time of 4 and 8/4 at
# T=63, B*H=300, and short test sequences still cross tiles.
SIMULATOR_TILED_GEOMETRY = (8, 2, 16, 8)


def tiled_geometry(itemsize):
    """(lanes, loaders, forward tile, backward tile) for math values of ``itemsize`` bytes. A tile is the visits
    per column held in one buffer; each loader thread loads tile / loaders of them per array. Under the simulator
    the blocks are tiny (``SIMULATOR_TILED_GEOMETRY``) so short test sequences span several tiles."""
    if _launch.SIMULATOR:
        return SIMULATOR_TILED_GEOMETRY
    lanes, loaders = 32, 8
    forward_tile = TILE_SHARED_BYTES // (2 * lanes * itemsize)  # two buffers of x/h
    backward_tile = TILE_SHARED_BYTES // (4 * lanes * itemsize)  # two buffers each of grad_h/gx and h_prev
    return lanes, loaders, forward_tile, backward_tile


def _tiled_kernels(to_math, to_storage, lanes, loaders, forward_tile, backward_tile):
    """The block-tiled forward and backward kernels for one storage format and geometry (see above); launched with
    ``ceil(B*H / lanes)`` blocks of ``(1 + loaders) * lanes`` threads, taking the column kernels' arguments."""
    groups = 1 + loaders
    forward_per_loader = forward_tile // loaders
    backward_per_loader = backward_tile // loaders

    @cuda.jit(device=True, inline=True)
    def column(B, H, lengths, has_lengths, T):
        """(active, n, j, length, group, lane) of this thread; inactive lanes (past B*H) read column 0, write
        nothing, and have no visits."""
        tid = cuda.threadIdx.x
        group, lane = tid // lanes, tid % lanes
        i = cuda.blockIdx.x * lanes + lane
        active = i < B * H
        n, j = (i // H, i % H) if active else (0, 0)
        length = (min(max(lengths[n], 0), T) if has_lengths else T) if active else 0
        return active, n, j, length, group, lane

    @cuda.jit
    def forward_kernel(x, u, bias, has_bias, h0, has_h0, lengths, has_lengths, reverse, act, batch_first, out,
                       final, has_final):
        B, H = x.shape[0] if batch_first else x.shape[1], u.shape[0]
        T = x.shape[1] if batch_first else x.shape[0]
        active, n, j, length, group, lane = column(B, H, lengths, has_lengths, T)
        zero = u.dtype.type(0)
        one = u.dtype.type(1)
        buf = cuda.shared.array((2, forward_tile, lanes), u.dtype)
        xs = cuda.local.array(forward_per_loader, u.dtype)
        cs = cuda.local.array(CHAIN_UNROLL, u.dtype)
        slot = group - 1  # loader index: this thread's slots of a tile are slot, slot + loaders, ...
        uj = u[j]
        bj = bias[j] if has_bias else zero
        prev = to_math(h0[n, j]) if (has_h0 and active) else zero
        tiles = (T + forward_tile - 1) // forward_tile
        for it in range(-1, tiles):  # it = -1: the loaders' first load only
            cur = it % 2
            if group == 0:
                if it >= 0:
                    k = 0
                    stop = min(forward_tile, length - it * forward_tile)
                    while k + CHAIN_UNROLL <= stop:
                        for kk in range(CHAIN_UNROLL):
                            cs[kk] = buf[cur, k + kk, lane]
                        for kk in range(CHAIN_UNROLL):
                            prev = activate(cs[kk] + uj * prev + bj, act, one)
                            cs[kk] = prev
                        for kk in range(CHAIN_UNROLL):
                            buf[cur, k + kk, lane] = cs[kk]
                        k += CHAIN_UNROLL
                    while k < stop:
                        prev = activate(buf[cur, k, lane] + uj * prev + bj, act, one)
                        buf[cur, k, lane] = prev
                        k += 1
            else:
                other = 1 - cur
                if it >= 1:  # tile it-1's results, from the buffer tile it+1 goes into
                    for r in range(forward_per_loader):
                        s = (it - 1) * forward_tile + r * loaders + slot
                        if s < length:
                            _store(out, batch_first, _visit_time(s, length, reverse), n, j,
                                   to_storage(buf[other, r * loaders + slot, lane]))
                if it + 1 < tiles:  # branch-free loads (past the end: step 0, never used) so all are in flight
                    for r in range(forward_per_loader):
                        s = (it + 1) * forward_tile + r * loaders + slot
                        xs[r] = to_math(_load(x, batch_first, _visit_time(s, length, reverse) if s < length
                                              else 0, n, j))
                    for r in range(forward_per_loader):
                        buf[other, r * loaders + slot, lane] = xs[r]
            cuda.syncthreads()
        if group > 0 and tiles > 0:  # the last tile's results
            for r in range(forward_per_loader):
                s = (tiles - 1) * forward_tile + r * loaders + slot
                if s < length:
                    _store(out, batch_first, _visit_time(s, length, reverse), n, j,
                           to_storage(buf[(tiles - 1) % 2, r * loaders + slot, lane]))
        if active:
            for s in range(length + group, T, groups):  # padding
                _store(out, batch_first, s, n, j, to_storage(zero))
            if group == 0 and has_final:
                final[n, j] = to_storage(prev)

    @cuda.jit
    def backward_kernel(grad_h, h, u, h0, has_h0, lengths, has_lengths, reverse, act, batch_first, grad_hn,
                        has_grad_hn, gx, part, gh0):
        B, H = gh0.shape[0], u.shape[0]
        T = h.shape[1] if batch_first else h.shape[0]
        active, n, j, length, group, lane = column(B, H, lengths, has_lengths, T)
        zero = u.dtype.type(0)
        one = u.dtype.type(1)
        # Backward visit v is forward visit s = length-1-v; it needs grad_h at s and h at s-1 (h0 at s = 0).
        gbuf = cuda.shared.array((2, backward_tile, lanes), u.dtype)  # grad_h in, gx out
        hbuf = cuda.shared.array((2, backward_tile, lanes), u.dtype)  # the previous state of each visit
        gs = cuda.local.array(backward_per_loader, u.dtype)
        hs = cuda.local.array(backward_per_loader, u.dtype)
        cg = cuda.local.array(CHAIN_UNROLL, u.dtype)
        ch = cuda.local.array(CHAIN_UNROLL, u.dtype)
        slot = group - 1
        uj = u[j]
        h0nj = to_math(h0[n, j]) if (has_h0 and active) else zero
        carry = to_math(grad_hn[n, j]) if (has_grad_hn and active) else zero
        h_cur = (to_math(_load(h, batch_first, _visit_time(length - 1, length, reverse), n, j))
                 if (group == 0 and length > 0) else zero)
        acc_u = zero
        acc_b = zero
        tiles = (T + backward_tile - 1) // backward_tile
        for it in range(-1, tiles):
            cur = it % 2
            if group == 0:
                if it >= 0:
                    k = 0
                    stop = min(backward_tile, length - it * backward_tile)
                    while k + CHAIN_UNROLL <= stop:
                        for kk in range(CHAIN_UNROLL):
                            cg[kk] = gbuf[cur, k + kk, lane]
                            ch[kk] = hbuf[cur, k + kk, lane]
                        for kk in range(CHAIN_UNROLL):
                            g = (cg[kk] + carry) * derivative_from_output(h_cur, act, one)
                            cg[kk] = g
                            acc_u += g * ch[kk]
                            acc_b += g
                            carry = g * uj
                            h_cur = ch[kk]
                        for kk in range(CHAIN_UNROLL):
                            gbuf[cur, k + kk, lane] = cg[kk]
                        k += CHAIN_UNROLL
                    while k < stop:
                        g = (gbuf[cur, k, lane] + carry) * derivative_from_output(h_cur, act, one)
                        gbuf[cur, k, lane] = g
                        acc_u += g * hbuf[cur, k, lane]
                        acc_b += g
                        carry = g * uj
                        h_cur = hbuf[cur, k, lane]
                        k += 1
            else:
                other = 1 - cur
                if it >= 1:
                    for r in range(backward_per_loader):
                        s = length - 1 - ((it - 1) * backward_tile + r * loaders + slot)
                        if s >= 0:
                            _store(gx, batch_first, _visit_time(s, length, reverse), n, j,
                                   to_storage(gbuf[other, r * loaders + slot, lane]))
                if it + 1 < tiles:
                    for r in range(backward_per_loader):
                        s = length - 1 - ((it + 1) * backward_tile + r * loaders + slot)
                        gs[r] = to_math(_load(grad_h, batch_first, _visit_time(s, length, reverse) if s >= 0
                                              else 0, n, j))
                        hp = to_math(_load(h, batch_first, _visit_time(s - 1, length, reverse) if s >= 1
                                           else 0, n, j))
                        hs[r] = hp if s >= 1 else h0nj
                    for r in range(backward_per_loader):
                        gbuf[other, r * loaders + slot, lane] = gs[r]
                        hbuf[other, r * loaders + slot, lane] = hs[r]
            cuda.syncthreads()
        if group > 0 and tiles > 0:
            for r in range(backward_per_loader):
                s = length - 1 - ((tiles - 1) * backward_tile + r * loaders + slot)
                if s >= 0:
                    _store(gx, batch_first, _visit_time(s, length, reverse), n, j,
                           to_storage(gbuf[(tiles - 1) % 2, r * loaders + slot, lane]))
        if active:
            for s in range(length + group, T, groups):  # padding
                _store(gx, batch_first, s, n, j, to_storage(zero))
            if group == 0:
                gh0[n, j] = to_storage(carry)
                part[0, n, j] = acc_u
                part[1, n, j] = acc_b

    return forward_kernel, backward_kernel


_TILED_BY_FORMAT = {}  # (storage, math itemsize) -> (forward kernel, backward kernel, lanes, threads per block)


def tiled_kernels(storage, itemsize):
    """(forward kernel, backward kernel, lanes, threads per block) of the block-tiled kernels."""
    key = (storage, itemsize)
    found = _TILED_BY_FORMAT.get(key)
    if found is None:
        lanes, loaders, forward_tile, backward_tile = tiled_geometry(itemsize)
        found = _TILED_BY_FORMAT[key] = (*_tiled_kernels(*STORAGE_CONVERSIONS[storage], lanes, loaders,
                                                         forward_tile, backward_tile), lanes, (1 + loaders) * lanes)
    return found


_KERNELS_BY_STORAGE = {}  # storage name -> (forward kernel, backward kernel)


def recurrence_kernels(storage):
    """(forward kernel, backward kernel) for storage "native", "float16" or "bfloat16"."""
    kernels = _KERNELS_BY_STORAGE.get(storage)
    if kernels is None:
        kernels = _KERNELS_BY_STORAGE[storage] = _recurrence_kernels(*STORAGE_CONVERSIONS[storage])
    return kernels


_forward_kernel, _backward_kernel = recurrence_kernels("native")


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
    T = h.shape[1] if batch_first else h.shape[0]
    length = min(max(lengths[n], 0), T) if has_lengths else T
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
    dtype = np.dtype(dtype)
    if is_bfloat16(dtype):  # Numba has no bfloat16: its bits, presented as bfloat16
        return _launch.retag(cuda.device_array(shape, dtype=np.uint16, stream=_launch.stream_pair(stream)[0]), dtype)
    return cuda.device_array(shape, dtype=dtype, stream=_launch.stream_pair(stream)[0])


def copy_to_host(a):
    return _launch.numba_array(_launch.view(a)).copy_to_host()


def is_capturing(stream=None):
    """Whether ``stream`` (as the launchers take it) is being captured into a CUDA graph."""
    return _launch.is_capturing(_launch.stream_pair(stream))


def storage_of(dtype):
    """The kernels' storage format for data of ``dtype``: "native", "float16" or "bfloat16"."""
    if is_bfloat16(dtype):
        return "bfloat16"
    return "float16" if dtype == np.float16 else "native"


def _grid(n_threads):
    tpb = int(config.THREADS_PER_BLOCK)
    return max(1, (n_threads + tpb - 1) // tpb), tpb


def _sequential(storage, math_dtype, columns, which):
    """(kernel, blocks, threads per block) of the sequential forward (``which`` 0) or backward (1) kernel for
    ``columns`` = B x H: block-tiled up to ``config.TILED_MAX_COLUMNS``, one thread per column above."""
    if columns <= config.TILED_MAX_COLUMNS:
        kernels = tiled_kernels(storage, math_dtype.itemsize)
        lanes, tpb = kernels[2], kernels[3]
        return kernels[which], (columns + lanes - 1) // lanes, tpb
    return (recurrence_kernels(storage)[which], *_grid(columns))


_ZEROS = {}  # (CUDA context, dtype, ndim) -> a read-only 1-element zero array standing in for an absent input


def _placeholder(a, dtype, ndim, ctx, anchor=None):
    """(array, present) for an optional input; the kernels read an absent one never (a flag says it is absent),
    but Numba needs an array of the right type in its place. On a GPU with a present array ``anchor`` it is a view
    of one element of ``anchor``'s memory (typed ``dtype``, ``ndim``-D, never read or written): no allocation, which
    CUDA graph capture forbids. Otherwise one zero array per CUDA context and dtype, allocated once: an allocation
    and a host-to-device copy per call cost more than a short sequence's kernels."""
    if a is not None:
        return a, True
    dtype = np.dtype(dtype)
    if type(anchor) is DeviceView and anchor.ptr:
        return DeviceView(anchor.ptr, (1,) * ndim, (dtype.itemsize,) * ndim, dtype, True, anchor.owner), False
    key = (ctx, dtype.str, ndim)
    if key not in _ZEROS:
        _ZEROS[key] = _launch.view(cuda.to_device(np.zeros((1,) * ndim, dtype=dtype)))
    return _ZEROS[key], False


def _device_lengths(lengths, T, stream, ctx, anchor=None):
    """(device lengths, present). ``lengths``: a host int64 [B] array (values checked; no copy when every sequence
    runs all ``T`` steps, the common case) or an int64 device array (used as it is: the kernels clamp it)."""
    if not isinstance(lengths, np.ndarray):
        return lengths, True
    if lengths.size == 0 or lengths.min() == T:
        return _placeholder(None, np.int64, 1, ctx, anchor)
    if _launch.is_capturing(stream):
        raise ValueError("lengths: during CUDA graph capture lengths must be an int64 CUDA array (a host array "
                         "would be copied to the device inside the graph, from memory the graph does not own)")
    return _launch.view(cuda.to_device(lengths, stream=stream[0])), True


def forward_into(x, u, b, h0, lengths, reverse, act, batch_first, out, final=None, stream=None):
    """Fill device array ``out`` (``x``'s shape) with the recurrence, and ``final`` [B, H] (when given) with each
    sequence's final state; see ``indrnn_core.cpu.forward_into``. Arrays come from :func:`as_device_array`; data
    (x, h0, out, final) may be float16/bfloat16 with ``u``/``b`` float32. ``lengths``: host int64 [B] (checked) or
    an int64 device array."""
    stream, ctx = _launch.stream_pair(stream), _launch.context_handle()
    T, B = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    H = u.shape[0]
    if B * H == 0:
        return
    storage = storage_of(np.dtype(x.dtype))
    x, h0, out, final = _launch.storage_views(x.dtype, (x, h0, out, final))
    b, has_b = _placeholder(b, u.dtype, 1, ctx, u)
    h0, has_h0 = _placeholder(h0, x.dtype, 2, ctx, x)
    d_lengths, has_lengths = _device_lengths(lengths, T, stream, ctx, u)
    final, has_final = _placeholder(final, x.dtype, 2, ctx, out)
    kernel, blocks, tpb = _sequential(storage, u.dtype, B * H, 0)
    _launch.launch(kernel, blocks, tpb, stream,
                   (x, u, b, has_b, h0, has_h0, d_lengths, has_lengths, reverse, act, batch_first, out, final,
                    has_final), u.dtype, ctx)


def backward_into(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0, stream=None,
                  workspace=None):
    """Fill device arrays ``gx``, ``gu``, ``gb``, ``gh0``; see ``indrnn_core.cpu.backward_into``. Data (grad_h, h,
    h0, grad_hn, gx, gh0) may be float16/bfloat16 with ``u``, ``gu``, ``gb`` float32. ``workspace``: a [2, B, H]
    device array of ``u``'s dtype for the partial sums, or None to allocate one."""
    stream, ctx = _launch.stream_pair(stream), _launch.context_handle()
    T, B = (h.shape[1], h.shape[0]) if batch_first else (h.shape[0], h.shape[1])
    H = u.shape[0]
    if H == 0:
        return
    storage = storage_of(np.dtype(h.dtype))
    grad_h, h, h0, grad_hn, gx, gh0 = _launch.storage_views(h.dtype, (grad_h, h, h0, grad_hn, gx, gh0))
    h0, has_h0 = _placeholder(h0, h.dtype, 2, ctx, gh0)
    grad_hn, has_grad_hn = _placeholder(grad_hn, h.dtype, 2, ctx, gh0)
    d_lengths, has_lengths = _device_lengths(lengths, T, stream, ctx, u)
    # Partials accumulate in u's dtype (float32 at least): one per column, summed afterwards in fixed order.
    if workspace is None:
        workspace = _launch.view(cuda.device_array((2, B, H), dtype=u.dtype, stream=stream[0]))
    if B > 0:
        kernel, blocks, tpb = _sequential(storage, u.dtype, B * H, 1)
        _launch.launch(kernel, blocks, tpb, stream,
                       (grad_h, h, u, h0, has_h0, d_lengths, has_lengths, reverse, act, batch_first, grad_hn,
                        has_grad_hn, gx, workspace, gh0), u.dtype, ctx)
    blocks, tpb = _grid(H)
    _launch.launch(_sum_rows_kernel, blocks, tpb, stream, (workspace, gu, gb), u.dtype, ctx)


def final_state_into(h, h0, lengths, reverse, batch_first, out, stream=None):
    """Each sequence's final state into ``out`` [B, H]; a copy, so bfloat16 travels as its bits."""
    stream, ctx = _launch.stream_pair(stream), _launch.context_handle()
    T = h.shape[1] if batch_first else h.shape[0]
    B, H = out.shape
    if B * H == 0:
        return
    h, h0, out = _launch.storage_views(h.dtype, (h, h0, out))
    h0, has_h0 = _placeholder(h0, h.dtype, 2, ctx, out)
    d_lengths, has_lengths = _device_lengths(lengths, T, stream, ctx, out)
    blocks, tpb = _grid(B * H)
    _launch.launch(_final_state_kernel, blocks, tpb, stream,
                   (h, h0, has_h0, d_lengths, has_lengths, reverse, batch_first, out), h.dtype, ctx)
