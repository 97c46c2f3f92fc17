"""PyTorch adapter: custom ops over the indrnn_core kernels, a functional API and ``torch.nn`` modules.

Layers of this file, top-down:

1. ``indrnn::forward`` / ``indrnn::backward`` -- ``torch.library.custom_op`` over :func:`indrnn_core.forward` and
   :func:`indrnn_core.backward`. Torch allocates the outputs and the kernels fill them (``out=``); CPU tensors cross
   as NumPy views and CUDA tensors by the CUDA array interface on torch's current stream, with no copy.
   ``register_fake`` makes them traceable by ``torch.compile``; ``register_autograd`` gives gradients for x, u, b
   and h0. The forward op also returns the final state (written by the kernel in the same pass), whose gradient
   reaches the kernel as ``grad_hn``: no [T, B, H] scatter of it in autograd.
2. :func:`indrnn` and :func:`indrnn_with_state` -- the functional API.
3. Modules: :class:`IndRNN` (a drop-in for ``nn.RNN``), :class:`IndRNNCell`, :class:`IndRNNRecurrence` (the
   recurrence without input weights) and the recurrent-weight constraint helpers
   :func:`clip_recurrent_weights_` / :func:`register_recurrent_clipping`. The Deep IndRNN blocks live in
   ``indrnn_core.adapters.torch_blocks`` and are re-exported here.

Shapes use ``[T, B, H]`` (time-major, the default) or ``[B, T, H]`` with ``batch_first=True``.

Example::

    >>> import torch
    >>> from indrnn_core.adapters.torch import IndRNN
    >>> rnn = IndRNN(2, 16, num_layers=2)
    >>> out, h_n = rnn(torch.randn(50, 4, 2))      # [T, B, in] -> [T, B, H], [num_layers, B, H]
    >>> out.shape, h_n.shape
    (torch.Size([50, 4, 16]), torch.Size([2, 4, 16]))
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode

_function_mode_enabled = torch._C._is_torch_function_mode_enabled
_any_autocast_enabled = torch._C._is_any_autocast_enabled
_functorch_transforms_active = torch._C._are_functorch_transforms_active

import indrnn_core as _core
from indrnn_core import _validate
from indrnn_core._device_view import DeviceView, bfloat16 as _np_bfloat16
from indrnn_core.layers import StackSpec, check_bool

__all__ = [
    "indrnn", "indrnn_with_state", "IndRNN", "IndRNNCell", "IndRNNRecurrence",
    "clip_recurrent_weights_", "register_recurrent_clipping",
    "BatchNormOverTime", "BatchNormPerStep", "SequenceDropout", "ResidualIndRNN", "DenseIndRNN",
]

# ----------------------------------------------------------------------------------------------------------------
# 1. Custom ops
# ----------------------------------------------------------------------------------------------------------------
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
# Half-precision storage runs on CUDA only (the kernels compute in float32; u, b, gu, gb stay float32).
_HALF = (torch.float16, torch.bfloat16)
_KERNEL_DTYPES = (torch.float32, torch.float64, *_HALF)


def _empty(shape, like: Tensor):
    """An output the kernel fills, as ``(tensor, the same memory as the core takes it)``, on ``like``'s device (a
    seam: tests replace it to fill fresh outputs with NaN).

    CPU outputs are NumPy allocations wrapped by ``torch.from_numpy``, the large ones from ``indrnn_core.host_cache``:
    torch's CPU allocator has no cache, so each [T, B, H] output would be fresh pages from the OS, faulted in and
    zeroed by the kernel's first touch (+55% over the kernels alone at T=1000 and +63% at T=3000, B=64, H=128:
    BENCHMARKS.md's "no host cache" rows, 2026-11-23); and ``np.empty`` + ``from_numpy`` cost half of
    ``torch.empty`` + ``.numpy()``, which shows at T=1. CUDA outputs come from torch's caching allocator."""
    if like.is_cuda:
        t = (torch.empty_like(like, memory_format=torch.contiguous_format) if shape == like.shape
             else like.new_empty(shape))
        return t, _cuda_view(t)
    a = _core.host_cache.empty(shape, _NUMPY_DTYPES[like.dtype])
    return torch.from_numpy(a), a


def _check_supported(**named: Optional[Tensor]) -> None:
    """What the kernels cannot take, rejected before any tensor is converted (which would fail with an error that
    names no argument): dtypes other than float32/float64 (float16/bfloat16 on CUDA), devices other than the CPU
    and CUDA. The core checks the rest of the dtype contract (one data dtype; u and b float32 with half data)."""
    for name, t in named.items():
        if t is None:
            continue
        if t.dtype not in _KERNEL_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64 (float16 or bfloat16 on CUDA), "
                            f"got {t.dtype}")
        if not (t.is_cpu or t.is_cuda):
            raise ValueError(f"{name} must be a CPU or CUDA tensor, got one on {t.device}")
        if t.dtype in _HALF and not t.is_cuda:
            raise TypeError(f"{name} has dtype {t.dtype}: half precision (float16, bfloat16) runs on CUDA only; "
                            "use float32 on the CPU")


