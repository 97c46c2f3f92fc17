"""The TensorFlow op (``indrnn_core.adapters.tensorflow``): agreement with ``indrnn_core.reference`` in eager code and
in ``tf.function`` (both graph callbacks), ``tf.test.compute_gradient``, ``indrnn_core.testing.check_gradients``,
static shapes, zero copy and 64-byte alignment of what crosses to TF, the XLA error, bad input, the GPU path under
Numba's CUDA simulator, and a MirroredStrategy training step over two logical CPUs (in a subprocess: logical
devices must be set before TF initialises its own, which this process has done by then).

Tolerances: errors are scaled by ``1 + max|reference|`` (``indrnn_core.testing.scaled_error``) and allowed
``8 * eps(dtype) * n``, ``n`` the length of the longest chain of roundings behind an output: ``T + 1`` steps for
``h``, ``h_n``, ``gx``, ``gh0``; ``T * B`` terms for the sums ``gu``, ``gb``.
"""
import ctypes
import json
import math
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from hypothesis import given, settings  # noqa: E402

import indrnn_core  # noqa: E402
from indrnn_core import reference  # noqa: E402
from indrnn_core.adapters import tensorflow as itf  # noqa: E402
from indrnn_core.adapters.tensorflow import XlaUnsupportedError, indrnn, indrnn_with_state  # noqa: E402
from indrnn_core.testing import check_gradients, problems, scaled_error  # noqa: E402

REAL_ALIGNED_EMPTY = itf._aligned_empty  # before the autouse fixture below wraps it
MODES = ("eager", "py_function", "numpy_function")


@pytest.fixture(autouse=True)
def nan_outputs(monkeypatch):
    """Every host buffer the kernels fill starts as NaN (an output a kernel forgot to write fails loudly), and
    every one is checked to be 64-byte aligned: TF aborts the process on adopting one that is not."""
    def nan_filled(shape, dtype):
        a = REAL_ALIGNED_EMPTY(shape, dtype)
        assert a.__array_interface__["data"][0] % itf.ALIGNMENT == 0
        a.fill(np.nan)
        return a

    monkeypatch.setattr(itf, "_aligned_empty", nan_filled)


@pytest.fixture
def graph_callback(monkeypatch):
    def use(callback):
        monkeypatch.setattr(itf, "GRAPH_CALLBACK", callback)
    return use


def tolerance(dtype, n):
    return 8 * np.finfo(dtype).eps * n


def make_case(seed, T, B, H, dtype, *, batch_first=False, with_b=True, with_h0=True, lengths=None):
    rng = np.random.default_rng(seed)
    shape = (B, T, H) if batch_first else (T, B, H)
    return {
        "x": rng.uniform(-1, 1, shape).astype(dtype),
        "u": rng.uniform(-1, 1, H).astype(dtype),
        "b": rng.uniform(-0.5, 0.5, H).astype(dtype) if with_b else None,
        "h0": rng.uniform(-1, 1, (B, H)).astype(dtype) if with_h0 else None,
        "grad_h": rng.uniform(-1, 1, shape).astype(dtype),
        "grad_hn": rng.uniform(-1, 1, (B, H)).astype(dtype),
        "lengths": None if lengths is None else np.asarray(lengths, np.int64),
    }


def run_op(case, options, mode, lengths_as="numpy"):
    """(h, h_n, [gx, gu, gb, gh0]) as NumPy, from the op in ``mode``: the gradients of
    ``sum(grad_h * h) + sum(grad_hn * h_n)``, given to the tape as output gradients (no TF arithmetic between)."""
    names = ("x", "u", "b", "h0")
    inputs = [None if case[n] is None else tf.constant(case[n]) for n in names]
    lengths = case["lengths"]
    if lengths is not None and lengths_as == "tensor":
        lengths = tf.constant(lengths)
    elif lengths is not None and lengths_as == "list":
        lengths = [int(v) for v in lengths]

    def step(x, u, b, h0, grad_h, grad_hn):
        with tf.GradientTape() as tape:
            tape.watch([t for t in (x, u, b, h0) if t is not None])
            h, hn = indrnn_with_state(x, u, b, h0, lengths=lengths, **options)
        grads = tape.gradient([h, hn], [t for t in (x, u, b, h0) if t is not None],
                              output_gradients=[grad_h, grad_hn])
        return h, hn, grads

    fn = step if mode == "eager" else tf.function(step)
    h, hn, grads = fn(*inputs, tf.constant(case["grad_h"]), tf.constant(case["grad_hn"]))
    it = iter(grads)
    full = [next(it) if case[n] is not None else None for n in names]
    return h.numpy(), hn.numpy(), [None if g is None else g.numpy() for g in full]


