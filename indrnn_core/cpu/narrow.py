"""Kernels for few columns (``C = B*H`` small) and long sequences: many independent lanes side by side.

The general kernels (``recurrence``, ``scan``) keep a step's state in arrays and loop over H inside each step: with
a row of 1 or 16 elements, every step pays the loop's set-up and a round trip of the state through memory (measured
here: ~35 ns a step at H=1), and LLVM's vectorised loop body (32 floats) never runs on a row of 16. These kernels
work on blocks of independent *lanes* at once, so the compiler vectorises each step across the lanes:

* ``rows`` (sequential, ``C`` a multiple of 16): a lane is a column; a block is ``W = 16`` consecutive columns of a
  row, so each step is one contiguous 64-byte load and store per array; the 16 states are scalar variables (kept in
  registers, vectorised by LLVM's SLP pass), generated code (below). Blocks run in parallel when there are several.
* ``lanes`` (time-parallel, ``C`` in 1, 2, 4, 8): a lane is one column of one segment (``indrnn_core.cpu.scan``'s
  segments). Two passes over the data instead of the scan's maps-then-runs (four): pass 1 runs every segment from a
  guessed start, writing its results, and composes the segment's map on the way; the boundaries (serial) give each
  segment's true start; pass 2 reruns each segment from it only until its chain meets the provisional one (see
  "the lanes kernels' two passes" below). A block of lanes (pass 1: 16 forward, 32 at C = 1 and in the backward,
  generated code with the state in registers, like the rows kernels; pass 2: ``LANES`` = 64) copies a tile of visits
  at a time, one lane per column, and runs the step formulas along the tile's rows. Tiles move by transposed blocks
  through vector shuffles (``_llvm.transpose_copy_<C>``, LLVM intrinsics): a segment's visits are contiguous rows
  of C columns, so a block of 16 / C segments and 16 / C visits (float32) is a transpose whose units are a visit's
  C columns. Visits short of a multiple of 16 go element by element.

The generated code (rows kernels, lanes pass 1) is the templates below expanded, a copy of each statement per lane
and a function per activation, in ``_narrow_generated.py``, whose compiled kernels Numba caches as it does the
others.

Each lane runs the sequential kernels' own step formulas (and, for maps, ``scan``'s composition), so the results
equal theirs within float rounding (bit for bit those of the lanes kernels' earlier maps-then-runs form), and the
work split never depends on the thread count (gu, gb are summed in a fixed order). Only the fast case comes here
(``eligible``): time-major contiguous arrays (batch-first with B = 1 is the same memory), every sequence of full
length; anything else takes the general kernels.
"""

from pathlib import Path

import numpy as np
from numba import njit, prange

from .. import _activations as A
from ._llvm import transpose_copy_1, transpose_copy_2, transpose_copy_4, transpose_copy_8
from .scan import _apply_map

W = 16  # lanes per block: one AVX-512 register of float32, two of AVX2
ROW_MAX_COLUMNS = 64  # the rows kernels take C = 16, 32, 48, 64 (more columns vectorise in the general kernels)
_ACTIVATION_NAMES = {A.ACT_RELU: "relu", A.ACT_TANH: "tanh", A.ACT_SIGMOID: "sigmoid", A.ACT_IDENTITY: "identity"}


def _expand(template: str, names: dict, width: int = W) -> str:
    """Each line holding ``{w}`` becomes ``width`` lines (lane 0..width-1), other lines are kept; ``{W}`` is
    ``width``, and each other ``{key}`` is ``names[key]``."""
    out = []
    for line in template.splitlines():
        for key, value in names.items():
            line = line.replace("{" + key + "}", value)
        line = line.replace("{W}", str(width))
        if "{w}" in line:
            out += [line.replace("{w}", str(w)) for w in range(width)]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


GENERATED_MODULE = Path(__file__).with_name("_narrow_generated.py")

# Called, not inlined: the generated code calls the step's helpers (activations, derivatives, flush_subnormal, the
# map compositions) once per lane and row. As ``inline="always"`` functions (how ``_activations`` declares them for
# the other kernels) Numba copied each call's IR into the kernel, and its own passes (SSA, liveness, type
# inference) grew faster than the copies: a backward pass-1 kernel of 32 lanes compiled in ~27 s, a forward one in
# ~21 s. As ordinary Numba functions (``njit`` of the same Python function) each call stays one IR statement, and
# LLVM inlines them before its SLP vectoriser runs: the same results bit for bit, the same speed (`python -m
# benchmarks.compare_revisions e35afe4 seq1 seq16 --time-parallel auto --split`: fwd, bwd 0.98-1.02x; AMD EPYC,
# 2026-11-28), ~7-10 s and ~5-7 s to compile.
_CALLED = {**{n: f"A.{n}" for a in _ACTIVATION_NAMES.values() for n in (a, f"{a}_derivative")},
           "flush_subnormal": "A.flush_subnormal", "compose_relu_lanes": "N._compose_relu_lanes",
           "compose_relu_positive": "N._compose_relu_positive", "compose_identity_lanes": "N._compose_identity_lanes"}


def generated_source() -> str:
    """The text of ``_narrow_generated.py``: the rows templates and the lanes kernels' pass-1 templates below,
    expanded for every activation. A file (not code made at run time) so that Numba caches the compiled kernels as
    it does the others: compiling the eight rows kernels took ~20 s in every process before.
    ``write_generated_module`` rewrites it; a test checks that it is up to date."""
    parts = ['"""The rows kernels and the lanes kernels\' pass 1 of ``indrnn_core.cpu.narrow``, generated from its\n'
             'templates by ``narrow.write_generated_module()``: do not edit (a test checks that this file is up to\n'
             'date)."""\n\n'
             "import numpy as np\nfrom numba import njit, prange\n\nfrom .. import _activations as A\n"
             "from . import narrow as N\n"
             "from .narrow import SUM_ROWS, _h_tile_in, _ix, _rows_sum64, _tile_in, _tile_out\n\n"
             "# the step's helpers as ordinary calls, which LLVM inlines (narrow.py: \"called, not inlined\")\n"
             + "".join(f"{name} = njit({source}.py_func)\n" for name, source in _CALLED.items())]
    for template in (_ROWS_FORWARD, _ROWS_BACKWARD, _LANES_BACKWARD_FIRST):
        width = BACKWARD_FIRST_LANES if template is _LANES_BACKWARD_FIRST else W
        for act, name in _ACTIVATION_NAMES.items():
            names = {"act": name, "f": name, "df": f"{name}_derivative"}
            parts.append("\n\n@njit(parallel=True, cache=True)" + _expand(template, names, width).rstrip() + "\n")
    for width in (W, FORWARD_FIRST_LANES_C1):
        for kind, (f, compose) in _FORWARD_KINDS.items():
            names = {"kind": _forward_first_name(kind, width), "f": f, "compose": compose}
            parts.append("\n\n@njit(parallel=True, cache=True)"
                         + _expand(_LANES_FORWARD_FIRST, names, width).rstrip() + "\n")
    return "".join(parts)


