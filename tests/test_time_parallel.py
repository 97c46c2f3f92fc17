"""The time-parallel kernels (``time_parallel=True``; ``indrnn_core.time_parallel``) against the float64 reference
and against the sequential kernels, on the CPU and on CUDA (Numba's simulator without a GPU), for every contract
feature; the automatic rule; the errors.

Tolerance rule, from the dtype and the reduction length. Every output is a chain of at most ``N`` dependent
steps: ``N = T`` for h, gx, gh0 and the final state (a scan only changes how a segment's start is reached: by a
composed map, whose coefficients take the same O(1) roundings per step as the chain itself), and ``N = T * B``
for gu and gb (sums of one term per step and sequence). Each step rounds a few times (the forward ``(x + u*h) +
b``, the map's ``u*k`` and ``u*m + c``, its application ``k*h + m``; the backward ``(g + carry) * act' * u``) and,
with ``|u| <= 1`` (every problem here), an earlier rounding is never amplified. So ``|error| <= C * eps * N *
scale`` with ``C = 8`` rounding steps as an upper bound, ``eps`` the dtype's machine epsilon, ``scale = 1 +
max|reference|`` for the per-step outputs and ``1 + sum of |terms|`` for gu and gb (a sum's rounding is relative
to its terms, not to a cancelled result). Against the sequential kernels both sides carry that error: ``2 * C``.
Observed errors are orders of magnitude below the bound; the bound holds for any seed, so nothing can flake.
"""

import types

import numba
import numpy as np
import pytest

import indrnn_core
from indrnn_core import reference
from indrnn_core import time_parallel as tp
from indrnn_core.testing import nan_like

ROUNDINGS_PER_STEP = 8  # C above
CPU = types.SimpleNamespace(kind="cpu", put=lambda a: a, get=lambda a: a)  # conftest's Device("cpu"), unparametrised
CUDA = types.SimpleNamespace(  # conftest's Device("cuda"), unparametrised (the simulator without a GPU)
    kind="cuda", put=lambda a: None if a is None else numba.cuda.to_device(np.ascontiguousarray(a)),
    get=lambda a: None if a is None else a.copy_to_host())


@pytest.fixture(autouse=True)
def small_segments(monkeypatch):
    """Tiny segments so that a few steps span several segments, work items and (CUDA) blocks: on the CPU up to 3
    work items of up to 4 lockstep segments of >= 2 steps (H=1: 4 lanes; H >= 4: one segment per item, row
    order from H = 8); on CUDA 2-step segments (the block size is already 4: tests/conftest.py)."""
    monkeypatch.setattr(tp, "CPU_GROUPS", 3)
    monkeypatch.setattr(tp, "CPU_LANE_ELEMENTS", 4)
    monkeypatch.setattr(tp, "CPU_MIN_SEGMENT", 2)
    monkeypatch.setattr(tp, "CUDA_SEGMENT", 2)


def tolerance(dtype, n_steps, against_kernels=False):
    return (2 if against_kernels else 1) * ROUNDINGS_PER_STEP * np.finfo(dtype).eps * n_steps


def assert_close(name, actual, expected, dtype, n_steps, scale=None, against_kernels=False):
    actual = np.asarray(actual)
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}"
    assert np.isfinite(actual).all(), f"{name} has non-finite elements (unwritten?)"
    expected = np.asarray(expected, np.float64)
    if scale is None:
        scale = 1.0 + np.abs(expected).max(initial=0.0)
    err = np.abs(actual.astype(np.float64) - expected).max(initial=0.0) / scale
    tol = tolerance(dtype, n_steps, against_kernels)
    assert err <= tol, f"{name}: scaled error {err:.2e} > {tol:.2e}"


def time_major(a, batch_first):
    return np.swapaxes(a, 0, 1) if batch_first else a


def make_problem(T, B, H, dtype, batch_first, seed, u_bound=1.0):
    rng = np.random.default_rng(seed)
    shape = (B, T, H) if batch_first else (T, B, H)
    p = dict(x=rng.uniform(-1, 1, shape), u=rng.uniform(-u_bound, u_bound, H), b=rng.uniform(-0.5, 0.5, H),
             h0=rng.uniform(-1, 1, (B, H)), grad_h=rng.uniform(-1, 1, shape), grad_hn=rng.uniform(-1, 1, (B, H)))
    return {k: v.astype(dtype) for k, v in p.items()}