def _cuda_view(t: Tensor) -> DeviceView:
    """A CUDA tensor's memory as the core's :class:`DeviceView`, built from ``data_ptr``/``shape``/``stride``:
    ``Tensor.__cuda_array_interface__`` is a Python property that costs ~8 us per read on an H100 host. The view
    holds the tensor, so its memory stays allocated while the core uses it."""
    itemsize = t.element_size()
    dtype = _NUMPY_DTYPES_BY_TORCH.get(t.dtype)
    if dtype is None:  # bfloat16: NumPy's tag for it is found once, when the first bfloat16 tensor arrives
        dtype = _NUMPY_DTYPES_BY_TORCH[t.dtype] = _np_bfloat16()
    return DeviceView(t.data_ptr(), tuple(t.shape), tuple([s * itemsize for s in t.stride()]), dtype, False, t)


_NUMPY_DTYPES_BY_TORCH = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
                          torch.float16: np.dtype(np.float16)}


def _array(t: Optional[Tensor]):
    """A tensor as the core sees it, never copied: a NumPy view of CPU memory, or a :class:`DeviceView` (the core
    reads its CUDA array interface). ``Tensor.numpy()`` shares memory exactly like ``np.from_dlpack`` and costs half
    as much per call (``Tensor.__dlpack__`` is Python-level), which matters at small T."""
    if t is None:
        return None
    if t.is_cuda:
        return _cuda_view(t) if t.dtype in _KERNEL_DTYPES else t  # (lengths: integers, read by their interface)
    return (t.detach() if t.requires_grad else t).numpy()


_NO_GUARD = contextlib.nullcontext()
# torch's current stream of a GPU as a raw cudaStream_t (what torch.cuda.current_stream().cuda_stream gives, without
# building a Stream object); absent from CPU-only builds.
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _cuda_launch_context(t: Tensor):
    """(context manager, stream) for running the core on ``t``'s data: its GPU made current while the kernels
    launch (they launch in the current CUDA context) and torch's current stream there; (no-op, None) on the CPU."""
    if not t.is_cuda:
        return _NO_GUARD, None
    index = t.get_device()
    stream = _raw_stream(index) if _raw_stream is not None else torch.cuda.current_stream(t.device).cuda_stream
    return (_NO_GUARD if index == torch.cuda.current_device() else torch.cuda.device(index)), stream


def _forward_impl(x: Tensor, u: Tensor, b: Optional[Tensor], h0: Optional[Tensor], lengths: Optional[Tensor],
                activation: str, batch_first: bool, reverse: bool) -> tuple[Tensor, Tensor]:
    """(h shaped like x, final state [B, H])."""
    _check_supported(x=x, u=u, b=b, h0=h0)
    h, h_out = _empty(x.shape, x)
    # (A malformed x gets an empty stand-in here: the core's validation names the problem.)
    h_n, h_n_out = _empty(_validate.output_shapes(x.shape, batch_first)[1] if x.dim() == 3 else (0, 0), x)
    guard, stream = _cuda_launch_context(x)
    with guard:
        _core.forward(_array(x), _array(u), _array(b), _array(h0), activation=activation, batch_first=batch_first,
                      lengths=_array(lengths), reverse=reverse, out=h_out, final_state_out=h_n_out, stream=stream)
    return h, h_n


_forward_op = torch.library.custom_op("indrnn::forward", mutates_args=())(_forward_impl)


@_forward_op.register_fake
def _(x, u, b, h0, lengths, activation, batch_first, reverse):
    h_shape, hn_shape = _validate.output_shapes(x.shape, batch_first)
    return x.new_empty(h_shape), x.new_empty(hn_shape)


