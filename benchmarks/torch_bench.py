"""The PyTorch suite: IndRNN's torch adapter in a training step beside its peers, and the adapter's own cost.

Rows per config (``x``: ``[T, B, H]``, float32 by default; every model is one layer with ``H`` inputs and ``H``
hidden units, time-major):

* ``mode="step"``: forward + backward of a training step (loss gradient given; parameter grads reset each call) of
  ``IndRNN`` (this adapter), ``nn.RNN(relu)``, ``nn.LSTM`` and a plain-PyTorch loop over time of the same IndRNN.
  ``x_indrnn`` = time / IndRNN's time.
* ``mode="fwdbwd"``: the recurrence alone: the raw kernels (``indrnn_core.forward`` + ``backward`` on preallocated
  arrays), the autograd floor (the same kernels and buffers inside a bare ``autograd.Function``: what torch's
  autograd alone adds), the two custom ops called directly (torch allocates the outputs), and the functional
  ``indrnn`` through autograd. ``overhead_pct`` = extra time over the raw kernels on preallocated buffers (target:
  < 10% at T=784, B=64, H=128); ``overhead_vs_allocating_pct`` = the same over the kernels allocating their
  outputs on each call (``out=None``), which the adapter must do too. On the CPU, large outputs come from
  ``indrnn_core.host_cache``; the "no host cache" row shows what fresh pages from the OS cost instead.
* ``mode="call_T1"``: per-call time at T=1 (same B, H) of the raw kernel and of the adapter, forward (no grad) and
  forward + backward (autograd), and of the adapter with the kernels stubbed out: ``overhead_us``, the adapter's
  own cost (target: < 50 us); ``torch_add_us`` (one small ``torch.add``) is the machine's yardstick. Also one step
  of a user's loop (forward + backward, input projection included) with ``IndRNNCell`` and with ``nn.RNNCell``.

CPU times are wall clock; on CUDA the step and fwdbwd rows use ``torch.cuda.Event`` pairs on the current stream,
the per-call rows wall clock with a synchronise after each batch of calls (host overhead is what they measure).
Nothing is timed before the correctness gate passes (``GateError`` otherwise).

    python -m benchmarks.torch_bench --config mnist            # standalone; or through python -m benchmarks

Issue 14's GPU targets (``--gpu-targets``, CUDA only, instead of the rows above): the two custom ops' fwd+bwd with
bfloat16 storage over the same in float32 at B=256, H=1024, T=1000 (target <= 0.6x), and a training step
(forward + backward of one IndRNN layer, as the step rows) captured once in a CUDA graph and replayed, over cuDNN's
``nn.RNN(relu)`` step in the same run, at T=784, B=64, H=128 (target: at least 2x faster than the eager cuDNN step;
the captured cuDNN step is reported beside it). Each is gated first (bfloat16 against float32 within the storage's
tolerance; the replayed step's gradients equal eager's).

    python -m benchmarks.torch_bench --device cuda --gpu-targets --json half_graphs.json
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import harness
from .configs import Shape

TARGET_OVERHEAD_PCT = 10.0  # adapter fwd+bwd over the raw kernels, at T=784, B=64, H=128 float32
TARGET_CALL_US = 50.0  # adapter per-call overhead at T=1
OVERHEAD_ROUNDS = 40  # paired rounds (at least) behind each fwd+bwd overhead figure
TARGET_SHAPE = (784, 64, 128)
TARGET_BF16_RATIO = 0.6  # bfloat16 fwd+bwd time / float32's, at BF16_SHAPE
BF16_SHAPE = (1000, 256, 1024)  # T, B, H (the "wide" config)
TARGET_GRAPH_SPEEDUP = 2.0  # eager cuDNN nn.RNN(relu) step time / captured IndRNN step time, at TARGET_SHAPE
ADAPTER_NAME = "indrnn() + autograd"
FLOOR_NAME = "autograd floor (bare Function, out=)"
ALLOCATING_NAME = "core kernels (out=None)"
CALLS_PER_SAMPLE = 100  # T=1 calls per timed sample


class GateError(RuntimeError):
    """The adapter disagrees with the plain-PyTorch loop or with the reference: no timing."""


_Shape = Shape  # the harness's one shape type (benchmarks.configs.Shape)


DEFAULT_SHAPES = (_Shape("tiny", 12, 3, 8), _Shape("mnist", 784, 64, 128))


def _shapes(configs) -> list[_Shape]:
    """Shape objects (``benchmarks.configs.Shape`` or anything with name/T/B/H), dicts, names, or None."""
    if configs is None:
        return list(DEFAULT_SHAPES)
    out = []
    for c in configs:
        if isinstance(c, str):
            from benchmarks import configs as named

            out += [_Shape(s.name, s.T, s.B, s.H) for s in named.resolve([c])]
        elif isinstance(c, dict):
            out.append(_Shape(c.get("name", f"T{c['T']}-B{c['B']}-H{c['H']}"), c["T"], c["B"], c["H"]))
        else:
            out.append(_Shape(c.name, c.T, c.B, c.H))
    return out


# ---------------------------------------------------------------------------------------------------- models
def _models(H: int, device, dtype):
    import torch
    from torch import nn

    from indrnn_core.adapters.torch import IndRNN

    torch.manual_seed(0)
    indrnn = IndRNN(H, H, device=device, dtype=dtype)
    return {
        "IndRNN (indrnn_core)": indrnn,
        "nn.RNN(relu)": nn.RNN(H, H, nonlinearity="relu", device=device, dtype=dtype),
        "nn.LSTM": nn.LSTM(H, H, device=device, dtype=dtype),
        "plain-loop IndRNN": _loop_module()(indrnn),
    }


@functools.cache
def _loop_module():
    import torch

    class LoopIndRNN(torch.nn.Module):
        """What a PyTorch user writes without the kernels: the same IndRNN (shared weights) stepped in Python."""

        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            r = self.rnn
            proj = torch.nn.functional.linear(x, r.weight_ih_l0)
            h = x.new_zeros(x.shape[1], r.hidden_size)
            out = []
            for x_t in proj:
                h = torch.relu(x_t + r.weight_hh_l0 * h + r.bias_ih_l0)
                out.append(h)
            return torch.stack(out), h[None]

    return LoopIndRNN


def __getattr__(name):  # LoopIndRNN is built lazily so that importing this module does not import torch
    if name == "LoopIndRNN":
        return _loop_module()
    raise AttributeError(name)


# ------------------------------------------------------------------------------------------------------ gate
def gate(dtype: str = "float32", device: str = "cpu") -> dict:
    """IndRNN == plain loop (forward and every gradient, float64) and the op == ``indrnn_core.reference``."""
    import torch

    from indrnn_core import reference
    from indrnn_core.adapters.torch import indrnn

    rec = {"suite": "torch", "device": device, "dtype": dtype, "checks": {}}
    models = _models(5, device, torch.float64)
    ours, loop = models["IndRNN (indrnn_core)"], models["plain-loop IndRNN"]
    x = torch.randn(13, 3, 5, device=device, dtype=torch.float64)
    g = torch.randn(13, 3, 5, device=device, dtype=torch.float64)
    results = []
    for m in (ours, loop):
        m.zero_grad(set_to_none=True)
        out = m(x)[0]
        out.backward(g)
        results.append([out.detach()] + [p.grad.clone() for p in ours.parameters()])
    err = max((a - b).abs().max().item() for a, b in zip(*results))
    rec["checks"]["IndRNN vs plain loop (max abs err)"] = err
    tdt = getattr(torch, dtype)
    x, u, b = (torch.randn(9, 4, 6, device=device, dtype=tdt), torch.rand(6, device=device, dtype=tdt),
               torch.randn(6, device=device, dtype=tdt))
    h = indrnn(x, u, b).cpu().double().numpy()
    want = reference.forward(*(t.cpu().double().numpy() for t in (x, u, b)))
    rec["checks"]["indrnn vs reference (max abs err)"] = float(np.abs(h - want).max())
    tol = 1e-4 if dtype == "float32" else 1e-10
    rec["passed"] = err < 1e-10 and rec["checks"]["indrnn vs reference (max abs err)"] < tol
    if not rec["passed"]:
        raise GateError(f"torch gate failed: {rec['checks']}")
    return rec


# ---------------------------------------------------------------------------------------------------- timing
def _measure(fns: dict, repeats: int, device: str, *, max_seconds: float, events: bool, calls: int = 1,
             warmup: int = 2) -> dict:
    """``benchmarks.harness.alternate`` over ``fns`` (name -> zero-argument callable): a sample is ``calls`` calls;
    ``repeats`` rounds after ``warmup`` (fewer, at least one, if they would take more than ``max_seconds`` in all).
    On CUDA a sample is timed with a ``torch.cuda.Event`` pair on the current stream when ``events``, else by wall
    clock ending with a synchronise. Returns name -> summary with the raw ``samples``."""
    import torch

    cuda = device.startswith("cuda")

    def sample(fn, calls):
        if cuda and events:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return harness.alternate(fns, repeats, warmup=warmup, max_seconds=max_seconds, calls=calls, sampler=sample)


_paired_overhead = harness.paired_overhead
_public = harness.public


def _row(impl: str, shape: _Shape, T: int, dtype: str, device: str, mode: str, timing: dict, **extra) -> dict:
    return {"suite": "torch", "name": impl, "impl": impl, "config": shape.name, "T": T, "B": shape.B, "H": shape.H,
            "dtype": dtype, "device": device, "mode": mode, **timing, **extra}


def _step_rows(shape: _Shape, device: str, dtype: str, repeats: int, max_seconds: float) -> list[dict]:
    import torch

    tdt = getattr(torch, dtype)
    x = torch.randn(shape.T, shape.B, shape.H, device=device, dtype=tdt)
    grad = torch.randn(shape.T, shape.B, shape.H, device=device, dtype=tdt)
    rows = []
    for impl, model in _models(shape.H, device, tdt).items():
        def step(model=model):
            model.zero_grad(set_to_none=True)
            model(x)[0].backward(grad)

        t = _measure({impl: step}, repeats, device, max_seconds=max_seconds, events=True, warmup=1)[impl]
        rows.append(_row(impl, shape, shape.T, dtype, device, "step", _public(t)))
    base = rows[0]["seconds_median"]
    for r in rows:
        r["x_indrnn"] = r["seconds_median"] / base
    return rows


def _inputs(T: int, B: int, H: int, device: str, dtype: str):
    import torch

    g = torch.Generator().manual_seed(0)
    tdt = getattr(torch, dtype)
    x, grad = (torch.randn(T, B, H, generator=g, dtype=tdt).to(device) for _ in range(2))
    u = torch.rand(H, generator=g, dtype=tdt).to(device)
    b, h0 = torch.randn(H, generator=g, dtype=tdt).to(device), torch.randn(B, H, generator=g, dtype=tdt).to(device)
    return x, u, b, h0, grad


def _out_buffer(like):
    """A preallocated output: on the CPU a NumPy allocation (huge pages for large ones, like the blocks of
    ``indrnn_core.host_cache`` the adapter writes into), so the baselines are not slowed by TLB misses the adapter
    does not have; on CUDA torch's allocator."""
    import torch

    if like.device.type == "cuda":
        return torch.empty_like(like)
    return torch.from_numpy(np.empty(tuple(like.shape), np.dtype(str(like.dtype).removeprefix("torch."))))


