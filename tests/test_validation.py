"""Bad input gets a ValueError/TypeError that names the argument and what was expected, never a crash."""

import numpy as np
import pytest

import indrnn_core

T, B, H = 4, 3, 2
rng = np.random.default_rng(0)
X = rng.uniform(-1, 1, (T, B, H))
U = rng.uniform(-1, 1, H)


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


FORWARD_CASES = {
    # id: (kwargs overriding a valid call, exception, words the message must contain)
    "x-not-3d": (dict(x=X[0]), ValueError, "x must be 3-D"),
    "x-list": (dict(x=X.tolist()), TypeError, "x must be a NumPy array"),
    "x-int": (dict(x=X.astype(np.int64)), TypeError, "x must have dtype float32 or float64"),
    "x-complex": (dict(x=X.astype(np.complex128)), TypeError, "x must have dtype float32 or float64"),
    "u-shape": (dict(u=np.zeros(H + 1)), ValueError, "u must have shape (2,)"),
    "u-2d": (dict(u=np.zeros((1, H))), ValueError, "u must have shape (2,)"),
    "b-shape": (dict(b=np.zeros(H + 1)), ValueError, "b must have shape (2,)"),
    "h0-shape": (dict(h0=np.zeros((B + 1, H))), ValueError, "h0 must have shape (3, 2)"),
    "mixed-dtypes": (dict(u=U.astype(np.float32)), TypeError, "all arrays must share one dtype"),
    # half precision is CUDA storage only (tests/test_half_precision.py has the CUDA contract)
    "x-float16-cpu": (dict(x=X.astype(np.float16)), TypeError, "x has dtype float16: half precision"),
    "h0-float16-cpu": (dict(h0=np.zeros((B, H), np.float16)), TypeError,
                       "all arrays must share one dtype: x is float64 but h0 is float16"),
    "u-float16": (dict(u=U.astype(np.float16)), TypeError, "u must have dtype float32 or float64, got float16"),
    "lengths-size": (dict(lengths=[1, 2]), ValueError, "lengths must have shape (3,)"),
    "lengths-negative": (dict(lengths=[1, -1, 2]), ValueError, "lengths must lie in [0, 4]"),
    "lengths-beyond-T": (dict(lengths=[1, 5, 2]), ValueError, "lengths must lie in [0, 4]"),
    "lengths-float-array": (dict(lengths=np.array([1.0, 2.0, 3.0])), TypeError, "lengths must have an integer"),
    "lengths-float-list": (dict(lengths=[1.0, 2, 3]), TypeError, "lengths must contain integers"),
    "lengths-bool-list": (dict(lengths=[True, 2, 3]), TypeError, "lengths must contain integers"),
    "lengths-string": (dict(lengths="abc"), TypeError, "lengths must be a sequence or array of integers"),
    "activation-unknown": (dict(activation="gelu"), ValueError, "activation must be one of"),
    "activation-not-str": (dict(activation=None), ValueError, "activation must be one of"),
    "batch-first-not-bool": (dict(batch_first="yes"), TypeError, "batch_first must be a bool"),
    "reverse-not-bool": (dict(reverse=1), TypeError, "reverse must be a bool"),
    "out-read-only": (dict(out=read_only(np.empty((T, B, H)))), ValueError, "out must be writable"),
    "out-shape": (dict(out=np.empty((T, B, H + 1))), ValueError, "out must have shape (4, 3, 2)"),
    "out-dtype": (dict(out=np.empty((T, B, H), np.float32)), TypeError, "out must have dtype float64"),
    "out-list": (dict(out=[0.0]), TypeError, "out must be a NumPy array"),
    "final-state-out-shape": (dict(final_state_out=np.empty((B, H + 1))), ValueError,
                              "final_state_out must have shape (3, 2)"),
    "final-state-out-dtype": (dict(final_state_out=np.empty((B, H), np.float32)), TypeError,
                              "final_state_out must have dtype float64"),
    "final-state-out-read-only": (dict(final_state_out=read_only(np.empty((B, H)))), ValueError,
                                  "final_state_out must be writable"),
}


@pytest.mark.parametrize("case", list(FORWARD_CASES), ids=list(FORWARD_CASES))
def test_forward_rejects(case):
    override, exc, words = FORWARD_CASES[case]
    kwargs = dict(x=X, u=U, b=None, h0=None) | override
    with pytest.raises(exc) as info:
        indrnn_core.forward(**kwargs)
    assert words in str(info.value)


