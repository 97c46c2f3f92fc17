"""The torch custom ops and functional API: opcheck, gradcheck, agreement with ``indrnn_core.reference``, zero copy,
torch.compile, bad input. Float64 tiny shapes for gradients; awkward sizes for agreement."""
import contextlib

import numpy as np
import pytest

import torch  # noqa: E402

import indrnn_core  # noqa: E402
from indrnn_core import reference  # noqa: E402
from indrnn_core.adapters import torch as adapter  # noqa: E402
from indrnn_core.adapters.torch import IndRNN, indrnn, indrnn_with_state  # noqa: E402

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
REAL_EMPTY = adapter._empty  # before the autouse fixture below swaps it
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def nan_outputs(monkeypatch):
    """Every buffer the kernels fill starts as NaN, so an output a kernel forgot to write fails loudly."""
    def nan_filled(shape, like):
        t = torch.full(tuple(shape), float("nan"), dtype=like.dtype, device=like.device)
        return t, (adapter._cuda_view(t) if t.is_cuda else t.numpy())

    monkeypatch.setattr(adapter, "_empty", nan_filled)


@pytest.fixture
def one_kernel_thread():
    """gradcheck makes hundreds of calls on tiny inputs, where waking numba's thread pool costs more than the work
    (milliseconds per call on a busy 2-core machine); what it checks is the adapter's gradients, not threading."""
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


