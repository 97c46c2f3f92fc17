"""The register-blocked kernels of ``indrnn_core.cpu.narrow`` (rows: sequential; lanes: time-parallel) against
the float64 reference and the general kernels, and their own properties (bit-identical reruns, tile lengths, both
passes, overflowing partial sums, NaN and inf). A file of their own so that pytest-xdist (``--dist loadfile``) runs
them beside ``test_time_parallel.py``: compiling each file's kernels takes minutes. Tolerances: see
``time_parallel_support``."""

import numpy as np
import pytest

import indrnn_core
from time_parallel_support import (CPU, _general_kernels, assert_close, assert_same_on_one_thread,
                                   check_against_reference, make_problem, run, tolerance)
from time_parallel_support import narrow_paths, small_segments  # noqa: F401 (fixtures: small_segments autouse)

ACTIVATIONS = ["relu", "identity", "tanh", "sigmoid"]


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
        assert_same_on_one_thread(p, opts, time_parallel)


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
