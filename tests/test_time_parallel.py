"""The time-parallel kernels (``time_parallel=True``; ``indrnn_core.time_parallel``) against the float64 reference
and against the sequential kernels, on the CPU and on CUDA (Numba's simulator without a GPU), for every contract
feature; the automatic rule; the errors. ``narrow``'s kernels: ``test_narrow_kernels.py``. The tolerance rule:
``time_parallel_support``."""

import numpy as np
import pytest

import indrnn_core
from indrnn_core import reference
from indrnn_core import time_parallel as tp
from indrnn_core.testing import nan_like
from time_parallel_support import (CPU, CUDA, assert_close, assert_same_on_one_thread, check_against_reference,
                                   make_problem, run)
from time_parallel_support import narrow_paths, small_segments  # noqa: F401 (fixtures: small_segments autouse)


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
    assert_same_on_one_thread(p, opts, True)


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