def run(device, p, opts, time_parallel, optional=True):
    """forward + backward into NaN-filled buffers (out, final_state_out, gx, gu, gb, gh0), as NumPy arrays."""
    put, get = device.put, device.get
    x = p["x"]
    T, B, H = (x.shape[1], x.shape[0], x.shape[2]) if opts["batch_first"] else x.shape
    b, h0, ghn = (p["b"], p["h0"], p["grad_hn"]) if optional else (None, None, None)
    fwd_tp = time_parallel if opts["activation"] in ("relu", "identity") else False
    out, final = put(nan_like(x)), put(np.full((B, H), np.nan, x.dtype))
    h = indrnn_core.forward(put(x), put(p["u"]), put(b), put(h0), out=out, final_state_out=final,
                            time_parallel=fwd_tp, **opts)
    grads_out = tuple(put(np.full(s, np.nan, x.dtype)) for s in (x.shape, (H,), (H,), (B, H)))
    grads = indrnn_core.backward(put(p["grad_h"]), h, put(p["u"]), put(h0), grad_hn=put(ghn), out=grads_out,
                                 time_parallel=time_parallel, **opts)
    return [get(a) for a in (h, final, *grads)]


def check_against_reference(p, opts, results, optional=True, dtype=None):
    dtype = p["x"].dtype
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    b, h0, ghn = (p64["b"], p64["h0"], p64["grad_hn"]) if optional else (None, None, None)
    h, final, gx, gu, gb, gh0 = results
    T, B = (h.shape[1], h.shape[0]) if opts["batch_first"] else h.shape[:2]
    ref_h = reference.forward(p64["x"], p64["u"], b, h0, **opts)
    ref_final = reference.final_state(ref_h, h0, opts["lengths"], opts["reverse"], opts["batch_first"])
    # The reference's backward reads the kernels' own h (cast exactly to float64), as a training step does.
    r_gx, r_gu, r_gb, r_gh0 = reference.backward(p64["grad_h"], h.astype(np.float64), p64["u"], h0, grad_hn=ghn,
                                                 **opts)
    assert_close("h", h, ref_h, dtype, T)
    assert_close("final state", final, ref_final, dtype, T)
    assert_close("gx", gx, r_gx, dtype, T)
    assert_close("gh0", gh0, r_gh0, dtype, T)
    h_max = max(np.abs(h).max(initial=0.0), 0.0 if h0 is None else np.abs(h0).max(initial=0.0))
    abs_gx = np.abs(r_gx).sum(axis=(0, 1))
    assert_close("gu", gu, r_gu, dtype, T * B, scale=1.0 + (abs_gx * h_max).max(initial=0.0))
    assert_close("gb", gb, r_gb, dtype, T * B, scale=1.0 + abs_gx.max(initial=0.0))
    if opts["lengths"] is not None:  # padding is exactly zero, in outputs and gradients
        for n, length in enumerate(opts["lengths"]):
            assert not time_major(h, opts["batch_first"])[length:, n].any()
            assert not time_major(gx, opts["batch_first"])[length:, n].any()


# id: (T, B, H, lengths, reverse). CPU problems span several work items and both loop orders (H < 8: lockstep
# lanes across segments; H >= 8: rows); a tail (T not a multiple of the segment count) and short sequences that
# fall back to no segments at all are included.
CPU_CASES = {
    "single-H1": (97, 1, 1, None, False),
    "single-H1-reverse": (97, 1, 1, None, True),
    "single-H3": (61, 1, 3, None, False),
    "H9-row-order": (45, 2, 9, None, False),
    "lengths": (40, 4, 2, [40, 0, 3, 29], False),
    "lengths-reverse-row-order": (40, 3, 11, [17, 40, 1], True),
    "T1": (1, 2, 3, None, False),
}
CUDA_CASES = {  # the simulator costs ~5 us per element-step: tiny, but several 2-step segments and 4-thread blocks
    "single-H1": (9, 1, 1, None, False),
    "lengths": (7, 3, 2, [7, 0, 4], False),
    "lengths-reverse": (7, 3, 2, [5, 7, 0], True),
}
ACTIVATIONS = ["relu", "identity", "tanh", "sigmoid"]


def cases(device_kind):
    return CPU_CASES if device_kind == "cpu" else CUDA_CASES


@pytest.mark.parametrize("device", ["cpu", "cuda"], indirect=True)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_reference_and_sequential_kernels(device, activation, batch_first, dtype):
    for i, (case, (T, B, H, lengths, reverse)) in enumerate(cases(device.kind).items()):
        opts = dict(activation=activation, batch_first=batch_first, reverse=reverse,
                    lengths=None if lengths is None else np.array(lengths))
        p = make_problem(T, B, H, dtype, batch_first, seed=100 + i)
        optional = i % 2 == 0  # b, h0, grad_hn given in every other case, None (zeros) in the rest
        scanned = run(device, p, opts, True, optional)
        try:
            check_against_reference(p, opts, scanned, optional)
        except AssertionError as exc:
            raise AssertionError(f"case {case}: {exc}") from None
        sequential = run(device, p, opts, False, optional)
        n_steps = {"gu": T * B, "gb": T * B}
        for name, a, s in zip(("h", "final state", "gx", "gu", "gb", "gh0"), scanned, sequential):
            scale = 1.0 + np.abs(s).max(initial=0.0) * (T if name == "gu" or name == "gb" else 1)
            assert_close(f"case {case}: {name} vs sequential", a, s, dtype, n_steps.get(name, T), scale=scale,
                         against_kernels=True)


