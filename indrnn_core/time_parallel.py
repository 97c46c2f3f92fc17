"""When the kernels scan in time instead of walking it: the config (read at every call, so tests can shrink it) and
the rule behind ``time_parallel=None``.

The sequential kernels give each (sequence, hidden unit) column to one thread (CUDA) or each sequence to one core
(CPU) and walk its T steps in order. With few columns (a single long sequence, B x H small) most of the machine
idles and every step pays the latency of a dependent chain. The time-parallel kernels split each sequence's steps
into segments, compose each segment's map in parallel, carry the few segment boundaries in order, then run every
segment in parallel from its known start (``indrnn_core.cpu.scan``, ``indrnn_core.cuda.scan``).

* Backward works for every activation: the carried gradient obeys the linear recurrence
  ``carry_{t-1} = u * act'(h_t) * (grad_h_t + carry_t)`` once the forward's ``h`` is known.
* Forward works for relu and identity only: ``h -> relu(u*h + c)`` and its compositions stay in the family
  ``h -> clip(k*h + m, lo, hi)`` (identity: ``k*h + m``) for either sign of ``u``. tanh and sigmoid compositions
  have no closed form: their forward stays sequential, and asking for a time-parallel one is a ``ValueError``.

Accuracy: each segment's start comes from a composed map instead of the step-by-step chain, so results equal the
sequential kernels' within float rounding (each uses O(T) roundings per column) when the composed maps stay
bounded. With ``|u| > 1`` the maps' coefficients grow like ``|u|**segment_length`` while a relu's clipping can keep
``h`` small: rounding is then amplified by that factor. The automatic rule therefore takes the time-parallel
kernels only while ``max|u| ** T <= MAX_GROWTH``.

Overflow: past the dtype's range a map's coefficients become inf (and inf*0 or inf - inf NaN) even where the
chain stays finite. A segment whose map is not ``_activations.map_ok`` / ``carry_map_ok`` gets its end from the
step formula instead, walked serially in the boundaries phase, so ``time_parallel=True`` never trades a finite
chain for inf or NaN. The lanes kernels stop that walk where it meets their pass-1 chain (for relu usually within
a few steps); the general CPU and the CUDA scans walk the whole segment, which at worst (every map overflowing)
adds a sequential pass.
"""

import math

import numpy as np

from ._activations import ACT_IDENTITY, ACT_RELU

FORWARD_ACTIVATIONS = (ACT_RELU, ACT_IDENTITY)

# ---- CPU (indrnn_core.cpu.scan) ----------------------------------------------------------------------------------
# Segments per sequence are fixed by these numbers and the sequence's length (never by the thread count), so the
# results, gu/gb included, are the same on any number of threads.
CPU_GROUPS = 8  # parallel work items per sequence (prange over them): several per core balances the load
CPU_LANE_ELEMENTS = 64  # a work item runs max(1, this // H) segments in lockstep: SIMD across segments at small H
CPU_MIN_SEGMENT = 64  # fewer steps per segment than this: fewer segments (the rest runs sequentially)
# The measured rule (python -m benchmarks --config <shapes> --only core --time-parallel on off --rounds 3, 2-core
# machines, BENCHMARKS.md's issue 14 sections): the scan reads the data twice, so it wins only while the sequential
# kernels are bound by one step's latency, i.e. at a few columns. At H=16 the sequential kernels hold a row in
# registers (``narrow``'s rows kernels) and are bound by memory, and at H=256 they split the row across threads:
# the scan loses there. Between them (AMD EPYC, 2026-11-27, fwd+bwd, BENCHMARKS.md): at B x H = 8 the lanes
# kernels (time-major, contiguous, full lengths) beat the sequential kernels 2.2x (B=1, H=8) to 13x (B=8, H=1);
# the general scan loops (every other layout, and B x H not dividing 16) lose at B x H = 6 (0.66x at B=1, H=6;
# 0.75x at B=3, H=2). So: the scan up to CPU_MAX_COLUMNS for any layout and lengths (as measured before), and at
# CPU_LANE_COLUMNS where the lanes kernels take the call.
CPU_MAX_COLUMNS = 4  # B * H at most: the scan for any layout and lengths
CPU_LANE_COLUMNS = 8  # B * H equal to this: the scan where the lanes kernels take the call
CPU_MIN_STEPS = 4096  # T at least

# ---- CUDA (indrnn_core.cuda.scan) --------------------------------------------------------------------------------
CUDA_SEGMENT = 256  # steps per segment: one thread per (segment, column)
# Measured at one shape so far (H200, 2026-11-27, python -m benchmarks.cuda_variants; BENCHMARKS.md): at T=10^5,
# B=1, H=256 the scan took 0.94 ms fwd+bwd (segments of 256; 64-1024 were slower), 9.0x faster than the block-tiled
# sequential kernels and 20x the column kernels. One shape does not place a rule, and the automatic choice reads
# max|u| on the host (a synchronisation, and no CUDA-graph capture), so it stays off until a GPU run of
# ``python -m benchmarks --device cuda --config single wide --time-parallel on off`` maps where it wins;
# ``time_parallel=True`` runs the scan.
CUDA_MAX_COLUMNS = 0  # B * H at most
CUDA_MIN_STEPS = 2048  # T at least

MAX_GROWTH = 16.0  # automatic rule: max|u| ** T at most this (rounding amplified at most this much)


def check_option(time_parallel):
    """``time_parallel`` as given (None, True or False); a TypeError naming it otherwise."""
    if time_parallel is None or isinstance(time_parallel, (bool, np.bool_)):
        return None if time_parallel is None else bool(time_parallel)
    raise TypeError(f"time_parallel must be None (automatic), True or False, got {type(time_parallel).__name__}")


def check_forward_activation(time_parallel, act, activation):
    if time_parallel and act not in FORWARD_ACTIVATIONS:
        raise ValueError(f"time_parallel=True: the forward scans in time only for activation 'relu' or 'identity' "
                         f"(compositions of {activation!r} steps have no closed form); got activation="
                         f"{activation!r}: pass time_parallel=None or False")


def _growth_ok(u_abs_max, T):
    if not u_abs_max <= 1.0:  # NaN included: the sequential kernels propagate it the IEEE way
        return bool(u_abs_max > 1.0) and T * math.log(u_abs_max) <= math.log(MAX_GROWTH)
    return True


def choose(time_parallel, device, T, B, H, act, forward, u_abs_max, lanes=lambda: False):
    """Whether to run the time-parallel kernels. ``time_parallel``: None (automatic), True or False, already
    checked (and a forward's activation too); ``u_abs_max()``: max |u| as a host float, called only when the shape
    qualifies (on CUDA it copies ``u`` to the host, which waits for the stream); ``lanes()``: whether the CPU's
    lanes kernels would take the call (asked only at B x H = CPU_LANE_COLUMNS)."""
    if time_parallel is not None:
        return time_parallel
    if forward and act not in FORWARD_ACTIVATIONS:
        return False
    if device == "cpu":
        C = B * H
        qualifies = T >= CPU_MIN_STEPS and (C <= CPU_MAX_COLUMNS or C == CPU_LANE_COLUMNS and lanes())
    else:
        qualifies = B * H <= CUDA_MAX_COLUMNS and T >= CUDA_MIN_STEPS
    return qualifies and _growth_ok(float(u_abs_max()), T)
