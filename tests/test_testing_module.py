"""The public testing helpers can fail: they flag broken implementations, and pass the kernels."""

import numpy as np
from hypothesis import given, settings

import indrnn_core
from indrnn_core import reference
from indrnn_core.testing import Problem, check_gradients, core_forward, core_vjp, problems


def a_problem(**kw):
    rng = np.random.default_rng(0)
    T, B, H = 5, 2, 3
    return Problem(x=rng.uniform(-1, 1, (T, B, H)), u=rng.uniform(-1, 1, H), b=rng.uniform(-1, 1, H),
                   h0=rng.uniform(-1, 1, (B, H)), grad_h=rng.uniform(-1, 1, (T, B, H)),
                   grad_hn=rng.uniform(-1, 1, (B, H)), activation="tanh", **kw)


def test_kernels_pass():
    report = check_gradients(core_forward, core_vjp, a_problem(lengths=np.array([5, 2]), reverse=True))
    assert report.ok, report
    assert set(report.reference_error) == {"h", "gx", "gu", "gb", "gh0"}
    assert set(report.finite_difference_error) == {"x", "u", "b", "h0"}


def test_flags_a_vjp_that_forgets_the_final_state_gradient():
    def vjp(x, u, b, h0, gh, ghn, **o):
        return core_vjp(x, u, b, h0, gh, None, **o)

    report = check_gradients(core_forward, vjp, a_problem())
    assert not report.ok
    assert report.reference_error["gh0"] > 1e-3 and report.finite_difference_error["h0"] > 1e-3


def test_flags_a_wrong_derivative_even_when_forward_is_right():
    def vjp(x, u, b, h0, gh, ghn, **o):  # pretends tanh' = 1
        h = reference.forward(x, u, b, h0, **o)
        return reference.backward(gh, h, u, h0, grad_hn=ghn, **(o | {"activation": "identity"}))

    report = check_gradients(reference.forward, vjp, a_problem())
    assert not report.ok and report.reference_error["h"] < 1e-12
    assert report.finite_difference_error["x"] > 1e-3


def test_flags_a_wrong_forward():
    def forward(x, u, b, h0, **o):
        return indrnn_core.forward(x, u, None, h0, **o)  # drops the bias

    report = check_gradients(forward, core_vjp, a_problem())
    assert not report.ok and report.reference_error["h"] > 1e-3


@settings(max_examples=30)
@given(problems())
def test_strategy_draws_valid_problems(p):
    T, B, H = p.shape
    assert p.x.dtype == p.u.dtype == p.grad_h.dtype and p.u.shape == (H,)
    assert p.lengths is None or (p.lengths.shape == (B,) and 0 <= p.lengths.min() and p.lengths.max() <= T)
    assert np.abs(p.u).max() <= 1.0