def _core_array(t):
    """A tensor as a direct user of the core would hold it, made once: a NumPy view of CPU memory, or a Numba
    device array over CUDA memory (torch's own ``__cuda_array_interface__`` costs microseconds per read)."""
    if t.device.type == "cuda":
        from numba import cuda

        return cuda.as_cuda_array(t.detach(), sync=False)
    return np.from_dlpack(t.detach())


def _raw(x, u, b, h0, grad):
    """The kernels alone on preallocated buffers (the backward's CUDA workspace too), held as :func:`_core_array`."""
    import torch

    import indrnn_core

    cuda = x.device.type == "cuda"
    stream = torch.cuda.current_stream().cuda_stream if cuda else None
    xa, ua, ba, h0a, ga = map(_core_array, (x, u, b, h0, grad))
    h = _core_array(_out_buffer(x))
    outs = tuple(_core_array(_out_buffer(t)) for t in (x, u, u, h0))
    workspace = _core_array(x.new_empty((2, *h0.shape))) if cuda else None

    def forward():
        indrnn_core.forward(xa, ua, ba, h0a, out=h, stream=stream)

    def forward_backward():
        forward()
        indrnn_core.backward(ga, h, ua, h0a, out=outs, stream=stream, workspace=workspace)

    return forward, forward_backward


