"""float16 and bfloat16 storage on CUDA (float32 math and gu/gb accumulation), against the float64 reference.

Runs on a GPU when there is one, else in Numba's simulator (tiny shapes: T <= 8). The reference runs on the same
rounded inputs, with tolerances from ``indrnn_core.testing.default_tolerance`` (derived from the format's epsilon
and the reduction length). Fresh outputs are NaN-filled, so an element a kernel forgets to write fails.
"""

import os
import subprocess
import sys
import zlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings

import indrnn_core as core
from indrnn_core import reference
from indrnn_core.cuda.recurrence import CHUNK
from indrnn_core.testing import Problem, check_gradients, default_tolerance, nan_like, problems, scaled_error

BF16 = np.dtype(ml_dtypes.bfloat16)
HALF = {"float16": np.dtype(np.float16), "bfloat16": BF16}


def put(a):
    """A device copy of NumPy ``a``. Numba cannot type ml_dtypes' bfloat16 (on a GPU), so bfloat16 goes up as its
    bits and comes back tagged, as the torch adapter hands it to the core."""
    from numba import cuda

    from indrnn_core.cuda import _launch

    if a is None:
        return None
    a = np.ascontiguousarray(a)
    if a.dtype == BF16:
        return _launch.retag(cuda.to_device(a.view(np.uint16)), BF16)
    return cuda.to_device(a)


def get(a):
    """A device array (or a bfloat16 view from :func:`put`) back on the host."""
    from indrnn_core.cuda import _launch

    if np.dtype(a.dtype) == BF16:
        return _launch.numba_array(_launch.bits(a)).copy_to_host().view(BF16)
    return a.copy_to_host()


def cuda_forward(x, u, b, h0, **options):
    out = put(nan_like(x))
    return get(core.forward(put(x), put(u), put(b), put(h0), out=out, **options))


def cuda_vjp(x, u, b, h0, grad_h, grad_hn, **options):
    h = core.forward(put(x), put(u), put(b), put(h0), **options)
    bf = options.get("batch_first", False)
    B, H = x.shape[0 if bf else 1], u.shape[0]
    out = (put(nan_like(grad_h)), put(nan_like(u)), put(nan_like(u)), put(np.full((B, H), np.nan, grad_h.dtype)))
    grads = core.backward(put(grad_h), h, put(u), put(h0), grad_hn=put(grad_hn), out=out, **options)
    return tuple(get(g) for g in grads)


def make_problem(T, B, H, seed, *, batch_first=False, lengths=None, reverse=False, activation="relu", h0=True,
                 b=True, grad_hn=True):
    rng = np.random.default_rng(seed)
    shape = (B, T, H) if batch_first else (T, B, H)
    return Problem(
        x=rng.uniform(-1, 1, shape), u=rng.uniform(-1, 1, H), b=rng.uniform(-0.5, 0.5, H) if b else None,
        h0=rng.uniform(-1, 1, (B, H)) if h0 else None, grad_h=rng.uniform(-1, 1, shape),
        grad_hn=rng.uniform(-1, 1, (B, H)) if grad_hn else None, activation=activation, batch_first=batch_first,
        lengths=None if lengths is None else np.asarray(lengths, np.int64), reverse=reverse)


CASES = {  # every option at least once, with awkward sizes spanning several (test-sized) blocks
    "plain": dict(T=8, B=3, H=5),
    "lengths": dict(T=7, B=4, H=3, lengths=[7, 0, 3, 5]),
    "reverse-lengths": dict(T=6, B=3, H=4, reverse=True, lengths=[2, 6, 0]),
    "batch_first": dict(T=5, B=2, H=6, batch_first=True, lengths=[5, 3]),
    "no-optionals-tanh": dict(T=8, B=2, H=3, activation="tanh", h0=False, b=False, grad_hn=False),
    "sigmoid-bf-reverse": dict(T=4, B=3, H=2, activation="sigmoid", batch_first=True, reverse=True),
    "identity": dict(T=8, B=2, H=4, activation="identity"),
    # the kernels' CHUNK look-ahead buffers (loads, chain, conversion and stores in separate loops): lengths just
    # under, at and over multiples of it; still ~200 element-steps for the simulator
    "chunk-boundaries": dict(T=2 * CHUNK + 1, B=3, H=2, lengths=[2 * CHUNK + 1, CHUNK, CHUNK - 1]),
    "chunk-boundaries-reverse": dict(T=CHUNK + 1, B=2, H=3, lengths=[CHUNK + 1, CHUNK], reverse=True),
}