def _backward_impl(grad_h: Tensor, h: Tensor, u: Tensor, h0: Optional[Tensor], lengths: Optional[Tensor],
                 grad_hn: Optional[Tensor], activation: str, batch_first: bool,
                 reverse: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(gx shaped like h, gu [H], gb [H], gh0 [B, H]); ``grad_hn`` [B, H] is the final state's gradient."""
    _check_supported(grad_h=grad_h, h=h, u=u, h0=h0, grad_hn=grad_hn)
    # gu and gb in u's dtype (float32 when h is float16/bfloat16: the kernels accumulate them in float32).
    (gx, gx_out), (gu, gu_out), (gb, gb_out), (gh0, gh0_out) = (
        _empty(shape, like) for shape, like in zip(_validate.gradient_shapes(h.shape, batch_first), (h, u, u, h)))
    # On CUDA the kernels' scratch comes from torch's caching allocator (stream-ordered, no cudaMalloc per call,
    # and capturable in a CUDA graph, where nothing may be allocated outside torch's allocator).
    workspace = _cuda_view(torch.empty((2, *gh0.shape), dtype=u.dtype, device=h.device)) if h.is_cuda else None
    guard, stream = _cuda_launch_context(h)
    with guard:
        _core.backward(_array(grad_h), _array(h), _array(u), _array(h0), activation=activation,
                       batch_first=batch_first, lengths=_array(lengths), reverse=reverse, grad_hn=_array(grad_hn),
                       out=(gx_out, gu_out, gb_out, gh0_out), stream=stream, workspace=workspace)
    return gx, gu, gb, gh0


_backward_op = torch.library.custom_op("indrnn::backward", mutates_args=())(_backward_impl)


@_backward_op.register_fake
def _(grad_h, h, u, h0, lengths, grad_hn, activation, batch_first, reverse):
    return tuple(like.new_empty(shape) for shape, like in zip(_validate.gradient_shapes(h.shape, batch_first),
                                                               (h, u, u, h)))


def _setup_context(ctx, inputs, output):
    x, u, b, h0, lengths, activation, batch_first, reverse = inputs
    ctx.save_for_backward(output[0], u, h0, lengths)  # the output, never x: derivatives come from h
    ctx.options = (activation, batch_first, reverse)
    ctx.has_b, ctx.has_h0 = b is not None, h0 is not None
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None instead of a [T, B, H] of zeros


def _backward(ctx, grad_h, grad_hn):
    h, u, h0, lengths = ctx.saved_tensors
    activation, batch_first, reverse = ctx.options
    # A gradient from .sum()/.mean() arrives expanded (stride 0): made contiguous, since the kernels' strided path
    # costs ~2.5x the contiguous one (more than the copy). Only the final state used: on the CPU one zero seen
    # through zero strides (its loads stay in L1; a fresh [T, B, H] of zeros cost a calloc's page faults, one per
    # 4 KiB: 6256 per step at T=784, B=64, H=128, a training step 192 against 210 ms in one loaded run); on CUDA,
    # zeros.
    if grad_h is None:
        grad_h = h.new_zeros(()).expand_as(h) if h.device.type == "cpu" else torch.zeros_like(h)
    else:
        grad_h = grad_h.contiguous()
    run = _backward_impl if _eager(grad_h, h, u, h0, grad_hn) else _backward_overload
    gx, gu, gb, gh0 = run(grad_h, h, u, h0, lengths, grad_hn, activation, batch_first, reverse)
    return (gx, gu, gb if ctx.has_b else None, gh0 if ctx.has_h0 else None, None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)
# Mixed precision. On the CPU (float32/float64 kernels) the op runs in float32 under torch.autocast, like the ops on
# autocast's float32 list: floating inputs (e.g. a bfloat16 projection) are cast, and their gradients cast back.
torch.library.register_autocast("indrnn::forward", "cpu", torch.float32)
# On CUDA it keeps autocast's dtype: x and h0 (and so h, h_n and their gradients) in float16/bfloat16 storage,
# u and b in float32 as autocast keeps parameters (the kernels compute and accumulate gu, gb in float32). float64
# tensors are left alone, as autocast does.
_autocast_lib = torch.library.Library("indrnn", "IMPL")


def _autocast_to(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    if t is None or not t.is_floating_point() or t.dtype == torch.float64 or not t.is_cuda:
        return t
    return t.to(dtype)


def _autocast_cuda_forward(keyset, x, u, b, h0, lengths, activation, batch_first, reverse):
    dtype = torch.get_autocast_dtype("cuda")
    storage = dtype if dtype in _HALF else torch.float32
    with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCUDA)):
        return _forward_overload(_autocast_to(x, storage), _autocast_to(u, torch.float32),
                                 _autocast_to(b, torch.float32), _autocast_to(h0, storage), lengths, activation,
                                 batch_first, reverse)


_autocast_lib.impl("forward", _autocast_cuda_forward, "AutocastCUDA", with_keyset=True)

# The OpOverloads themselves: calling them skips CustomOpDef.__call__'s extra Python frame on every call.
_forward_overload = torch.ops.indrnn.forward.default
_backward_overload = torch.ops.indrnn.backward.default


_backward_once_differentiable = torch.autograd.function.once_differentiable(_backward)