def expected(case, options):
    c64 = {k: None if v is None or k == "lengths" else v.astype(np.float64) for k, v in case.items()}
    opts = dict(options, lengths=case["lengths"])
    h = reference.forward(c64["x"], c64["u"], c64["b"], c64["h0"], **opts)
    hn = reference.final_state(h, c64["h0"], case["lengths"], options.get("reverse", False),
                               options.get("batch_first", False))
    grads = reference.backward(c64["grad_h"], h, c64["u"], c64["h0"], grad_hn=c64["grad_hn"], **opts)
    return h, hn, grads


def assert_matches(case, options, got):
    h, hn, (gx, gu, gb, gh0) = got
    want_h, want_hn, (wx, wu, wb, wh0) = expected(case, options)
    dtype = case["x"].dtype
    shape = case["x"].shape
    T, B = (shape[1], shape[0]) if options.get("batch_first") else shape[:2]
    steps, terms = tolerance(dtype, T + 1), tolerance(dtype, T * B)
    checks = [("h", h, want_h, steps), ("h_n", hn, want_hn, steps), ("gx", gx, wx, steps), ("gu", gu, wu, terms)]
    if case["b"] is not None:
        checks.append(("gb", gb, wb, terms))
    else:
        assert gb is None
    if case["h0"] is not None:
        checks.append(("gh0", gh0, wh0, steps))
    for name, a, want, tol in checks:
        assert a.dtype == dtype, name
        assert a.shape == want.shape, name
        err = scaled_error(a, want)
        assert err <= tol, f"{name}: error {err:.2e} > {tol:.2e}"