@pytest.mark.parametrize("device", ["cpu", "cuda"], indirect=True)
def test_reruns_are_bit_identical(device):
    T, B, H = (9, 2, 2) if device.kind == "cuda" else (101, 3, 5)
    p = make_problem(T, B, H, np.float32, False, seed=3)
    opts = dict(activation="relu", batch_first=False, reverse=False, lengths=np.array([T, 1, T - 2][:B]))
    first = run(device, p, opts, True)
    for _ in range(2):
        for a, b in zip(first, run(device, p, opts, True)):
            assert np.array_equal(a, b)


def test_cpu_results_do_not_depend_on_thread_count():
    """Segments are fixed by the length and the config, never by the thread count: bit-identical on 1 thread."""
    p = make_problem(301, 2, 3, np.float32, False, seed=4)
    opts = dict(activation="identity", batch_first=False, reverse=True, lengths=np.array([301, 150]))
    many = run(CPU, p, opts, True)
    numba.set_num_threads(1)
    try:
        one = run(CPU, p, opts, True)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(many, one):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("H", [1, 20], ids=["lanes", "rows"])
def test_long_float32_sequence_cpu(monkeypatch, H):
    """The default config (no tiny segments) at T = 20000: hundreds of segments, against the reference."""
    import importlib

    importlib.reload(tp)  # the module's own numbers, not the fixture's; monkeypatch restores the fixture's after
    for name in ("CPU_GROUPS", "CPU_LANE_ELEMENTS", "CPU_MIN_SEGMENT"):
        monkeypatch.setattr(tp, name, getattr(tp, name))
    T = 20000
    p = make_problem(T, 1, H, np.float32, False, seed=5)
    opts = dict(activation="relu", batch_first=False, reverse=False, lengths=None)
    check_against_reference(p, opts, run(CPU, p, opts, True))


# id: (T, B, H, time_parallel). The register-blocked kernels of ``indrnn_core.cpu.narrow``: "rows" (sequential,
# B*H a multiple of 16 up to 64) and "lanes" (time-parallel, B*H dividing 16, below it), each with a tail.
NARROW_CASES = {
    "rows-H16": (203, 1, 16, False),
    "rows-B2-H16": (150, 2, 16, False),
    "rows-B4-H12": (70, 4, 12, False),
    "lanes-H1": (203, 1, 1, True),
    "lanes-B2-H1": (151, 2, 1, True),
    "lanes-H8": (99, 1, 8, True),
    # whole tiles: the lanes' copies go by transposed blocks (``narrow._tile_in``) whose units are a visit's C
    # columns, 16 visits at a time, the rest element by element. C = 1: 192 segments of 208 steps (pass 1's tiles
    # of 64 float32 visits in ``narrow_paths``: 3 and 16 visits more; pass 2's of 32: 6 and a part) and a tail of
    # 64, or of 85 steps ("part-tiles": a tile, 16 visits by a block and 5 by elements); C = 2, 4, 8: 96, 48, 24
    # segments of 45 steps (32 visits by blocks, 13 by elements) and a tail. Forwards, then reversed (the case's
    # index: i % 3 == 1).
    "lanes-H1-tiles": (40000, 1, 1, True),
    "lanes-H1-tiles-reverse": (40000, 1, 1, True),
    "lanes-B2-H1-tiles": (4327, 2, 1, True),
    "lanes-H4-tiles": (2165, 1, 4, True),
    "lanes-B2-H1-tiles-reverse": (4327, 2, 1, True),
    "lanes-B2-H4-tiles": (1083, 2, 4, True),
    "lanes-H2-tiles": (4327, 1, 2, True),
    "lanes-H4-tiles-reverse": (2165, 1, 4, True),
    "lanes-B4-H1-tiles": (2165, 4, 1, True),
    "lanes-B8-H1-tiles": (1083, 8, 1, True),
    "lanes-B4-H2-tiles-reverse": (1083, 4, 2, True),
    "lanes-H1-part-tiles": (192 * 85 + 10, 1, 1, True),
}