BACKWARD_CASES = {
    "grad_h-shape": (dict(grad_h=np.zeros((T, B, H + 1))), ValueError, "grad_h must have shape (4, 3, 2)"),
    "h-not-3d": (dict(h=np.zeros((T, B))), ValueError, "h must be 3-D"),
    "grad_hn-shape": (dict(grad_hn=np.zeros((B, H + 1))), ValueError, "grad_hn must have shape (3, 2)"),
    "h0-shape": (dict(h0=np.zeros((H,))), ValueError, "h0 must have shape (3, 2)"),
    "grad_h-dtype": (dict(grad_h=np.zeros((T, B, H), np.float32)), TypeError, "share one dtype"),
    "grad_h-float16-cpu": (dict(grad_h=np.zeros((T, B, H), np.float16)), TypeError,
                           "grad_h has dtype float16: half precision (float16, bfloat16) runs on CUDA only"),
    "out-not-tuple": (dict(out=np.zeros((T, B, H))), TypeError, "out must be None or a tuple (gx, gu, gb, gh0)"),
    "out-gu-shape": (dict(out=(None, np.zeros(H + 1), None, None)), ValueError, "(gu) must have shape (2,)"),
    "out-gh0-read-only": (dict(out=(None, None, None, read_only(np.zeros((B, H))))), ValueError,
                          "(gh0) must be writable"),
    "lengths-beyond-T": (dict(lengths=np.array([9, 0, 0])), ValueError, "lengths must lie in [0, 4]"),
}


@pytest.mark.parametrize("case", list(BACKWARD_CASES), ids=list(BACKWARD_CASES))
def test_backward_rejects(case):
    override, exc, words = BACKWARD_CASES[case]
    kwargs = dict(grad_h=np.zeros((T, B, H)), h=np.zeros((T, B, H)), u=U) | override
    with pytest.raises(exc) as info:
        indrnn_core.backward(**kwargs)
    assert words in str(info.value)


def test_final_state_rejects():
    with pytest.raises(ValueError, match="h0 must have shape"):
        indrnn_core.final_state(X, np.zeros((B, H + 1)))
    with pytest.raises(ValueError, match="lengths must lie in"):
        indrnn_core.final_state(X, lengths=[0, 1, 7])


def test_arrays_on_different_devices():
    from numba import cuda

    with pytest.raises(ValueError, match="all arrays must be on one device, got x on cuda, u on cpu"):
        indrnn_core.forward(cuda.to_device(X), U)
    with pytest.raises(ValueError, match="out must be on cpu"):
        indrnn_core.forward(X, U, out=cuda.to_device(np.empty((T, B, H))))


def test_cuda_arrays_without_gpu(monkeypatch):
    from numba import cuda

    from indrnn_core.cuda import recurrence

    d_x, d_u = cuda.to_device(X), cuda.to_device(U)
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    monkeypatch.setattr(recurrence, "_GPU_FOUND", [])  # forget an earlier test's GPU check
    with pytest.raises(ValueError, match="x is a CUDA array but no usable CUDA GPU"):
        indrnn_core.forward(d_x, d_u)


def test_cuda_validation_matches_cpu():
    from numba import cuda

    with pytest.raises(ValueError, match="u must have shape"):
        indrnn_core.forward(cuda.to_device(X), cuda.to_device(np.zeros(H + 1)))
    with pytest.raises(ValueError, match="lengths must lie in"):
        indrnn_core.forward(cuda.to_device(X), cuda.to_device(U), lengths=[0, 0, 5])
    d_x, d_u = cuda.to_device(X), cuda.to_device(U)
    h = indrnn_core.forward(d_x, d_u)
    with pytest.raises(ValueError, match=r"workspace must have shape \(2, 3, 2\)"):
        indrnn_core.backward(d_x, h, d_u, workspace=cuda.device_array((2, B + 1, H)))
    with pytest.raises(TypeError, match="workspace must have dtype float64"):
        indrnn_core.backward(d_x, h, d_u, workspace=cuda.device_array((2, B, H), np.float32))


def test_nothing_written_when_input_is_rejected():
    out = np.full((T, B, H), 7.0)
    with pytest.raises(ValueError):
        indrnn_core.forward(X, U, lengths=[0, 0, 9], out=out)
    assert (out == 7.0).all()