CASES = {  # id: (make_case kwargs, options)
    "f32-relu": (dict(seed=1, T=9, B=3, H=5, dtype=np.float32), dict()),
    "f64-tanh-lengths": (dict(seed=2, T=8, B=4, H=3, dtype=np.float64, lengths=[8, 0, 3, 5]),
                         dict(activation="tanh")),
    "f32-sigmoid-reverse-lengths": (dict(seed=3, T=7, B=3, H=6, dtype=np.float32, lengths=[2, 7, 0]),
                                    dict(activation="sigmoid", reverse=True)),
    "f64-identity-batch_first": (dict(seed=4, T=6, B=2, H=7, dtype=np.float64, batch_first=True),
                                 dict(activation="identity", batch_first=True)),
    "f32-no-b-no-h0-batch_first-reverse": (dict(seed=5, T=5, B=3, H=4, dtype=np.float32, batch_first=True,
                                                with_b=False, with_h0=False, lengths=[5, 1, 3]),
                                           dict(batch_first=True, reverse=True)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case_id", list(CASES))
def test_matches_reference(case_id, mode, graph_callback):
    kwargs, options = CASES[case_id]
    if mode != "eager":
        graph_callback(mode)
    case = make_case(**kwargs)
    assert_matches(case, options, run_op(case, options, mode))


def test_eager_inference_without_a_tape():
    """Without a tape the op runs the kernels directly (no tf.custom_gradient): same values."""
    case = make_case(seed=17, T=6, B=3, H=4, dtype=np.float64, lengths=[6, 0, 2])
    h, hn = indrnn_with_state(*(tf.constant(case[n]) for n in ("x", "u", "b", "h0")), lengths=case["lengths"],
                              activation="tanh", reverse=True)
    want_h, want_hn, _ = expected(case, {"activation": "tanh", "reverse": True})
    assert scaled_error(h.numpy(), want_h) <= tolerance(np.float64, 7)
    assert scaled_error(hn.numpy(), want_hn) <= tolerance(np.float64, 7)


@pytest.mark.parametrize("lengths_as", ["tensor", "list"])
@pytest.mark.parametrize("mode", ["eager", "py_function"])
def test_lengths_as_tensor_or_list(lengths_as, mode):
    case = make_case(seed=6, T=6, B=3, H=4, dtype=np.float32, lengths=[6, 2, 0])
    assert_matches(case, {}, run_op(case, {}, mode, lengths_as=lengths_as))


@pytest.mark.parametrize("mode", ["eager", "tf.function"])
@pytest.mark.parametrize("size", ["small", "large"])  # (TF fills zeros with a Const when small, a Fill when large)
def test_only_the_final_state_used(mode, size, monkeypatch):
    """An unused output's gradient reaches the op as zeros or None: both give the gradients through h_n alone.
    In a graph the zeros TF fills in are recognised from the graph, and the kernels get a [1, 1, H] row."""
    T, B, H = (5, 2, 3) if size == "small" else (40, 2, 30)
    case = make_case(seed=7, T=T, B=B, H=H, dtype=np.float64, lengths=[T, 2])
    x, u, b, h0 = (tf.Variable(case[n]) for n in ("x", "u", "b", "h0"))
    seen = []
    real = itf._backward_arrays
    monkeypatch.setattr(itf, "_backward_arrays", lambda grad_h, *rest: seen.append(grad_h.shape) or real(grad_h, *rest))

    def grads_of_hn():
        with tf.GradientTape() as tape:
            _, hn = indrnn_with_state(x, u, b, h0, lengths=case["lengths"])
            loss = tf.reduce_sum(hn * case["grad_hn"])
        return tape.gradient(loss, [x, u, b, h0])  # Variables: u as a model's weight would be

    grads = grads_of_hn() if mode == "eager" else tf.function(grads_of_hn)()
    zero = dict(case, grad_h=np.zeros_like(case["grad_h"]))
    _, _, want = expected(zero, {})
    for g, w in zip(grads, want):
        assert scaled_error(g.numpy(), w) <= tolerance(np.float64, T * B)
    assert seen == [(1, 1, H) if mode == "tf.function" else (T, B, H)]


def test_zero_fill_detection_in_graphs():
    """Only ops that fill zeros count (a Fill or Const of anything else is a real gradient)."""
    with tf.Graph().as_default():
        h = tf.ones((4, 3, 5))
        cases = {"zeros_like": tf.zeros_like(h), "fill0": tf.fill(tf.shape(h), 0.0),
                 "const0": tf.constant(np.zeros((2, 2))), "zeros": tf.zeros((40, 30, 5)),
                 "fill1": tf.fill(tf.shape(h), 1.0), "const": tf.constant([0.0, 1.0]), "computed": h * 0.0}
        result = {k: itf._is_zero_fill(t) for k, t in cases.items()}
    assert result == {"zeros_like": True, "fill0": True, "const0": True, "zeros": True, "fill1": False,
                      "const": False, "computed": False}
    assert itf._is_zero_fill(tf.zeros((2, 2))) is False  # eager: never judged


@pytest.mark.parametrize("mode", ["eager", "tf.function"])
def test_second_derivatives_are_refused_not_silently_none(mode):
    case = make_case(seed=14, T=4, B=2, H=3, dtype=np.float64)
    x, u = tf.constant(case["x"]), tf.constant(case["u"])

    def second(x, u):
        with tf.GradientTape() as outer:
            outer.watch(u)
            with tf.GradientTape() as inner:
                inner.watch(u)
                loss = tf.reduce_sum(indrnn(x, u, activation="tanh"))
            gu = inner.gradient(loss, u)
            penalty = tf.reduce_sum(gu * gu)
        return outer.gradient(penalty, u)

    with pytest.raises(NotImplementedError, match="first derivatives only"):
        (second if mode == "eager" else tf.function(second))(x, u)


def test_forward_mode_is_refused():
    x, u = tf.ones((3, 1, 2)), tf.fill([2], 0.5)
    with pytest.raises(NotImplementedError, match="ForwardAccumulator"):
        with tf.autodiff.ForwardAccumulator(u, tf.ones(2)) as acc:
            acc.jvp(indrnn(x, u))


def test_persistent_tape_first_derivatives():
    """A persistent tape stays active while it computes gradients: the guard is in place and changes nothing."""
    case = make_case(seed=15, T=4, B=2, H=3, dtype=np.float64)
    x, u, g = tf.constant(case["x"]), tf.constant(case["u"]), tf.constant(case["grad_h"])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, u])
        h = indrnn(x, u)
    gu, gx = tape.gradient(h, u, output_gradients=g), tape.gradient(h, x, output_gradients=g)
    _, _, (wx, wu, _, _) = expected(dict(case, b=None, h0=None, grad_hn=np.zeros_like(case["grad_hn"])), {})
    assert scaled_error(gx.numpy(), wx) <= tolerance(np.float64, 5)
    assert scaled_error(gu.numpy(), wu) <= tolerance(np.float64, 8)