@pytest.fixture
def narrow_paths(monkeypatch):
    """Short problems through the narrow kernels: no minimum length for the rows kernels; enough segments per
    sequence (a multiple of 16 / (B*H)) for the lanes kernels; the general kernels otherwise, to compare with."""
    from indrnn_core.cpu import narrow, recurrence

    monkeypatch.setattr(recurrence, "NARROW_MIN_STEPS", 1)
    monkeypatch.setattr(tp, "CPU_LANE_ELEMENTS", 64)
    # pass-1 tiles of 64 float32 visits (32 float64): several per segment in these short problems
    monkeypatch.setattr(narrow, "FIRST_TILE_BYTES", 256)
    calls = []
    for name in ("rows_forward_into", "rows_backward_into", "lanes_forward_into", "lanes_backward_into"):
        real = getattr(narrow, name)
        monkeypatch.setattr(narrow, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name),
                                                                                     _real(*a, **k))[1])
    return calls


def _general_kernels(monkeypatch):
    from indrnn_core.cpu import narrow

    monkeypatch.setattr(narrow, "rows_applies", lambda C: False)
    monkeypatch.setattr(narrow, "lanes_segments", lambda *a: (0, 0))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_narrow_kernels_match_reference_and_general_kernels(narrow_paths, monkeypatch, activation, dtype):
    for i, (case, (T, B, H, time_parallel)) in enumerate(NARROW_CASES.items()):
        batch_first, reverse = B == 1 and i % 2 == 1, i % 3 == 1
        opts = dict(activation=activation, batch_first=batch_first, reverse=reverse, lengths=None)
        p = make_problem(T, B, H, dtype, batch_first, seed=200 + i)
        optional = i % 2 == 0
        del narrow_paths[:]
        got = run(CPU, p, opts, time_parallel, optional)
        kind = "lanes" if time_parallel else "rows"
        assert f"{kind}_backward_into" in narrow_paths, f"case {case}: the {kind} kernels did not run"
        try:
            check_against_reference(p, opts, got, optional)
        except AssertionError as exc:
            raise AssertionError(f"case {case}: {exc}") from None
        for a, b in zip(got, run(CPU, p, opts, time_parallel, optional)):  # reruns: bit-identical
            assert np.array_equal(a, b, equal_nan=True), f"case {case}: a rerun differs"
    for i, (case, (T, B, H, time_parallel)) in enumerate(NARROW_CASES.items()):
        opts = dict(activation=activation, batch_first=False, reverse=False, lengths=None)
        p = make_problem(T, B, H, dtype, False, seed=300 + i)
        fast = run(CPU, p, opts, time_parallel)
        with monkeypatch.context() as m:
            _general_kernels(m)
            del narrow_paths[:]
            general = run(CPU, p, opts, time_parallel)
            assert not narrow_paths
        for name, a, s in zip(("h", "final state", "gx", "gu", "gb", "gh0"), fast, general):
            scale = 1.0 + np.abs(s).max(initial=0.0) * (T if name in ("gu", "gb") else 1)
            n = T * B if name in ("gu", "gb") else T
            assert_close(f"case {case}: {name} vs general kernels", a, s, dtype, n, scale=scale,
                         against_kernels=True)


def test_generated_narrow_kernels_are_up_to_date():
    """``cpu/_narrow_generated.py`` is ``narrow``'s templates expanded: regenerate it after editing them."""
    from indrnn_core.cpu import narrow

    assert narrow.GENERATED_MODULE.read_text() == narrow.generated_source(), (
        'cpu/_narrow_generated.py is stale: '
        'python -c "from indrnn_core.cpu import narrow; narrow.write_generated_module()"')


def test_narrow_kernels_do_not_depend_on_thread_count(narrow_paths):
    for T, B, H, time_parallel in ((150, 2, 16, False), (203, 1, 1, True)):
        p = make_problem(T, B, H, np.float32, False, seed=7)
        opts = dict(activation="relu", batch_first=False, reverse=False, lengths=None)
        many = run(CPU, p, opts, time_parallel)
        numba.set_num_threads(1)
        try:
            one = run(CPU, p, opts, time_parallel)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        for a, b in zip(many, one):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lanes_results_do_not_depend_on_tile_length(narrow_paths, monkeypatch, dtype):
    """Pass 1's tile length (``narrow.first_tile_visits``) and pass 2's first tile (``narrow.FIX_HEAD``) only decide
    how visits are copied: tiles of 64 float32 or 32 float64 visits (``narrow_paths``) and the default's (here a
    whole segment of 312 steps), with pass 2 starting on 16 visits or on 1, give the same bits, forwards and
    reversed. C = 1: 512 segments and a tail; C = 2: 256 segments."""
    from indrnn_core.cpu import narrow

    for i, (T, B, H) in enumerate(((512 * 312 + 5, 1, 1), (256 * 312 + 3, 1, 2))):
        p = make_problem(T, B, H, dtype, False, seed=40 + i)
        opts = dict(activation="relu", batch_first=False, reverse=i == 1, lengths=None)
        short = run(CPU, p, opts, True)
        with monkeypatch.context() as m:
            m.setattr(narrow, "FIRST_TILE_BYTES", 4096)
            m.setattr(narrow, "FIX_HEAD", 1)
            long = run(CPU, p, opts, True)
        assert narrow_paths.count("lanes_backward_into") == 2
        del narrow_paths[:]
        for a, b in zip(short, long):
            assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("u_value", [0.7, -0.7, 0.0, 1.0], ids=["positive", "negative", "zero", "one"])
