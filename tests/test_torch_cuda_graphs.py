"""The torch ops inside CUDA graphs: ``torch.cuda.graph`` capture and replay, and
``torch.compile(mode="reduce-overhead")``, equal eager results. GPU only (skipped without CUDA).

Capture forbids host synchronisation, allocation outside torch's allocator and launches off the capturing stream;
any of them fails the capture itself, so a passing capture is the check. What the core does during capture is
also tested without a GPU (``tests/test_half_precision.py``, a simulated capture).
"""

import copy

import pytest
import torch
from torch import nn

from indrnn_core.adapters.torch import IndRNN, indrnn_with_state

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _warm_up(fn, iters=3):
    """As torch.cuda.graph's documentation asks: run on a side stream first (compiles the kernels too)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(iters):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()


def _fill(tensors, seed):
    g = torch.Generator("cuda").manual_seed(seed)
    with torch.no_grad():
        for t in tensors:
            t.copy_(torch.rand(t.shape, device="cuda", generator=g) * 2 - 1)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("options", [dict(), dict(lengths=True, reverse=True), dict(batch_first=True, lengths=True)],
                         ids=["plain", "lengths-reverse", "batch_first-lengths"])
def test_op_forward_backward_capture_replay_equals_eager(dtype, options):
    T, B, H = 37, 5, 24
    dt = DTYPES[dtype]
    batch_first = options.get("batch_first", False)
    shape = (B, T, H) if batch_first else (T, B, H)
    x = torch.empty(shape, device="cuda", dtype=dt, requires_grad=True)
    u = torch.empty(H, device="cuda", requires_grad=True)  # float32 parameters with half data, as under autocast
    b = torch.empty(H, device="cuda", requires_grad=True)
    h0 = torch.empty(B, H, device="cuda", dtype=dt, requires_grad=True)
    grad_h = torch.empty(shape, device="cuda", dtype=dt)
    grad_hn = torch.empty(B, H, device="cuda", dtype=dt)
    # lengths as an int64 CUDA tensor: the only form a captured graph can take (nothing read back to the host)
    lengths = torch.tensor([T, 0, 3, T - 1, 1], device="cuda") if options.get("lengths") else None
    inputs = (x, u, b, h0, grad_h, grad_hn)

    def step():
        h, hn = indrnn_with_state(x, u, b, h0, batch_first=batch_first, lengths=lengths,
                                  reverse=options.get("reverse", False))
        return (h, hn, *torch.autograd.grad((h, hn), (x, u, b, h0), (grad_h, grad_hn)))

    _fill(inputs, 0)
    _warm_up(step)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for seed in (1, 2, 3):
        _fill(inputs, seed)
        graph.replay()
        eager = step()
        torch.cuda.synchronize()
        for name, got, want in zip(("h", "h_n", "gx", "gu", "gb", "gh0"), captured, eager):
            assert got.dtype == want.dtype, name
            assert torch.equal(got, want), (name, seed)  # same kernels, same inputs: bit-identical


def _model(seed, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.ModuleDict({"rnn": IndRNN(8, 32, num_layers=2), "head": nn.Linear(32, 1)}).cuda()


def _forward(model, x):
    out, _ = model["rnn"](x)
    return model["head"](out[-1]).squeeze(-1)


@pytest.mark.parametrize("autocast", [None, "bfloat16"])
def test_whole_training_step_in_one_cuda_graph(autocast):
    """Forward, backward and optimizer step captured once, replayed over new batches: the parameters follow the
    same eager steps on an identical model."""
    T, B = 50, 16
    model = _model(0)
    eager_model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    eager_opt = torch.optim.SGD(eager_model.parameters(), lr=0.05)
    x = torch.empty(T, B, 8, device="cuda")
    y = torch.empty(B, device="cuda")
    amp = (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if autocast
           else torch.autocast("cuda", enabled=False))

    def train_step(m, o):
        o.zero_grad(set_to_none=True)
        with amp:
            loss = (_forward(m, x).float() - y).square().mean()
        loss.backward()
        o.step()
        return loss

    _fill((x, y), 0)
    _warm_up(lambda: train_step(model, opt))
    for _ in range(3):  # the same three steps, eagerly
        train_step(eager_model, eager_opt)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = train_step(model, opt)  # (capturing runs nothing: the step happens at each replay)
    for seed in range(1, 6):
        _fill((x, y), seed)
        graph.replay()
        want = train_step(eager_model, eager_opt)
        torch.cuda.synchronize()
        torch.testing.assert_close(static_loss, want, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_compile_reduce_overhead_equals_eager():
    """torch.compile(mode="reduce-overhead") runs the forward and backward graphs (with the custom ops) as CUDA
    graphs, with no cudagraph skip, and gives eager's outputs and gradients."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    T, B = 40, 8
    model = _model(1)
    eager_model = copy.deepcopy(model)
    compiled = torch.compile(lambda x: _forward(model, x), mode="reduce-overhead")
    for seed in range(4):  # cudagraph trees warm up, record, then replay
        x = torch.empty(T, B, 8, device="cuda")
        _fill((x,), seed)
        out = compiled(x)
        out.square().sum().backward()
        want = _forward(eager_model, x)
        want.square().sum().backward()
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
        for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
            p.grad = q.grad = None
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])


def test_compile_reduce_overhead_with_cuda_lengths():
    """lengths given as a CUDA tensor stay on the device under torch.compile (a copy to the host would keep the
    graph out of CUDA graphs); the replayed graphs equal eager calls."""
    from torch._dynamo.utils import counters

    from indrnn_core.adapters.torch import indrnn

    torch._dynamo.reset()
    counters.clear()
    T, B, H = 30, 4, 16
    g = torch.Generator("cuda").manual_seed(0)
    u = torch.rand(H, device="cuda", generator=g, requires_grad=True)
    lengths = torch.tensor([T, 0, 7, T - 1], device="cuda")
    compiled = torch.compile(lambda x: indrnn(x, u, lengths=lengths, reverse=True), mode="reduce-overhead")
    for seed in range(4):
        x = torch.randn(T, B, H, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = compiled(xc)
        out.square().sum().backward()
        gu = u.grad.clone()
        u.grad = None
        want = indrnn(xe, u, lengths=lengths.cpu(), reverse=True)
        want.square().sum().backward()
        torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gu, u.grad, rtol=1e-5, atol=1e-6)
        u.grad = None
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