@pytest.mark.parametrize("dtype", list(HALF))
@pytest.mark.parametrize("case", list(CASES))
def test_half_storage_matches_reference(dtype, case):
    opts = dict(CASES[case])
    p = make_problem(opts.pop("T"), opts.pop("B"), opts.pop("H"), seed=zlib.crc32(case.encode()), **opts)
    p = p.astype(dtype)
    assert p.x.dtype == HALF[dtype] and p.u.dtype == np.float32
    report = check_gradients(cuda_forward, cuda_vjp, p)
    assert report.ok, report
    assert report.finite_difference_error == {}  # skipped for half precision


@settings(max_examples=15)
@given(problems(dtypes=("float16", "bfloat16"), max_steps=6, max_batch=3, max_hidden=5))
def test_drawn_half_problems_match_reference(problem):
    """indrnn_core.testing draws half-precision problems too (u, b float32) and checks them with its own
    dtype-derived tolerances."""
    assert problem.u.dtype == np.float32 and problem.x.dtype in HALF.values()
    report = check_gradients(cuda_forward, cuda_vjp, problem)
    assert report.ok, report


@pytest.mark.parametrize("dtype", list(HALF))
def test_output_dtypes_and_strided_input(dtype):
    """h, gx, gh0 in the storage dtype; gu, gb float32 (u's dtype). A strided x (every other step) equals its
    contiguous copy bit for bit."""
    p = make_problem(8, 2, 3, seed=3).astype(dtype)
    wide = np.zeros((16, 2, 3), HALF[dtype])
    wide[::2] = p.x
    from numba import cuda

    from indrnn_core.cuda import _launch

    strided = _launch.retag(cuda.to_device(wide.view(np.uint16))[::2], HALF[dtype])  # a view: every other step
    h_strided = get(core.forward(strided, put(p.u), put(p.b), put(p.h0)))
    h = core.forward(put(p.x), put(p.u), put(p.b), put(p.h0))
    assert np.dtype(h.dtype) == HALF[dtype]
    np.testing.assert_array_equal(h_strided.view(np.uint16), get(h).view(np.uint16))
    gx, gu, gb, gh0 = core.backward(put(p.grad_h), h, put(p.u), put(p.h0))
    assert tuple(np.dtype(g.dtype) for g in (gx, gu, gb, gh0)) == (HALF[dtype], np.float32, np.float32, HALF[dtype])


@pytest.mark.parametrize("dtype", list(HALF))
def test_stores_round_to_nearest_even(dtype):
    """identity, u = 0: h = round(x + b) computed in float32, stored as NumPy/ml_dtypes round it (nearest even),
    including ties, overflow to inf, inf and NaN."""
    dt = HALF[dtype]
    x32 = np.array([1.0, 1.0 + 2.0 ** -9, 1.0 + 3 * 2.0 ** -9, -2.5, 3.0e38, 7.0e4, np.inf, -np.inf, np.nan,
                    1.0 + 2.0 ** -12, 1e-8, -0.0], np.float32)
    with np.errstate(over="ignore"):
        x = x32.astype(dt)  # the stored inputs
    H = x.size  # one step, one column per value (a step's inf would make the next step's 0 * inf a NaN)
    b = np.full(H, 2.0 ** -8 + 2.0 ** -16, np.float32)  # a sum that is not representable: rounding matters
    h = get(core.forward(put(x.reshape(1, 1, H)), put(np.zeros(H, np.float32)), put(b), activation="identity"))
    want = (x.astype(np.float32) + b).astype(dt).reshape(1, 1, H)
    got_nan, want_nan = np.isnan(h.astype(np.float32)), np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(got_nan, want_nan)
    np.testing.assert_array_equal(h.view(np.uint16)[~got_nan], want.view(np.uint16)[~want_nan])


@pytest.mark.parametrize("dtype", list(HALF))
def test_final_state_of_half_data(dtype):
    p = make_problem(6, 3, 4, seed=5, lengths=[6, 0, 2]).astype(dtype)
    h = cuda_forward(p.x, p.u, p.b, p.h0, **p.options())
    hn = get(core.final_state(put(h), put(p.h0), lengths=p.lengths))
    want = reference.final_state(h, p.h0, p.lengths, False, False)
    np.testing.assert_array_equal(hn.astype(np.float64), want.astype(np.float64))
    out = put(np.full((3, 4), np.nan, HALF[dtype]))
    core.forward(put(p.x), put(p.u), put(p.b), put(p.h0), lengths=p.lengths, final_state_out=out)
    np.testing.assert_array_equal(get(out).view(np.uint16), hn.view(np.uint16))