@pytest.mark.parametrize("activation", ["relu", "identity", "tanh"])
def test_lanes_two_passes_for_any_u(narrow_paths, u_value, activation):
    """The lanes kernels run every segment from a guessed start, then rerun it from the true one until the two
    chains meet (``narrow``'s pass 2). Each sign of u takes its own composition (u > 0: no upper bound), u = 0
    meets at once, and u = 1 with identity never meets (pass 2 reruns every segment whole): all equal the
    reference and the sequential kernels."""
    T = 9000  # 192 segments of 46 steps: two tiles each, and a tail
    p = make_problem(T, 1, 1, np.float32, False, seed=11)
    p["u"][:] = u_value
    opts = dict(activation=activation, batch_first=False, reverse=False, lengths=None)
    got = run(CPU, p, opts, True)
    assert "lanes_forward_into" in narrow_paths or activation == "tanh"
    assert "lanes_backward_into" in narrow_paths
    check_against_reference(p, opts, got)
    for name, a, s in zip(("h", "final state", "gx", "gu", "gb", "gh0"), got, run(CPU, p, opts, False)):
        scale = 1.0 + np.abs(s).max(initial=0.0) * (T if name in ("gu", "gb") else 1)
        assert_close(f"{name} vs sequential kernels", a, s, np.float32, T, scale=scale, against_kernels=True)


def test_lanes_backward_sums_survive_partial_sums_that_overflow(narrow_paths):
    """Pass 1 of the lanes backward sums a lane's gu, gb terms in the data's dtype over ``SUM_ROWS`` rows, then
    adds that partial to a float64 sum. Terms of +-3e38 (u = 0, h = 1: gx = grad_h) overflow a float32 partial
    where their float64 sum is exactly 0: those rows are summed again in float64, so gu and gb are 0, not inf or
    NaN. (The general sequential kernel flushes float32 partials every 64 steps with no such check: it gives inf
    or NaN here.)"""
    from indrnn_core.cpu import narrow

    T = 9000  # 192 segments of 46 steps and a tail of 168
    grad_h = np.resize(np.array([3e38, 3e38, -3e38, -3e38], np.float32), T).reshape(T, 1, 1)
    assert narrow.SUM_ROWS % 4 == 0  # a partial sums whole periods: +inf in float32, 0 in float64
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(3e38) + np.float32(3e38))
    h = np.ones((T, 1, 1), np.float32)
    u, h0 = np.zeros(1, np.float32), np.ones((1, 1), np.float32)
    gx, gu, gb, gh0 = indrnn_core.backward(grad_h, h, u, h0, activation="relu", time_parallel=True)
    assert "lanes_backward_into" in narrow_paths
    assert np.array_equal(gx, grad_h) and gh0[0, 0] == 0
    assert gu[0] == 0 and gb[0] == 0  # the float64 sums of the terms, exactly


def test_lanes_kernels_propagate_nan_and_inf_as_the_sequential_kernels_do(narrow_paths):
    """A NaN or inf mid-sequence reaches the same outputs as in the sequential kernels: pass 2's chains never meet
    through a NaN, and a sum's correction skips the steps where the chains agree (an inf there is counted once)."""
    T = 9000
    p = make_problem(T, 1, 1, np.float32, False, seed=12)
    p["u"][:] = 0.6
    p["x"][4000, 0, 0] = np.nan
    p["x"][7000, 0, 0] = np.inf
    p["grad_h"][2000, 0, 0] = np.inf
    p["grad_h"][5000, 0, 0] = -np.inf
    opts = dict(activation="relu", batch_first=False, reverse=False, lengths=None)
    with np.errstate(invalid="ignore", over="ignore"):
        got = run(CPU, p, opts, True)
        want = run(CPU, p, opts, False)
    assert "lanes_backward_into" in narrow_paths
    for name, a, s in zip(("h", "final state", "gx", "gu", "gb", "gh0"), got, want):
        assert np.array_equal(np.isnan(a), np.isnan(s)), f"{name}: NaNs differ"
        assert np.array_equal(np.isposinf(a), np.isposinf(s)) and np.array_equal(np.isneginf(a), np.isneginf(s)), (
            f"{name}: infs differ")
        finite = np.isfinite(s)
        err = np.abs(a[finite].astype(np.float64) - s[finite]).max(initial=0.0)
        scale = 1.0 + np.abs(s[finite]).max(initial=0.0) * (T if name in ("gu", "gb") else 1)
        assert err / scale <= tolerance(np.float32, T, against_kernels=True), name