class _EagerForward(torch.autograd.Function):
    """The same body and backward as the op, for eager calls: ``Function.apply`` costs a fraction of a custom op's
    dispatch, which at T=1 is most of a call (see :func:`_forward`). Old-style ``forward(ctx, ...)``: with a
    separate ``setup_context``, ``apply`` binds arguments through ``inspect.signature`` (~100 us) on every call."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _forward_impl(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad_h, grad_hn):
        if torch.is_grad_enabled():  # create_graph=True: like the op, the backward has no derivative of its own
            return _backward_once_differentiable(ctx, grad_h, grad_hn)
        return _backward(ctx, grad_h, grad_hn)  # the usual case, without once_differentiable's no_grad() context


def _slices(info, in_dims, args):
    """Under vmap: the arguments of each vmapped slice in turn (the kernels take plain tensors)."""
    for i in range(info.batch_size):
        yield tuple(a if d is None else a.select(d, i) for a, d in zip(args, in_dims))


def _vmap_by_slices(op):
    def rule(info, in_dims, *args):
        outs = [op(*sliced) for sliced in _slices(info, in_dims, args)]
        return tuple(torch.stack(out) for out in zip(*outs)), (0,) * len(outs[0])
    return rule


torch.library.register_vmap("indrnn::forward", _vmap_by_slices(_forward_overload))
torch.library.register_vmap("indrnn::backward", _vmap_by_slices(_backward_overload))


class _TransformForward(torch.autograd.Function):
    """The same body and backward as the op, for ``torch.func`` transforms (``grad``, ``vjp``, ``jacrev``,
    ``vmap``): torch's generated autograd wrapper of a custom op has no ``setup_context``, which functorch requires
    (pytorch/pytorch#170834), so under a transform the ops would fail. New-style (functorch's form), with a ``vmap``
    rule that runs each vmapped slice in turn (the kernels take plain tensors)."""

    @staticmethod
    def forward(x, u, b, h0, lengths, activation, batch_first, reverse):
        return _forward_impl(x, u, b, h0, lengths, activation, batch_first, reverse)

    setup_context = staticmethod(_setup_context)
    backward = _EagerForward.backward

    @staticmethod
    def vmap(info, in_dims, *args):
        return _vmap_by_slices(_TransformForward.apply)(info, in_dims, *args)


def _eager(*tensors) -> bool:
    """Whether running the ops' Python bodies directly is indistinguishable from dispatching the ops: not under
    torch.compile/export tracing, no dispatch or function mode (fake tensors, functionalisation), and only plain
    tensors and parameters on the CPU or CUDA (no other subclasses, no vmap/grad transforms; meta tensors take the
    ops' fake registration), autocast off (the op's autocast kernels cast the inputs). Anything else takes
    the registered ops. The first tensor must be one."""
    first = tensors[0]
    if (torch.compiler.is_compiling() or _current_dispatch_mode() is not None or _function_mode_enabled()
            or _functorch_transforms_active() or not (first.is_cpu or first.is_cuda) or _any_autocast_enabled()):
        return False
    return all(t is None or type(t) in _PLAIN_TENSORS for t in tensors)


# nn.Parameter is a Tensor that only marks a module's weights: it overrides no torch function, so a module's call
# (its weights are Parameters) may take the eager route as a functional call on plain tensors does.
_PLAIN_TENSORS = (Tensor, nn.Parameter)


def _forward(x, u, b, h0, lengths, activation, batch_first, reverse):
    """``indrnn::forward`` -> (h, final state), by the cheapest route that gives the same result and gradients."""
    if x.dtype in _HALF and u.dtype in _HALF:  # a module in .half()/.bfloat16(): the kernels take u, b in float32
        u, b = u.float(), (None if b is None else b.float())  # (their gradients are cast back by autograd)
    if not _eager(x, u, b, h0):
        if (_functorch_transforms_active() and not torch.compiler.is_compiling() and not _any_autocast_enabled()
                and _current_dispatch_mode() is None and not _function_mode_enabled()):
            return _TransformForward.apply(x, u, b, h0, lengths, activation, batch_first, reverse)
        return _forward_overload(x, u, b, h0, lengths, activation, batch_first, reverse)
    if torch.is_grad_enabled() and (x.requires_grad or u.requires_grad or (b is not None and b.requires_grad)
                                    or (h0 is not None and h0.requires_grad)):
        return _EagerForward.apply(x, u, b, h0, lengths, activation, batch_first, reverse)
    return _forward_impl(x, u, b, h0, lengths, activation, batch_first, reverse)


# ----------------------------------------------------------------------------------------------------------------
# 2. Functional API
# ----------------------------------------------------------------------------------------------------------------
def _as_lengths(lengths) -> Optional[Tensor]:
    """lengths as a tensor: a CPU one as it is (dtype kept so the core's own check rejects non-integers). A CUDA
    one goes to the host in eager calls (one synchronisation here, none in the backward), but stays on its device
    as int64 while a CUDA graph is being captured or torch.compile traces (its graph would else hold a copy to the
    host, which CUDA graphs cannot): nothing may be read back during capture, and the kernels then take the lengths
    unread, clamped to [0, T]; outside capture the core checks them on the host first."""
    if lengths is None:
        return None
    if isinstance(lengths, Tensor):
        if lengths.device.type == "cpu":
            return lengths
        if lengths.is_cuda and (torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing()):
            if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
                raise TypeError(f"lengths must have an integer dtype, got {lengths.dtype}")
            return lengths.long()
        return lengths.cpu()
    return torch.as_tensor(lengths)


def _check_tensors(x, **others) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    for name, t in others.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; all tensors must be on one device")


def indrnn(x: Tensor, u: Tensor, b: Optional[Tensor] = None, h0: Optional[Tensor] = None, *,
           activation: str = "relu", batch_first: bool = False, lengths=None, reverse: bool = False) -> Tensor:
    """IndRNN recurrence ``h_t = act(x_t + u * h_{t-1} + b)`` over already projected input.

    Args:
        x: ``[T, B, H]`` (or ``[B, T, H]`` with ``batch_first``), float32/float64; the input projection ``W x_t``.
        u: ``[H]`` recurrent weights. b: ``[H]`` bias or None. h0: ``[B, H]`` initial state or None (zeros).
        activation: "relu", "tanh", "sigmoid" or "identity".
        lengths: ``[B]`` integer lengths in ``[0, T]`` (tensor on any device, NumPy array or list) or None; outputs
            past a sequence's end are 0 and get no gradient.
        reverse: run each sequence from its last valid step down to step 0.

    Returns:
        ``[T, B, H]`` (or ``[B, T, H]``) every step's output. Differentiable in x, u, b and h0.

    Example::

        >>> h = indrnn(torch.randn(5, 2, 3), torch.rand(3))
        >>> h.shape
        torch.Size([5, 2, 3])
    """
    _check_tensors(x, u=u, b=b, h0=h0)
    return _forward(x, u, b, h0, _as_lengths(lengths), activation, batch_first, reverse)[0]


def indrnn_with_state(x: Tensor, u: Tensor, b: Optional[Tensor] = None, h0: Optional[Tensor] = None, *,
                      activation: str = "relu", batch_first: bool = False, lengths=None,
                      reverse: bool = False) -> tuple[Tensor, Tensor]:
    """Like :func:`indrnn`, also returning the ``[B, H]`` final state (``h[lengths-1]``; step 0 when ``reverse``;
    ``h0`` for a sequence of length 0). Gradients flow through both outputs."""
    _check_tensors(x, u=u, b=b, h0=h0)
    return _forward(x, u, b, h0, _as_lengths(lengths), activation, batch_first, reverse)


# ----------------------------------------------------------------------------------------------------------------
# 3. Modules
# ----------------------------------------------------------------------------------------------------------------
class _RecurrentMixin:
    """Shared by the modules owning recurrent weights: the ``recurrent_min_abs <= |u| <= recurrent_bound``
    constraint."""

    recurrent_bound: Optional[float]
    recurrent_min_abs: Optional[float] = None

    def _recurrent_weights(self) -> list[Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def clip_recurrent_(self, bound: Optional[float] = None, min_abs: Optional[float] = None):
        """Clamp every recurrent weight u in place to ``[-bound, bound]``, then move each ``|u| < min_abs`` to
        ``sign(u) * min_abs`` (``u == 0`` to ``+min_abs``: :func:`indrnn_core.init.check_min_abs` says why).
        ``bound`` and ``min_abs`` default to ``self.recurrent_bound`` and ``self.recurrent_min_abs``; a None limit is
        not applied. Returns self."""
        bound = self.recurrent_bound if bound is None else _core.init.check_bound(bound, "bound")
        min_abs = self.recurrent_min_abs if min_abs is None else min_abs
        if min_abs is not None:
            min_abs = _core.init.check_min_abs(min_abs, bound, "min_abs")
        for u in self._recurrent_weights():
            if bound is not None:
                u.clamp_(-bound, bound)
            if min_abs:
                u.copy_(torch.where(u < 0, u.clamp(max=-min_abs), u.clamp(min=min_abs)))
        return self


def clip_recurrent_weights_(module: nn.Module, bound: Optional[float] = None,
                            min_abs: Optional[float] = None) -> nn.Module:
    """Clamp the recurrent weights of every IndRNN module inside ``module`` (itself included) in place, each to its
    own ``recurrent_bound`` (``bound`` when given) and ``recurrent_min_abs`` (``min_abs`` when given): see
    :meth:`IndRNN.clip_recurrent_`. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, _RecurrentMixin):
            m.clip_recurrent_(bound, min_abs)
    return module


def register_recurrent_clipping(optimizer: torch.optim.Optimizer, module: nn.Module,
                                bound: Optional[float] = None, min_abs: Optional[float] = None):
    """Keep ``recurrent_min_abs <= |u| <= recurrent_bound`` through training: registers
    :func:`clip_recurrent_weights_` as a step post-hook on ``optimizer`` (``Optimizer.register_step_post_hook``),
    so the weights are clipped right after every ``optimizer.step()``, as the paper does. Also clips once now, so
    the constraint holds from the start.

    The hook lives on the optimizer: a newly built optimizer (or one restored with ``load_state_dict`` into a new
    object) needs this call again. Under DDP, every replica clips the same weights the same way, so replicas stay
    identical. Returns the hook handle; ``handle.remove()`` stops clipping.

    Example::

        >>> model = IndRNN(2, 8, recurrent_bound=2 ** (1 / 100))
        >>> opt = torch.optim.Adam(model.parameters(), lr=2e-4)
        >>> handle = register_recurrent_clipping(opt, model)
    """
    clip_recurrent_weights_(module, bound, min_abs)
    return optimizer.register_step_post_hook(
        lambda opt, args, kwargs: clip_recurrent_weights_(module, bound, min_abs))


def _factory(device, dtype) -> dict:
    return {"device": device, "dtype": dtype}


class IndRNN(_RecurrentMixin, nn.Module):
    """Multi-layer IndRNN, a drop-in for ``nn.RNN``: per layer ``h_t = act(W_ih x_t + u ⊙ h_{t-1} + b)``.

    The projection ``W_ih x`` runs over all steps in one matmul; the recurrence is the ``indrnn::forward`` op (no
    Python loop over time, packed sequences included).

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, bidirectional: as ``nn.RNN``.
        dropout: dropout on the outputs of each layer but the last, as ``nn.RNN`` (element-wise; the paper's mask
            shared over time is :class:`SequenceDropout`, for custom stacks).
        activation: "relu" (default), "tanh", "sigmoid" or "identity"; ``nonlinearity=`` (nn.RNN's name) works too.
        recurrent_init: range of the uniform init of u: None -> U(0, 1) (the paper's default); a ``(low, high)``
            tuple for all layers; or a list of tuples, one per layer (e.g. from ``indrnn_core.init``).
        recurrent_bound: None or a float; :meth:`clip_recurrent_` clamps every u to ``[-bound, bound]``. Clipping is
            not automatic: call :func:`register_recurrent_clipping` once on your optimizer.
        recurrent_min_abs: None or a float ``<= recurrent_bound`` (keyword only): clipping also moves every
            ``|u| < recurrent_min_abs`` to ``sign(u) * recurrent_min_abs`` (0 to ``+recurrent_min_abs``), as the
            TensorFlow IndRNN cell's ``recurrent_min_abs``.

    Parameters (like ``nn.RNN``, suffix ``_reverse`` for the backward direction): ``weight_ih_l{k}`` ``[H, in]``
    (the projection has no bias; ``W_ih ~ U(-1/sqrt(H), 1/sqrt(H))``), ``weight_hh_l{k}`` ``[H]`` (the recurrent
    vector u) and, with ``bias``, ``bias_ih_l{k}`` ``[H]`` (added inside the kernel; initialised to 0).

    Inputs: ``input`` ``[T, B, in]`` (``[B, T, in]`` with batch_first), ``[T, in]`` unbatched, or a
    ``PackedSequence``; ``h0`` ``[num_layers * num_directions, B, H]`` or None (zeros); ``lengths`` ``[B]`` or
    None: valid steps per sequence of a padded batch (the same result as packing it, and traceable by
    ``torch.compile``).
    Outputs: ``output`` ``[T, B, num_directions * H]`` (packed if the input was), ``h_n``
    ``[num_layers * num_directions, B, H]``.

    Example (adding problem settings of the paper)::

        >>> from indrnn_core import init
        >>> bound = init.recurrent_bound(100)           # 2 ** (1 / T)
        >>> rnn = IndRNN(2, 128, num_layers=2, batch_first=True, recurrent_bound=bound,
        ...              recurrent_init=[init.hidden_range(bound), init.last_layer_range(bound)])
        >>> out, h_n = rnn(torch.randn(32, 100, 2))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 activation: str = "relu", recurrent_init=None, recurrent_bound: Optional[float] = None,
                 device=None, dtype=None, *, nonlinearity: Optional[str] = None,
                 recurrent_min_abs: Optional[float] = None) -> None:
        super().__init__()
        if nonlinearity is not None:  # nn.RNN's name for it
            if activation != "relu" and activation != nonlinearity:
                raise ValueError(f"activation={activation!r} and nonlinearity={nonlinearity!r} disagree; give one")
            activation = nonlinearity
        bias_hint = (" (nn.RNN's fourth positional argument is nonlinearity; here pass activation= or "
                     "nonlinearity= by keyword)" if isinstance(bias, str) else "")
        self.spec = spec = StackSpec.check(
            input_size, hidden_size, num_layers, bias=bias, bidirectional=bidirectional, activation=activation,
            dropout=dropout, recurrent_init=recurrent_init, recurrent_bound=recurrent_bound,
            recurrent_min_abs=recurrent_min_abs, bias_hint=bias_hint)
        self.input_size, self.hidden_size, self.num_layers = spec.input_size, spec.hidden_size, spec.num_layers
        self.bias, self.batch_first, self.dropout = spec.bias, check_bool("batch_first", batch_first), spec.dropout
        self.bidirectional, self.activation = spec.bidirectional, spec.activation
        self.recurrent_ranges, self.recurrent_bound = list(spec.recurrent_ranges), spec.recurrent_bound
        self.recurrent_min_abs = spec.recurrent_min_abs
        factory = _factory(device, dtype)
        self._layer_names: list[tuple[str, str, Optional[str]]] = []
        for run in spec.runs():
            sfx = f"_l{run.layer}" + ("_reverse" if run.reverse else "")
            setattr(self, "weight_ih" + sfx, nn.Parameter(torch.empty(hidden_size, run.input_size, **factory)))
            setattr(self, "weight_hh" + sfx, nn.Parameter(torch.empty(hidden_size, **factory)))
            if spec.bias:
                setattr(self, "bias_ih" + sfx, nn.Parameter(torch.empty(hidden_size, **factory)))
            self._layer_names.append(("weight_ih" + sfx, "weight_hh" + sfx, "bias_ih" + sfx if spec.bias else None))
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return self.spec.num_directions

    def reset_parameters(self) -> None:
        stdv = self.spec.input_weight_bound
        with torch.no_grad():
            for run, (w_ih, w_hh, b) in zip(self.spec.runs(), self._layer_names):
                nn.init.uniform_(getattr(self, w_ih), -stdv, stdv)
                nn.init.uniform_(getattr(self, w_hh), *self.spec.recurrent_range(run))
                if b is not None:
                    nn.init.zeros_(getattr(self, b))

    def _recurrent_weights(self) -> list[Tensor]:
        return [getattr(self, w_hh) for _, w_hh, _ in self._layer_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """As ``nn.RNN``: per layer and direction, ``[weight_ih, weight_hh, bias_ih]`` (no bias without ``bias``)."""
        return [[getattr(self, name) for name in names if name is not None] for names in self._layer_names]

    def flatten_parameters(self) -> None:
        """Nothing to do (``nn.RNN`` packs its weights for cuDNN here): kept so code written for ``nn.RNN`` runs
        unchanged."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.activation != "relu":
            s += f", activation={self.activation!r}"
        if self.recurrent_bound is not None:
            s += f", recurrent_bound={self.recurrent_bound:g}"
        if self.recurrent_min_abs is not None:
            s += f", recurrent_min_abs={self.recurrent_min_abs:g}"
        return s

    def forward(self, input: Union[Tensor, PackedSequence], hx: Optional[Tensor] = None, lengths=None, *,
                h0: Optional[Tensor] = None):
        """``(output, h_n)`` as ``nn.RNN``, whose name for the initial state, ``hx``, it takes (``h0=`` too).
        ``lengths`` (an extension, for padded batches without packing, e.g. under ``torch.compile``, which cannot
        trace ``pack_padded_sequence``): ``[B]`` valid steps per sequence of a batched tensor input; the result
        equals packing the batch (outputs past a sequence's end are 0, ``h_n`` is each sequence's last valid step;
        the backward direction starts there)."""
        if h0 is not None and hx is not None:
            raise TypeError("give the initial state as hx or as h0, not both")
        h0 = hx if h0 is None else h0
        packed = isinstance(input, PackedSequence)
        weight = self.weight_ih_l0
        if lengths is not None and (packed or not isinstance(input, Tensor) or input.dim() != 3):
            raise ValueError("lengths is for a batched (3-D) tensor input; a PackedSequence carries its own lengths")
        if packed:
            if input.data.dim() != 2 or input.data.shape[-1] != self.input_size:
                raise ValueError(f"input (PackedSequence) must have feature size input_size={self.input_size}, "
                                 f"got data of shape {tuple(input.data.shape)}")
            x, lengths = pad_packed_sequence(input)  # [T, B, in] in the caller's batch order, lengths on the host
            batch_first, unbatched = False, False
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"input must be a torch.Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
                raise ValueError(f"input must have shape [T, B, {self.input_size}] ([B, T, {self.input_size}] with "
                                 f"batch_first, [T, {self.input_size}] unbatched), got {tuple(input.shape)}")
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else input
            batch_first, lengths = self.batch_first and not unbatched, _as_lengths(lengths)
        # Under autocast the projection and the ops cast for themselves (autocast exists for the CPU and CUDA).
        autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
        if x.dtype != weight.dtype and not autocast:
            raise TypeError(f"input has dtype {x.dtype} but the module's parameters are {weight.dtype}")
        if x.device != weight.device:
            raise ValueError(f"input is on {x.device} but the module's parameters are on {weight.device}")
        batch = x.shape[0 if batch_first else 1]
        num_states = self.num_layers * self.num_directions
        if h0 is not None:
            expected = (num_states, self.hidden_size) if unbatched else (num_states, batch, self.hidden_size)
            if not isinstance(h0, Tensor) or tuple(h0.shape) != expected:
                got = tuple(h0.shape) if isinstance(h0, Tensor) else type(h0).__name__
                raise ValueError(f"h0 must have shape {expected} (num_layers * num_directions = {num_states}), "
                                 f"got {got}")
            if h0.dtype != weight.dtype and not autocast:
                raise TypeError(f"h0 has dtype {h0.dtype} but the module's parameters are {weight.dtype}")
            if h0.device != weight.device:
                raise ValueError(f"h0 is on {h0.device} but the module's parameters are on {weight.device}")
            if unbatched:
                h0 = h0.unsqueeze(1)

        layer_input, finals, outputs = x, [], []
        for run, (w_ih, w_hh, b) in zip(self.spec.runs(), self._layer_names):
            h, last = _forward(F.linear(layer_input, getattr(self, w_ih)), getattr(self, w_hh),
                               None if b is None else getattr(self, b), None if h0 is None else h0[run.index],
                               lengths, self.activation, batch_first, run.reverse)
            finals.append(last)
            outputs.append(h)
            if len(outputs) == self.num_directions:  # the layer is complete: its output feeds the next one
                layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
                outputs = []
                if self.dropout and self.training and run.layer < self.num_layers - 1:
                    layer_input = F.dropout(layer_input, self.dropout, training=True)
        h_n = torch.stack(finals, 0)

        if packed:
            sorted_indices = input.sorted_indices
            out, lens = layer_input, lengths
            if sorted_indices is not None:
                out = out.index_select(1, sorted_indices)
                lens = lens[sorted_indices.cpu()]
            repacked = pack_padded_sequence(out, lens, enforce_sorted=True)
            return PackedSequence(repacked.data, repacked.batch_sizes, sorted_indices, input.unsorted_indices), h_n
        if unbatched:
            return layer_input.squeeze(1), h_n.squeeze(1)
        return layer_input, h_n


class IndRNNCell(_RecurrentMixin, nn.Module):
    """One IndRNN step, like ``nn.RNNCell``: ``h' = act(W_ih x + u ⊙ h + b)``, for user loops (decoders, teacher
    forcing). Inputs ``input`` ``[B, in]`` (or ``[in]``), ``hx`` ``[B, H]`` (or ``[H]``) or None; returns ``h'``
    ``[B, H]``. Parameters ``weight_ih`` ``[H, in]``, ``weight_hh`` ``[H]``, ``bias_ih`` ``[H]``;
    ``recurrent_init``, ``recurrent_bound`` and ``recurrent_min_abs`` as :class:`IndRNN`.

    Example::

        >>> cell = IndRNNCell(3, 8)
        >>> h = None
        >>> for x_t in torch.randn(4, 2, 3):
        ...     h = cell(x_t, h)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, activation: str = "relu",
                 recurrent_init=None, recurrent_bound: Optional[float] = None, device=None, dtype=None, *,
                 recurrent_min_abs: Optional[float] = None) -> None:
        super().__init__()
        factory = _factory(device, dtype)
        self.input_size, self.hidden_size, self.bias, self.activation = input_size, hidden_size, bias, activation
        self.recurrent_range = _core.init.resolve_ranges(recurrent_init, 1)[0]
        self.recurrent_bound = _core.init.check_bound(recurrent_bound)
        self.recurrent_min_abs = _core.init.check_min_abs(recurrent_min_abs, self.recurrent_bound)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            nn.init.uniform_(self.weight_ih, -stdv, stdv)
            nn.init.uniform_(self.weight_hh, *self.recurrent_range)
            if self.bias_ih is not None:
                nn.init.zeros_(self.bias_ih)

    def _recurrent_weights(self) -> list[Tensor]:
        return [self.weight_hh]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.activation != "relu":
            s += f", activation={self.activation!r}"
        return s

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        if not isinstance(input, Tensor) or input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"input must have shape [B, {self.input_size}] or [{self.input_size}], got {got}")
        unbatched = input.dim() == 1
        if unbatched:
            input = input.unsqueeze(0)
            hx = None if hx is None else hx.unsqueeze(0)
        if hx is not None and (not isinstance(hx, Tensor) or tuple(hx.shape) != (input.shape[0], self.hidden_size)):
            raise ValueError(f"hx must have shape {(input.shape[0], self.hidden_size)}, got {tuple(hx.shape)}")
        x = F.linear(input, self.weight_ih).unsqueeze(0)
        h = _forward(x, self.weight_hh, self.bias_ih, hx, None, self.activation, False, False)[1]
        return h.squeeze(0) if unbatched else h


class IndRNNRecurrence(_RecurrentMixin, nn.Module):
    """The recurrence alone, ``h_t = act(x_t + u ⊙ h_{t-1} + b)``, over an input already projected to
    ``hidden_size`` features -- to put batch norm (or anything) between the projection and the recurrence, as the
    original authors do. Parameters ``weight_hh`` ``[H]`` (u) and, with ``bias``, ``bias`` ``[H]`` (the authors'
    recurrence has none: it follows a Linear or batch norm that has one). ``recurrent_init``, ``recurrent_bound``
    and ``recurrent_min_abs``: as :class:`IndRNN`.

    ``forward(input, h0=None, lengths=None)``: input ``[T, B, H]`` (``[B, T, H]`` with batch_first), h0 ``[B, H]``;
    returns ``(output [T, B, H], h_n [B, H])``.
    """

    def __init__(self, hidden_size: int, bias: bool = True, activation: str = "relu", batch_first: bool = False,
                 recurrent_init=None, recurrent_bound: Optional[float] = None, device=None, dtype=None, *,
                 recurrent_min_abs: Optional[float] = None) -> None:
        super().__init__()
        factory = _factory(device, dtype)
        self.hidden_size, self.activation, self.batch_first = hidden_size, activation, batch_first
        self.recurrent_range = _core.init.resolve_ranges(recurrent_init, 1)[0]
        self.recurrent_bound = _core.init.check_bound(recurrent_bound)
        self.recurrent_min_abs = _core.init.check_min_abs(recurrent_min_abs, self.recurrent_bound)
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, **factory))
        self.bias = nn.Parameter(torch.empty(hidden_size, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.uniform_(self.weight_hh, *self.recurrent_range)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _recurrent_weights(self) -> list[Tensor]:
        return [self.weight_hh]

    def extra_repr(self) -> str:
        s = f"{self.hidden_size}"
        if self.bias is None:
            s += ", bias=False"
        if self.activation != "relu":
            s += f", activation={self.activation!r}"
        if self.batch_first:
            s += ", batch_first=True"
        return s

    def forward(self, input: Tensor, h0: Optional[Tensor] = None, lengths=None) -> tuple[Tensor, Tensor]:
        return indrnn_with_state(input, self.weight_hh, self.bias, h0, activation=self.activation,
                                 batch_first=self.batch_first, lengths=lengths)


from indrnn_core.adapters.torch_blocks import (  # noqa: E402  (the blocks build on the modules above)
    BatchNormOverTime, BatchNormPerStep, DenseIndRNN, ResidualIndRNN, SequenceDropout,
)
