"""Public testing helpers: hypothesis strategies that draw valid IndRNN problems, and ``check_gradients``, which
checks any implementation (these kernels, a framework adapter, your own code) against ``indrnn_core.reference``
and finite differences.

    from hypothesis import given
    from indrnn_core.testing import problems, check_gradients

    @given(problems())
    def test_my_indrnn(problem):
        report = check_gradients(my_forward, my_vjp, problem)
        assert report.ok, report

``my_forward(x, u, b, h0, **options) -> h`` and ``my_vjp(x, u, b, h0, grad_h, grad_hn, **options) -> (gx, gu,
gb, gh0)`` take NumPy arrays (``b``, ``h0``, ``grad_hn`` may be None) and ``options`` = activation, batch_first,
lengths, reverse; they may return anything ``numpy.asarray`` accepts. ``gb`` may be None when ``b`` is None.
Requires ``hypothesis`` (``pip install indrnn-core[test]``).
"""

import dataclasses
import math

import numpy as np
from hypothesis import strategies as st

from . import reference
from ._device_view import bfloat16, is_bfloat16
from .reference import ACTIVATIONS

GRADIENT_NAMES = ("gx", "gu", "gb", "gh0")


@dataclasses.dataclass
class Problem:
    """One IndRNN problem: inputs, cotangents and options. Arrays are NumPy; ``b``, ``h0``, ``grad_hn`` may be
    None. ``x``/``grad_h`` are [T, B, H], or [B, T, H] when ``batch_first``."""

    x: np.ndarray
    u: np.ndarray
    b: np.ndarray | None
    h0: np.ndarray | None
    grad_h: np.ndarray
    grad_hn: np.ndarray | None
    activation: str = "relu"
    batch_first: bool = False
    lengths: np.ndarray | None = None
    reverse: bool = False

    @property
    def shape(self):
        """(T, B, H)."""
        T, B, H = self.x.shape
        return (B, T, H) if self.batch_first else (T, B, H)

    @property
    def dtype(self):
        return self.x.dtype

    def options(self):
        """The keyword options shared by forward and backward."""
        return dict(activation=self.activation, batch_first=self.batch_first, lengths=self.lengths,
                    reverse=self.reverse)

    def astype(self, dtype):
        """The problem in ``dtype`` ("bfloat16" included, as ml_dtypes' NumPy dtype). For half precision ``u`` and
        ``b`` stay float32, as the kernels take them (and ``grad_hn`` follows the data)."""
        dtype = as_dtype(dtype)
        if is_half(dtype):
            p = dataclasses.replace(self, u=self.u.astype(np.float32),
                                    b=None if self.b is None else self.b.astype(np.float32))
            return dataclasses.replace(p, x=p.x.astype(dtype), h0=None if p.h0 is None else p.h0.astype(dtype),
                                       grad_h=p.grad_h.astype(dtype),
                                       grad_hn=None if p.grad_hn is None else p.grad_hn.astype(dtype))

        def cast(a):
            return None if a is None else a.astype(dtype)

        return dataclasses.replace(self, x=cast(self.x), u=cast(self.u), b=cast(self.b), h0=cast(self.h0),
                                   grad_h=cast(self.grad_h), grad_hn=cast(self.grad_hn))


@st.composite
def problems(draw, *, dtypes=("float32", "float64"), activations=ACTIVATIONS, max_steps=12, max_batch=5,
             max_hidden=9, layouts=(False, True), reverse=(False, True), lengths=True, optional_inputs=True,
             u_bound=1.0):
    """Draw a valid ``Problem``: shapes from 1 up to the maxima, any dtype/activation/layout/direction given,
    optional ``b``/``h0``/``grad_hn`` present or None, ``lengths`` None or per-sequence values in [0, T]
    (all-zero included). Values are in stable ranges: ``|u| <= u_bound`` keeps states bounded over time."""
    T = draw(st.integers(1, max_steps))
    B = draw(st.integers(1, max_batch))
    H = draw(st.integers(1, max_hidden))
    dtype = as_dtype(draw(st.sampled_from(dtypes)))
    batch_first = draw(st.sampled_from(layouts))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (B, T, H) if batch_first else (T, B, H)

    def maybe(make):
        return make() if (not optional_inputs or draw(st.booleans())) else None

    if lengths and draw(st.booleans()):
        lens = np.asarray(draw(st.lists(st.integers(0, T), min_size=B, max_size=B)), dtype=np.int64)
    else:
        lens = None
    problem = Problem(
        x=rng.uniform(-1, 1, shape),
        u=rng.uniform(-u_bound, u_bound, H),
        b=maybe(lambda: rng.uniform(-0.5, 0.5, H)),
        h0=maybe(lambda: rng.uniform(-1, 1, (B, H))),
        grad_h=rng.uniform(-1, 1, shape),
        grad_hn=maybe(lambda: rng.uniform(-1, 1, (B, H))),
        activation=draw(st.sampled_from(activations)),
        batch_first=batch_first,
        lengths=lens,
        reverse=draw(st.sampled_from(reverse)),
    )
    return problem.astype(dtype)