def overflowing_problem(T, B, H, u_value, seed):
    """float32, |u| = 8 with relu: the chains stay finite (runs of 50 steps of x = 1e-30, which grow h by 8x a
    step up to ~1e15, then 20 steps of x = -1e20, which clip it to 0; grad_h ~ 1e-30), but a segment's composed
    map overflows: k = u**steps is inf past 42 steps, and so is the backward's A over 43 live steps."""
    rng = np.random.default_rng(seed)
    period = np.arange(T) % 70
    x = np.where(period < 50, 1e-30, -1e20)[:, None, None] * np.ones((T, B, H))
    p = dict(x=x, u=np.full(H, u_value), b=np.zeros(H), h0=np.zeros((B, H)),
             grad_h=rng.uniform(-1, 1, (T, B, H)) * 1e-30, grad_hn=rng.uniform(-1, 1, (B, H)) * 1e-30)
    return {k: v.astype(np.float32) for k, v in p.items()}


# id: (T, B, H, path); every segment spans over 42 steps. "lanes": ``narrow``'s lanes kernels; "scan": the general
# scan loops (lockstep segments at H < 8, row order from 8); "cuda": the CUDA scan in the simulator.
OVERFLOW_CASES = {
    "lanes-H1": (9000, 1, 1, "lanes"),
    "lanes-H4": (2165, 1, 4, "lanes"),
    "scan-H1": (9000, 1, 1, "scan"),
    "scan-H3": (3000, 1, 3, "scan"),
    "scan-B2-H9": (600, 2, 9, "scan"),
}


@pytest.mark.parametrize("u_value", [8.0, -8.0], ids=["u=8", "u=-8"])
@pytest.mark.parametrize("case", [*OVERFLOW_CASES, "cuda"])
def test_overflowing_maps_give_way_to_the_step_formula(monkeypatch, case, u_value, request):
    """With |u| > 1 a segment's composed map overflows (inf coefficients, and NaN from inf*0) where the chain
    itself stays finite: the boundaries then walk that segment with the step formula. ``time_parallel=True`` gives
    the sequential kernels' results (the starts exact, so h bit for bit on the CPU), never inf or NaN."""
    T, B, H, path = (200, 1, 2, "cuda") if case == "cuda" else OVERFLOW_CASES[case]
    device = CUDA if path == "cuda" else CPU
    if path == "lanes":
        request.getfixturevalue("narrow_paths")
    monkeypatch.setattr(tp, "CUDA_SEGMENT", 46)
    p = overflowing_problem(T, B, H, u_value, seed=21)
    opts = dict(activation="relu", batch_first=False, reverse=False, lengths=None)
    with np.errstate(over="ignore", invalid="ignore"):  # the simulator's scalars warn as the maps overflow
        got = run(device, p, opts, True)
        want = run(device, p, opts, False)
    if path == "lanes":
        assert "lanes_forward_into" in request.getfixturevalue("narrow_paths")
    for name, a, s in zip(("h", "final state", "gx", "gu", "gb", "gh0"), got, want):
        assert np.isfinite(s).all(), f"{name}: the problem is meant to stay finite"
        scale = 1.0 + np.abs(s).max(initial=0.0) * (T if name in ("gu", "gb") else 1)
        n = T * B if name in ("gu", "gb") else T
        assert_close(f"{name} vs sequential kernels", a, s, np.float32, n, scale=scale, against_kernels=True)
    if path != "cuda":
        assert np.array_equal(got[0], want[0]), "h: the walked starts are the sequential chain's own"