def test_default_tolerance_grows_with_reduction_length_and_epsilon():
    small, long = default_tolerance("bfloat16", 4, 2), default_tolerance("bfloat16", 64, 2)
    assert long["gx"] > small["gx"] and long["gu"] > small["gu"] and long["h"] == small["h"] == 2.0 ** -7
    assert default_tolerance("float16", 4, 2)["gu"] == pytest.approx(small["gu"] / 8)  # eps 2^-10 vs 2^-7
    assert default_tolerance(np.float32) == 1e-4
    with pytest.raises(ValueError, match="steps= and batch="):
        default_tolerance(np.float16)


def test_scaled_error_sees_a_wrong_half_result():
    """The tolerances are tight enough to see an output off by a few ulps more than the rounding model allows."""
    p = make_problem(8, 3, 5, seed=1).astype("bfloat16")
    h = cuda_forward(p.x, p.u, p.b, p.h0, **p.options())
    want = reference.forward(*(None if a is None else a.astype(np.float64) for a in (p.x, p.u, p.b, p.h0)),
                             **p.options())
    tol = default_tolerance(BF16, 8, 3)["h"]
    assert scaled_error(h, want) <= tol
    assert scaled_error(h.astype(np.float64) + 4 * tol * (1 + np.abs(want).max()), want) > tol


# ---- bad input ---------------------------------------------------------------------------------------------------
T, B, H = 3, 2, 4


def _arrays(dtype, device):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (T, B, H)).astype(dtype)
    u = rng.uniform(-1, 1, H).astype(np.float32)
    move = put if device == "cuda" else (lambda a: a)
    return move(x), move(u), move(x[0].copy())


@pytest.mark.parametrize("dtype", list(HALF))
def test_half_on_the_cpu_is_a_clear_error(dtype):
    x, u, h0 = _arrays(HALF[dtype], "cpu")
    with pytest.raises(TypeError, match=f"x has dtype {dtype}: half precision .* runs on CUDA only"):
        core.forward(x, u)
    with pytest.raises(TypeError, match=f"grad_h has dtype {dtype}: half precision"):
        core.backward(x, x, u)


@pytest.mark.parametrize("dtype", list(HALF))
def test_mixed_precision_is_a_clear_error(dtype):
    x, u, h0 = _arrays(HALF[dtype], "cuda")
    h0_32 = put(np.zeros((B, H), np.float32))
    with pytest.raises(TypeError, match=f"all arrays must share one dtype: x is {dtype} but h0 is float32"):
        core.forward(x, u, h0=h0_32)
    u_half = put(np.zeros(H, HALF[dtype]))
    with pytest.raises(TypeError, match=f"u must have dtype float32 with {dtype} data"):
        core.forward(x, u_half)
    with pytest.raises(TypeError, match="b must have dtype float32"):
        core.forward(x, u, b=put(np.zeros(H, np.float64)))
    with pytest.raises(TypeError, match=f"out must have dtype {dtype}, got float32"):
        core.forward(x, u, out=put(np.zeros((T, B, H), np.float32)))
    h = core.forward(x, u)
    with pytest.raises(TypeError, match="grad_h is float32 but h is|share one dtype: grad_h is float32"):
        core.backward(put(np.zeros((T, B, H), np.float32)), h, u)
    with pytest.raises(TypeError, match=r"out\[1\] \(gu\) must have dtype float32"):
        core.backward(x, h, u, out=(None, put(np.zeros(H, HALF[dtype])), None, None))
    with pytest.raises(TypeError, match="workspace must have dtype float32"):
        core.backward(x, h, u, workspace=put(np.zeros((2, B, H), HALF[dtype])))
    with pytest.raises(ValueError, match="time_parallel=True runs float32/float64 data only"):
        core.forward(x, u, time_parallel=True)


