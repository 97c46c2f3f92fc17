"""The JAX adapter (``indrnn_core.adapters.jax``): values and gradients against the float64 reference, a
``lax.scan`` implementation and finite differences; jit, grad, vmap and shard_map compositions; the FFI path in the
compiled program; the pure_callback fallback; the buffer_callback body the GPU path runs; bad input."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from hypothesis import given  # noqa: E402
from jax import lax  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import indrnn_core  # noqa: E402
from indrnn_core import reference  # noqa: E402
from indrnn_core.adapters import jax as adapter  # noqa: E402
from indrnn_core.adapters.jax import indrnn, indrnn_with_state  # noqa: E402
from indrnn_core.testing import check_gradients, default_tolerance, problems, scaled_error  # noqa: E402

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def make(T=7, B=3, H=5, dtype=np.float32, seed=0, batch_first=False):
    rng = np.random.default_rng(seed)
    shape = (B, T, H) if batch_first else (T, B, H)
    return dict(x=rng.standard_normal(shape).astype(dtype), u=rng.uniform(-1, 1, H).astype(dtype),
                b=rng.standard_normal(H).astype(dtype), h0=rng.standard_normal((B, H)).astype(dtype),
                grad_h=rng.standard_normal(shape).astype(dtype), grad_hn=rng.standard_normal((B, H)).astype(dtype))


def tolerance(dtype, T):
    # float32: rounding grows with the steps a value passes through (the recurrence) -- scaled errors stay below
    # a few eps * T; float64 likewise. Both compare against the float64 reference.
    return 8 * np.finfo(dtype).eps * (T + 1)


def loss_through(p, options):
    """sum(grad_h * h) + sum(grad_hn * h_n): its gradients are backward(grad_h, ..., grad_hn)."""
    def loss(x, u, b, h0):
        h, hn = indrnn_with_state(x, u, b, h0, **options)
        return jnp.sum(h * p["grad_h"]) + jnp.sum(hn * p["grad_hn"])
    return loss


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch_first, reverse", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_values_and_gradients_match_reference(activation, batch_first, reverse, with_lengths):
    p = make(batch_first=batch_first, seed=hash((activation, batch_first, reverse, with_lengths)) % 1000)
    lengths = np.array([7, 2, 0]) if with_lengths else None
    options = dict(activation=activation, batch_first=batch_first, reverse=reverse, lengths=lengths)
    h, hn = jax.jit(lambda x, u, b, h0: indrnn_with_state(x, u, b, h0, **options))(p["x"], p["u"], p["b"], p["h0"])
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    ref_h = reference.forward(p64["x"], p64["u"], p64["b"], p64["h0"], **options)
    ref_hn = reference.final_state(ref_h, p64["h0"], lengths, reverse, batch_first)
    tol = tolerance(np.float32, 7)
    assert scaled_error(h, ref_h) < tol and scaled_error(hn, ref_hn) < tol
    grads = jax.jit(jax.grad(loss_through(p, options), argnums=(0, 1, 2, 3)))(p["x"], p["u"], p["b"], p["h0"])
    ref = reference.backward(p64["grad_h"], ref_h, p64["u"], p64["h0"], grad_hn=p64["grad_hn"], **options)
    for name, g, r in zip(("gx", "gu", "gb", "gh0"), grads, ref):
        assert g.shape == r.shape and g.dtype == np.float32, name
        assert scaled_error(g, r) < tolerance(np.float32, 7 * 3), name  # gu/gb also sum over B


def test_float64_equals_the_core_kernels_exactly(x64):
    p = make(T=9, B=4, H=6, dtype=np.float64, seed=3)
    options = dict(activation="tanh", lengths=[9, 4, 1, 0], reverse=True)
    h, hn = jax.jit(lambda *a: indrnn_with_state(*a, **options))(p["x"], p["u"], p["b"], p["h0"])
    assert h.dtype == jnp.float64
    want = indrnn_core.forward(p["x"], p["u"], p["b"], p["h0"], **options)
    np.testing.assert_array_equal(h, want)
    np.testing.assert_array_equal(hn, indrnn_core.final_state(want, p["h0"], options["lengths"], True))
    grads = jax.grad(loss_through(p, options), argnums=(0, 1, 2, 3))(p["x"], p["u"], p["b"], p["h0"])
    ref = indrnn_core.backward(p["grad_h"], want, p["u"], p["h0"], grad_hn=p["grad_hn"], **options)
    for g, r in zip(grads, ref):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "identity"])  # (relu: kinks break finite differences)
def test_check_grads_reverse_mode(x64, activation):
    p = make(T=5, B=2, H=3, dtype=np.float64, seed=4)
    check_grads(lambda x, u, b, h0: indrnn_with_state(x, u, b, h0, activation=activation, lengths=[5, 3]),
                (p["x"], p["u"], p["b"], p["h0"]), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def _jax_forward(x, u, b, h0, **options):
    return np.asarray(indrnn(x, u, b, h0, **options))


def _jax_vjp(x, u, b, h0, grad_h, grad_hn, **options):
    B, H = (x.shape[0] if options["batch_first"] else x.shape[1]), u.shape[0]
    grad_hn = np.zeros((B, H), x.dtype) if grad_hn is None else grad_hn

    def loss(x, u, b, h0):
        h, hn = indrnn_with_state(x, u, b, h0, **options)
        return jnp.sum(h * grad_h) + jnp.sum(hn * grad_hn)

    argnums = tuple(i for i, a in enumerate((x, u, b, h0)) if a is not None)
    grads = dict(zip(argnums, jax.grad(loss, argnums=argnums)(x, u, b, h0)))
    return tuple(None if i not in grads else np.asarray(grads[i]) for i in range(4))


@given(problem=problems())
def test_check_gradients_on_the_adapter(problem):
    """indrnn_core.testing's checker on the adapter: the reference in the problem's dtype, and finite differences
    in float64."""
    with jax.enable_x64(True):
        report = check_gradients(_jax_forward, _jax_vjp, problem)
    assert report.ok, report


def scan_indrnn(x, u, b, h0):
    """The recurrence as a JAX user writes it without the kernels."""
    def step(h, x_t):
        h = jax.nn.relu(x_t + u * h + b)
        return h, h
    return lax.scan(step, h0, x)[1]


def test_agrees_with_lax_scan():
    p = make(T=40, B=4, H=8, seed=5)
    args = (p["x"], p["u"] * 0.9, p["b"], p["h0"])
    tol = tolerance(np.float32, 40)
    assert scaled_error(jax.jit(indrnn)(*args), jax.jit(scan_indrnn)(*args)) < tol
    loss = lambda f: lambda *a: jnp.sum(f(*a) * p["grad_h"])  # noqa: E731
    mine = jax.jit(jax.grad(loss(indrnn), argnums=(0, 1, 2, 3)))(*args)
    theirs = jax.jit(jax.grad(loss(scan_indrnn), argnums=(0, 1, 2, 3)))(*args)
    for a, b in zip(mine, theirs):
        assert scaled_error(a, b) < tolerance(np.float32, 40 * 4)


def test_compiled_program_calls_the_ffi_handler_and_no_host_callback():
    p = make()
    text = jax.jit(lambda x, u: indrnn(x, u)).lower(p["x"], p["u"]).as_text()
    assert "indrnn_core_forward_float32" in text
    grad_text = jax.jit(jax.grad(lambda x, u: indrnn(x, u).sum())).lower(p["x"], p["u"]).as_text()
    assert "indrnn_core_backward_float32" in grad_text
    for t in (text, grad_text):
        assert "callback" not in t.lower()


@pytest.mark.parametrize("batch_first", [False, True])
def test_unused_output_is_a_symbolic_zero_row_not_a_materialised_array(batch_first):
    """Only h_n in the loss: the backward call gets a [1, 1, H] row for h's cotangent (nothing [T, B, H] filled
    with zeros), and the gradients equal the float64 reference with that cotangent zero; the same under vmap
    (the row is not folded) and through the callback fallback. Only h used: grad_hn's zeros are tiny and plain."""
    T, B, H = 7, 3, 5
    p = make(T, B, H, batch_first=batch_first, seed=12)
    options = dict(batch_first=batch_first, lengths=np.array([7, 2, 0]))

    def loss(x, u, b, h0):
        return jnp.sum(indrnn_with_state(x, u, b, h0, **options)[1] * p["grad_hn"])

    args = (p["x"], p["u"], p["b"], p["h0"])
    text = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).lower(*args).as_text()
    call = next(line for line in text.splitlines() if "indrnn_core_backward_float32" in line)
    assert f"tensor<1x1x{H}xf32>" in call.split("->")[0], call
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*args)
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    ref_h = reference.forward(p64["x"], p64["u"], p64["b"], p64["h0"], **options)
    want = reference.backward(np.zeros_like(ref_h), ref_h, p64["u"], p64["h0"], grad_hn=p64["grad_hn"], **options)
    for got, w in zip(grads, want):
        assert scaled_error(got, w) < tolerance(np.float32, T * B)  # (gu/gb also sum over B)
    # vmap over x and h0: the row stays one row for every folded sequence
    rng = np.random.default_rng(13)
    xs = rng.standard_normal((2, *p["x"].shape)).astype(np.float32)
    h0s = rng.standard_normal((2, B, H)).astype(np.float32)
    vgrads = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None, None, 0)))(xs, p["u"], p["b"], h0s)
    for i in range(2):
        g = jax.grad(loss, argnums=(0, 1))(xs[i], p["u"], p["b"], h0s[i])
        np.testing.assert_allclose(vgrads[0][i], g[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(vgrads[1][i], g[1], rtol=1e-5, atol=1e-6)
    # the callback fallback expands the row to h's shape: the same gradients, bit for bit
    adapter._FALLBACK_WARNED.append("test")  # (no warning: the fallback's own test checks it)
    try:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(adapter._ffi, "available", lambda: (False, "test"))
            fallback = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*args)
    finally:
        adapter._FALLBACK_WARNED.remove("test")
    for a, b in zip(fallback, grads):
        np.testing.assert_array_equal(a, b)


def test_traced_lengths_and_their_range_check():
    p = make()
    f = jax.jit(lambda x, lengths: indrnn(x, p["u"], lengths=lengths))
    lengths = jnp.array([7, 3, 0], jnp.int32)
    want = indrnn_core.forward(p["x"], p["u"], lengths=np.array([7, 3, 0]))
    np.testing.assert_allclose(f(p["x"], lengths), want, rtol=0, atol=0)
    with pytest.raises(Exception, match=r"lengths must lie in \[0, T\]"):
        jax.block_until_ready(f(p["x"], jnp.array([8, 1, 1], jnp.int32)))
    with pytest.raises(Exception, match=r"lengths must lie in \[0, T\]"):
        jax.block_until_ready(f(p["x"], jnp.array([-1, 1, 1], jnp.int32)))


# ---- vmap -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
def test_vmap_folds_into_the_batch_values_and_gradients(batch_first):
    V, p = 3, make(batch_first=batch_first, seed=6)
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((V, *p["x"].shape)).astype(np.float32)
    h0s = rng.standard_normal((V, *p["h0"].shape)).astype(np.float32)
    lens = np.array([[7, 1, 0], [3, 7, 2], [0, 0, 7]])
    options = dict(batch_first=batch_first, reverse=True)

    def loss(x, u, b, h0, lengths):
        h, hn = indrnn_with_state(x, u, b, h0, lengths=lengths, **options)
        return jnp.sum(h * h) + jnp.sum(hn)

    f = jax.vmap(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)), in_axes=(0, None, None, 0, 0))
    values, grads = jax.jit(f)(xs, p["u"], p["b"], h0s, jnp.asarray(lens, jnp.int32))
    for i in range(V):
        v, g = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(xs[i], p["u"], p["b"], h0s[i], lens[i])
        np.testing.assert_allclose(values[i], v, rtol=1e-6)
        for a, b in zip(grads, g):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)
    # one kernel call each way, not one per slice
    text = jax.jit(f).lower(xs, p["u"], p["b"], h0s, jnp.asarray(lens, jnp.int32)).as_text()
    assert text.count("indrnn_core_forward_float32") == 1 and text.count("indrnn_core_backward_float32") == 1


