"""The kernels (CPU and CUDA, same test bodies) against the float64 reference, for every option."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import indrnn_core
from indrnn_core import reference
from indrnn_core.cuda.recurrence import CHUNK
from indrnn_core.testing import check_gradients, core_forward, core_vjp, default_tolerance, nan_like, problems

# The CUDA simulator costs ~5 µs per element-step: keep its problems tiny.
SIZES = {"cpu": dict(max_steps=12, max_batch=5, max_hidden=9), "cuda": dict(max_steps=5, max_batch=3, max_hidden=5)}


def run(device, p, out_nan=True, final=None):
    """Forward + backward of problem ``p`` on ``device``, returned as NumPy arrays. ``final``: a list that receives
    the final states the forward pass writes into a NaN-filled ``final_state_out``."""
    opts = p.options()
    put = device.put
    out = put(nan_like(p.x)) if out_nan else None
    T, B, H = p.shape
    final_out = None if final is None else put(np.full((B, H), np.nan, p.dtype))
    h = indrnn_core.forward(put(p.x), put(p.u), put(p.b), put(p.h0), out=out, final_state_out=final_out, **opts)
    if final is not None:
        final.append(device.get(final_out))
    grads_out = tuple(put(np.full(s, np.nan, p.dtype)) for s in (p.x.shape, (H,), (H,), (B, H))) if out_nan else None
    # On CUDA, a NaN-filled caller workspace must be fully overwritten before the partial sums read it.
    workspace = put(np.full((2, B, H), np.nan, p.dtype)) if out_nan and device.kind == "cuda" else None
    grads = indrnn_core.backward(put(p.grad_h), h, put(p.u), put(p.h0), grad_hn=put(p.grad_hn), out=grads_out,
                                 workspace=workspace, **opts)
    return device.get(h), tuple(device.get(g) for g in grads)


def assert_close(actual, expected, dtype, name):
    tol = default_tolerance(dtype)
    scale = 1.0 + np.abs(expected).max(initial=0.0)
    err = np.abs(np.asarray(actual, np.float64) - expected).max(initial=0.0) / scale
    assert np.isfinite(actual).all(), f"{name} has non-finite elements (unwritten?)"
    assert err <= tol, f"{name}: scaled error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("device", ["cpu", "cpu-parallel", "cuda"], indirect=True)
@given(data=st.data())
def test_matches_reference_for_every_option(device, data):
    p = data.draw(problems(**SIZES[device.kind]))
    out_nan = data.draw(st.booleans())
    final = []
    h, grads = run(device, p, out_nan, final)
    p64 = p.astype(np.float64)
    ref_h = reference.forward(p64.x, p64.u, p64.b, p64.h0, **p.options())
    assert_close(final[0], reference.final_state(ref_h, p64.h0, p.lengths, p.reverse, p.batch_first), p.dtype,
                 "final state")
    ref_grads = reference.backward(p64.grad_h, ref_h, p64.u, p64.h0, grad_hn=p64.grad_hn, **p.options())
    assert h.dtype == p.dtype and all(g.dtype == p.dtype for g in grads)
    assert_close(h, ref_h, p.dtype, "h")
    for name, g, r in zip(("gx", "gu", "gb", "gh0"), grads, ref_grads):
        assert_close(g, r, p.dtype, name)


@settings(max_examples=15)
@given(problems(dtypes=("float64",)))
def test_gradients_match_finite_differences_cpu(problem):
    report = check_gradients(core_forward, core_vjp, problem)
    assert report.ok, report


@settings(max_examples=3)
@given(problems(dtypes=("float64",), **SIZES["cuda"]))
def test_gradients_match_finite_differences_cuda(problem):
    from numba import cuda

    def fwd(x, u, b, h0, **o):
        put = cuda.to_device
        return indrnn_core.forward(put(x), put(u), None if b is None else put(b), None if h0 is None else put(h0),
                                   **o).copy_to_host()

    def vjp(x, u, b, h0, gh, ghn, **o):
        put = cuda.to_device
        h0d = None if h0 is None else put(h0)
        h = indrnn_core.forward(put(x), put(u), None if b is None else put(b), h0d, **o)
        grads = indrnn_core.backward(put(gh), h, put(u), h0d, grad_hn=None if ghn is None else put(ghn), **o)
        return tuple(g.copy_to_host() for g in grads)

    report = check_gradients(fwd, vjp, problem)
    assert report.ok, report


CHUNK_LENGTHS = [2 * CHUNK + 1, 2 * CHUNK, CHUNK + 1, CHUNK, CHUNK - 1, 1, 0]
EDGE_CASES = {
    # id: (T, B, H, lengths, reverse)
    "T1-B1-H1": (1, 1, 1, None, False),
    "T0": (0, 2, 3, None, False),
    "all-lengths-zero": (4, 3, 2, [0, 0, 0], False),
    "all-lengths-zero-reverse": (4, 3, 2, [0, 0, 0], True),
    "lengths-0-and-T-reverse": (5, 3, 3, [5, 0, 2], True),
    "B*H-not-multiple-of-block": (3, 7, 3, [3, 1, 0, 2, 3, 3, 1], False),
    "awkward-T63-H500": (63, 3, 500, [63, 17, 0], False),
    # The CUDA kernels load CHUNK visits ahead: lengths just under, at and over multiples of it.
    "chunk-boundaries": (2 * CHUNK + 1, 7, 3, CHUNK_LENGTHS, False),
    "chunk-boundaries-reverse": (2 * CHUNK + 1, 7, 3, CHUNK_LENGTHS, True),
    # ... and the gu/gb sum over sequences loads CHUNK rows ahead: B over two chunks, not a multiple of one.
    "sum-rows-chunks": (3, 2 * CHUNK + 3, 2, None, False),
}


@pytest.mark.parametrize("case", list(EDGE_CASES), ids=list(EDGE_CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_edge_cases(device, case, dtype, batch_first):
    T, B, H, lengths, reverse = EDGE_CASES[case]
    rng = np.random.default_rng(T * 1000 + B * 10 + H)
    shape = (B, T, H) if batch_first else (T, B, H)
    from indrnn_core.testing import Problem

    p = Problem(x=rng.uniform(-1, 1, shape), u=rng.uniform(-1, 1, H), b=rng.uniform(-1, 1, H),
                h0=rng.uniform(-1, 1, (B, H)), grad_h=rng.uniform(-1, 1, shape), grad_hn=rng.uniform(-1, 1, (B, H)),
                activation="relu", batch_first=batch_first,
                lengths=None if lengths is None else np.array(lengths), reverse=reverse).astype(dtype)
    final = []
    h, grads = run(device, p, final=final)
    ref_h = reference.forward(p.x, p.u, p.b, p.h0, **p.options())
    assert_close(final[0], reference.final_state(ref_h, p.h0, p.lengths, p.reverse, p.batch_first), dtype,
                 "final state")
    ref = reference.backward(p.grad_h, ref_h, p.u, p.h0, grad_hn=p.grad_hn, **p.options())
    assert_close(h, ref_h, dtype, "h")
    for name, g, r in zip(("gx", "gu", "gb", "gh0"), grads, ref):
        assert_close(g, r, dtype, name)
    if lengths is not None:  # padding is exactly zero, in outputs and in gradients
        h_tm = np.swapaxes(h, 0, 1) if batch_first else h
        gx_tm = np.swapaxes(grads[0], 0, 1) if batch_first else grads[0]
        for n, length in enumerate(lengths):
            assert not h_tm[length:, n].any() and not gx_tm[length:, n].any()


def test_final_state(device):
    rng = np.random.default_rng(1)
    T, B, H = 5, 4, 3
    h = rng.uniform(-1, 1, (T, B, H))
    h0 = rng.uniform(-1, 1, (B, H))
    lengths = [5, 0, 2, 1]
    for reverse in (False, True):
        for batch_first in (False, True):
            hh = np.ascontiguousarray(np.swapaxes(h, 0, 1)) if batch_first else h
            got = device.get(indrnn_core.final_state(device.put(hh), device.put(h0), lengths, reverse, batch_first))
            expected = reference.final_state(hh, h0, lengths, reverse, batch_first)
            np.testing.assert_array_equal(got, expected)
            # by hand: sequence 1 is empty (h0); sequence 2's last step is t=1 forward, t=0 reversed
            np.testing.assert_array_equal(got[1], h0[1])
            np.testing.assert_array_equal(got[2], h[0 if reverse else 1, 2])
    got = device.get(indrnn_core.final_state(device.put(h), None, lengths))
    np.testing.assert_array_equal(got[1], 0.0)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_split_in_time_equals_one_run(device, activation, batch_first):
    """Running steps [0, k) then [k, T) from the carried state equals one run: outputs and every gradient."""
    T, B, H, k = (7, 3, 4, 3) if device.kind == "cuda" else (40, 5, 33, 17)
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (T, B, H))
    u, b, h0 = rng.uniform(-1, 1, H), rng.uniform(-1, 1, H), rng.uniform(-1, 1, (B, H))
    gh, ghn = rng.uniform(-1, 1, (T, B, H)), rng.uniform(-1, 1, (B, H))

    def layout(a):
        return np.ascontiguousarray(np.swapaxes(a, 0, 1)) if batch_first else a

    def unlayout(a):
        return np.swapaxes(a, 0, 1) if batch_first else a

    P, G = device.put, device.get
    opts = dict(activation=activation, batch_first=batch_first)
    h = indrnn_core.forward(P(layout(x)), P(u), P(b), P(h0), **opts)
    gx, gu, gb, g0 = (G(a) for a in indrnn_core.backward(P(layout(gh)), h, P(u), P(h0), grad_hn=P(ghn), **opts))

    h1 = indrnn_core.forward(P(layout(x[:k])), P(u), P(b), P(h0), **opts)
    mid = indrnn_core.final_state(h1, P(h0), batch_first=batch_first)
    h2 = indrnn_core.forward(P(layout(x[k:])), P(u), P(b), mid, **opts)
    gx2, gu2, gb2, gmid = indrnn_core.backward(P(layout(gh[k:])), h2, P(u), mid, grad_hn=P(ghn), **opts)
    gx1, gu1, gb1, g01 = indrnn_core.backward(P(layout(gh[:k])), h1, P(u), P(h0), grad_hn=gmid, **opts)

    np.testing.assert_allclose(unlayout(G(h)), np.concatenate([unlayout(G(h1)), unlayout(G(h2))]), rtol=1e-12)
    np.testing.assert_allclose(unlayout(gx), np.concatenate([unlayout(G(gx1)), unlayout(G(gx2))]), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(gu, G(gu1) + G(gu2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb, G(gb1) + G(gb2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g0, G(g01), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reruns_are_bit_identical(device, dtype):
    T, B, H = (6, 5, 3) if device.kind == "cuda" else (50, 9, 70)
    rng = np.random.default_rng(3)
    x, gh = rng.uniform(-1, 1, (T, B, H)).astype(dtype), rng.uniform(-1, 1, (T, B, H)).astype(dtype)
    u, h0 = rng.uniform(-1, 1, H).astype(dtype), rng.uniform(-1, 1, (B, H)).astype(dtype)
    lengths = rng.integers(0, T + 1, B)

    def once():
        h = indrnn_core.forward(device.put(x), device.put(u), None, device.put(h0), lengths=lengths)
        grads = indrnn_core.backward(device.put(gh), h, device.put(u), device.put(h0), lengths=lengths)
        return [device.get(a) for a in (h, *grads)]

    first = once()
    for again in (once(), once()):
        for a, b in zip(first, again):
            assert np.array_equal(a, b, equal_nan=True)


def test_cpu_results_do_not_depend_on_thread_count(monkeypatch):
    from indrnn_core.cpu import recurrence

    rng = np.random.default_rng(4)
    T, B, H = 30, 7, 20
    x, gh, u = rng.uniform(-1, 1, (T, B, H)), rng.uniform(-1, 1, (T, B, H)), rng.uniform(-1, 1, H)
    results = []
    for threads, min_elements in ((1, 1 << 60), (1, 0), (numba.config.NUMBA_NUM_THREADS, 0)):
        monkeypatch.setattr(recurrence, "PARALLEL_MIN_ELEMENTS", min_elements)  # serial kernel, then parallel
        numba.set_num_threads(threads)
        try:
            h = indrnn_core.forward(x, u, lengths=[30, 0, 5, 30, 1, 2, 29])
            results.append([h, *indrnn_core.backward(gh, h, u, lengths=[30, 0, 5, 30, 1, 2, 29])])
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("batch_first", [False, True])
def test_any_strides_and_read_only_inputs_cpu(batch_first):
    """Non-contiguous views and read-only arrays (as JAX/TF hand out via DLPack) give the contiguous results."""
    rng = np.random.default_rng(5)
    T, B, H = 9, 4, 6
    shape = (B, T, H) if batch_first else (T, B, H)
    x, gh = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    u, b, h0 = rng.uniform(-1, 1, H), rng.uniform(-1, 1, H), rng.uniform(-1, 1, (B, H))
    opts = dict(batch_first=batch_first, lengths=[9, 3, 0, 5], activation="tanh")
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

    for wrap in (strided, read_only, np.asfortranarray):
        h2 = indrnn_core.forward(wrap(x), wrap(u), wrap(b), wrap(h0), **opts)
        np.testing.assert_allclose(h2, h, rtol=1e-13, atol=1e-15)
        out = tuple(strided(nan_like(a)) for a in grads)  # strided outputs too
        grads2 = indrnn_core.backward(wrap(gh), wrap(h), wrap(u), wrap(h0), out=out, **opts)
        for g2, g in zip(grads2, grads):
            np.testing.assert_allclose(g2, g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("threads", ["serial", "parallel"])
@pytest.mark.parametrize("shape", [(9, 4, 6), (1100, 1, 16)], ids=["general", "narrow"])
def test_grad_h_broadcast_over_time_and_batch_cpu(monkeypatch, batch_first, threads, shape):
    """A grad_h with zero strides over time and batch (torch's expand of a zero or of sum()'s gradient; the JAX
    adapter's symbolic-zero row) takes the kernels' constant-row path: exactly the results of the same values
    written out in full, through every CPU kernel family (serial, parallel, narrow)."""
    from indrnn_core.cpu import recurrence

    monkeypatch.setattr(recurrence, "PARALLEL_MIN_ELEMENTS", 1 << 60 if threads == "serial" else 0)
    rng = np.random.default_rng(11)
    T, B, H = shape
    full = (B, T, H) if batch_first else (T, B, H)
    x = rng.uniform(-1, 1, full).astype(np.float32)
    u, h0 = rng.uniform(-1, 1, H).astype(np.float32), rng.uniform(-1, 1, (B, H)).astype(np.float32)
    grad_hn = rng.uniform(-1, 1, (B, H)).astype(np.float32)
    lengths = [T] * B if B == 1 else [9, 3, 0, 5]
    opts = dict(batch_first=batch_first, lengths=lengths, activation="tanh")
    h = indrnn_core.forward(x, u, None, h0, **opts)
    for row in (np.zeros(H, np.float32), rng.uniform(-1, 1, H).astype(np.float32), np.float32(0.5)):
        broadcast = np.broadcast_to(row, full)
        assert broadcast.strides[:2] == (0, 0)
        out = tuple(nan_like(a) for a in (x, u, u, h0))
        got = indrnn_core.backward(broadcast, h, u, h0, grad_hn=grad_hn, out=out, **opts)
        want = indrnn_core.backward(np.ascontiguousarray(broadcast), h, u, h0, grad_hn=grad_hn, **opts)
        for g, w in zip(got, want):
            assert np.array_equal(g, w)



@pytest.mark.parametrize("family", ["serial", "parallel", "narrow", "time-parallel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_flushes_subnormal_carries_cpu(monkeypatch, family, dtype):
    """dL/dh travelling back alone (loss on the final state only) is multiplied by u = 0.5 at every step: exactly
    0.5**k at k steps back, until it would leave the normal range, where the CPU kernels flush it to 0 (a subnormal
    costs ~100 cycles per operation on x86). Every CPU kernel family gives exactly that."""
    from indrnn_core.cpu import recurrence

    monkeypatch.setattr(recurrence, "PARALLEL_MIN_ELEMENTS", 1 << 60 if family == "serial" else 0)
    tiny = np.finfo(dtype).tiny
    steps_to_tiny = int(-np.log2(tiny))  # 126 (float32) or 1022 (float64)
    T, B, H = (1100 if family == "narrow" or dtype == np.float64 else 300), 1, 16
    x = np.ones((T, B, H), dtype)  # relu: h > 0, act' = 1 everywhere
    u = np.full(H, 0.5, dtype)
    h = indrnn_core.forward(x, u)
    grad_h = np.zeros_like(h)
    grad_hn = np.ones((B, H), dtype)
    gx, gu, gb, gh0 = indrnn_core.backward(grad_h, h, u, grad_hn=grad_hn, time_parallel=family == "time-parallel")
    k = np.arange(T)[::-1]  # steps back from the last
    want = np.where(k <= steps_to_tiny, np.exp2(-k.astype(np.float64)), 0).astype(dtype)
    np.testing.assert_array_equal(gx[:, 0, 0], want)
    assert (gh0 == (0.5 ** T if T <= steps_to_tiny else 0)).all()



def test_nan_and_inf_propagate_as_ieee_says(device):
    T, B, H = 4, 2, 3
    x = np.full((T, B, H), 0.5)
    x[1, 0, 2] = np.nan
    x[2, 1, 0] = np.inf
    u = np.full(H, 0.5)
    h = device.get(indrnn_core.forward(device.put(x), device.put(u), activation="identity"))
    assert np.isnan(h[1:, 0, 2]).all() and np.isfinite(h[:1, 0, 2]).all()
    assert np.isposinf(h[2:, 1, 0]).all()
    finite = np.ones((T, B, H), bool)
    finite[1:, 0, 2] = finite[2:, 1, 0] = False
    assert np.isfinite(h[finite]).all()


def test_long_float32_sequence_keeps_gradient_sums_accurate():
    """Over 4000 steps the u and b gradient sums stay close to the float64 reference (accumulated in float64)."""
    rng = np.random.default_rng(6)
    T, B, H = 4000, 2, 5
    x = rng.uniform(-1, 1, (T, B, H))
    u = rng.uniform(0, 0.9, H)
    gh = rng.uniform(0, 1, (T, B, H))
    h32 = indrnn_core.forward(x.astype(np.float32), u.astype(np.float32))
    g32 = indrnn_core.backward(gh.astype(np.float32), h32, u.astype(np.float32))
    h64 = reference.forward(x, u)
    g64 = reference.backward(gh, h64, u)
    for name, a, r in zip(("gu", "gb"), g32[1:3], g64[1:3]):
        np.testing.assert_allclose(a, r, rtol=2e-5, err_msg=name)


def test_identity_recurrence_closed_form(device):
    """u = 1/2, x = 1, identity: h_t = 2 - 2^-t."""
    T = 6
    x = np.ones((T, 1, 1))
    h = device.get(indrnn_core.forward(device.put(x), device.put(np.array([0.5])), activation="identity"))
    np.testing.assert_allclose(h[:, 0, 0], 2.0 - 0.5 ** np.arange(T), rtol=1e-15)


@pytest.mark.parametrize("reverse", [False, True])
def test_final_state_out_may_overwrite_h0_in_place(device, reverse):
    """Carrying a state across calls in place: ``final_state_out`` may be the very ``h0`` buffer being read."""
    rng = np.random.default_rng(3)
    x, u, state = rng.uniform(-1, 1, (5, 3, 4)), rng.uniform(-1, 1, 4), rng.uniform(-1, 1, (3, 4))
    lengths = np.array([5, 0, 1])
    ref_h = reference.forward(x, u, None, state, lengths=lengths, reverse=reverse)
    want = reference.final_state(ref_h, state, lengths, reverse)
    d_state = device.put(state.copy())
    indrnn_core.forward(device.put(x), device.put(u), None, d_state, lengths=lengths, reverse=reverse,
                        final_state_out=d_state)
    np.testing.assert_allclose(device.get(d_state) if device.kind == "cuda" else d_state, want, rtol=1e-12)