@settings(max_examples=15)
@given(problems(max_steps=7, max_batch=3, max_hidden=5))
def test_check_gradients(problem):
    """``indrnn_core.testing.check_gradients`` on the op (eager): reference and finite differences."""
    def forward_fn(x, u, b, h0, **opts):
        return indrnn(x, u, b, h0, **opts).numpy()

    def vjp_fn(x, u, b, h0, grad_h, grad_hn, **opts):
        lengths = opts.pop("lengths")
        if grad_hn is None:  # the gradient of sum(grad_h * h) alone
            B = grad_h.shape[0 if opts["batch_first"] else 1]
            grad_hn = np.zeros((B, u.shape[0]), x.dtype)
        case = {"x": x, "u": u, "b": b, "h0": h0, "grad_h": grad_h, "grad_hn": grad_hn, "lengths": lengths}
        return run_op(case, opts, "eager")[2]

    report = check_gradients(forward_fn, vjp_fn, problem)
    assert report.ok, report


def test_check_gradients_in_a_tf_function(graph_callback):
    graph_callback("py_function")
    case = make_case(seed=8, T=6, B=3, H=4, dtype=np.float64, lengths=[6, 4, 1])
    from indrnn_core.testing import Problem

    p = Problem(case["x"], case["u"], case["b"], case["h0"], case["grad_h"], case["grad_hn"], activation="tanh",
                lengths=case["lengths"])
    step = tf.function(lambda x, u, b, h0: indrnn(x, u, b, h0, activation="tanh", lengths=case["lengths"]))

    def forward_fn(x, u, b, h0, **opts):
        return step(x, u, b, h0).numpy()

    def vjp_fn(x, u, b, h0, grad_h, grad_hn, **opts):
        c = {"x": x, "u": u, "b": b, "h0": h0, "grad_h": grad_h, "grad_hn": grad_hn, "lengths": opts["lengths"]}
        return run_op(c, {"activation": "tanh"}, "py_function")[2]

    report = check_gradients(forward_fn, vjp_fn, p)
    assert report.ok, report


@pytest.mark.parametrize("mode", ["eager", "tf.function"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_compute_gradient(mode, activation):
    """``tf.test.compute_gradient`` (TF's own finite differences) on both outputs at once, float64."""
    case = make_case(seed=9, T=5, B=2, H=3, dtype=np.float64, lengths=[5, 3])

    def f(x, u, b, h0):
        h, hn = indrnn_with_state(x, u, b, h0, activation=activation, lengths=case["lengths"], reverse=True)
        return tf.concat([tf.reshape(h, [-1]), tf.reshape(hn, [-1])], 0)

    fn = f if mode == "eager" else tf.function(f)
    theoretical, numerical = tf.test.compute_gradient(fn, [tf.constant(case[n]) for n in ("x", "u", "b", "h0")],
                                                      delta=1e-6)
    for t, n in zip(theoretical, numerical):
        # central differences in float64 with delta 1e-6: truncation ~1e-12, rounding ~eps / delta ~ 2e-10
        np.testing.assert_allclose(t, n, rtol=0, atol=1e-7)


# ---- shapes, zero copy, alignment ------------------------------------------------------------------------------
def test_static_shapes_in_a_tf_function():
    """Downstream layers see every shape known at trace time: h like x, h_n [B, H], gradients like their inputs."""
    u = tf.constant(np.full(5, 0.5, np.float32))
    seen = {}

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 5], tf.float32)])
    def f(x):
        with tf.GradientTape() as tape:
            tape.watch([x, u])
            h, hn = indrnn_with_state(x, u)
            seen["h"], seen["hn"] = h.shape.as_list(), hn.shape.as_list()
        gx, gu = tape.gradient([h, hn], [x, u])
        seen["gx"], seen["gu"] = gx.shape.as_list(), gu.shape.as_list()
        return h

    assert f(tf.ones((4, 3, 5))).shape == (4, 3, 5)
    assert seen == {"h": [None, 3, 5], "hn": [3, 5], "gx": [None, 3, 5], "gu": [5]}