def as_dtype(dtype):
    """A NumPy dtype; "bfloat16" is ml_dtypes' (``indrnn_core._device_view.bfloat16``)."""
    return bfloat16() if isinstance(dtype, str) and dtype == "bfloat16" else np.dtype(dtype)


def is_half(dtype):
    dtype = as_dtype(dtype)
    return dtype == np.float16 or is_bfloat16(dtype)


# Machine epsilon (the gap above 1.0) of the half-precision storage formats: 10 and 7 stored mantissa bits.
HALF_EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}
# How many standard deviations of accumulated rounding error a tolerance allows: the probabilistic rounding-error
# bound (Higham & Mary, SIAM J. Sci. Comput. 2019) |error| <= LAMBDA * sqrt(n) * u over n roundings of unit
# roundoff u holds with probability at least 1 - 2 exp(-LAMBDA**2 / 2), about 3e-8 for 6.
LAMBDA = 6.0


def default_tolerance(dtype, steps=None, batch=None):
    """Tolerance for comparing with the float64 spec, as a scaled error (``max|error| / (1 + max|reference|)``).

    float32 and float64: one number (1e-4, 1e-10). float16 and bfloat16 (storage; the kernels compute in float32):
    a dict per output, from the format's epsilon ``eps`` (``HALF_EPS``) and the number ``n`` of rounded values an
    output depends on, ``LAMBDA * eps * sqrt(n)`` (``eps`` = 2u, a factor 2 of slack): ``h`` is one rounding of a
    float32 result (n = 1); ``gx`` and ``gh0`` carry the roundings of the stored ``h`` along the chain of
    ``steps`` + 1 visits (n = steps + 1); ``gu`` and ``gb`` add ``batch`` * (``steps`` + 1) such chained terms
    (n = batch * (steps + 1)**2). The reference must run on the same rounded inputs (``check_gradients`` does)."""
    dtype = as_dtype(dtype)
    if not is_half(dtype):
        return 1e-4 if dtype == np.float32 else 1e-10
    if steps is None or batch is None:
        raise ValueError("default_tolerance: half precision needs steps= and batch= (the reduction lengths)")
    eps = HALF_EPS["bfloat16" if is_bfloat16(dtype) else "float16"]
    chain = LAMBDA * eps * math.sqrt(steps + 1)
    total = LAMBDA * eps * math.sqrt(batch * (steps + 1) ** 2)
    return {"h": eps, "gx": chain, "gh0": chain, "gu": total, "gb": total}


@dataclasses.dataclass
class GradientReport:
    """Worst errors per output, each scaled by ``1 + max|expected|``. ``reference_error``: the implementation vs
    ``indrnn_core.reference`` (keys h, gx, gu, gb, gh0). ``finite_difference_error``: its gradients vs central
    differences of its own forward in float64 along random directions (keys x, u, b, h0; None when skipped
    because a relu kink lies too close)."""

    reference_error: dict
    finite_difference_error: dict
    tolerance: float
    fd_tolerance: float

    def tolerance_of(self, name):
        return self.tolerance[name] if isinstance(self.tolerance, dict) else self.tolerance

    @property
    def ok(self):
        ref_ok = all(e <= self.tolerance_of(name) for name, e in self.reference_error.items())
        fd_ok = all(e is None or e <= self.fd_tolerance for e in self.finite_difference_error.values())
        return ref_ok and fd_ok

    def __str__(self):
        def fmt(d):
            return ", ".join(f"{k}={'skipped' if e is None else f'{e:.2e}'}" for k, e in d.items())

        tol = (", ".join(f"{k} {t:.1e}" for k, t in self.tolerance.items()) if isinstance(self.tolerance, dict)
               else f"{self.tolerance:.0e}")
        return (f"GradientReport(ok={self.ok}; vs reference (tol {tol}): "
                f"{fmt(self.reference_error)}; vs finite differences (tol {self.fd_tolerance:.0e}): "
                f"{fmt(self.finite_difference_error)})")