def _forward_first_name(kind: str, width: int) -> str:
    """The forward pass-1 kernels' name suffix: the kind, and the lanes per block when not W."""
    return kind if width == W else f"{kind}_w{width}"


def write_generated_module() -> None:
    """Rewrite ``_narrow_generated.py`` after a change to the templates:
    ``python -c "from indrnn_core.cpu import narrow; narrow.write_generated_module()"``."""
    GENERATED_MODULE.write_text(generated_source())


class _WithSLP:
    """A dispatcher whose compilations run LLVM's SLP vectoriser (Numba leaves it off by default, and reads the
    setting when it builds a module's passes): it is what turns the W copies of a statement into vector
    instructions. The setting is on around every call (two attribute writes; working out whether the call will
    compile costs more)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def __call__(self, *args):
        from numba.core import config

        old = config.SLP_VECTORIZE
        config.SLP_VECTORIZE = 1
        try:
            return self.dispatcher(*args)
        finally:
            config.SLP_VECTORIZE = old


# ---- rows: sequential, 16 consecutive columns per block -------------------------------------------------------
# Flat time-major arrays: element (t, c) at t*C + c. Loads of a step come before its stores, so the compiler may
# vectorise them (the arrays could alias as far as it knows).
_ROWS_FORWARD = """
def rows_forward_{act}(x, u, b, h0, out, final, T, C, reverse):
    one = u.dtype.type(1)
    dt = u.dtype.type
    step = -C if reverse else C
    start = (T - 1) * C if reverse else 0
    for blk in prange(C // {W}):
        c0 = blk * {W}
        u{w} = u[c0 + {w}]
        b{w} = b[c0 + {w}]
        s{w} = h0[c0 + {w}]
        o = start + c0
        for s in range(T):
            xr = x[o:o + {W}]
            orow = out[o:o + {W}]
            a{w} = xr[{w}]
            s{w} = dt({f}(a{w} + u{w} * s{w} + b{w}, one))
            orow[{w}] = s{w}
            o += step
        final[c0 + {w}] = s{w}
"""

_ROWS_BACKWARD = """
def rows_backward_{act}(grad_h, h, u, h0, grad_hn, gx, part_u, part_b, gh0, T, C, reverse):
    one = u.dtype.type(1)
    dt = u.dtype.type
    tiny = u.dtype.type(np.finfo(u.dtype).tiny)
    step = -C if reverse else C
    last = 0 if reverse else (T - 1) * C
    for blk in prange(C // {W}):
        c0 = blk * {W}
        u{w} = u[c0 + {w}]
        cy{w} = grad_hn[c0 + {w}]
        pu{w} = 0.0
        pb{w} = 0.0
        o = last + c0
        hcy{w} = h[o + {w}]
        for s in range(T - 1, 0, -1):
            p = o - step
            gr = grad_h[o:o + {W}]
            hr = h[p:p + {W}]
            xr = gx[o:o + {W}]
            g{w} = gr[{w}]
            hp{w} = hr[{w}]
            v{w} = (g{w} + cy{w}) * {df}(hcy{w}, one)
            xr[{w}] = v{w}
            pu{w} += v{w} * hp{w}
            pb{w} += v{w}
            cy{w} = flush_subnormal(v{w} * u{w}, tiny)
            hcy{w} = hp{w}
            o = p
        if T > 0:
            v{w} = (grad_h[o + {w}] + cy{w}) * {df}(hcy{w}, one)
            gx[o + {w}] = v{w}
            pu{w} += v{w} * h0[c0 + {w}]
            pb{w} += v{w}
            cy{w} = flush_subnormal(v{w} * u{w}, tiny)
        gh0[c0 + {w}] = cy{w}
        part_u[c0 + {w}] = pu{w}
        part_b[c0 + {w}] = pb{w}
"""

# ---- lanes, pass 1: generated like the rows kernels, 16 or 32 lanes per block ---------------------------------------
# Pass 1 (see "the lanes kernels' two passes" below) reads and writes every element, so it is most of the lanes
# kernels' time. A block of W lanes (BACKWARD_FIRST_LANES in the backward) keeps their state in scalar variables
# (registers, vectorised by SLP, as in the rows kernels) and runs the step formulas down a [visits, lanes] tile.
# Against the 64-lane form of pass 2 below (state in an array), AMD EPYC (Zen 4), T = 10^6, B = H = 1, results
# bit-identical (16 lanes in both passes: `python -m
# benchmarks.compare_revisions e0fdd84 seq1 --time-parallel auto --split`, 2026-11-28, with relu's cheaper select
# in `_activations`): forward 0.79x the time on two threads and 0.78x on one, backward 0.88x and 0.92x. Why: the
# state's round trip through memory at every step is gone (stores bounded that loop), and a block reads 16
# segments at a time instead of 64, whose streams the caches' prefetchers follow better (the transposed copies
# alone, 16 lanes x 64 visits: 0.63x the time of 64 lanes x 32 visits, an ad-hoc probe). Each block body is a
# function of its own, called from a small parallel loop: Numba's parallel passes copy a loop's whole body many
# times, and with the body inside, a first forward call (one kernel per phase) compiled in 35 s instead of 16.
# Visits per pass-1 tile, a run-time argument (``first_tile_visits``). Longer tiles, fewer restarts of each lane's
# stream: a tile reads FIRST_TILE_BYTES of every lane's visits at C = 1. Against 64 visits (AMD EPYC, float32,
# T = 10^6, pass 1 alone, variants alternating in one process, 2026-11-28; ad-hoc probes), the backward at 32 lanes
# took 0.79x the time with 1024 visits at H = 1 (256: 0.86x, 512: 0.81x, 2048: 0.83x), 0.72x at H = 2, 0.74x at
# H = 4 and 0.75x at H = 8; the forward at 16 lanes 0.86x at H = 1 and 0.95x at H = 2 but 1.09x at H = 4 and 1.38x
# at H = 8 (128 visits: 1.10x), so the forward takes long tiles only at C <= 2. 1024 float32 visits of 32 lanes
# are two 128 KB tiles, in L2.
FIRST_TILE_BYTES = 4096
FIRST_TILE = 64  # visits per forward pass-1 tile at C > 2
# Lanes per block in the forward's pass 1 at C = 1 (W elsewhere): the backward's reason (two registers' worth of
# independent chains overlap each step's latency). Pass 1 alone at T = 10^6, B = H = 1, variants alternating in one
# process (AMD EPYC, float32, 2026-11-28, an ad-hoc probe; bit-identical): 0.90x the time of 16 lanes. At C = 2
# and 8 it was slower (1.11x, 1.42x: fewer segments per lane's tile, and more tiles in flight), so they keep W.
# float32 only: 16 float64 lanes already fill two registers (and the suite compiles three kernels fewer per run).
FORWARD_FIRST_LANES_C1 = 32
# The backward's step is a longer chain (~25 vector operations for 16 lanes, its carry's latency ~14 cycles): 32
# lanes, two independent chains of registers, overlap it. Against 16 lanes (AMD EPYC, `python -m
# benchmarks.compare_revisions 67b6e84 seq1 1000000,1,2 1000000,1,8 --time-parallel auto --split`, 2026-11-28,
# with the rows indexed without slices), backward 0.89-0.93x the time at H = 1, 0.90-0.92x at H = 2, 0.82-0.84x at
# H = 8, bit-identical. The cost: each backward kernel compiles in ~19 s instead of ~9 s. The forward takes 32
# lanes at C = 1 only (FORWARD_FIRST_LANES_C1).
BACKWARD_FIRST_LANES = 32
# A lane's gu, gb terms (gx * h before, gx) are summed in the data's dtype over SUM_ROWS rows of a tile, and each
# such partial is added to the lane's float64 sums (as ``recurrence`` does every 64 steps): a float64 sum of every
# term took two conversions and two float64 additions per term and sum, most of the step's vector operations.
# Against that (`python -m benchmarks.compare_revisions d87caf0 <shapes> --time-parallel auto --split`, AMD EPYC,
# 2026-11-28): float32 backward 0.920x the time at T = 10^6, B = H = 1, 0.933x at H = 2, 0.935x at H = 4, 0.943x
# at B = 8; float64 1.01-1.02x. A float32 partial adds at most SUM_ROWS roundings relative to its terms (the
# tests' tolerance is ROUNDINGS_PER_STEP * eps * T). When a block's partials overflow (or hold a NaN), its lanes'
# terms of those rows are summed again from the tile in float64 (``_rows_sum64``), so terms of +-3e38 cannot turn
# a finite float64 sum into inf. The cost: each backward pass-1 kernel compiles in ~27 s instead of ~19 s.
# Partials start at multiples of SUM_ROWS visits from the segment's end, in every tile length that is a multiple
# of it, so the tile length still does not change the bits.
SUM_ROWS = 16

# Pass 1 of the forward, a function per kind (``_FORWARD_KINDS``): every lane's segment from ``init``, the
# provisional h into ``out``, and its map h -> clip(mk*h + mm, mlo, mhi) composed with ``{compose}``.
_LANES_FORWARD_FIRST = """
def lanes_forward_first_{kind}(x, lu, lb, base, stride, step, seg, tv, init, mk, mm, mlo, mhi, out):
    for blk in prange(base.shape[0] // {W}):
        l0 = blk * {W}
        lanes_forward_first_block_{kind}(x, lu, lb, base, stride, step, seg, tv, init, mk, mm, mlo, mhi, out,
                                         l0)


@njit(cache=True)
def lanes_forward_first_block_{kind}(x, lu, lb, base, stride, step, seg, tv, init, mk, mm, mlo, mhi, out,
                                     l0):
    dt = lu.dtype.type
    zero, one = dt(0), dt(1)
    tiny = dt(np.finfo(lu.dtype).tiny)
    tile = np.empty(tv * {W}, lu.dtype)
    u{w} = lu[l0 + {w}]
    b{w} = lb[l0 + {w}]
    h{w} = init[l0 + {w}]
    k{w} = one
    m{w} = zero
    lo{w} = dt(-np.inf)
    hi{w} = dt(np.inf)
    for i0 in range(0, seg, tv):
        n = min(tv, seg - i0)
        _tile_in(x, base, l0, i0, stride, n, step, tile, {W}, 0)
        for i in range(n):
            r = _ix(i * {W})
            xv{w} = tile[r + {w}]
            k{w}, m{w}, lo{w}, hi{w} = {compose}(k{w}, m{w}, lo{w}, hi{w}, u{w}, xv{w} + b{w}, zero, tiny)
            h{w} = {f}(xv{w} + u{w} * h{w} + b{w}, one)
            tile[r + {w}] = h{w}
        _tile_out(tile, {W}, base, l0, i0, stride, n, step, out)
    mk[l0 + {w}] = k{w}
    mm[l0 + {w}] = m{w}
    mlo[l0 + {w}] = lo{w}
    mhi[l0 + {w}] = hi{w}
"""

# Pass 1 of the backward, a function per activation: every lane's segment from the carry ``init``, the provisional
# gx into ``gx`` and the gu, gb partial sums (float64, in visit order, latest first) into ``part_u``, ``part_b``, and
# its map carry -> ma*carry + mm (``ma``: the product of u * act'; ``mm``: the carry out of the segment from
# ``init``, which is the true one for the last segment).
_LANES_BACKWARD_FIRST = """
def lanes_backward_first_{act}(grad_h, h, gx, lu, base, stride, step, seg, tv, init, first, ma, mm, part_u, part_b):
    for blk in prange(base.shape[0] // {W}):
        l0 = blk * {W}
        lanes_backward_first_block_{act}(grad_h, h, gx, lu, base, stride, step, seg, tv, init, first, ma, mm,
                                         part_u, part_b, l0)


@njit(cache=True)
def lanes_backward_first_block_{act}(grad_h, h, gx, lu, base, stride, step, seg, tv, init, first, ma, mm, part_u,
                                     part_b, l0):
    dt = lu.dtype.type
    one = dt(1)
    tiny = dt(np.finfo(lu.dtype).tiny)
    zero = dt(0)
    inf = dt(np.inf)
    gt = np.empty(tv * {W}, lu.dtype)
    ht = np.empty((tv + 1) * {W}, lu.dtype)
    u{w} = lu[l0 + {w}]
    cy{w} = init[l0 + {w}]
    a{w} = one
    pu{w} = 0.0
    pb{w} = 0.0
    redo = np.zeros((2, {W}))  # float64 sums of the rows whose partials overflowed (see SUM_ROWS)
    for t in range((seg + tv - 1) // tv):
        i0 = max(seg - (t + 1) * tv, 0)
        n = seg - t * tv - i0
        _tile_in(grad_h, base, l0, i0, stride, n, step, gt, {W}, 0)
        _h_tile_in(h, base, l0, i0, stride, n, step, first, ht, {W})
        for k0 in range(0, n, SUM_ROWS):
            k1 = min(k0 + SUM_ROWS, n)
            qu{w} = zero
            qb{w} = zero
            for ii in range(k0, k1):
                r = _ix((n - 1 - ii) * {W})
                d{w} = {df}(ht[r + {W} + {w}], one)
                v{w} = (gt[r + {w}] + cy{w}) * d{w}
                gt[r + {w}] = v{w}
                qu{w} += v{w} * ht[r + {w}]
                qb{w} += v{w}
                cy{w} = flush_subnormal(v{w} * u{w}, tiny)
                a{w} = flush_subnormal(a{w} * d{w} * u{w}, tiny)
            finite = True
            finite = finite & (abs(qu{w}) < inf) & (abs(qb{w}) < inf)
            if finite:
                pu{w} += np.float64(qu{w})
                pb{w} += np.float64(qb{w})
            else:  # a partial overflowed (or holds a NaN): these rows' terms again, summed in float64
                _rows_sum64(gt, ht, n, k0, k1, {W}, redo)
        _tile_out(gt, {W}, base, l0, i0, stride, n, step, gx)
    ma[l0 + {w}] = a{w}
    mm[l0 + {w}] = cy{w}
    part_u[l0 + {w}] = pu{w} + redo[0, {w}]
    part_b[l0 + {w}] = pb{w} + redo[1, {w}]
"""


@njit(cache=True)
def _rows_sum64(gt, ht, n, k0, k1, width, redo):
    """Adds to ``redo`` [2, width] each lane's gu, gb terms of tile rows n-1-k0 down to n-k1, summed in float64.
    (One call for the block, not a branch per lane: those made each backward kernel compile ~25 s longer.)"""
    for lane in range(width):
        su = 0.0
        sb = 0.0
        for ii in range(k0, k1):
            r = (n - 1 - ii) * width + lane
            su += np.float64(gt[r] * ht[r])
            sb += np.float64(gt[r])
        redo[0, lane] += su
        redo[1, lane] += sb


def first_tile_visits(seg: int, C: int, itemsize: int, backward: bool) -> int:
    """Visits per pass-1 tile (``FIRST_TILE_BYTES``): never more than a segment's."""
    visits = FIRST_TILE_BYTES // itemsize if backward or C <= 2 else FIRST_TILE
    return max(1, min(visits, seg))


# the forward's pass 1 per kind: (step function, map composition)
_FORWARD_KINDS = {"relu": ("relu", "compose_relu_lanes"), "relu_positive": ("relu", "compose_relu_positive"),
                  "identity": ("identity", "compose_identity_lanes")}


# ---- lanes: the time-parallel phases, blocks of lanes through tiles ----------------------------------------------
# Lane l is column l % C of segment l // C; ``base[l]`` is the flat index of its first visit, the next visit is
# ``stride`` further (-C when reversed). A block copies some visits of its lanes at a time into a tile (a lane's
# visits are contiguous or C apart in memory; its column in the tile), runs the step formulas down the tile's rows
# (one row: the lanes side by side, so the work vectorises across lanes) and copies results back. Pass 1 is
# generated code (above); pass 2 below takes LANES lanes per block, and keeps their state in one [rows, LANES]
# array: with one array the vectoriser needs a single overlap check against the tile (separate arrays needed more
# runtime checks than LLVM makes, and the loop ran scalar). 64 lanes: more independent chains per row (each step's
# latency hidden). Pass 2 reads ~2% of the data with relu, so its form matters little.
LANES = 64  # lanes per pass-2 block (a constant: the loops over a tile's row vectorise with no remainder)
TILE = 32  # visits per pass-2 tile: a [32, 64] float64 tile is 16 KB (two fit L1)
# Visits in pass 2's first tile of a segment (a run-time argument, at most TILE): with relu the chains usually meet
# within a few visits, so a block's first tile is often its only one; 16 is the shortest that still copies by
# transposed blocks.
FIX_HEAD = 16


@njit(inline="always")
def _ix(i):
    """An index known to be in range, as unsigned: Numba then omits its negative-index wraparound (a shift, an and
    and an add per element, which kept the tile copies scalar)."""
    return np.uint64(i)


@njit(inline="always")
def _block_width(flat):
    return 16 if flat.itemsize == 4 else 8  # transpose_copy's N: the elements of a 64-byte row


@njit(inline="always")
def _block_copy(unit, src, s0, s_step, dst, d0, d_step):
    """``transpose_copy_<unit>`` (a compile-time choice per call site: the shuffles are constants)."""
    if unit == 1:
        transpose_copy_1(src, s0, s_step, dst, d0, d_step)
    elif unit == 2:
        transpose_copy_2(src, s0, s_step, dst, d0, d_step)
    elif unit == 4:
        transpose_copy_4(src, s0, s_step, dst, d0, d_step)
    else:
        transpose_copy_8(src, s0, s_step, dst, d0, d_step)


# The tile copies are functions of their own, not inlined: each holds up to eight unrolled block transposes (four
# unit sizes, both directions), and inlined at every call site of every activation's loop they made LLVM take ~175 s
# to compile one dtype's lanes backward (23 s now; no slower at run time, measured with compare_revisions).
@njit(cache=True)
def _tile_in(src, base, l0, i0, stride, n, step, flat, lanes, r0):
    """Row r0 + i, column l of a tile with ``lanes`` columns (``flat``: its memory, row after row) = src at visit
    i0 + i of lane l0 + l, for i < n. ``step`` != 0: segment g + 1 starts ``step`` after segment g, and each
    segment's visits are contiguous rows of C = |stride| columns (descending when reversed), so whole blocks of 16
    visits go by transposed blocks whose units are a visit's C columns (and the rest element by element)."""
    done = 0
    if step != 0:
        C = abs(stride)
        N = _block_width(flat)
        R = N // C  # visits (and segments) per block
        done = n - n % 16  # (16: a multiple of every R)
        for c0 in range(0, lanes, N):
            for j0 in range(0, done, R):
                if stride > 0:
                    _block_copy(C, src, base[l0 + c0] + (i0 + j0) * C, step, flat, (r0 + j0) * lanes + c0, lanes)
                else:  # visits descend in memory: the block's first row holds its last visit
                    _block_copy(C, src, base[l0 + c0] - (i0 + j0 + R - 1) * C, step, flat,
                                (r0 + j0 + R - 1) * lanes + c0, -lanes)
    for i in range(done, n):
        o = (i0 + i) * stride
        row = (r0 + i) * lanes
        for l in range(lanes):
            flat[_ix(row + l)] = src[_ix(base[l0 + l] + o)]


@njit(cache=True)
def _tile_out(flat, lanes, base, l0, i0, stride, n, step, dst):
    """``_tile_in``'s inverse: dst at visit i0 + i of lane l0 + l = row i, column l of the tile, for i < n."""
    done = 0
    if step != 0:
        C = abs(stride)
        N = _block_width(flat)
        R = N // C
        done = n - n % 16
        for c0 in range(0, lanes, N):
            for j0 in range(0, done, R):
                if stride > 0:
                    _block_copy(C, flat, j0 * lanes + c0, lanes, dst, base[l0 + c0] + (i0 + j0) * C, step)
                else:
                    _block_copy(C, flat, (j0 + R - 1) * lanes + c0, -lanes, dst,
                                base[l0 + c0] - (i0 + j0 + R - 1) * C, step)
    # Lane by lane: each lane's visits are one run of stores (contiguous when stride is 1), 2x faster here than
    # row by row, whose stores each go to another lane's cache line.
    for l in range(lanes):
        o = base[l0 + l] + i0 * stride
        if stride == 1:
            for i in range(done, n):
                dst[_ix(o + i)] = flat[_ix(i * lanes + l)]
        else:
            for i in range(done, n):
                dst[_ix(o + i * stride)] = flat[_ix(i * lanes + l)]


@njit(inline="always")
def _new_tile(rows, dtype):
    """A [rows, LANES] tile and the same memory as one flat array (the transposed copies address it flat)."""
    flat = np.empty(rows * LANES, dtype)
    return flat.reshape((rows, LANES)), flat


# ---- the lanes kernels' two passes ---------------------------------------------------------------------------------
# Pass 1 ("first") runs every segment from a guessed start (the true one where it is known: h0 for segment 0 forward,
# the carry after the tail for the last segment backward, 0 elsewhere), writing the results, and composes each
# lane's map on the way: one read of the inputs, one write of the outputs. The boundaries then give every segment's
# true start, and pass 2 ("fix") reruns each segment from it only until its chain meets the provisional one: from a
# step where both chains hold the same value they do the same arithmetic on the same data, so every later value is
# already right. relu meets at the first step whose pre-activation is negative in both (forward) or whose unit is
# dead (backward), usually within a few steps; other chains meet once their difference rounds away (|u| < 1) or at
# the segment's end. Pass 2 checks after each tile whether all its block's lanes have met and stops there: with
# relu it reads about one tile per block (~2% of the data), and at worst it is the former run phase.


@njit(inline="always")
def _fix_rows_with(f, tile, prov, n, st, one):
    """h = f(x + u*h + b) down the tile's rows, in place (x in, h out); st rows: h, u, b. Whether every lane's last
    row equals ``prov``'s (the chains have met)."""
    for i in range(n):
        for l in range(LANES):
            v = f(tile[i, l] + st[1, l] * st[0, l] + st[2, l], one)
            st[0, l] = v
            tile[i, l] = v
    met = True
    for l in range(LANES):
        met = met and tile[n - 1, l] == prov[n - 1, l]
    return met


@njit(cache=True, parallel=True)
def _lanes_forward_fix(x, lu, lb, base, stride, step, seg, head, act, state, out):
    """Pass 2 of the forward: each lane's segment from its true start ``state`` until it meets ``out``'s
    provisional h; the first tile holds ``head`` visits, the others TILE."""
    one = lu.dtype.type(1)
    for blk in prange(base.shape[0] // LANES):
        l0 = blk * LANES
        tile, tile_flat = _new_tile(TILE, lu.dtype)
        prov, prov_flat = _new_tile(TILE, lu.dtype)
        st = np.empty((3, LANES), lu.dtype)
        for l in range(LANES):
            st[0, l], st[1, l], st[2, l] = state[l0 + l], lu[l0 + l], lb[l0 + l]
        i0 = 0
        n = min(head, seg)
        while i0 < seg:
            _tile_in(x, base, l0, i0, stride, n, step, tile_flat, LANES, 0)
            _tile_in(out, base, l0, i0, stride, n, step, prov_flat, LANES, 0)
            if act == A.ACT_RELU:
                met = _fix_rows_with(A.relu, tile, prov, n, st, one)
            else:
                met = _fix_rows_with(A.identity, tile, prov, n, st, one)
            _tile_out(tile_flat, LANES, base, l0, i0, stride, n, step, out)
            if met:
                break
            i0 += n
            n = min(TILE, seg - i0)


@njit(inline="always")
def _backward_rows_with(df, gt, ht, n, st, one, tiny):
    """BPTT down rows n-1..0, in place (gt: grad_h in, gx out); ht row i + 1 holds the h of the tile's row i, row
    i the h before it. st rows: carry, u."""
    for ii in range(n):
        i = n - 1 - ii
        for l in range(LANES):
            d = df(ht[i + 1, l], one)
            v = (gt[i, l] + st[0, l]) * d
            gt[i, l] = v
            st[0, l] = A.flush_subnormal(v * st[1, l], tiny)  # (subnormal carries: _activations.flush_subnormal)


@njit(inline="always")
def _h_tile_in(h, base, l0, i0, stride, n, step, first, ht_flat, lanes):
    """Tile rows 1..n: h at visits i0..i0+n-1; row 0: h before visit i0 (``first`` at a segment's start)."""
    _tile_in(h, base, l0, i0, stride, n, step, ht_flat, lanes, 1)
    if i0 > 0:
        _tile_in(h, base, l0, i0 - 1, stride, 1, 0, ht_flat, lanes, 0)
    else:
        for l in range(lanes):
            ht_flat[l] = first[l0 + l]


@njit(inline="always")
def _backward_fix_tiles(df, grad_h, h, gx, base, l0, stride, step, seg, head, first, gt, gt_flat, ht, ht_flat, pt,
                        pt_flat, st, acc, one, tiny):
    """Rerun from the true carries, tile by tile from the segment's end (the first tile ``head`` visits, the
    others TILE), until every lane has met its provisional chain; acc gets the sums' corrections (new terms less
    provisional ones: zero for a lane that has met)."""
    end = seg
    n = min(head, seg)
    while end > 0:
        i0 = end - n
        _tile_in(grad_h, base, l0, i0, stride, n, step, gt_flat, LANES, 0)
        _h_tile_in(h, base, l0, i0, stride, n, step, first, ht_flat, LANES)
        _tile_in(gx, base, l0, i0, stride, n, step, pt_flat, LANES, 0)
        _backward_rows_with(df, gt, ht, n, st, one, tiny)
        met = True
        for ii in range(n):
            i = n - 1 - ii
            for l in range(LANES):
                # only where the chains differ: an equal inf would add inf - inf (NaN) to a correct sum
                same = gt[i, l] == pt[i, l]
                acc[0, l] += 0.0 if same else np.float64(gt[i, l] * ht[i, l]) - np.float64(pt[i, l] * ht[i, l])
                acc[1, l] += 0.0 if same else np.float64(gt[i, l]) - np.float64(pt[i, l])
        for l in range(LANES):
            met = met and gt[0, l] == pt[0, l]  # the tile's earliest visit: the chains meet there or earlier
        _tile_out(gt_flat, LANES, base, l0, i0, stride, n, step, gx)
        if met:
            return
        end = i0
        n = min(TILE, end)


@njit(cache=True, parallel=True)
def _lanes_backward_fix(grad_h, h, gx, lu, base, stride, step, seg, head, act, carry, first, part_u, part_b):
    """Pass 2 of the backward: each lane's segment from its true carry until it meets the provisional gx; the
    partial sums corrected."""
    dt = lu.dtype.type
    one = dt(1)
    tiny = dt(np.finfo(lu.dtype).tiny)
    for blk in prange(base.shape[0] // LANES):
        l0 = blk * LANES
        gt, gt_flat = _new_tile(TILE, lu.dtype)
        ht, ht_flat = _new_tile(TILE + 1, lu.dtype)
        pt, pt_flat = _new_tile(TILE, lu.dtype)
        st = np.empty((2, LANES), lu.dtype)
        acc = np.zeros((2, LANES))
        for l in range(LANES):
            st[0, l], st[1, l] = carry[l0 + l], lu[l0 + l]
        if act == A.ACT_RELU:
            _backward_fix_tiles(A.relu_derivative, grad_h, h, gx, base, l0, stride, step, seg, head, first, gt,
                                gt_flat, ht, ht_flat, pt, pt_flat, st, acc, one, tiny)
        elif act == A.ACT_TANH:
            _backward_fix_tiles(A.tanh_derivative, grad_h, h, gx, base, l0, stride, step, seg, head, first, gt,
                                gt_flat, ht, ht_flat, pt, pt_flat, st, acc, one, tiny)
        elif act == A.ACT_SIGMOID:
            _backward_fix_tiles(A.sigmoid_derivative, grad_h, h, gx, base, l0, stride, step, seg, head, first, gt,
                                gt_flat, ht, ht_flat, pt, pt_flat, st, acc, one, tiny)
        else:
            _backward_fix_tiles(A.identity_derivative, grad_h, h, gx, base, l0, stride, step, seg, head, first, gt,
                                gt_flat, ht, ht_flat, pt, pt_flat, st, acc, one, tiny)
        for l in range(LANES):
            part_u[l0 + l] += acc[0, l]
            part_b[l0 + l] += acc[1, l]


@njit(inline="always")
def _compose_relu_lanes(kk, mm, lo, hi, uj, c, zero, tiny):
    """``scan._compose_relu`` with ``flush_subnormal``: the same arithmetic, branch-free."""
    p = uj * lo
    q = uj * hi
    p = zero if uj == zero else p
    q = zero if uj == zero else q
    lo2 = (p if p < q else q) + c
    hi2 = (q if p < q else p) + c
    return A.flush_subnormal(uj * kk, tiny), uj * mm + c, lo2 if lo2 > zero else zero, hi2 if hi2 > zero else zero


@njit(inline="always")
def _compose_relu_positive(kk, mm, lo, hi, uj, c, zero, tiny):
    """``_compose_relu_lanes`` for u > 0: max(u*max(k*h + m, lo) + c, 0) = max(u*k*h + u*m + c, max(u*lo + c, 0)),
    so the map needs no upper bound (hi stays inf) and u scales lo without a select."""
    lo2 = uj * lo + c
    return A.flush_subnormal(uj * kk, tiny), uj * mm + c, lo2 if lo2 > zero else zero, hi


@njit(inline="always")
def _compose_identity_lanes(kk, mm, lo, hi, uj, c, zero, tiny):
    return A.flush_subnormal(uj * kk, tiny), uj * mm + c, lo, hi


_KERNELS: dict = {}


def _kernel(name: str):
    """The generated kernel ``name`` (e.g. "rows_forward_relu", "lanes_forward_first_relu_positive")."""
    if name not in _KERNELS:
        from . import _narrow_generated

        _KERNELS[name] = _WithSLP(getattr(_narrow_generated, name))
    return _KERNELS[name]


# ---- host side ------------------------------------------------------------------------------------------------

def _flat(a):
    return a.reshape(-1)


def eligible(arrays, lengths, T, batch_first) -> bool:
    """Whether these (validated) arrays can take the narrow kernels: every sequence of full length, and each array
    C-contiguous in time-major order ([T, B, H]; batch-first only with B = 1, which is the same memory)."""
    B = lengths.shape[0]
    if batch_first and B != 1:
        return False
    if T < 1 or not (lengths[0] == T if B == 1 else (lengths == T).all()):  # (B = 1: no ufunc, ~1 us less)
        return False
    for a in arrays:
        if not a.flags.c_contiguous:
            return False
    return True


def rows_applies(C: int) -> bool:
    return C % W == 0 and 0 < C <= ROW_MAX_COLUMNS


def _per_column(v, B):
    if B == 1:  # (the single-sequence case; broadcast_to + copy cost ~30 us a call)
        return np.ascontiguousarray(v)
    return np.ascontiguousarray(np.broadcast_to(v, (B, v.shape[0]))).reshape(-1)


def rows_forward_into(x, u, b, h0, reverse, act, out, final):
    """The sequential forward over [T, B, H] (time-major, contiguous) for C = B*H in ``rows_applies``."""
    T, B, H = x.shape
    C = B * H
    fin = np.empty(C, u.dtype)
    kernel = _kernel(f"rows_forward_{_ACTIVATION_NAMES[act]}")
    kernel(_flat(x), _per_column(u, B), _per_column(b, B), np.ascontiguousarray(h0).reshape(-1), _flat(out), fin, T, C,
           bool(reverse))
    if final is not None:
        final[...] = fin.reshape(B, H)


def rows_backward_into(grad_h, h, u, h0, reverse, act, grad_hn, gx, gu, gb, gh0):
    """The sequential backward (``rows_forward_into``'s counterpart); gu, gb summed over the batch in order."""
    T, B, H = h.shape
    C = B * H
    part_u, part_b = np.empty(C), np.empty(C)
    gh0_flat = np.empty(C, u.dtype)
    kernel = _kernel(f"rows_backward_{_ACTIVATION_NAMES[act]}")
    kernel(_flat(grad_h), _flat(h), _per_column(u, B), np.ascontiguousarray(h0).reshape(-1),
           np.ascontiguousarray(grad_hn).reshape(-1), _flat(gx), part_u, part_b, gh0_flat, T, C, bool(reverse))
    gh0[...] = gh0_flat.reshape(B, H)
    _batch_sum(part_u.reshape(B, H), gu)
    _batch_sum(part_b.reshape(B, H), gb)


def _batch_sum(part, out):
    acc = np.zeros(part.shape[1])
    for n in range(part.shape[0]):  # fixed order: sequences ascending
        acc += part[n]
    out[...] = acc


def lanes_segments(T: int, C: int, groups: int, lane_elements: int, min_segment: int):
    """(G segments, seg visits each) for the lanes kernels, or (0, 0) when they do not apply: C must divide W (C = W
    is the rows kernels' case) and G*C fill whole blocks of LANES lanes. G follows ``scan``'s rule (never the thread
    count)."""
    if C < 1 or W % C or C == W:  # a whole row per block: the rows kernels' case (sequential is faster there)
        return 0, 0
    K = max(1, lane_elements // C)
    G = min(groups * K, T // max(min_segment, 1))
    per_block = LANES // C
    G = G // per_block * per_block
    if G < per_block or G < 2:
        return 0, 0
    return G, T // G


def _lanes(T, B, H, G, seg, reverse, u, b):
    """Each lane's first visit (flat index), the stride between visits, each lane's u and b (None without b)."""
    C = B * H
    base, lu, lb = _lane_arrays(T, C, H, G, seg, bool(reverse), u, u if b is None else b)
    return base, (-C if reverse else C), lu, None if b is None else lb


@njit(cache=True)
def _lane_arrays(T, C, H, G, seg, reverse, u, b):
    base = np.empty(G * C, np.int64)
    lu = np.empty(G * C, u.dtype)
    lb = np.empty(G * C, u.dtype)
    lane = 0
    for g in range(G):  # (nested loops, not a division per lane: two of those cost ~5 us at G = 512)
        first = ((T - 1 - g * seg) if reverse else g * seg) * C
        for seq in range(C // H):
            for j in range(H):
                base[lane] = first + seq * H + j
                lu[lane] = u[j]
                lb[lane] = b[j]
                lane += 1
    return base, lu, lb


def _lane_step(C, seg, reverse):
    """The tiles' fast path (``_tile_in``'s ``step``): each segment's visits are contiguous rows of C columns, and
    segment g + 1 starts ``seg * C`` after segment g (before it, reversed). 0: element-by-element copies."""
    return -seg * C if reverse else seg * C


def lanes_forward_into(x, u, b, h0, reverse, act, out, final, G, seg):
    """The time-parallel forward (relu or identity) over [T, B, H] (time-major, contiguous), C = B*H dividing W."""
    T, B, H = x.shape
    C = B * H
    base, stride, lu, lb = _lanes(T, B, H, G, seg, reverse, u, b)
    step = _lane_step(C, seg, reverse)
    xf, of = _flat(x), _flat(out)
    n = G * C
    mk, mm, mlo, mhi = (np.empty(n, u.dtype) for _ in range(4))
    cur = np.ascontiguousarray(h0, dtype=u.dtype).reshape(-1).copy()
    init = np.zeros(n, u.dtype)  # segment 0 starts from h0, which is known; the others from 0 (relu's usual value)
    init[:C] = cur
    if act == A.ACT_RELU:  # (u > 0, the papers' case: a map with no upper bound, 5 operations a step fewer)
        positive = u[0] > 0 if u.shape[0] == 1 else (u > 0).all()  # (H = 1: no ufunc)
        kind = "relu_positive" if positive else "relu"
    else:
        kind = "identity"
    tv = first_tile_visits(seg, C, x.itemsize, backward=False)
    # (float64: W lanes are already two registers; G*C is a multiple of LANES, so blocks are whole either way)
    width = FORWARD_FIRST_LANES_C1 if C == 1 and x.itemsize == 4 else W
    _kernel("lanes_forward_first_" + _forward_first_name(kind, width))(xf, lu, lb, base, stride, step, seg, tv, init,
                                                                       mk, mm, mlo, mhi, of)
    state = np.empty(n, u.dtype)
    _boundaries_forward(act, xf, lu, lb, base, stride, seg, mk, mm, mlo, mhi, of, state, cur, G, C)
    _lanes_forward_fix(xf, lu, lb, base, stride, step, seg, min(FIX_HEAD, TILE), act, state, of)
    # the tail: visits G*seg .. T-1, serially, from the state after the last segment
    _tail_forward(act, xf, _per_column(u, B), _per_column(b, B), of, cur, G * seg, T, C, bool(reverse))
    if final is not None:
        final[...] = cur.reshape(B, H)


@njit(cache=True)
def _boundaries_forward(act, x, lu, lb, base, stride, seg, mk, mm, mlo, mhi, out, state, cur, G, C):
    """Each lane's true start, in visit order. Segment 0's pass 1 started from h0, so its provisional end is the
    true one; a map that is not ``map_ok`` (overflowed) gives way to a walk."""
    for g in range(G):
        for c in range(C):
            l = g * C + c
            state[l] = cur[c]
            if g == 0:
                cur[c] = out[base[l] + (seg - 1) * stride]
            elif A.map_ok(mk[l], mm[l], mlo[l], mhi[l]):
                cur[c] = _apply_map(mk[l], mm[l], mlo[l], mhi[l], cur[c])
            else:
                cur[c] = _walk_lane_forward(act, x, lu[l], lb[l], base[l], stride, seg, out, cur[c])


@njit(inline="always")
def _walk_lane_forward(act, x, u, b, first, stride, seg, out, h):
    """The lane's h after its segment, from ``h``, by the step formula, until it meets the provisional chain in
    ``out`` (whose end is then the answer; nothing is written)."""
    one = x.dtype.type(1)
    for i in range(seg):
        o = first + i * stride
        h = A.activate(x[o] + u * h + b, act, one)
        if h == out[o]:
            return out[first + (seg - 1) * stride]
    return h


@njit(cache=True)
def _tail_forward(act, x, u, b, out, cur, s0, T, C, reverse):
    one = u.dtype.type(1)
    for s in range(s0, T):
        t = T - 1 - s if reverse else s
        for c in range(C):
            v = A.activate(x[t * C + c] + u[c] * cur[c] + b[c], act, one)
            cur[c] = v
            out[t * C + c] = v


def lanes_backward_into(grad_h, h, u, h0, reverse, act, grad_hn, gx, gu, gb, gh0, G, seg):
    """The time-parallel backward (any activation), the lanes kernels' counterpart of ``scan.backward``."""
    T, B, H = h.shape
    C = B * H
    base, stride, lu, _ = _lanes(T, B, H, G, seg, reverse, u, None)
    step = _lane_step(C, seg, reverse)
    gf, hf, xf = _flat(grad_h), _flat(h), _flat(gx)
    n = G * C
    h0f = np.ascontiguousarray(h0, dtype=u.dtype).reshape(-1)
    # the tail first (visits G*seg .. T-1, latest first): its carry is the last segment's true one
    cur = np.ascontiguousarray(grad_hn, dtype=u.dtype).reshape(-1).copy()
    tail_u, tail_b = np.zeros(C), np.zeros(C)
    _tail_backward(act, gf, hf, _per_column(u, B), h0f, xf, cur, tail_u, tail_b, G * seg, T, C, bool(reverse))
    init = np.zeros(n, u.dtype)
    init[n - C:] = cur
    # h before each lane's first visit: the previous segment's last visit, h0 for segment 0
    first = np.empty(n, u.dtype)
    first[:C] = h0f
    if G > 1:
        first[C:] = hf[base[C:] - stride]
    ma, mm = np.empty(n, u.dtype), np.empty(n, u.dtype)
    part_u, part_b = np.empty(n), np.empty(n)
    tv = first_tile_visits(seg, C, h.itemsize, backward=True)
    _kernel(f"lanes_backward_first_{_ACTIVATION_NAMES[act]}")(gf, hf, xf, lu, base, stride, step, seg, tv, init,
                                                             first, ma, mm, part_u, part_b)
    carry = np.empty(n, u.dtype)
    _boundaries_backward(act, gf, hf, xf, lu, base, stride, seg, ma, mm, carry, cur, G, C)
    gh0[...] = cur.reshape(B, H)
    _lanes_backward_fix(gf, hf, xf, lu, base, stride, step, seg, min(FIX_HEAD, TILE), act, carry, first, part_u,
                        part_b)
    _sum_lanes(tail_u, tail_b, part_u, part_b, G, C, B, H, gu, gb)


@njit(cache=True)
def _boundaries_backward(act, grad_h, h, gx, lu, base, stride, seg, ma, mm, carry, cur, G, C):
    """The carry into each lane (latest segment first); the last segment's pass 1 started from its true carry, so
    its ``mm`` is the true carry out of it. A map that is not ``carry_map_ok`` (overflowed) gives way to a walk."""
    for g in range(G - 1, -1, -1):
        for c in range(C):
            l = g * C + c
            carry[l] = cur[c]
            if g == G - 1:
                cur[c] = mm[l]
            elif A.carry_map_ok(ma[l], mm[l]):
                cur[c] = ma[l] * cur[c] + mm[l]
            else:
                cur[c] = _walk_lane_backward(act, grad_h, h, gx, lu[l], base[l], stride, seg, mm[l], cur[c])


@njit(inline="always")
def _walk_lane_backward(act, grad_h, h, gx, u, first, stride, seg, carry_out, carry):
    """The carry out of the lane's segment (after its first visit), entering its last visit with ``carry``, by the
    step formulas, until gx meets the provisional gx (the provisional carry out ``carry_out`` is then the answer;
    nothing is written)."""
    one = h.dtype.type(1)
    tiny = h.dtype.type(np.finfo(h.dtype).tiny)
    for i in range(seg - 1, -1, -1):
        o = first + i * stride
        v = (grad_h[o] + carry) * A.derivative_from_output(h[o], act, one)
        if v == gx[o]:
            return carry_out
        carry = A.flush_subnormal(v * u, tiny)
    return carry


@njit(cache=True)
def _tail_backward(act, grad_h, h, u, h0, gx, cur, tail_u, tail_b, s_lo, T, C, reverse):
    one = u.dtype.type(1)
    tiny = u.dtype.type(np.finfo(u.dtype).tiny)
    for s in range(T - 1, s_lo - 1, -1):
        t = T - 1 - s if reverse else s
        tp = T - s if reverse else s - 1
        for c in range(C):
            v = (grad_h[t * C + c] + cur[c]) * A.derivative_from_output(h[t * C + c], act, one)
            gx[t * C + c] = v
            prev = h0[c] if s == 0 else h[tp * C + c]
            tail_u[c] += v * prev
            tail_b[c] += v
            cur[c] = A.flush_subnormal(v * u[c], tiny)  # (as every kernel: _activations.flush_subnormal)


@njit(cache=True)
def _sum_lanes(tail_u, tail_b, part_u, part_b, G, C, B, H, gu, gb):
    """Fixed order: sequences ascending; within one, the tail, then segments ascending."""
    for j in range(H):
        acc_u = 0.0
        acc_b = 0.0
        for n in range(B):
            c = n * H + j
            acc_u += tail_u[c]
            acc_b += tail_b[c]
            for g in range(G):
                acc_u += part_u[g * C + c]
                acc_b += part_b[g * C + c]
        gu[j] = acc_u
        gb[j] = acc_b