@pytest.mark.parametrize("setting,op_type", [("auto", "PyFuncStateless"), ("numpy_function", "PyFuncStateless"),
                                             ("py_function", "EagerPyFunc")])
def test_graph_callback_choice(setting, op_type, graph_callback):
    """"auto" takes numpy_function where TF has no GPU (here), py_function where it has one."""
    graph_callback(setting)
    u = tf.constant(np.full(2, 0.5, np.float32))
    f = tf.function(lambda x: indrnn(x, u))
    ops = {op.type for op in f.get_concrete_function(tf.TensorSpec([3, 1, 2])).graph.get_operations()}
    assert op_type in ops and ({"PyFuncStateless", "EagerPyFunc"} - {op_type}).isdisjoint(ops)


def test_unknown_graph_callback_setting(graph_callback):
    graph_callback("pure_callback")
    with pytest.raises(ValueError, match="GRAPH_CALLBACK must be"):
        tf.function(lambda x: indrnn(x, tf.ones(2)))(tf.ones((3, 1, 2)))


def test_unknown_rank_runs():
    u = tf.constant(np.full(2, 0.5, np.float32))
    f = tf.function(lambda x: indrnn(x, u), input_signature=[tf.TensorSpec(None, tf.float32)])
    np.testing.assert_allclose(f(tf.ones((3, 1, 2))).numpy()[:, 0, 0], [1.0, 1.5, 1.75])


def test_eager_crossing_is_zero_copy_and_aligned(monkeypatch):
    """Inputs reach the kernels as views of TF's memory; outputs reach TF as the very buffers the kernels filled,
    each 64-byte aligned (TF would abort on adopting an unaligned one)."""
    case = make_case(seed=10, T=4, B=2, H=3, dtype=np.float32)
    x, u, b, h0, g = (tf.constant(case[n]) for n in ("x", "u", "b", "h0", "grad_h"))
    handed = []
    real_to_tf = itf._to_tf

    def spy_to_tf(a):
        handed.append(a.__array_interface__["data"][0])
        return real_to_tf(a)

    seen_x = []
    real_forward = indrnn_core.forward

    def spy_forward(xx, *args, **kwargs):
        seen_x.append(xx.__array_interface__["data"][0])
        return real_forward(xx, *args, **kwargs)

    monkeypatch.setattr(itf, "_to_tf", spy_to_tf)
    monkeypatch.setattr(indrnn_core, "forward", spy_forward)
    with tf.GradientTape() as tape:
        tape.watch([x, u, b, h0])
        h, hn = indrnn_with_state(x, u, b, h0)
    grads = tape.gradient(h, [x, u, b, h0], output_gradients=g)
    assert seen_x == [np.from_dlpack(x).__array_interface__["data"][0]]
    assert len(handed) == 6  # h, h_n, gx, gu, gb, gh0
    assert all(p % itf.ALIGNMENT == 0 for p in handed)
    for t in (h, hn, *grads):
        assert np.from_dlpack(t).__array_interface__["data"][0] in handed
    tf.reduce_sum(h + 1).numpy()  # TF computes on the adopted buffers (an unaligned one would abort here)


@pytest.mark.parametrize("callback", ["numpy_function", "py_function"])
def test_graph_outputs_are_the_kernels_buffers(callback, graph_callback, monkeypatch):
    """In a tf.function too, TF adopts the aligned buffers the kernels filled (an unaligned one it would copy)."""
    graph_callback(callback)
    made = []
    nan_filled = itf._aligned_empty  # the autouse fixture's

    def spy(shape, dtype):
        a = nan_filled(shape, dtype)
        made.append(a.__array_interface__["data"][0])
        return a

    monkeypatch.setattr(itf, "_aligned_empty", spy)
    case = make_case(seed=16, T=5, B=2, H=3, dtype=np.float32)
    h, hn = tf.function(indrnn_with_state)(tf.constant(case["x"]), tf.constant(case["u"]))
    assert np.from_dlpack(h).__array_interface__["data"][0] in made
    assert np.from_dlpack(hn).__array_interface__["data"][0] in made