def _raw_allocating(x, u, b, h0, grad, *, cache: bool = True):
    """The kernels allocating their outputs on every call (``out=None``), as any op returning new tensors must. On
    the CPU, large outputs come from ``indrnn_core.host_cache``; with ``cache=False`` it keeps nothing idle, so every
    [T, B, H] output is fresh pages from the OS, zeroed on first touch, which can cost as much as the kernels."""
    import torch

    import indrnn_core

    cuda = x.device.type == "cuda"
    stream = torch.cuda.current_stream().cuda_stream if cuda else None
    xa, ua, ba, h0a, ga = map(_core_array, (x, u, b, h0, grad))

    def forward_backward():
        h = indrnn_core.forward(xa, ua, ba, h0a, stream=stream)
        indrnn_core.backward(ga, h, ua, h0a, stream=stream)

    if cache:
        return forward_backward

    def without_cache():
        keep = indrnn_core.host_cache.min_bytes
        indrnn_core.host_cache.min_bytes = sys.maxsize  # every output a plain np.empty
        try:
            forward_backward()
        finally:
            indrnn_core.host_cache.min_bytes = keep

    return without_cache


def _autograd_floor(x, u, b, h0, grad):
    """The least any autograd-integrated op over these kernels can cost: the kernels on preallocated buffers inside
    a bare ``torch.autograd.Function`` (no validation, allocation or dispatch of its own), driven exactly like the
    adapter row (``.backward(grad)``, leaf grads reset each call). What this adds over the raw kernels is torch's
    own per-op autograd cost (building the node, the engine, accumulating the leaves' grads), which the adapter pays
    too; the rest of the adapter's overhead is its own."""
    import torch

    import indrnn_core

    cuda = x.device.type == "cuda"
    stream = torch.cuda.current_stream().cuda_stream if cuda else None
    xa, ua, ba, h0a, ga = map(_core_array, (x, u, b, h0, grad))
    h, h_n = _out_buffer(x), _out_buffer(h0)
    grads = tuple(_out_buffer(t) for t in (x, u, u, h0))
    ha, h_na, grads_a = _core_array(h), _core_array(h_n), tuple(map(_core_array, grads))
    workspace = _core_array(x.new_empty((2, *h0.shape))) if cuda else None

    class Floor(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            indrnn_core.forward(xa, ua, ba, h0a, out=ha, final_state_out=h_na, stream=stream)
            return h.detach(), h_n.detach()  # new tensor objects over the same memory, as new outputs would be

        @staticmethod
        def backward(ctx, grad_h, grad_hn):
            indrnn_core.backward(ga, ha, ua, h0a, out=grads_a, stream=stream, workspace=workspace)
            return tuple(g.detach() for g in grads)  # sole owners: autograd moves them into .grad, no copy

    leaves = [t.detach().clone().requires_grad_(True) for t in (x, u, b, h0)]

    def autograd():
        for t in leaves:
            t.grad = None
        Floor.apply(*leaves)[0].backward(grad)

    return autograd


def _adapter(x, u, b, h0, grad):
    import torch

    from indrnn_core.adapters.torch import indrnn

    def ops():
        h, _ = torch.ops.indrnn.forward(x, u, b, h0, None, "relu", False, False)
        torch.ops.indrnn.backward(grad, h, u, h0, None, None, "relu", False, False)

    leaves = [t.detach().clone().requires_grad_(True) for t in (x, u, b, h0)]

    def forward():  # no tensor requires grad: no autograd graph (and no no_grad() context to time)
        indrnn(x, u, b, h0)

    def autograd():
        for t in leaves:
            t.grad = None
        indrnn(*leaves).backward(grad)

    return ops, forward, autograd


def _overhead_rows(shape: _Shape, device: str, dtype: str, repeats: int, max_seconds: float) -> list[dict]:
    inp = _inputs(shape.T, shape.B, shape.H, device, dtype)
    _, raw = _raw(*inp)
    ops, _, autograd = _adapter(*inp)
    fns = {"core kernels (out=)": raw, ALLOCATING_NAME: _raw_allocating(*inp)}
    if device == "cpu":
        fns["core kernels (out=None, no host cache)"] = _raw_allocating(*inp, cache=False)
    fns.update({FLOOR_NAME: _autograd_floor(*inp), "indrnn::forward + indrnn::backward": ops,
                ADAPTER_NAME: autograd})
    names = list(fns)
    # A few percent is the quantity here: more paired rounds than the other rows (each round is short).
    t = _measure(fns, max(repeats, OVERHEAD_ROUNDS), device, max_seconds=max_seconds, events=True)
    rows = [_row(names[0], shape, shape.T, dtype, device, "fwdbwd", _public(t[names[0]]))]
    for name in names[1:]:
        extra = {} if not name.startswith("indrnn") else {
            "overhead_vs_allocating_pct": _paired_overhead(t[name], t[ALLOCATING_NAME]) * 100}
        rows.append(_row(name, shape, shape.T, dtype, device, "fwdbwd", _public(t[name]),
                         overhead_pct=_paired_overhead(t[name], t[names[0]]) * 100,
                         overhead_pct_min=(t[name]["seconds_min"] / t[names[0]]["seconds_min"] - 1) * 100, **extra))
    return rows


@contextlib.contextmanager
def _kernels_stubbed():
    """indrnn_core.forward/backward replaced by functions that only return their ``out=`` buffers: what is left
    of a call is the adapter's own cost, free of the kernels' (and their thread pool's) timing noise."""
    import indrnn_core

    real = indrnn_core.forward, indrnn_core.backward
    indrnn_core.forward = lambda *args, out=None, **kw: out
    indrnn_core.backward = lambda *args, out=None, **kw: out
    try:
        yield
    finally:
        indrnn_core.forward, indrnn_core.backward = real


def _call_rows(shape: _Shape, device: str, dtype: str, repeats: int, max_seconds: float) -> list[dict]:
    """Per-call times at T=1: raw kernel, adapter, and the adapter with the kernels stubbed out (its own cost:
    ``overhead_us``). A trivial torch op (``torch.add`` on a [B, H] tensor) is timed alongside as the machine's
    yardstick: ``overhead_us / torch_add_us`` stays comparable between a busy and an idle machine."""
    import torch

    inp = _inputs(1, shape.B, shape.H, device, dtype)
    raw_fwd, raw_fwdbwd = _raw(*inp)
    _, fwd, autograd = _adapter(*inp)
    small = inp[3]
    yardstick = {"torch.add": lambda: torch.add(small, 1)}
    timed = {"core forward (T=1)": raw_fwd, "indrnn() forward (T=1)": fwd, "core fwd+bwd (T=1)": raw_fwdbwd,
             "indrnn() + autograd (T=1)": autograd, **_cell_steps(*inp)}
    t = _measure({**timed, **yardstick}, max(repeats, 5), device, max_seconds=max_seconds, events=False,
                 calls=CALLS_PER_SAMPLE)
    with _kernels_stubbed():
        stub = _measure({"fwd": fwd, "fwdbwd": autograd, **yardstick}, max(repeats, 5), device,
                        max_seconds=max_seconds, events=False, calls=CALLS_PER_SAMPLE)
    add_us = statistics.median([t["torch.add"]["seconds_median"], stub["torch.add"]["seconds_median"]]) * 1e6
    rows = []
    for (raw_name, name), key in ((("core forward (T=1)", "indrnn() forward (T=1)"), "fwd"),
                                  (("core fwd+bwd (T=1)", "indrnn() + autograd (T=1)"), "fwdbwd")):
        for impl in (raw_name, name):
            rows.append(_row(impl, shape, 1, dtype, device, "call_T1", _public(t[impl]),
                             per_call_us=t[impl]["seconds_median"] * 1e6))
        rows.append(_row(name.replace("(T=1)", "kernels stubbed (T=1)"), shape, 1, dtype, device, "call_T1",
                         _public(stub[key]), per_call_us=stub[key]["seconds_median"] * 1e6,
                         overhead_us=stub[key]["seconds_median"] * 1e6, torch_add_us=add_us))
    for impl in CELL_NAMES:
        rows.append(_row(impl, shape, 1, dtype, device, "call_T1", _public(t[impl]),
                         per_call_us=t[impl]["seconds_median"] * 1e6))
    return rows


CELL_NAMES = ("IndRNNCell step, fwd+bwd", "nn.RNNCell(relu) step, fwd+bwd")


def _cell_steps(x, u, b, h0, grad):
    """One step of a user's loop, forward and backward with parameter grads (input projection included), for
    ``IndRNNCell`` and for ``nn.RNNCell``: what a decoder pays per step."""
    import torch

    from indrnn_core.adapters.torch import IndRNNCell

    H = u.shape[0]
    x_t, g_t = x[0], grad[0]
    cells = (IndRNNCell(H, H, device=x.device, dtype=x.dtype),
             torch.nn.RNNCell(H, H, nonlinearity="relu", device=x.device, dtype=x.dtype))

    def step(cell):
        def run():
            cell.zero_grad(set_to_none=True)
            cell(x_t, h0).backward(g_t)
        return run

    return {name: step(cell) for name, cell in zip(CELL_NAMES, cells)}


def run(configs=None, device="cpu", repeats: int = 5, *, dtype: str = "float32", max_seconds: float = 10.0,
        log=None) -> list[dict]:
    """Gate, then time every config. ``configs``: shapes (``benchmarks.configs.Shape`` or name/T/B/H objects,
    dicts, config names) or None for tiny + mnist. Returns rows with ``name`` (= ``impl``), ``config``, ``T``,
    ``B``, ``H``, ``dtype``, ``device``, ``mode``, ``seconds_median``, ``seconds_min``, ``median_ms``, ``min_ms``,
    ``repeats`` and per-mode extras (``x_indrnn``, ``overhead_pct``, ``per_call_us``, ``overhead_us``)."""
    device = str(device)
    log = log or (lambda *a: None)
    log(format_gate(gate(dtype, device)))
    rows = []
    for shape in _shapes(configs):
        for part in (_step_rows, _overhead_rows, _call_rows):
            new = part(shape, device, dtype, repeats, max_seconds)
            for r in new:
                log(format_row(r))
            rows += new
    return rows


def targets(rows: list[dict]) -> list[dict]:
    """The two adapter targets, from the rows that measure them."""
    out = []
    for r in rows:
        if r["impl"] == ADAPTER_NAME and (r["T"], r["B"], r["H"]) == TARGET_SHAPE and r["dtype"] == "float32":
            out.append({"name": "adapter fwd+bwd overhead over the kernels", "measured": r["overhead_pct"],
                        "unit": "%", "target": TARGET_OVERHEAD_PCT, "passed": r["overhead_pct"] < TARGET_OVERHEAD_PCT,
                        "device": r["device"]})
            if "overhead_vs_allocating_pct" in r:
                out.append({"name": "adapter fwd+bwd overhead over kernels that allocate their outputs",
                            "measured": r["overhead_vs_allocating_pct"], "unit": "%", "target": TARGET_OVERHEAD_PCT,
                            "passed": r["overhead_vs_allocating_pct"] < TARGET_OVERHEAD_PCT, "device": r["device"]})
        if "overhead_us" in r and r["impl"].startswith("indrnn() forward"):
            out.append({"name": f"adapter per-call overhead at T=1 (B={r['B']}, H={r['H']})",
                        "measured": r["overhead_us"], "unit": "us", "target": TARGET_CALL_US,
                        "passed": r["overhead_us"] < TARGET_CALL_US, "device": r["device"]})
    return out


def format_gate(rec: dict) -> str:
    checks = ", ".join(f"{k} {v:.2e}" for k, v in rec["checks"].items())
    return f"gate  torch {rec['device']} {rec['dtype']}: {'PASS' if rec['passed'] else 'FAIL'} ({checks})"


def format_row(r: dict) -> str:
    s = (f"{r['config']:>6} T={r['T']:<5} {r['mode']:<7} {r['impl']:<36} {r['median_ms']:10.3f} ms "
         f"(min {r['min_ms']:.3f}, n={r['repeats']})")
    if "x_indrnn" in r:
        s += f"  {r['x_indrnn']:6.2f}x IndRNN"
    if "overhead_pct" in r:
        s += f"  overhead {r['overhead_pct']:+.1f}% (of mins {r['overhead_pct_min']:+.1f}%)"
    if "overhead_vs_allocating_pct" in r:
        s += f", {r['overhead_vs_allocating_pct']:+.1f}% over out=None"
    if "per_call_us" in r:
        s += f"  {r['per_call_us']:.1f} us/call"
    if "overhead_us" in r:
        s += f"  overhead {r['overhead_us']:+.1f} us (= {r['overhead_us'] / r['torch_add_us']:.1f}x torch.add)"
    return s


# ------------------------------------------------------------------------------------------ issue 14 GPU targets
def _ops_fwdbwd(T, B, H, device, tdt):
    """fwd+bwd of the custom ops called directly (torch allocates the outputs): data in ``tdt``, u and b float32."""
    import torch

    import indrnn_core.adapters.torch  # noqa: F401  (registers torch.ops.indrnn)

    g = torch.Generator(device=device).manual_seed(0)
    x, grad = (torch.randn(T, B, H, device=device, generator=g).to(tdt) for _ in range(2))
    u, b = torch.rand(H, device=device, generator=g), torch.randn(H, device=device, generator=g) * 0.1
    fwd, bwd = torch.ops.indrnn.forward.default, torch.ops.indrnn.backward.default

    def run():
        h, _ = fwd(x, u, b, None, None, "relu", False, False)
        return (h, *bwd(grad, h, u, None, None, None, "relu", False, False))

    return run


def _graph_step(model, x, grad):
    """A forward + backward step of ``model`` captured in a CUDA graph (after a side-stream warm-up): returns the
    replay callable and the parameters' gradient tensors the replays write."""
    import torch

    def step():
        model(x)[0].backward(grad)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    model.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay, [p.grad for p in model.parameters()]


def gpu_target_rows(device="cuda", repeats: int = 20, max_seconds: float = 20.0, log=None) -> list[dict]:
    """Issue 14's two GPU targets, measured (module docstring); rows as :func:`run`'s, with ``ratio``."""
    import torch

    from indrnn_core.testing import default_tolerance

    log = log or (lambda *a: None)
    rows = []
    T, B, H = BF16_SHAPE
    shape = _Shape("wide", T, B, H)
    f32, bf16 = _ops_fwdbwd(T, B, H, device, torch.float32), _ops_fwdbwd(T, B, H, device, torch.bfloat16)
    # gate: bfloat16 storage against float32 on the same rounded inputs (x rounded in both; small T for the check)
    xs = torch.randn(50, 4, 64, device=device).bfloat16()
    us = torch.rand(64, device=device)
    h16, _ = torch.ops.indrnn.forward(xs, us, None, None, None, "relu", False, False)
    h32, _ = torch.ops.indrnn.forward(xs.float(), us, None, None, None, "relu", False, False)
    err = float((h16.float() - h32).abs().max() / (1 + h32.abs().max()))
    if not err <= default_tolerance("bfloat16", 50, 4)["h"]:
        raise GateError(f"bfloat16 gate failed: scaled error {err:.2e}")
    t = _measure({"float32": f32, "bfloat16": bf16}, repeats, device, max_seconds=max_seconds, events=True)
    for name in ("float32", "bfloat16"):
        rows.append(_row(f"ops fwd+bwd ({name} storage)", shape, T, name, device, "fwdbwd", _public(t[name]),
                         ratio=t[name]["seconds_median"] / t["float32"]["seconds_median"]))

    T, B, H = TARGET_SHAPE
    shape = _Shape("mnist", T, B, H)
    models = _models(H, device, torch.float32)
    x = torch.randn(T, B, H, device=device)
    grad = torch.randn(T, B, H, device=device)
    fns = {}
    for name in ("IndRNN (indrnn_core)", "nn.RNN(relu)"):
        model = models[name]

        def eager(model=model):
            model.zero_grad(set_to_none=True)
            model(x)[0].backward(grad)

        eager()
        want = [p.grad.clone() for p in model.parameters()]
        fns[f"{name} eager step"] = eager
        try:
            replay, grads = _graph_step(model, x, grad)
        except RuntimeError as exc:  # the peer's capture is informative only: report, go on
            if name.startswith("IndRNN"):
                raise
            log(f"({name}: CUDA graph capture failed: {exc})")
            continue
        replay()
        torch.cuda.synchronize()
        if not all(torch.allclose(g, w, rtol=1e-5, atol=1e-5) for g, w in zip(grads, want)):
            raise GateError(f"CUDA graph gate failed: the replayed {name} step's gradients differ from eager's")
        fns[f"{name} CUDA graph step"] = replay
    t = _measure(fns, repeats, device, max_seconds=max_seconds, events=True)
    base = t["nn.RNN(relu) eager step"]["seconds_median"]
    for name, timing in t.items():
        rows.append(_row(name, shape, T, "float32", device, "step", _public(timing),
                         ratio=timing["seconds_median"] / base))
    for r in rows:
        log(format_row(r) + f"  ratio {r['ratio']:.3f}")
    return rows


def gpu_targets(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r["impl"] == "ops fwd+bwd (bfloat16 storage)":
            out.append({"name": f"bfloat16 fwd+bwd / float32 at T={r['T']}, B={r['B']}, H={r['H']}",
                        "measured": r["ratio"], "unit": "x", "target": TARGET_BF16_RATIO,
                        "passed": r["ratio"] <= TARGET_BF16_RATIO, "device": r["device"]})
        if r["impl"] == "IndRNN (indrnn_core) CUDA graph step":
            speedup = 1.0 / r["ratio"]
            out.append({"name": f"captured IndRNN step speed-up over eager cuDNN nn.RNN(relu) at T={r['T']}, "
                                f"B={r['B']}, H={r['H']}", "measured": speedup, "unit": "x",
                        "target": TARGET_GRAPH_SPEEDUP, "passed": speedup >= TARGET_GRAPH_SPEEDUP,
                        "device": r["device"]})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.torch_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="+", default=None, metavar="NAME",
                   help="names from benchmarks/configs.py (default: tiny mnist)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-seconds", type=float, default=10.0, help="cap on one measurement's total time")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and numba threads (default: theirs); 1 gives steadier figures on a shared machine")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the rows here")
    p.add_argument("--gpu-targets", action="store_true",
                   help="measure issue 14's bfloat16 and CUDA-graph targets instead (CUDA only)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)

    import numba

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numba {numba.__version__} "
          f"({numba.get_num_threads()} threads), device {args.device}")
    if args.gpu_targets:
        if not args.device.startswith("cuda"):
            p.error("--gpu-targets needs --device cuda")
        try:
            rows = gpu_target_rows(args.device, max(args.repeats, 20), args.max_seconds, log=print)
        except GateError as exc:
            print(exc, file=sys.stderr)
            return 1
        found = gpu_targets(rows)
        for t in found:
            print(f"target {t['name']} ({t['device']}): {t['measured']:.3f} {t['unit']} (target "
                  f"{'<=' if t['unit'] == 'x' and t['target'] < 1 else '>='} {t['target']:g})  "
                  f"{'PASS' if t['passed'] else 'MISS'}")
        if args.json:
            args.json.write_text(json.dumps({"rows": rows, "targets": found}, indent=1))
            print(f"wrote {args.json}")
        return 0 if all(t["passed"] for t in found) else 2
    try:
        rows = run(args.config, args.device, args.repeats, dtype=args.dtype, max_seconds=args.max_seconds,
                   log=print)
    except GateError as exc:
        print(exc, file=sys.stderr)
        return 1
    for t in targets(rows):
        print(f"target {t['name']} ({t['device']}): {t['measured']:.1f} {t['unit']} (target < {t['target']:g} "
              f"{t['unit']})  {'PASS' if t['passed'] else 'MISS'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "targets": targets(rows)}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