@pytest.mark.parametrize("batch_first", [False, True])
def test_any_strides_and_read_only_inputs_cpu(batch_first):
    rng = np.random.default_rng(6)
    T, B, H = 37, 2, 3
    shape = (B, T, H) if batch_first else (T, B, H)
    x, gh = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    u, b, h0 = rng.uniform(-1, 1, H), rng.uniform(-1, 1, H), rng.uniform(-1, 1, (B, H))
    opts = dict(batch_first=batch_first, lengths=[37, 20], activation="relu", time_parallel=True)
    h = indrnn_core.forward(x, u, b, h0, **opts)
    grads = indrnn_core.backward(gh, h, u, h0, **opts)

    def strided(a):  # same values, every other element in memory, last axis reversed
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],))
        view = big[..., ::-2]
        view[...] = a
        return view

    def read_only(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    for wrap in (strided, read_only):  # (each new array type compiles the kernels again: ~1 min)
        out = strided(nan_like(x))
        h2 = indrnn_core.forward(wrap(x), wrap(u), wrap(b), wrap(h0), out=out, **opts)
        np.testing.assert_array_equal(h2, h)
        gout = tuple(strided(nan_like(a)) for a in grads)
        for g2, g in zip(indrnn_core.backward(wrap(gh), wrap(h), wrap(u), wrap(h0), out=gout, **opts), grads):
            np.testing.assert_array_equal(g2, g)


@pytest.mark.parametrize("device", ["cpu", "cuda"], indirect=True)
@pytest.mark.parametrize("reverse", [False, True])
def test_final_state_out_may_overwrite_h0_in_place(device, reverse):
    rng = np.random.default_rng(7)
    T = 7 if device.kind == "cuda" else 50
    x, u, state = rng.uniform(-1, 1, (T, 3, 2)), rng.uniform(-1, 1, 2), rng.uniform(-1, 1, (3, 2))
    lengths = np.array([T, 0, 3])
    ref_h = reference.forward(x, u, None, state, lengths=lengths, reverse=reverse)
    want = reference.final_state(ref_h, state, lengths, reverse)
    d_state = device.put(state.copy())
    indrnn_core.forward(device.put(x), device.put(u), None, d_state, lengths=lengths, reverse=reverse,
                        final_state_out=d_state, time_parallel=True)
    np.testing.assert_allclose(device.get(d_state) if device.kind == "cuda" else d_state, want, rtol=1e-12)


@pytest.mark.parametrize("device", ["cpu", "cuda"], indirect=True)
def test_nan_and_inf_propagate_as_ieee_says(device):
    T = 9
    x = np.full((T, 2, 1), 0.5)
    x[1, 0, 0] = np.nan
    x[2, 1, 0] = np.inf
    h = device.get(indrnn_core.forward(device.put(x), device.put(np.full(1, 0.5)), activation="identity",
                                       time_parallel=True))
    assert np.isnan(h[1:, 0, 0]).all() and np.isfinite(h[:1, 0, 0]).all()
    assert np.isposinf(h[2:, 1, 0]).all() and np.isfinite(h[:2, 1, 0]).all()


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_time_parallel_forward_with_tanh_or_sigmoid_is_an_error(activation):
    x, u = np.zeros((4, 1, 2)), np.zeros(2)
    with pytest.raises(ValueError, match=r"time_parallel=True.*'relu' or 'identity'"):
        indrnn_core.forward(x, u, activation=activation, time_parallel=True)
    h = indrnn_core.forward(x, u, activation=activation)  # automatic: the sequential forward
    indrnn_core.backward(x, h, u, activation=activation, time_parallel=True)  # backward scans for any


@pytest.mark.parametrize("bad", ["yes", 1, 0.0])
def test_time_parallel_must_be_none_or_a_bool(bad):
    x, u = np.zeros((4, 1, 2)), np.zeros(2)
    with pytest.raises(TypeError, match="time_parallel must be None"):
        indrnn_core.forward(x, u, time_parallel=bad)
    with pytest.raises(TypeError, match="time_parallel must be None"):
        indrnn_core.backward(x, x, u, time_parallel=bad)


def test_automatic_rule(monkeypatch):
    relu, tanh = 0, 1
    monkeypatch.setattr(tp, "CUDA_MAX_COLUMNS", 16384)  # 0 (never) until measured on a GPU
    assert tp.choose(None, "cuda", tp.CUDA_MIN_STEPS, 1, tp.CUDA_MAX_COLUMNS, relu, True, lambda: 1.0)
    small = tp.CPU_MAX_COLUMNS
    assert tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 1, small, relu, True, lambda: 0.9)
    assert not tp.choose(None, "cpu", tp.CPU_MIN_STEPS - 1, 1, small, relu, True, lambda: 0.9)  # short
    assert not tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 2, small, relu, True, lambda: 0.9)  # wide
    # at CPU_LANE_COLUMNS: where the lanes kernels take the call
    lanes = tp.CPU_LANE_COLUMNS
    assert tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 1, lanes, relu, True, lambda: 0.9, lambda: True)
    assert tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 2, lanes // 2, relu, True, lambda: 0.9, lambda: True)
    assert not tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 2, lanes // 2, relu, True, lambda: 0.9, lambda: False)
    assert not tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 1, lanes - 2, relu, True, lambda: 0.9, lambda: True)
    assert not tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 1, lanes + 1, relu, True, lambda: 0.9, lambda: True)
    assert tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 2, 2, relu, True, lambda: 0.9,
                     lambda: pytest.fail("lanes asked at B x H <= CPU_MAX_COLUMNS"))
    assert not tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 1, 1, tanh, True, lambda: 0.9)  # tanh forward
    assert tp.choose(None, "cpu", tp.CPU_MIN_STEPS, 1, 1, tanh, False, lambda: 0.9)  # tanh backward
    assert not tp.choose(None, "cuda", tp.CUDA_MIN_STEPS, 1, tp.CUDA_MAX_COLUMNS + 1, relu, True, lambda: 1.0)
    # |u| > 1: only while max|u| ** T <= MAX_GROWTH; NaN in u: the sequential kernels
    T = 10**5
    assert tp.choose(None, "cpu", T, 1, 1, relu, True, lambda: tp.MAX_GROWTH ** (0.5 / T))
    assert not tp.choose(None, "cpu", T, 1, 1, relu, True, lambda: tp.MAX_GROWTH ** (2.0 / T))
    assert not tp.choose(None, "cpu", T, 1, 1, relu, True, lambda: float("nan"))
    assert tp.choose(True, "cpu", 1, 64, 64, relu, True, lambda: 5.0)
    assert not tp.choose(False, "cpu", T, 1, 1, relu, True, lambda: 0.5)
    # u is read only when the shape qualifies (on CUDA reading it waits for the stream)
    tp.choose(None, "cuda", 10, 1, 1, relu, True, lambda: pytest.fail("u read for a short sequence"))