def scaled_error(actual, expected):
    """``max|actual - expected| / (1 + max|expected|)``; inf for a shape mismatch or any NaN (e.g. an output a
    kernel never wrote)."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != expected.shape:
        return math.inf
    if expected.size == 0:
        return 0.0
    err = np.abs(actual - expected)
    if np.isnan(err).any():
        return math.inf
    return float(err.max() / (1.0 + np.abs(expected).max()))


def _loss(h, hn, problem):
    """The scalar whose gradient ``vjp`` computes: sum(grad_h * h) + sum(grad_hn * final_state)."""
    loss = float(np.sum(np.asarray(h, np.float64) * problem.grad_h))
    if problem.grad_hn is not None:
        loss += float(np.sum(hn * problem.grad_hn))
    return loss


def check_gradients(forward_fn, vjp_fn, problem, *, tolerance=None, fd_tolerance=1e-5, directions=3, seed=0):
    """Check ``forward_fn``/``vjp_fn`` on ``problem`` against the reference and against finite differences.

    Args:
        forward_fn: ``(x, u, b, h0, **problem.options()) -> h``.
        vjp_fn: ``(x, u, b, h0, grad_h, grad_hn, **problem.options()) -> (gx, gu, gb, gh0)``: the gradient of
            ``sum(grad_h * h) + sum(grad_hn * final_state)`` (final state as ``indrnn_core.final_state``).
        problem: a ``Problem`` (e.g. drawn by ``problems()``), run in its own dtype for the reference check and in
            float64 for finite differences (skipped for float16/bfloat16 problems: a half-precision
            implementation's forward cannot resolve a finite-difference step; the reference check covers them).
        tolerance: for the reference check, a number or a dict per output (h, gx, gu, gb, gh0);
            ``default_tolerance(problem.dtype, T, B)`` when None.
        directions: random directions per argument for the directional finite differences.

    Returns:
        a ``GradientReport``; ``report.ok`` says whether everything is within tolerance.
    """
    p = problem
    opts = p.options()
    half = is_half(p.dtype)
    if tolerance is None:
        T, B, _ = p.shape
        tolerance = default_tolerance(p.dtype, T, B) if half else default_tolerance(p.dtype)
    p64 = p.astype(np.float64)
    ref_h = reference.forward(p64.x, p64.u, p64.b, p64.h0, **opts)
    ref_grads = reference.backward(p64.grad_h, ref_h, p64.u, p64.h0, grad_hn=p64.grad_hn, **opts)

    h = forward_fn(p.x, p.u, p.b, p.h0, **opts)
    grads = vjp_fn(p.x, p.u, p.b, p.h0, p.grad_h, p.grad_hn, **opts)
    ref_err = {"h": scaled_error(h, ref_h)}
    for name, g, r in zip(GRADIENT_NAMES, grads, ref_grads):
        if name == "gb" and p.b is None and g is None:
            continue
        if name == "gh0" and p.h0 is None and g is None:
            continue
        ref_err[name] = scaled_error(g, r)

    fd_err = {} if half else _finite_differences(forward_fn, vjp_fn, p64, directions, seed)
    return GradientReport(ref_err, fd_err, tolerance, fd_tolerance)


def _finite_differences(forward_fn, vjp_fn, p, directions, seed):
    opts = p.options()
    rng = np.random.default_rng(seed)
    grads = dict(zip(("x", "u", "b", "h0"), vjp_fn(p.x, p.u, p.b, p.h0, p.grad_h, p.grad_hn, **opts)))
    # Finite differences are meaningless across a kink (relu at 0): shrink the step below the distance to the
    # nearest kink (a perturbation eps moves any pre-activation by at most ~eps*(T+1) when |u| <= 1).
    eps = 1e-6
    if p.activation == "relu":
        pre = reference.preactivation(p.x, p.u, p.b, p.h0, **opts)
        T = p.shape[0]
        margin = np.abs(pre[pre != 0]).min() if np.any(pre != 0) else np.inf
        eps = min(eps, margin / (20.0 * (T + 1) * max(1.0, float(np.abs(p.u).max()) ** T)))
    errors = {}
    for name in ("x", "u", "b", "h0"):
        value = getattr(p, name)
        if value is None:
            continue
        if eps < 1e-10:
            errors[name] = None
            continue
        worst = 0.0
        for _ in range(directions):
            d = rng.uniform(-1, 1, value.shape)

            def loss_at(sign):
                args = {k: getattr(p, k) for k in ("x", "u", "b", "h0")}
                args[name] = value + sign * eps * d
                h = np.asarray(forward_fn(args["x"], args["u"], args["b"], args["h0"], **opts), np.float64)
                hn = reference.final_state(h, args["h0"], p.lengths, p.reverse, p.batch_first)
                return _loss(h, hn, p)

            numeric = (loss_at(+1) - loss_at(-1)) / (2 * eps)
            analytic = float(np.sum(np.asarray(grads[name], np.float64) * d))
            worst = max(worst, abs(numeric - analytic) / (1.0 + abs(analytic)))
        errors[name] = worst
    return errors


def nan_like(a, dtype=None):
    """A fresh NumPy buffer shaped like ``a`` (of ``dtype``, default ``a``'s) filled with NaN: an element a kernel
    forgets to write stays NaN."""
    return np.full(a.shape, np.nan, dtype=a.dtype if dtype is None else dtype)


def core_forward(x, u, b, h0, **options):
    """``indrnn_core.forward`` in the signature ``check_gradients`` expects (writes into a NaN-filled buffer)."""
    from . import forward

    return forward(x, u, b, h0, out=nan_like(x), **options)


def core_vjp(x, u, b, h0, grad_h, grad_hn, **options):
    """``indrnn_core.backward`` in the signature ``check_gradients`` expects (NaN-filled output buffers)."""
    from . import backward, forward

    h = forward(x, u, b, h0, **options)
    B, H = h0.shape if h0 is not None else (grad_h.shape[0 if options.get("batch_first") else 1], u.shape[0])
    out = (nan_like(grad_h), nan_like(u), nan_like(u), np.full((B, H), np.nan, dtype=u.dtype))
    return backward(grad_h, h, u, h0, grad_hn=grad_hn, out=out, **options)