def make(T, B, H, *, dtype=torch.float64, batch_first=False, bias=True, h0=True, lengths=False, seed=0,
         device="cpu", requires_grad=False):
    """x, u, b, h0, lengths (a host int64 tensor with a 0, a full and a partial length, or None)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B, T, H) if batch_first else (T, B, H), generator=g, dtype=dtype)
    u = torch.rand(H, generator=g, dtype=dtype) * 1.4 - 0.2
    b = torch.randn(H, generator=g, dtype=dtype) * 0.3 if bias else None
    s = torch.randn(B, H, generator=g, dtype=dtype) if h0 else None
    n = torch.tensor([T, 0, max(T // 2, 1)] * B, dtype=torch.int64)[:B] if lengths else None
    tensors = [t if t is None else t.to(device).requires_grad_(requires_grad) for t in (x, u, b, s)]
    return (*tensors, n)


def np64(t):
    return None if t is None else t.detach().cpu().double().numpy()


def tolerance(dtype, reduction, scale=0.0):
    """rtol/atol for a result against the float64 reference (or the same math summed in another order): rounding
    errors grow at most linearly with the reduction length (the T steps of a recurrence; the T*B terms of gu and
    gb) and with the magnitude ``scale`` of the values. 16 eps per term: measured errors stay below 1.5 eps per
    term (test_matches_reference's shapes, 5 seeds, float32 and float64)."""
    bound = 16 * reduction * torch.finfo(dtype).eps
    return dict(rtol=bound, atol=bound * (1.0 + float(scale)))


# ---------------------------------------------------------------------------------------------------- opcheck
OPTIONS = {  # id -> make() keywords and op flags
    "plain": {},
    "lengths": {"lengths": True},
    "reverse": {"reverse": True},
    "batch_first": {"batch_first": True},
    "no_h0": {"h0": False},
    "no_bias": {"bias": False},
    "all": {"lengths": True, "reverse": True, "batch_first": True},
    "bare_lengths": {"lengths": True, "h0": False, "bias": False},
}


def split(opts):
    opts = dict(opts)
    reverse = opts.pop("reverse", False)
    return opts, reverse


@pytest.mark.parametrize("case", ["plain", "all", "bare_lengths"])
def test_opcheck_forward(case):
    kw, reverse = split(OPTIONS[case])
    x, u, b, h0, n = make(6, 3, 5, requires_grad=True, **kw)
    torch.library.opcheck(torch.ops.indrnn.forward.default,
                          (x, u, b, h0, n, "tanh", kw.get("batch_first", False), reverse))


@pytest.mark.parametrize("case", ["plain", "all", "bare_lengths"])
def test_opcheck_backward(case):
    kw, reverse = split(OPTIONS[case])
    x, u, b, h0, n = make(6, 3, 5, **kw)
    bf = kw.get("batch_first", False)
    h, hn = torch.ops.indrnn.forward(x, u, b, h0, n, "tanh", bf, reverse)
    g = torch.Generator().manual_seed(2)
    for grad_hn in (None, torch.randn(hn.shape, generator=g, dtype=hn.dtype)):
        torch.library.opcheck(torch.ops.indrnn.backward.default,
                              (torch.randn(h.shape, generator=g, dtype=h.dtype), h, u, h0, n, grad_hn, "tanh", bf,
                               reverse))


# -------------------------------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("case", list(OPTIONS))
def test_gradcheck(activation, case, one_kernel_thread):
    """Gradients of every step's output and of the final state, w.r.t. x, u, b and h0, by finite differences."""
    kw, reverse = split(OPTIONS[case])
    x, u, b, h0, n = make(5, 3, 4, requires_grad=True, **kw)
    inputs = tuple(t for t in (x, u, b, h0) if t is not None)

    def f(*args):
        it = iter(args)
        xx, uu = next(it), next(it)
        bb = next(it) if b is not None else None
        ss = next(it) if h0 is not None else None
        return indrnn_with_state(xx, uu, bb, ss, activation=activation, lengths=n, reverse=reverse,
                                 batch_first=kw.get("batch_first", False))

    assert torch.autograd.gradcheck(f, inputs)


# ----------------------------------------------------------------------------------------- agreement with spec
AGREE = [  # awkward sizes
    pytest.param(dict(T=17, B=5, H=33), id="T17-B5-H33"),
    pytest.param(dict(T=63, B=2, H=500), id="T63-B2-H500"),
    pytest.param(dict(T=1, B=7, H=3), id="T1-B7-H3"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", AGREE)
@pytest.mark.parametrize("case", ["plain", "all", "no_h0", "bare_lengths"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_matches_reference(shape, case, dtype, activation):
    """Outputs, final state and all gradients (the final state's included) against reference.forward/backward."""
    kw, reverse = split(OPTIONS[case])
    bf = kw.get("batch_first", False)
    x, u, b, h0, n = make(**shape, dtype=dtype, requires_grad=True, **kw)
    h, hn = indrnn_with_state(x, u, b, h0, activation=activation, batch_first=bf, lengths=n, reverse=reverse)
    g = torch.Generator().manual_seed(1)
    grad_h = torch.randn(h.shape, generator=g, dtype=dtype).to(h.device)
    grad_hn = torch.randn(hn.shape, generator=g, dtype=dtype).to(h.device)
    torch.autograd.backward((h, hn), (grad_h, grad_hn))

    lengths = None if n is None else n.numpy()
    opts = dict(activation=activation, batch_first=bf, lengths=lengths, reverse=reverse)
    want_h = reference.forward(np64(x), np64(u), np64(b), np64(h0), **opts)
    want_hn = reference.final_state(want_h, np64(h0), lengths=lengths, reverse=reverse, batch_first=bf)
    gx, gu, gb, gh0 = reference.backward(np64(grad_h), want_h, np64(u), np64(h0), grad_hn=np64(grad_hn), **opts)
    got = {"h": h, "h_n": hn, "gx": x.grad, "gu": u.grad}
    want = {"h": want_h, "h_n": want_hn, "gx": gx, "gu": gu}
    if b is not None:
        got["gb"], want["gb"] = b.grad, gb
    if h0 is not None:
        got["gh0"], want["gh0"] = h0.grad, gh0
    T, B = shape["T"], shape["B"]
    for name in got:
        assert got[name].dtype == dtype, name
        assert not torch.isnan(got[name]).any(), f"{name} has NaN"
        # errors scale with the largest value (gu sums T*B terms, growing like u**T with relu)
        tol = tolerance(dtype, T * B if name in ("gu", "gb") else T, np.abs(want[name]).max(initial=0.0))
        np.testing.assert_allclose(np64(got[name]), want[name], err_msg=name, **tol)


def test_lengths_as_list_and_numpy():
    x, u, b, h0, _ = make(6, 3, 4)
    want = indrnn(x, u, b, h0, lengths=torch.tensor([6, 0, 3]))
    torch.testing.assert_close(indrnn(x, u, b, h0, lengths=[6, 0, 3]), want)
    torch.testing.assert_close(indrnn(x, u, b, h0, lengths=np.array([6, 0, 3], dtype=np.int32)), want)


def test_noncontiguous_input_and_expanded_grad():
    """A strided view in, and the stride-0 gradient that ``.sum().backward()`` sends back."""
    base, u, b, h0, _ = make(5, 7, 3, batch_first=True)  # [B, T, H] storage, used as time-major below
    x = base.transpose(0, 1).requires_grad_(True)
    assert not x.is_contiguous()
    h = indrnn(x, u, b, h0)
    h.sum().backward()
    want_h = reference.forward(np64(x), np64(u), np64(b), np64(h0))
    np.testing.assert_allclose(np64(h), want_h, rtol=1e-12, atol=1e-12)
    gx = reference.backward(np.ones_like(want_h), want_h, np64(u), np64(h0))[0]
    np.testing.assert_allclose(np64(x.grad), gx, rtol=1e-12, atol=1e-12)


def test_grad_of_final_state_only():
    """Only h_n used: the gradient reaches each sequence's last step (and h0 for a length-0 sequence)."""
    x, u, b, h0, n = make(6, 3, 4, lengths=True, requires_grad=True)
    _, hn = indrnn_with_state(x, u, b, h0, lengths=n)
    hn.sum().backward()
    want_h = reference.forward(np64(x), np64(u), np64(b), np64(h0), lengths=n.numpy())
    gx, gu, gb, gh0 = reference.backward(np.zeros_like(want_h), want_h, np64(u), np64(h0), lengths=n.numpy(),
                                         grad_hn=np.ones((3, 4)))
    for name, got, want in (("gx", x.grad, gx), ("gu", u.grad, gu), ("gb", b.grad, gb), ("gh0", h0.grad, gh0)):
        np.testing.assert_allclose(np64(got), want, rtol=1e-12, atol=1e-12, err_msg=name)
    torch.testing.assert_close(h0.grad[1], torch.ones(4, dtype=torch.float64))  # length 0: h_n is h0


def test_final_state_only_gradient_equals_dense_zero_gradient_on_the_parallel_path():
    """Only h_n used, at a size the CPU kernels split over threads: the zero-stride zero gradient of h gives
    exactly the gradients of a dense zero one (0 * h in the loss)."""
    gen = torch.Generator().manual_seed(7)
    T, B, H = 64, 8, 128  # T * B * H = 2**16: the parallel path
    x = torch.randn(T, B, H, generator=gen)
    u = torch.rand(H, generator=gen)
    b = torch.randn(H, generator=gen)
    grads = []
    for dense in (False, True):
        params = [t.clone().requires_grad_() for t in (x, u, b)]
        h, hn = indrnn_with_state(*params)
        loss = (hn * hn).sum() + ((h * 0).sum() if dense else 0)
        loss.backward()
        grads.append([p.grad for p in params])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_large_outputs_come_from_the_host_cache(monkeypatch):
    """The real allocation path with outputs big enough for ``indrnn_core.host_cache``: results are right, a live
    output is never handed out again, and a dead one's memory is reused by the next call."""
    monkeypatch.setattr(adapter, "_empty", REAL_EMPTY)
    x, u, b, h0, n = make(40, 64, 512, dtype=torch.float32, lengths=True, requires_grad=True)  # 5 MiB
    assert x.nbytes >= indrnn_core.host_cache.min_bytes
    h, hn = indrnn_with_state(x, u, b, h0, lengths=n)
    (h.sum() + hn.sum()).backward()
    want = reference.forward(np64(x), np64(u), np64(b), np64(h0), lengths=n.numpy())
    np.testing.assert_allclose(np64(h), want, **tolerance(x.dtype, 40, np.abs(want).max()))
    gx = reference.backward(np.ones_like(want), want, np64(u), np64(h0), lengths=n.numpy(),
                            grad_hn=np.ones((64, 512)))[0]
    np.testing.assert_allclose(np64(x.grad), gx, **tolerance(x.dtype, 40, np.abs(gx).max()))

    kept = h.detach().clone()
    with torch.no_grad():
        h2 = indrnn(x * 2, u, b, h0, lengths=n)  # h and x.grad are alive: h2 must be new memory
    assert h2.data_ptr() not in (h.data_ptr(), x.grad.data_ptr())
    torch.testing.assert_close(h, kept, rtol=0, atol=0)
    address = h2.data_ptr()
    del h2
    with torch.no_grad():
        h3 = indrnn(x, u, b, h0, lengths=n)
    assert h3.data_ptr() == address  # the dead output's block, already faulted in
    torch.testing.assert_close(h3, kept, rtol=0, atol=0)


def test_empty_sequence():
    x, u, b, h0, _ = make(0, 2, 3)
    h, hn = indrnn_with_state(x, u, b, h0)
    assert h.shape == (0, 2, 3)
    torch.testing.assert_close(hn, h0)


# --------------------------------------------------------------------------------------------------- zero copy
def _pointer(a):
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.__cuda_array_interface__["data"][0]


@pytest.fixture
def spy(monkeypatch):
    """Records the data pointers the core receives."""
    seen = {}
    real_forward, real_backward = indrnn_core.forward, indrnn_core.backward

    def forward(x, u, b=None, h0=None, **kw):
        seen["forward"] = {"x": _pointer(x), "u": _pointer(u), "b": _pointer(b), "h0": _pointer(h0),
                           "out": _pointer(kw["out"])}
        return real_forward(x, u, b, h0, **kw)

    def backward(grad_h, h, u, h0=None, **kw):
        seen["backward"] = {"grad_h": _pointer(grad_h), "h": _pointer(h), "out": [_pointer(o) for o in kw["out"]]}
        return real_backward(grad_h, h, u, h0, **kw)

    monkeypatch.setattr(indrnn_core, "forward", forward)
    monkeypatch.setattr(indrnn_core, "backward", backward)
    return seen


def _check_zero_copy(spy, x, u, b, h0):
    h = indrnn(x, u, b, h0)
    grad_h = torch.full_like(h, 0.5)  # (any values: the pointers are the subject)
    gx, gu, gb, gh0 = torch.autograd.grad(h, (x, u, b, h0), grad_h)
    assert spy["forward"] == {"x": x.data_ptr(), "u": u.data_ptr(), "b": b.data_ptr(), "h0": h0.data_ptr(),
                              "out": h.data_ptr()}
    assert spy["backward"] == {"grad_h": grad_h.data_ptr(), "h": h.data_ptr(),
                               "out": [gx.data_ptr(), gu.data_ptr(), gb.data_ptr(), gh0.data_ptr()]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_array_interface_of_tensors(dtype):
    """The adapter's CUDA crossing describes a tensor's memory exactly (pointer, shape, byte strides, dtype), for
    strided views too. Built from data_ptr/shape/stride, it is checked here on CPU tensors against NumPy's view."""
    base = torch.zeros(5, 4, 6, dtype=dtype)
    for t in (base, base[1:, ::2, 3:], base.permute(2, 0, 1), base[:, 1]):
        cai = adapter._cuda_view(t).__cuda_array_interface__
        a = t.numpy()
        assert cai["data"] == (a.ctypes.data, False)
        assert (cai["shape"], cai["strides"], np.dtype(cai["typestr"])) == (a.shape, a.strides, a.dtype)


def test_zero_copy_cpu(spy):
    _check_zero_copy(spy, *make(4, 3, 5, requires_grad=True)[:4])


@CUDA
def test_zero_copy_cuda(spy):
    _check_zero_copy(spy, *make(4, 3, 5, requires_grad=True, device="cuda")[:4])


# ------------------------------------------------------------------------------------------------------- CUDA
@CUDA
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", ["plain", "all", "bare_lengths"])
def test_cuda_matches_cpu(case, dtype):
    kw, reverse = split(OPTIONS[case])
    bf = kw.get("batch_first", False)
    results = []
    for device in ("cpu", "cuda"):
        x, u, b, h0, n = make(37, 5, 70, dtype=dtype, device=device, requires_grad=True, **kw)
        stream = torch.cuda.Stream() if device == "cuda" else None
        # on a side stream: the op must launch on torch's current stream
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            h, hn = indrnn_with_state(x, u, b, h0, activation="tanh", batch_first=bf, lengths=n, reverse=reverse)
            (h.square().sum() + hn.sum()).backward()
        grads = [t.grad for t in (x, u, b, h0) if t is not None]
        results.append([t.detach().cpu() for t in (h, hn, *grads)])
    for got, want in zip(results[1], results[0]):  # (the longest reductions: gu, gb over T*B terms)
        torch.testing.assert_close(got, want, **tolerance(dtype, 37 * 5, want.abs().max()))


@CUDA
def test_cuda_module_matches_cpu():
    torch.manual_seed(0)
    rnn = IndRNN(3, 16, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(11, 4, 3, dtype=torch.float64)
    out_cpu, hn_cpu = rnn(x)
    out, hn = rnn.to("cuda")(x.cuda())
    torch.testing.assert_close(out.cpu(), out_cpu)
    torch.testing.assert_close(hn.cpu(), hn_cpu)


def test_cuda_autocast_rule_keeps_half_data_and_float32_parameters(monkeypatch):
    """The AutocastCUDA kernel (checked without a GPU: its cast rule, called with stand-in tensors): x and h0 go to
    autocast's half dtype, u and b to float32, float64 and non-CUDA tensors are left alone."""
    import indrnn_core.adapters.torch as adapter

    assert torch._C._dispatch_has_kernel_for_dispatch_key("indrnn::forward", "AutocastCUDA")
    seen = {}

    class FakeCuda:
        def __init__(self, dtype):
            self.dtype, self.is_cuda = dtype, True

        def is_floating_point(self):
            return True

        def to(self, dtype):
            return FakeCuda(dtype)

    monkeypatch.setattr(adapter, "_forward_overload", lambda *args: seen.setdefault("args", args))
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda device: torch.bfloat16)
    adapter._autocast_cuda_forward(None, FakeCuda(torch.float32), FakeCuda(torch.bfloat16), None,
                                   FakeCuda(torch.float64), None, "relu", False, False)
    x, u, b, h0 = seen["args"][:4]
    assert (x.dtype, u.dtype, b, h0.dtype) == (torch.bfloat16, torch.float32, None, torch.float64)
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda device: torch.float32)
    seen.clear()
    adapter._autocast_cuda_forward(None, FakeCuda(torch.float16), FakeCuda(torch.float16), None, None, None,
                                   "relu", False, False)
    assert seen["args"][0].dtype == seen["args"][1].dtype == torch.float32


@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_keeps_half_storage(dtype):
    """Under CUDA autocast the recurrence keeps autocast's dtype: h and x's gradient in float16/bfloat16, u's
    gradient float32; values equal the float32 call on the same (rounded) inputs within the storage's rounding."""
    from indrnn_core.testing import default_tolerance

    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(9, 3, 4, device="cuda", generator=g).to(dtype).requires_grad_()
    u = torch.rand(4, device="cuda", generator=g, requires_grad=True)
    with torch.autocast("cuda", dtype=dtype):
        h = indrnn(x, u, lengths=[9, 0, 4])
    h.float().sum().backward()
    x32, u32 = (t.detach().float().requires_grad_() for t in (x, u))
    want = indrnn(x32, u32, lengths=[9, 0, 4])
    want.sum().backward()
    assert h.dtype == dtype and x.grad.dtype == dtype and u.grad.dtype == torch.float32
    tol = default_tolerance("bfloat16" if dtype == torch.bfloat16 else "float16", 9, 3)
    for got, ref, name in ((h, want, "h"), (x.grad, x32.grad, "gx"), (u.grad, u32.grad, "gu")):
        err = (got.float() - ref).abs().max() / (1 + ref.abs().max())
        assert err <= tol[name], (name, float(err))


# -------------------------------------------------------------------------------------------------- compile
@pytest.mark.parametrize("outputs", ["nan_filled", "host_cache"])
def test_compile_fullgraph_matches_eager(outputs, monkeypatch):
    """A small model over the ops compiles with no graph break (fullgraph) and gives eager's outputs and grads;
    also with every CPU output from ``indrnn_core.host_cache`` (``torch.from_numpy`` tensors) inside the graph."""
    if outputs == "host_cache":
        monkeypatch.setattr(adapter, "_empty", REAL_EMPTY)
        monkeypatch.setattr(indrnn_core.host_cache, "min_bytes", 0)
    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = IndRNN(3, 8, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(8, 1)

        def forward(self, x, lengths):
            out, hn = self.rnn(x, lengths=lengths)
            h, last = indrnn_with_state(out, self.rnn.weight_hh_l1, None, hn[0], lengths=lengths, reverse=True,
                                        batch_first=True, activation="tanh")
            return self.head(last) + h.mean()

    model = Model()
    x, lengths = torch.randn(4, 9, 3), torch.tensor([9, 3, 0, 5])
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    got = compiled(x, lengths)
    got.sum().backward()
    got_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    want = model(x, lengths)
    want.sum().backward()
    torch.testing.assert_close(got, want)
    for g, p in zip(got_grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_compile_dynamic_shapes_one_graph_for_every_length():
    """With dynamic=True one compiled graph serves every sequence length (the fake registrations take symbolic
    shapes), and each call equals eager, lengths included."""
    import torch._dynamo

    torch.manual_seed(0)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # global: earlier tests' graphs count too
    rnn = IndRNN(3, 8, num_layers=2, batch_first=True, bidirectional=True)
    compiled = torch.compile(rnn, fullgraph=True, dynamic=True)
    for T in (5, 9, 17):
        x, lengths = torch.randn(4, T, 3), torch.tensor([T, 0, T // 2, 1])
        out, hn = compiled(x, lengths=lengths)
        want, want_hn = rnn(x, lengths=lengths)
        torch.testing.assert_close(out, want)
        torch.testing.assert_close(hn, want_hn)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_torch_export_keeps_the_op_and_matches_eager():
    """torch.export traces IndRNN into a graph that calls indrnn::forward, and the exported program runs."""
    torch.manual_seed(0)
    model = IndRNN(3, 5, num_layers=2, batch_first=True)
    x = torch.randn(2, 7, 3)
    program = torch.export.export(model, (x,))
    assert any("indrnn.forward" in str(node.target) for node in program.graph.nodes)
    got, want = program.module()(x), model(x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


# ------------------------------------------------------------------------------------- eager route vs the op
def _outputs_and_grads(case):
    opts, reverse = split(OPTIONS[case])
    x, u, b, h0, lengths = make(6, 3, 4, requires_grad=True, **opts)
    h, hn = indrnn_with_state(x, u, b, h0, lengths=lengths, reverse=reverse, activation="tanh",
                              batch_first=opts.get("batch_first", False))
    (h * torch.linspace(-1, 1, h.numel(), dtype=h.dtype).view_as(h)).sum().add(hn.square().sum()).backward()
    return [h, hn] + [t.grad for t in (x, u, b, h0) if t is not None]


@pytest.mark.parametrize("case", ["plain", "all", "bare_lengths"])
def test_eager_route_matches_the_registered_op(case, monkeypatch):
    """Eager calls skip the custom op's dispatch (an autograd.Function over the same bodies); forcing the op route
    must give bit-identical outputs and gradients."""
    eager = _outputs_and_grads(case)
    monkeypatch.setattr(adapter, "_eager", lambda *tensors: False)
    via_op = _outputs_and_grads(case)
    assert len(eager) == len(via_op)
    for a, b in zip(eager, via_op):
        assert torch.equal(a, b)


def _graph_nodes(t):
    seen, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and type(node).__name__ not in seen:
            seen.add(type(node).__name__)
            stack += [n for n, _ in node.next_functions]
    return seen


def test_modules_take_the_eager_route(monkeypatch):
    """A module's weights are nn.Parameters, not plain tensors: its calls must still skip the custom op's dispatch
    (they did not, which made every IndRNNCell step pay it), with the op route's exact results."""
    from indrnn_core.adapters.torch import IndRNNCell

    torch.manual_seed(0)
    rnn, cell = IndRNN(3, 4, num_layers=2, dtype=torch.float64), IndRNNCell(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)

    def run(eager_route):
        out, h_n = rnn(x)
        h = cell(x[0], h_n[-1])
        assert ("_EagerForwardBackward" in _graph_nodes(h)) == eager_route
        grads = torch.autograd.grad(out.sum() + h.square().sum(), list(rnn.parameters()) + list(cell.parameters()))
        return [out, h, *grads]

    eager = run(eager_route=True)
    monkeypatch.setattr(adapter, "_eager", lambda *tensors: False)
    via_op = run(eager_route=False)
    for a, b in zip(eager, via_op):
        assert torch.equal(a, b)


def test_eager_route_is_not_taken_under_fake_tensors():
    """Under a dispatch mode (here FakeTensorMode) the op's register_fake answers: shapes only, no kernel run."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, u = torch.empty(7, 2, 3), torch.empty(3)
        h, hn = indrnn_with_state(x, u)
    assert h.shape == (7, 2, 3) and hn.shape == (2, 3)


def test_double_backward_is_refused_on_both_routes(monkeypatch):
    """Neither route has a derivative of the backward: asking for one raises instead of returning wrong zeros."""
    for route in ("eager", "op"):
        if route == "op":
            monkeypatch.setattr(adapter, "_eager", lambda *tensors: False)
        x, u = make(3, 2, 2, requires_grad=True)[:2]
        (gx,) = torch.autograd.grad(indrnn(x, u, activation="tanh").sum(), x, create_graph=True)
        with pytest.raises(RuntimeError):
            torch.autograd.grad(gx.sum(), u)


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("change, error, name", [
    (lambda a: {**a, "u": a["u"].float()}, TypeError, "u"),
    (lambda a: {**a, "h0": a["h0"].float()}, TypeError, "h0"),
    (lambda a: {**a, "u": a["u"][:-1]}, ValueError, "u"),
    (lambda a: {**a, "b": torch.zeros(2, 4, dtype=torch.float64)}, ValueError, "b"),
    (lambda a: {**a, "h0": a["h0"][:1]}, ValueError, "h0"),
    (lambda a: {**a, "x": a["x"][0]}, ValueError, "x"),
    (lambda a: {**a, "activation": "gelu"}, ValueError, "activation"),
    (lambda a: {**a, "lengths": [5, 1, 9]}, ValueError, "lengths"),
    (lambda a: {**a, "lengths": [5, 1]}, ValueError, "lengths"),
    (lambda a: {**a, "lengths": torch.tensor([1.0, 2.0, 3.0])}, (TypeError, ValueError), "lengths"),
    (lambda a: {**a, "u": a["u"].to("meta")}, ValueError, "u"),
    (lambda a: {**a, "u": a["u"].numpy()}, TypeError, "u"),
    (lambda a: {**a, "x": a["x"].bfloat16()}, TypeError, "x"),
    (lambda a: {**a, "b": a["b"].long()}, TypeError, "b"),
], ids=["u-dtype", "h0-dtype", "u-shape", "b-shape", "h0-shape", "x-2d", "activation", "lengths-range",
        "lengths-shape", "lengths-float", "u-device", "u-numpy", "x-bfloat16", "b-int"])
def test_bad_input_names_the_argument(change, error, name):
    x, u, b, h0, _ = make(5, 3, 4)
    args = change({"x": x, "u": u, "b": b, "h0": h0, "activation": "relu", "lengths": None})
    with pytest.raises(error, match=name):
        indrnn(args.pop("x"), args.pop("u"), args.pop("b"), args.pop("h0"), **args)


def test_autocast_runs_the_kernels_in_float32():
    """Under torch.autocast (bfloat16 here, on the CPU) the kernels run in float32, as autocast's float32-list ops
    do: bfloat16 inputs are cast, the output is float32, and gradients come back in each input's dtype, equal to
    the float32 computation on the same values."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4).bfloat16().requires_grad_()
    u, b = torch.rand(4, requires_grad=True), torch.randn(4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, h_n = indrnn_with_state(x, u, b, lengths=[6, 0, 3])
    assert h.dtype == h_n.dtype == torch.float32
    (h.sum() + h_n.sum()).backward()
    assert x.grad.dtype == torch.bfloat16 and u.grad.dtype == b.grad.dtype == torch.float32

    x32, u32, b32 = (t.detach().float().requires_grad_() for t in (x, u, b))
    want, want_n = indrnn_with_state(x32, u32, b32, lengths=[6, 0, 3])
    (want.sum() + want_n.sum()).backward()
    torch.testing.assert_close(h, want, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, x32.grad.bfloat16(), rtol=0, atol=0)
    torch.testing.assert_close(u.grad, u32.grad, rtol=0, atol=0)


def test_torch_func_transforms():
    """torch.func.grad, jacrev, vmap and per-sample gradients (vmap of grad) work and equal plain autograd, with
    lengths and reverse; vmap runs without torch's slow batching fallback (it would warn)."""
    import warnings

    x, u, b, h0, n = make(6, 3, 4, lengths=True)
    opts = dict(lengths=n, reverse=True, activation="tanh")

    def loss(u, x):
        return indrnn(x, u, b, h0, **opts).square().sum()

    u_ = u.clone().requires_grad_()
    loss(u_, x).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "There is a performance drop because we have not yet implemented ..."
        torch.testing.assert_close(torch.func.grad(loss)(u, x), u_.grad)
        jac = torch.func.jacrev(lambda u: indrnn(x, u, b, h0, **opts).sum((0, 1)))(u)
        torch.testing.assert_close(jac, torch.autograd.functional.jacobian(
            lambda u: indrnn(x, u, b, h0, **opts).sum((0, 1)), u))
        g = torch.Generator().manual_seed(3)
        xs = torch.randn(3, *x.shape, dtype=x.dtype, generator=g)
        batched = torch.func.vmap(lambda x: indrnn(x, u, b, h0, **opts))(xs)
        us = torch.rand(2, 4, dtype=x.dtype, generator=g)
        batched_u = torch.func.vmap(lambda u: indrnn(x, u, b, h0, **opts))(us)
        per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(u, xs)
    for i in range(3):
        torch.testing.assert_close(batched[i], indrnn(xs[i], u, b, h0, **opts))
        torch.testing.assert_close(per_sample[i], torch.func.grad(loss)(u, xs[i]))
    for i in range(2):
        torch.testing.assert_close(batched_u[i], indrnn(x, us[i], b, h0, **opts))


def test_meta_tensors_give_meta_outputs():
    """Shape inference on the meta device (e.g. a model built under ``torch.device("meta")``) runs the ops' fake
    registration: outputs of the right shapes, no kernel."""
    with torch.device("meta"):
        rnn = IndRNN(3, 5, num_layers=2, bidirectional=True)
        out, h_n = rnn(torch.empty(7, 4, 3))
        h, last = indrnn_with_state(torch.empty(4, 7, 5, requires_grad=True), torch.empty(5), batch_first=True)
    assert out.is_meta and out.shape == (7, 4, 10) and h_n.shape == (4, 4, 5)
    assert h.is_meta and h.shape == (4, 7, 5) and last.shape == (4, 5)


def test_ops_called_directly_reject_what_the_kernels_cannot_take():
    x, u, b, h0, _ = make(5, 3, 4)
    with pytest.raises(TypeError, match="x has dtype torch.float16: half precision .* runs on CUDA only"):
        torch.ops.indrnn.forward(x.half(), u.half(), None, None, None, "relu", False, False)
    with pytest.raises(TypeError, match="grad_h has dtype torch.bfloat16: half precision .* CUDA only"):
        torch.ops.indrnn.backward(x.bfloat16(), x, u, None, None, None, "relu", False, False)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        torch.ops.indrnn.forward(x.to(torch.int32), u, None, None, None, "relu", False, False)