def test_nested_vmap_and_vmapped_recurrent_weights():
    p = make(T=5, B=2, H=3, seed=8)
    rng = np.random.default_rng(9)
    xs = rng.standard_normal((2, 3, 5, 2, 3)).astype(np.float32)
    grad = jax.grad(lambda x, u: jnp.sum(indrnn(x, u) ** 2), argnums=(0, 1))
    nested = jax.vmap(jax.vmap(grad, in_axes=(0, None)), in_axes=(0, None))(xs, p["u"])
    for i in range(2):
        for j in range(3):
            g = grad(xs[i, j], p["u"])
            np.testing.assert_allclose(nested[0][i, j], g[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(nested[1][i, j], g[1], rtol=1e-5, atol=1e-6)
    us = rng.uniform(-1, 1, (4, 3)).astype(np.float32)  # one recurrence per slice: run in turn
    per_u = jax.vmap(grad, in_axes=(None, 0))(p["x"], us)
    for k in range(4):
        g = grad(p["x"], us[k])
        np.testing.assert_allclose(per_u[0][k], g[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(per_u[1][k], g[1], rtol=1e-5, atol=1e-6)


# ---- other paths --------------------------------------------------------------------------------------------------
def test_pure_callback_fallback_warns_once_and_agrees(monkeypatch):
    monkeypatch.setattr(adapter._ffi, "available", lambda: (False, "FFI API 9.0 is unknown (test)"))
    monkeypatch.setattr(adapter, "_FALLBACK_WARNED", [])
    p = make(seed=10)
    options = dict(activation="sigmoid", lengths=[7, 4, 0])
    with pytest.warns(RuntimeWarning, match="FFI API 9.0 is unknown"):
        h = jax.jit(lambda x, u: indrnn(x, u, **options))(p["x"], p["u"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grads = jax.jit(jax.grad(lambda x, u, b: jnp.sum(indrnn(x, u, b, **options) * p["grad_h"]),
                                 argnums=(0, 1, 2)))(p["x"], p["u"], p["b"])
    want = indrnn_core.forward(p["x"], p["u"], **options)
    np.testing.assert_array_equal(h, want)
    hb = indrnn_core.forward(p["x"], p["u"], p["b"], **options)
    ref = indrnn_core.backward(p["grad_h"], hb, p["u"], **options)
    for g, r in zip(grads, ref[:3]):
        np.testing.assert_array_equal(g, r)


def test_buffer_callback_body_of_the_gpu_path_on_cpu_buffers():
    """The GPU path's callback body (core calls on XLA's buffers, per-group backward), run here on CPU buffers."""
    from jax.experimental.buffer_callback import buffer_callback

    p = make(seed=11)
    lengths = jnp.array([7, 2, 5], jnp.int32)
    types = adapter._result_types(p["x"].shape, np.float32, False)
    fwd = buffer_callback(lambda ctx, outs, *a: adapter._run_forward(None, outs, *a, "tanh", False, True), types)
    h, hn = jax.jit(fwd)(p["x"], p["u"], p["b"], p["h0"], lengths)
    want = indrnn_core.forward(p["x"], p["u"], p["b"], p["h0"], activation="tanh", lengths=np.asarray(lengths),
                               reverse=True)
    np.testing.assert_array_equal(h, want)
    gtypes = adapter._gradient_types(p["x"].shape, np.float32, False, 3)
    bwd = buffer_callback(lambda ctx, outs, *a: adapter._run_backward(None, outs, *a, "tanh", False, True, 3),
                          gtypes)
    gx, gu, gb, gh0 = jax.jit(bwd)(p["grad_h"], want, p["u"], p["h0"], lengths, p["grad_hn"])
    for n in range(3):  # groups of one sequence each: per-sequence sums
        ref = indrnn_core.backward(p["grad_h"][:, n:n + 1], want[:, n:n + 1], p["u"], p["h0"][n:n + 1],
                                   activation="tanh", lengths=np.asarray(lengths)[n:n + 1], reverse=True,
                                   grad_hn=p["grad_hn"][n:n + 1])
        np.testing.assert_array_equal(gx[:, n:n + 1], ref[0])
        np.testing.assert_array_equal(gu[n], ref[1])
        np.testing.assert_array_equal(gb[n], ref[2])
        np.testing.assert_array_equal(gh0[n:n + 1], ref[3])


SHARDING_SCRIPT = textwrap.dedent("""
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import Mesh, PartitionSpec as P
    from indrnn_core.adapters.jax import indrnn_with_state
    assert len(jax.devices()) == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    rng = np.random.default_rng(0)
    T, B, H = 9, 6, 5
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    u = rng.uniform(-1, 1, H).astype(np.float32)
    b = rng.standard_normal(H).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    lengths = np.array([9, 3, 0, 9, 5, 1], np.int32)

    def loss(x, u, b, h0, lengths):
        h, hn = indrnn_with_state(x, u, b, h0, lengths=lengths)
        return jnp.sum(h * h) + jnp.sum(hn)

    def local_loss(x, u, b, h0, lengths):  # each device's shard of the batch; the total is summed across them
        return jax.lax.psum(loss(x, u, b, h0, lengths), "batch")

    sharded = jax.jit(jax.shard_map(jax.value_and_grad(local_loss, argnums=(0, 1, 2, 3)), mesh=mesh,
                      in_specs=(P(None, "batch"), P(), P(), P("batch"), P("batch")),
                      out_specs=(P(), (P(None, "batch"), P(), P(), P("batch")))))
    value, grads = sharded(x, u, b, h0, lengths)
    value1, grads1 = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(x, u, b, h0, lengths)
    np.testing.assert_allclose(value, value1, rtol=1e-6)
    for g, g1 in zip(grads, grads1):
        np.testing.assert_allclose(g, g1, rtol=1e-5, atol=1e-6)
    hlo = sharded.lower(x, u, b, h0, lengths).compile().as_text()
    assert "all-gather" not in hlo, "the batch was gathered"
    assert hlo.count("indrnn_core_forward_float32") >= 1
    print("shapes per device", grads[0].addressable_shards[0].data.shape)
    # Plain jit over batch-sharded arrays (no shard_map) stays correct: XLA gathers around the kernel call.
    from jax.sharding import NamedSharding
    xs = jax.device_put(x, NamedSharding(mesh, P(None, "batch")))
    value2, grads2 = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(xs, u, b, h0, lengths)
    np.testing.assert_allclose(value2, value1, rtol=1e-6)
    for g, g1 in zip(grads2, grads1):
        np.testing.assert_allclose(g, g1, rtol=1e-5, atol=1e-6)

    # The Flax layer in a data-parallel training step: the same gradients as one device.
    from flax import nnx
    from indrnn_core.adapters.flax import IndRNN
    graphdef, params = nnx.split(IndRNN(H, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0)))
    xb = np.ascontiguousarray(x.transpose(1, 0, 2))  # [B, T, F]: batch-first, as Flax layers

    def model_loss(params, x, lengths):
        out, h_n = nnx.merge(graphdef, params)(x, lengths=lengths)
        return jnp.mean(out ** 2) + jnp.mean(h_n)

    one = jax.jit(jax.grad(model_loss))(params, xb, lengths)
    shard = jax.jit(jax.shard_map(jax.grad(lambda p, x, n: jax.lax.pmean(model_loss(p, x, n), "batch")), mesh=mesh,
                                  in_specs=(P(), P("batch"), P("batch")), out_specs=P()))(params, xb, lengths)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(shard)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print("OK")
""")


@pytest.mark.slow
def test_shard_map_over_two_devices_equals_one_device(tmp_path):
    """A fresh process (the device count is fixed when JAX starts): the batch sharded over two CPU devices gives
    the one-device values and gradients, with no gather of the batch in the compiled program."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shapes per device (9, 3, 5)" in result.stdout and "OK" in result.stdout


# ---- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda p: indrnn(p["x"], p["u"][:3]), ValueError, r"u must have shape \(5,\)"),
    (lambda p: indrnn(p["x"], p["u"], p["b"][:2]), ValueError, r"b must have shape \(5,\)"),
    (lambda p: indrnn(p["x"], p["u"], None, p["h0"][:1]), ValueError, r"h0 must have shape \(3, 5\)"),
    (lambda p: indrnn(p["x"][0], p["u"]), ValueError, "x must be 3-D"),
    (lambda p: indrnn(p["x"].astype(np.int32), p["u"]), TypeError, "x must have dtype float32 or float64"),
    (lambda p: indrnn(p["x"], p["u"].astype(np.float16)), TypeError, "u must have dtype float32 or float64"),
    (lambda p: indrnn(p["x"], p["u"], activation="gelu"), ValueError, "activation must be one of"),
    (lambda p: indrnn(p["x"], p["u"], reverse=1), TypeError, "reverse must be a bool"),
    (lambda p: indrnn(p["x"], p["u"], lengths=[1, 2]), ValueError, r"lengths must have shape \(3,\)"),
    (lambda p: indrnn(p["x"], p["u"], lengths=[1, 2, 9]), ValueError, r"lengths must lie in \[0, 7\]"),
    (lambda p: indrnn(p["x"], p["u"], lengths=[1.0, 2, 3]), TypeError, "lengths must contain integers"),
    (lambda p: indrnn(p["x"], p["u"], lengths=jnp.array([1.0, 2, 3])), TypeError, "lengths must have an integer"),
    (lambda p: indrnn(p["x"].tolist(), p["u"]), TypeError, "x must be a JAX or NumPy array"),
    (lambda p: jax.jit(lambda x: indrnn(x, p["u"][:2]))(p["x"]), ValueError, r"u must have shape \(5,\)"),
])
def test_bad_input_raises_the_core_message_while_tracing(call, error, match):
    with pytest.raises(error, match=match):
        call(make())


def test_mixed_dtypes_rejected(x64):
    p = make()
    with pytest.raises(TypeError, match="all arrays must share one dtype"):
        indrnn(p["x"], p["u"].astype(np.float64))


def test_default_tolerance_is_what_the_checker_uses():
    assert default_tolerance(np.float32) >= tolerance(np.float32, 7)


def test_readme_example_runs_and_its_gradients_agree():
    """The README's JAX example, run as written (on however many devices this process has)."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## JAX (`indrnn_core.adapters.jax`)"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md (JAX example)", "exec"), scope)
    w, u, b, xs, lengths = (scope[k] for k in ("w", "u", "b", "xs", "lengths"))
    grads, per_example = scope["grads"], scope["per_example"]
    assert per_example.shape == (xs.shape[1], *w.shape)
    # the mean loss's gradient is the mean of the per-example ones
    np.testing.assert_allclose(per_example.mean(0), grads[0], rtol=1e-4, atol=1e-6)
    for g, s in zip(grads, scope["sharded"](w, u, b, xs, lengths)):
        np.testing.assert_allclose(s, g, rtol=1e-5, atol=1e-7)


def test_readme_flax_example_runs_as_written():
    import pathlib
    import re

    pytest.importorskip("flax")
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Flax (`indrnn_core.adapters.flax`)"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md (Flax example)", "exec"), scope)
    assert scope["out"].shape == (50, 500, 128) and scope["h_n"].shape == (2, 50, 128)
    assert np.isfinite(float(scope["loss"]))
    for run in scope["rnn"].runs:  # clipped after the update
        assert float(jnp.max(jnp.abs(run.recurrent_kernel[...]))) <= scope["bound"]


def _jax_gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


@pytest.mark.skipif(_jax_gpu() is None, reason="JAX sees no GPU here (a CPU jaxlib)")
def test_cuda_path_on_a_real_gpu():
    """Where JAX has a GPU: the buffer_callback path runs the CUDA kernels on XLA's stream, under jit, with values
    and gradients equal to the CPU path's (lengths given and not, vmap folded)."""
    gpu, p = _jax_gpu(), make(T=50, B=6, H=33, seed=12)
    lengths = np.array([50, 1, 0, 17, 50, 33])
    put = lambda a: jax.device_put(a, gpu)  # noqa: E731
    for given in (None, lengths):
        options = dict(activation="tanh", reverse=True, lengths=given)
        f = jax.jit(jax.value_and_grad(lambda x, u, b, h0: jnp.sum(indrnn(x, u, b, h0, **options) ** 2),
                                       argnums=(0, 1, 2, 3)))
        on_gpu = f(*(put(p[k]) for k in ("x", "u", "b", "h0")))
        on_cpu = f(*(p[k] for k in ("x", "u", "b", "h0")))
        for a, b in zip(jax.tree.leaves(on_gpu), jax.tree.leaves(on_cpu)):
            assert next(iter(a.devices())).platform == "gpu"
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    xs = np.stack([p["x"], p["grad_h"]])
    v = jax.jit(jax.vmap(lambda x: indrnn(x, put(p["u"]))))(put(xs))
    for i in range(2):
        np.testing.assert_allclose(np.asarray(v[i]), indrnn_core.forward(xs[i], p["u"]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("features", [1, 2, 4, 5])
def test_project_equals_matmul_values_gradients_and_vmap(x64, features):
    # project() multiplies and adds for D <= 4 features (with its own VJP) and calls dot above: in float64 both
    # equal x @ kernel and its gradients to rounding of a D-term sum.
    rng = np.random.default_rng(features)
    x = jnp.asarray(rng.standard_normal((3, 7, features)))
    kernel = jnp.asarray(rng.standard_normal((features, 5)))
    g = jnp.asarray(rng.standard_normal((3, 7, 5)))
    np.testing.assert_allclose(adapter.project(x, kernel), x @ kernel, rtol=1e-13, atol=1e-13)
    got = jax.jit(jax.grad(lambda x, k: jnp.vdot(adapter.project(x, k), g), (0, 1)))(x, kernel)
    want = jax.grad(lambda x, k: jnp.vdot(x @ k, g), (0, 1))(x, kernel)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(adapter.project, (0, None))(x, kernel), x @ kernel, rtol=1e-13, atol=1e-13)
    check_grads(adapter.project, (x, kernel), order=1, modes=["rev"])


def test_handler_cache_is_dropped_when_the_inlined_kernels_change(tmp_path, monkeypatch):
    """A cached handler inlines the CPU kernels, which Numba's cache does not track: a digest of their sources,
    stamped beside the cache index, drops the index when they change (and only then)."""
    import importlib.util

    from indrnn_core.adapters.jax import _ffi

    (tmp_path / "handler_module.py").write_text("def handler(x):\n    return x\n")
    spec = importlib.util.spec_from_file_location("handler_module", tmp_path / "handler_module.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from numba.core.caching import FunctionCache

    cache = FunctionCache(module.handler)
    index = os.path.join(cache._cache_path, cache._cache_file._index_name)
    os.makedirs(os.path.dirname(index), exist_ok=True)

    def write_index():
        with open(index, "w") as f:
            f.write("index")

    monkeypatch.setattr(_ffi, "_kernel_sources_digest", lambda: "kernels v1")
    write_index()
    _ffi._drop_stale_cache(module.handler)  # no stamp yet: dropped, stamped
    assert not os.path.exists(index)
    write_index()  # (Numba recompiles and writes it)
    _ffi._drop_stale_cache(module.handler)  # same kernels: kept
    assert os.path.exists(index)
    monkeypatch.setattr(_ffi, "_kernel_sources_digest", lambda: "kernels v2")
    _ffi._drop_stale_cache(module.handler)  # kernels changed: dropped
    assert not os.path.exists(index)
    assert open(index + ".kernels").read() == "kernels v2"
