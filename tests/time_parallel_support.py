"""What the time-parallel tests share (``test_time_parallel.py``, ``test_narrow_kernels.py``; pytest finds this module
through ``pythonpath`` in pyproject.toml): problems, the runner, the reference check, the tolerance.

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


def assert_same_on_one_thread(p, opts, time_parallel):
    """The CPU results on every thread and on one are bit-identical (the work split never follows the threads)."""
    many = run(CPU, p, opts, time_parallel)
    numba.set_num_threads(1)
    try:
        one = run(CPU, p, opts, time_parallel)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(many, one):
        assert np.array_equal(a, b, equal_nan=True)