# ---- CUDA graph capture, simulated: what the core does while the stream is being captured ----------------------
@pytest.fixture
def capturing(monkeypatch):
    """The core believes its stream is being captured into a CUDA graph; any read-back to the host fails."""
    from indrnn_core.cuda import _launch, recurrence

    monkeypatch.setattr(_launch, "is_capturing", lambda stream: True)

    def no_host_copy(*args, **kwargs):
        raise AssertionError("a device-to-host copy (a synchronisation) during capture")

    monkeypatch.setattr(recurrence, "copy_to_host", no_host_copy)
    import indrnn_core.cuda as cuda_pkg

    monkeypatch.setattr(cuda_pkg, "copy_to_host", no_host_copy)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_capture_takes_device_lengths_without_reading_them(capturing, dtype):
    p = make_problem(6, 3, 2, seed=7, lengths=[6, 2, 0]).astype(dtype)
    d_lengths = put(p.lengths)
    out = put(nan_like(p.x))
    final = put(np.full((3, 2), np.nan, p.x.dtype))
    core.forward(put(p.x), put(p.u), put(p.b), put(p.h0), lengths=d_lengths, out=out, final_state_out=final)
    want = reference.forward(*(None if a is None else a.astype(np.float64) for a in (p.x, p.u, p.b, p.h0)),
                             lengths=p.lengths)
    tol = 1e-6 if dtype == "float32" else default_tolerance(BF16, 6, 3)["h"]
    assert scaled_error(get(out), want) <= tol
    grads = (put(nan_like(p.x)), put(nan_like(p.u)), put(nan_like(p.u)), put(np.full((3, 2), np.nan, p.x.dtype)))
    core.backward(put(p.grad_h), out, put(p.u), put(p.h0), lengths=d_lengths, out=grads,
                  workspace=put(np.zeros((2, 3, 2), np.float32)))
    ref = reference.backward(p.grad_h.astype(np.float64), want, p.u.astype(np.float64), p.h0.astype(np.float64),
                             lengths=p.lengths)
    tols = default_tolerance(BF16, 6, 3) if dtype == "bfloat16" else dict.fromkeys(("gx", "gu", "gb", "gh0"), 1e-5)
    for name, g, r in zip(("gx", "gu", "gb", "gh0"), grads, ref):
        assert scaled_error(get(g), r) <= tols[name], name


def test_capture_lengths_out_of_range_are_clamped_not_read(capturing):
    """Values cannot be checked during capture: the kernels clamp them to [0, T] (never out of bounds)."""
    p = make_problem(4, 3, 2, seed=8).astype(np.float32)
    h = core.forward(put(p.x), put(p.u), lengths=put(np.array([9, -3, 2], np.int64)), out=put(nan_like(p.x)))
    want = reference.forward(p.x.astype(np.float64), p.u.astype(np.float64), lengths=np.array([4, 0, 2]))
    assert scaled_error(get(h), want) <= 1e-6


def test_capture_refuses_what_would_allocate_copy_or_synchronise(capturing):
    p = make_problem(4, 2, 3, seed=9).astype(np.float32)
    x, u = put(p.x), put(p.u)
    with pytest.raises(ValueError, match="out: during CUDA graph capture pass out= buffers"):
        core.forward(x, u)
    with pytest.raises(ValueError, match="lengths: during CUDA graph capture lengths must be an int64 CUDA array"):
        core.forward(x, u, lengths=[4, 1], out=put(nan_like(p.x)))
    with pytest.raises(TypeError, match="lengths must be int64 during CUDA graph capture"):
        core.forward(x, u, lengths=put(np.array([4, 1], np.int32)), out=put(nan_like(p.x)))
    outs = (put(nan_like(p.x)), put(nan_like(p.u)), put(nan_like(p.u)), put(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match="workspace: during CUDA graph capture backward needs"):
        core.backward(x, x, u, out=outs)
    # full lengths given on the host need no copy: nothing is refused
    core.forward(x, u, lengths=[4, 4], out=put(nan_like(p.x)))


# ---- the half-precision kernels compile for a real GPU -----------------------------------------------------------
PTX_SCRIPT = r"""
import re
from numba import cuda, types
from indrnn_core.cuda import recurrence as r
f32, L, b, i = types.float32, types.Array(types.int64, 1, "A"), types.boolean, types.int64
A = lambda dt, n: types.Array(dt, n, "A")
for storage, st in (("float16", types.float16), ("bfloat16", types.uint16)):
    fwd, bwd = r.recurrence_kernels(storage)
    S3, S2, P1 = A(st, 3), A(st, 2), A(f32, 1)
    for name, k, sig in (("forward", fwd, (S3, P1, P1, b, S2, b, L, b, b, i, b, S3, S2, b)),
                         ("backward", bwd, (S3, S3, P1, S2, b, L, b, b, i, b, S2, b, S3, A(f32, 3), S2)),
                         ("final_state", r._final_state_kernel, (S3, S2, b, L, b, b, b, S2))):
        ptx, _ = cuda.compile_ptx(k.py_func, sig, device=False, cc=(9, 0))
        assert ".entry" in ptx and ".target sm_90" in ptx, name
        # the CHUNK buffers stay in registers (no local-memory depot) and no math runs in half precision
        assert "__local_depot" not in ptx, (storage, name)
        assert not re.search(r"\b(add|sub|mul|fma\.rn)\.(f16|bf16)\b", ptx), (storage, name)
        print(storage, name, "ok")
"""


def test_half_kernels_compile_to_ptx_for_sm90():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    result = subprocess.run([sys.executable, "-c", PTX_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == 6