@pytest.mark.parametrize("shape,dtype", [((0,), np.float32), ((3, 5, 7), np.float32), ((13,), np.float64),
                                         ((300, 64, 128), np.float32), ((1001, 3), np.float64)])
def test_aligned_empty(shape, dtype):
    for _ in range(3):  # fresh, then reused host-cache blocks
        a = REAL_ALIGNED_EMPTY(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.__array_interface__["data"][0] % itf.ALIGNMENT == 0
        t = itf._to_tf(a)
        assert np.from_dlpack(t).__array_interface__["data"][0] == a.__array_interface__["data"][0]
        del a, t


def test_dlpack_memory_of_a_cpu_tensor():
    t = tf.constant(np.arange(24, dtype=np.float64).reshape(2, 3, 4))
    ptr, shape, device_type, device_id, capsule = itf._dlpack_memory(t)
    assert ptr == np.from_dlpack(t).__array_interface__["data"][0]
    assert (shape, device_type, device_id) == ((2, 3, 4), itf._KDL_CPU, 0)
    with pytest.raises(ValueError, match="not export as CUDA memory"):
        itf._gpu_view(t, "x", True)


@pytest.mark.parametrize("mode", ["eager", "py_function"])
def test_on_a_real_gpu(mode, graph_callback):
    """Runs where TF itself has a GPU (a CUDA build of TF and numba-cuda): skipped with tensorflow-cpu, which CI
    installs. Devices are listed inside the test: listing them initialises TF's devices, after which no other test
    module could configure logical devices at its import."""
    if not tf.config.list_logical_devices("GPU"):
        pytest.skip("TensorFlow sees no GPU here (tensorflow-cpu)")
    graph_callback("auto" if mode == "eager" else mode)
    case = make_case(seed=18, T=9, B=3, H=5, dtype=np.float32, lengths=[9, 0, 4])
    with tf.device("/GPU:0"):
        got = run_op(case, {"activation": "tanh", "reverse": True}, mode)
        h = indrnn(tf.constant(case["x"]), tf.constant(case["u"]))
    assert "GPU" in h.device
    assert_matches(case, {"activation": "tanh", "reverse": True}, got)


def test_gpu_empty_allocates_on_the_tensors_device():
    like = tf.ones((2,), tf.float64)
    t = itf._gpu_empty((3, 0, 2), like)
    assert t.shape == (3, 0, 2) and t.dtype == tf.float64 and t.device == like.device


# ---- XLA --------------------------------------------------------------------------------------------------------
def test_jit_compile_is_refused_at_trace_time():
    u = tf.constant(np.full(2, 0.5, np.float32))
    with pytest.raises(XlaUnsupportedError, match=r"jit_compile=False"):
        tf.function(lambda x: indrnn(x, u), jit_compile=True)(tf.ones((3, 1, 2)))

    inner = tf.function(lambda x: indrnn(x, u))  # traced inside the XLA function: refused too
    with pytest.raises(XlaUnsupportedError, match="XLA"):
        tf.function(lambda x: inner(x) + 1, jit_compile=True)(tf.ones((3, 1, 2)))


# ---- bad input ----------------------------------------------------------------------------------------------------
def _good(dtype=np.float32):
    rng = np.random.default_rng(11)
    return {"x": rng.uniform(-1, 1, (4, 2, 3)).astype(dtype), "u": rng.uniform(-1, 1, 3).astype(dtype),
            "b": None, "h0": None}


BAD = {  # id: (changes to the good arguments, keyword options)
    "u-shape": ({"u": np.ones(4, np.float32)}, {}),
    "h0-shape": ({"h0": np.ones((3, 3), np.float32)}, {}),
    "b-shape": ({"b": np.ones((3, 1), np.float32)}, {}),
    "x-2d": ({"x": np.ones((4, 3), np.float32)}, {}),
    "dtype-mix": ({"u": np.ones(3, np.float64)}, {}),
    "x-int": ({"x": np.ones((4, 2, 3), np.int32), "u": np.ones(3, np.int32)}, {}),
    "x-complex": ({"x": np.ones((4, 2, 3), np.complex64)}, {}),
    "activation": ({}, {"activation": "gelu"}),
    "batch_first": ({}, {"batch_first": 1}),
    "lengths-range": ({}, {"lengths": [5, 1]}),
    "lengths-shape": ({}, {"lengths": [1, 2, 3]}),
    "lengths-float": ({}, {"lengths": np.array([1.0, 2.0])}),
}


def _core_error(args, options):
    with pytest.raises((ValueError, TypeError)) as info:
        indrnn_core.forward(args["x"], args["u"], args["b"], args["h0"], **options)
    return info.type, str(info.value)


@pytest.mark.parametrize("where", ["eager", "trace"])
@pytest.mark.parametrize("bad", list(BAD))
def test_bad_input_gets_the_core_message(bad, where):
    changes, options = BAD[bad]
    args = dict(_good(), **changes)
    kind, message = _core_error(args, options)
    tensors = {k: None if v is None else tf.constant(v) for k, v in args.items()}
    call = (lambda: indrnn(**tensors, **options)) if where == "eager" else (
        lambda: tf.function(lambda: indrnn(**tensors, **options))())
    with pytest.raises(kind) as info:
        call()
    if where == "eager":
        assert str(info.value) == message
    else:  # AutoGraph re-raises it with the user's code it passed through above the message
        assert str(info.value).rstrip().endswith(message)


def test_bad_input_unknown_at_trace_time_fails_at_run_time_with_the_core_message():
    args = dict(_good(), u=np.ones(4, np.float32))
    _, message = _core_error(args, {})
    f = tf.function(lambda x, u: indrnn(x, u), input_signature=[tf.TensorSpec([None, None, None], tf.float32),
                                                                  tf.TensorSpec([None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        f(tf.constant(args["x"]), tf.constant(args["u"]))

    lengths_out_of_range = tf.function(lambda x, u, n: indrnn(x, u, lengths=n), input_signature=[
        tf.TensorSpec([4, 2, 3], tf.float32), tf.TensorSpec([3], tf.float32), tf.TensorSpec([None], tf.int32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"lengths must lie in \[0, 4\]"):
        lengths_out_of_range(tf.constant(_good()["x"]), tf.constant(_good()["u"]), tf.constant([9, 1]))


def test_ragged_input_says_to_pass_lengths():
    x = tf.ragged.constant([[[1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]]], ragged_rank=1)
    with pytest.raises(TypeError, match=r"RaggedTensor.*lengths=x\.row_lengths\(\)"):
        indrnn(x, tf.ones(2), batch_first=True)
    dense = indrnn(x.to_tensor(), tf.ones(2), batch_first=True, lengths=x.row_lengths())
    assert dense.shape == (2, 2, 2)


def test_sparse_input_is_refused():
    with pytest.raises(TypeError, match="SparseTensor"):
        indrnn(tf.sparse.from_dense(tf.ones((2, 1, 2))), tf.ones(2))


def test_mixed_devices_are_refused():
    """Eager tensors on a GPU and on the CPU (a stand-in object plays the GPU one: no GPU here)."""
    cpu = tf.ones(3)
    gpu = types.SimpleNamespace(device="/job:localhost/replica:0/task:0/device:GPU:0")
    with pytest.raises(ValueError, match="all arrays must be on one device, got x on CPU:0, u on GPU:0"):
        itf._check_devices({"x": cpu, "u": gpu, "b": None})


# ---- the GPU path, under Numba's CUDA simulator -----------------------------------------------------------------
@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1", reason="runs the GPU path in the simulator")
@pytest.mark.parametrize("mode", ["eager", "py_function"])
def test_gpu_path_in_the_simulator(mode, monkeypatch, graph_callback):
    """CPU tensors stand in for GPU ones: the GPU path allocates outputs with TF's Empty, reads every buffer
    through DLPack (host memory the simulator's arrays wrap in place), synchronises TF before and the kernels
    after each launch, and runs the CUDA kernels, here simulated."""
    from numba import cuda
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    events, alive = [], []

    def host_backed_view(t, name, readonly):
        """The tensor's memory, found through DLPack as on a GPU, wrapped in place by a simulator array."""
        ptr, shape, _, _, capsule = itf._dlpack_memory(t)
        alive.append((t, capsule))  # TF's buffer outlives the view (the test's duration)
        dtype = np.dtype(t.dtype.as_numpy_dtype)
        n = math.prod(shape)
        ctype = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}[dtype]
        arr = np.frombuffer((ctype * n).from_address(ptr), dtype).reshape(shape)
        return FakeCUDAArray(arr)

    def nan_filled_gpu_empty(shape, like):  # TF's Empty leaves memory as it was: NaN shows a missed write
        return tf.fill(shape, tf.constant(np.nan, like.dtype))

    real_sync = cuda.synchronize
    monkeypatch.setattr(itf, "_gpu_empty", nan_filled_gpu_empty)
    monkeypatch.setattr(itf, "_device_kind", lambda t: ("GPU", 0))
    monkeypatch.setattr(itf, "_gpu_view", host_backed_view)
    monkeypatch.setattr(itf, "_sync_tf", lambda: events.append("sync tf"))
    monkeypatch.setattr(cuda, "synchronize", lambda: (events.append("sync kernels"), real_sync()))
    if mode != "eager":
        graph_callback(mode)
    case = make_case(seed=12, T=5, B=3, H=4, dtype=np.float32, lengths=[5, 0, 2])
    got = run_op(case, {"activation": "tanh"}, mode)
    assert_matches(case, {"activation": "tanh"}, got)
    assert events == ["sync tf", "sync kernels"] * 2  # forward, backward


# ---- tf.distribute ----------------------------------------------------------------------------------------------
MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from indrnn_core.adapters import tensorflow as itf
    from indrnn_core.adapters.tensorflow import indrnn_with_state
    itf.GRAPH_CALLBACK = sys.argv[1]

    rng = np.random.default_rng(13)
    T, B, D, H = 6, 4, 3, 5
    data = rng.uniform(-1, 1, (B, T, D))
    target = rng.uniform(-1, 1, (B, H))
    lengths = np.array([6, 3, 0, 5])
    init = {"w": rng.uniform(-0.5, 0.5, (D, H)), "u": rng.uniform(0, 1, H), "b": rng.uniform(-0.1, 0.1, H)}

    def loss_fn(w, u, b, x, y, n):
        h, h_n = indrnn_with_state(tf.einsum("btd,dh->bth", x, w), u, b, batch_first=True, lengths=n)
        per_example = tf.reduce_sum((h_n - y) ** 2, axis=1) + tf.reduce_mean(h, axis=[1, 2])
        return tf.reduce_sum(per_example) / B  # the global batch

    def step(variables, x, y, n):
        with tf.GradientTape() as tape:
            loss = loss_fn(*variables, x, y, n)
        return loss, tape.gradient(loss, variables)

    # One device, the whole batch.
    single = [tf.Variable(init[k]) for k in ("w", "u", "b")]
    loss1, grads1 = tf.function(step)(single, tf.constant(data), tf.constant(target), tf.constant(lengths))

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = [tf.Variable(init[k]) for k in ("w", "u", "b")]
    dataset = tf.data.Dataset.from_tensor_slices((data, target, lengths)).batch(B)
    x, y, n = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def distributed_step(x, y, n):
        loss, grads = strategy.run(step, args=(mirrored, x, y, n))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads])

    loss2, grads2 = distributed_step(x, y, n)
    devices = sorted({v.device for v in strategy.experimental_local_results(mirrored[1])})
    json.dump({"replicas": strategy.num_replicas_in_sync, "devices": devices,
               "replica_batches": [int(t.shape[0]) for t in strategy.experimental_local_results(x)],
               "loss": [float(loss1), float(loss2)],
               "grads": [[g.numpy().tolist() for g in grads1], [g.numpy().tolist() for g in grads2]]}, sys.stdout)
""")


@pytest.mark.parametrize("callback", ["numpy_function", "py_function"])
def test_mirrored_strategy_matches_one_device(callback):
    """A training step under MirroredStrategy over two logical CPUs gives one device's loss and gradients."""
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, callback], capture_output=True, text=True,
                          timeout=900, cwd=Path(__file__).resolve().parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and len(out["devices"]) == 2 and out["replica_batches"] == [2, 2]
    tol = tolerance(np.float64, 6 * 4 * 5)
    one, two = out["loss"]
    assert abs(one - two) <= tol * (1 + abs(one))
    for g1, g2 in zip(*out["grads"]):
        g1, g2 = np.asarray(g1), np.asarray(g2)
        assert scaled_error(g2, g1) <= tol