def test_automatic_rule_routes_the_calls(monkeypatch):
    from indrnn_core import _dispatch
    from indrnn_core.cpu import scan

    calls = []
    for name in ("forward_into", "backward_into"):
        original = getattr(scan, name)
        monkeypatch.setattr(scan, name, lambda *a, _f=original, _n=name, **k: (calls.append(_n), _f(*a, **k)))
    monkeypatch.setattr(tp, "CPU_MIN_STEPS", 50)
    monkeypatch.setattr(tp, "CPU_MAX_COLUMNS", 4)
    rng = np.random.default_rng(8)
    x, u = rng.uniform(-1, 1, (50, 2, 2)), rng.uniform(-1, 1, 2)
    h = indrnn_core.forward(x, u)
    indrnn_core.backward(x, h, u)
    assert calls == ["forward_into", "backward_into"] and _dispatch.cpu_scan is scan
    calls.clear()
    h = indrnn_core.forward(x[:49], u)  # too short
    indrnn_core.backward(x[:49], h, u, time_parallel=True)
    assert calls == ["backward_into"]
    calls.clear()
    indrnn_core.forward(x, np.full(2, 1.5))  # 1.5 ** 50 > MAX_GROWTH
    assert calls == []
    # B x H = 8 with several sequences: only where the lanes kernels take the call (time-major, full lengths)
    monkeypatch.setattr(tp, "CPU_LANE_ELEMENTS", 64)
    x8, u4 = rng.uniform(-1, 1, (50, 2, 4)), rng.uniform(-1, 1, 4)
    h = indrnn_core.forward(x8, u4)
    indrnn_core.backward(x8, h, u4)
    assert calls == ["forward_into", "backward_into"]
    calls.clear()
    h = indrnn_core.forward(x8, u4, lengths=[50, 49])
    indrnn_core.backward(x8, h, u4, lengths=[50, 49])
    h = indrnn_core.forward(np.swapaxes(x8, 0, 1).copy(), u4, batch_first=True)
    assert calls == []


def test_benchmark_cli_times_both_paths(tmp_path):
    """``python -m benchmarks --time-parallel on off --rounds 2``: both variants gated and timed, alternating."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    path = tmp_path / "tp.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--config", "tiny", "--repeats", "2", "--only", "core",
                           "--time-parallel", "on", "off", "--rounds", "2", "--json", str(path)],
                          cwd=repo, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(path.read_text())
    (gate,) = doc["gates"]
    assert gate["passed"] and gate["time_parallel"] == ["on", "off"]
    rows = [r for r in doc["results"] if r["suite"] == "core"]
    assert sorted((r["time_parallel"], r["mode"]) for r in rows) == sorted(
        (v, m) for v in ("on", "off") for m in ("fwd", "bwd", "fwdbwd"))
    assert all(r["rounds"] == 2 and r["outputs_finite"] for r in rows)
    assert "time_parallel=True" in {r["impl"] for r in rows if r["time_parallel"] == "on"}.pop()
