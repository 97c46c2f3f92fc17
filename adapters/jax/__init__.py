"""JAX adapter: the kernels as a ``jax.custom_vjp`` that composes with ``jit``, ``grad``, ``vmap`` and sharding.

    h = indrnn(x, u, b=None, h0=None, *, activation="relu", batch_first=False, lengths=None, reverse=False)
    h, h_n = indrnn_with_state(...)           # x, h: [T, B, H] (or [B, T, H]); h_n: [B, H]

How a call runs:

* **CPU**: the Numba kernels registered as XLA typed-FFI handlers (``_ffi``: ``numba.cfunc``, compiled once and
  cached on disk), called by ``jax.ffi.ffi_call`` inside the compiled program: no host callback, no copy. Where the
  FFI cannot be used (a jaxlib whose FFI major version the handlers don't know), ``jax.pure_callback`` runs the
  same kernels, with a one-time warning saying why. The first CPU call also makes glibc keep freed memory
  (``indrnn_core._host_cache.retain_freed_memory``; ``INDRNN_CORE_RETAIN_FREED_MEMORY=0`` opts out): XLA
  re-maps its large temporary block on every run otherwise, and the page faults cost as much as the kernels.
* **GPU**: ``jax.experimental.buffer_callback`` hands XLA's own device buffers and stream to the CUDA kernels
  (``indrnn_core.forward``/``backward`` with ``stream=``), in place, under ``jit`` too: no host round trip. Chosen
  over a CUDA FFI handler because it reuses the core's validated CUDA launch path as is; its Python cost (~50 us per
  call) is what a GPU user pays per op.
* **vmap**: leading batch axes fold into the kernels' batch (one kernel call), for values and gradients (the
  backward sums ``gu``/``gb`` per vmapped slice). A vmapped ``u`` or ``b`` (one recurrence per slice) cannot fold:
  those slices run one after another (``lax.map``).
* **Sharding**: under ``shard_map`` with the batch axis sharded, each device runs the kernels on its own shard;
  gradients of replicated ``u``/``b`` are summed across devices by ``shard_map``'s transpose.

Everything is checked while tracing (shapes and dtypes are known then) with the core's messages; ``lengths`` values
that are traced are checked by the handler, which returns an XLA error instead of reading out of bounds.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from indrnn_core.adapters.jax import indrnn
    >>> x = jnp.ones((5, 2, 3)); u = jnp.full((3,), 0.5)
    >>> jax.jit(jax.grad(lambda u: indrnn(x, u).sum()))(u).shape
    (3,)
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.custom_derivatives import SymbolicZero

import indrnn_core as _core
from indrnn_core import _host_cache, _validate
from indrnn_core._activations import ACTIVATION_CODES

from . import _ffi

__all__ = ["indrnn", "indrnn_with_state", "project"]


# ----------------------------------------------------------------------------------------------------------------
# 1. Kernel calls: one forward and one backward primitive per platform
# ----------------------------------------------------------------------------------------------------------------
_FALLBACK_WARNED = []


def _use_ffi() -> bool:
    ok, why = _ffi.available()
    if not ok and not _FALLBACK_WARNED:
        _FALLBACK_WARNED.append(why)
        warnings.warn(f"indrnn_core.adapters.jax: {why}; running the kernels through jax.pure_callback instead "
                      "(a host callback: slower, and not serialisable with jax.export)", RuntimeWarning, stacklevel=4)
    return ok


def _core_array(buf):
    """A buffer_callback/pure_callback buffer as the core takes it: its CUDA memory as a view, or a NumPy array."""
    if isinstance(buf, np.ndarray):
        return buf
    try:  # (CPU jax.Arrays and callback buffers have the property too, and raise)
        cai = buf.__cuda_array_interface__
    except (AttributeError, jax.errors.JaxRuntimeError):
        return np.asarray(buf)
    from indrnn_core._device_view import DeviceView

    return DeviceView.contiguous(cai["data"][0], cai["shape"], np.dtype(cai["typestr"]), buf)


def _host_lengths(lengths, stream, given):
    """The kernels take lengths on the host. None when the caller gave none (all T: nothing to copy); a GPU buffer
    is copied once XLA's stream has produced it (a synchronisation, paid only where lengths are given)."""
    if not given:
        return None
    arr = _core_array(lengths)
    if not isinstance(arr, np.ndarray):
        from numba import cuda

        from indrnn_core import cuda as _cuda

        if stream:
            cuda.external_stream(stream).synchronize()
        arr = _cuda.copy_to_host(arr)
    return arr


def _run_forward(stream, outs, x, u, b, h0, lengths, activation, batch_first, reverse, lengths_given=True):
    """Fill ``outs`` = (h, h_n) with the kernels (the callbacks' body: GPU buffer_callback and CPU fallback)."""
    h, hn = (_core_array(o) for o in outs)
    _core.forward(_core_array(x), _core_array(u), _core_array(b), _core_array(h0), activation=activation,
                  batch_first=batch_first, lengths=_host_lengths(lengths, stream, lengths_given), reverse=reverse,
                  out=h, final_state_out=hn, stream=stream)


def _run_backward(stream, outs, grad_h, h, u, h0, lengths, grad_hn, activation, batch_first, reverse, groups,
                  lengths_given=True):
    """Fill ``outs`` = (gx, gu [groups, H], gb [groups, H], gh0): one core call per group of sequences."""
    gx, gu, gb, gh0 = (_core_array(o) for o in outs)
    grad_h, h, u, h0, grad_hn = (_core_array(a) for a in (grad_h, h, u, h0, grad_hn))
    lengths = _host_lengths(lengths, stream, lengths_given)
    per = grad_hn.shape[0] // groups
    for g in range(groups):
        rows = slice(g * per, (g + 1) * per)
        seq = (rows,) if batch_first else (slice(None), rows)
        part = [_slice(a, seq) for a in (grad_h, h, gx)]
        _core.backward(part[0], part[1], u, _slice(h0, (rows,)), activation=activation, batch_first=batch_first,
                       lengths=None if lengths is None else lengths[rows], reverse=reverse,
                       grad_hn=_slice(grad_hn, (rows,)),
                       out=(part[2], _slice(gu, (g,)), _slice(gb, (g,)), _slice(gh0, (rows,))), stream=stream)


def _slice(a, index):
    """``a[index]`` for a NumPy array or a CUDA view (kept a view: the kernels take any strides)."""
    if isinstance(a, np.ndarray):
        return a[index]
    from indrnn_core.cuda import _launch

    return _launch.numba_array(a)[index]


def _result_types(x_shape, dtype, batch_first, like=None):
    h_shape, hn_shape = _validate.output_shapes(x_shape, batch_first)
    return tuple(_struct(s, dtype, like) for s in (h_shape, hn_shape))


def _gradient_types(h_shape, dtype, batch_first, groups, like=None):
    gx, gu, gb, gh0 = _validate.gradient_shapes(h_shape, batch_first)
    return tuple(_struct(s, dtype, like) for s in (gx, (groups, *gu), (groups, *gb), gh0))


def _struct(shape, dtype, like):
    """A result type; inside ``shard_map`` it varies over the mesh axes its operands vary over (``like``'s)."""
    aval = None if like is None else jax.typeof(like)
    axis_type = getattr(aval, "manual_axis_type", None)
    if axis_type is None or not getattr(axis_type, "varying", None):
        return jax.ShapeDtypeStruct(shape, dtype)
    sharding = jax.sharding.NamedSharding(aval.sharding.mesh, jax.sharding.PartitionSpec())
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding, manual_axis_type=axis_type)


def _varying(a) -> frozenset:
    """The ``shard_map`` mesh axes ``a`` varies over (none outside ``shard_map``)."""
    axis_type = getattr(jax.typeof(a), "manual_axis_type", None)
    return frozenset(getattr(axis_type, "varying", ()) or ())


def _vary_like(arrays):
    """Inside ``shard_map``, mark every operand as varying over every axis any of them varies over, so the kernel
    call and its results have one consistent type (a replicated ``u`` meets a sharded ``x``)."""
    axes = frozenset().union(*(_varying(a) for a in arrays))
    if not axes:
        return arrays
    return tuple(a if not (axes - _varying(a)) else jax.lax.pcast(a, tuple(sorted(axes - _varying(a))), to="varying")
                 for a in arrays)


def _cotangent_like(ct, primal):
    """A cotangent typed like its primal under ``shard_map``: summed over the axes the primal is replicated on
    (what ``shard_map`` does for a replicated input's gradient)."""
    extra = _varying(ct) - _varying(primal)
    return jax.lax.psum(ct, tuple(sorted(extra))) if extra else ct


def _threads(shape, batch_first):
    return np.int32(_ffi.threads_for(int(np.prod(shape)), shape[0] if batch_first else shape[1]))


def _retain_host_memory() -> None:
    """On a CPU backend, keep freed C heap memory (see :func:`indrnn_core._host_cache.retain_freed_memory`): XLA
    frees and re-maps its ~100 MB temporary block every step otherwise, and faulting it in again cost as much as
    the kernels (Keras training step at T=784, B=64, H=128: 92 ms against 47 ms). Called at import where jax has no
    accelerator plugin (it must come before XLA's threads first allocate: a thread's own malloc arena maps large
    blocks afresh whatever the settings), and again when a CPU kernel call is traced (for a late import)."""
    if jax.default_backend() == "cpu":
        _host_cache.retain_freed_memory()


def _accelerator_plugin_installed() -> bool:
    """Whether jax may run on an accelerator here (a ``jax_plugins`` package: CUDA, ROCm, TPU), decided without
    initialising a backend."""
    try:
        import jax_plugins
    except ImportError:
        return False
    import pkgutil

    return any(True for _ in pkgutil.iter_modules(jax_plugins.__path__))


if not _accelerator_plugin_installed():
    _host_cache.retain_freed_memory()


def _forward_cpu(x, u, b, h0, lengths, *, activation, batch_first, reverse, lengths_given):
    _retain_host_memory()
    types = _result_types(x.shape, x.dtype, batch_first, x)
    if not _use_ffi():
        return jax.pure_callback(
            lambda *a: _pure(_run_forward, types, a, activation, batch_first, reverse), types, x, u, b, h0, lengths,
            vmap_method="sequential")
    call = jax.ffi.ffi_call(_ffi.target("forward", x.dtype), types)
    return call(x, u, b, h0, lengths, activation=np.int32(ACTIVATION_CODES[activation]), batch_first=batch_first,
                reverse=reverse, threads=_threads(x.shape, batch_first))


def _full_grad_h(grad_h, h):
    """``grad_h`` at ``h``'s shape: the paths that read only full arrays (the CUDA kernels, the callback fallback)
    expand the ``[1, 1, H]`` row that stands for a symbolic zero (see ``_recurrence_bwd``)."""
    return grad_h if grad_h.shape == h.shape else jnp.broadcast_to(grad_h, h.shape)


def _backward_cpu(grad_h, h, u, h0, lengths, grad_hn, *, activation, batch_first, reverse, groups, lengths_given):
    types = _gradient_types(h.shape, h.dtype, batch_first, groups, h)
    if not _use_ffi():
        grad_h = _full_grad_h(grad_h, h)
        return jax.pure_callback(
            lambda *a: _pure(_run_backward, types, a, activation, batch_first, reverse, groups), types, grad_h, h,
            u, h0, lengths, grad_hn, vmap_method="sequential")
    # (No input_output_aliases of gx over grad_h: where grad_h is a jit argument or still live, XLA copies it
    # first, and that copy cost more than the fresh buffer saves -- backward 72 ms against 32 ms for the kernels
    # alone in one loaded run at T=784, B=64, H=128; without the alias the two are even.)
    call = jax.ffi.ffi_call(_ffi.target("backward", h.dtype), types)
    return call(grad_h, h, u, h0, lengths, grad_hn, activation=np.int32(ACTIVATION_CODES[activation]),
                batch_first=batch_first, groups=np.int32(groups), reverse=reverse,
                threads=_threads(h.shape, batch_first))


def _pure(run, types, args, *options):
    outs = [np.empty(t.shape, t.dtype) for t in types]
    run(None, outs, *args, *options)
    return tuple(outs)


def _forward_gpu(x, u, b, h0, lengths, *, activation, batch_first, reverse, lengths_given):
    from jax.experimental.buffer_callback import buffer_callback

    def callback(ctx, outs, *args):
        _run_forward(ctx.stream, outs, *args, activation, batch_first, reverse, lengths_given)

    outs = buffer_callback(callback, _result_types(x.shape, x.dtype, batch_first))(x, u, b, h0, lengths)
    return _vary_like((x, *outs))[1:]  # (buffer_callback's results carry no shard_map axes)


def _backward_gpu(grad_h, h, u, h0, lengths, grad_hn, *, activation, batch_first, reverse, groups, lengths_given):
    from jax.experimental.buffer_callback import buffer_callback

    def callback(ctx, outs, *args):
        _run_backward(ctx.stream, outs, *args, activation, batch_first, reverse, groups, lengths_given)

    types = _gradient_types(h.shape, h.dtype, batch_first, groups)
    outs = buffer_callback(callback, types)(_full_grad_h(grad_h, h), h, u, h0, lengths, grad_hn)
    return _vary_like((h, *outs))[1:]


def _on_platform(cpu, gpu, *args, **options):
    """``cpu`` or ``gpu`` (each a kernel call) by where the computation runs, decided when XLA lowers it."""
    return jax.lax.platform_dependent(*_vary_like(args), cpu=functools.partial(cpu, **options),
                                      cuda=functools.partial(gpu, **options))


# ----------------------------------------------------------------------------------------------------------------
# 2. vmap: fold the vmapped axis into the kernels' batch
# ----------------------------------------------------------------------------------------------------------------
def _to_batch(a, batched, size, batch_first, sequence):
    """Fold a vmapped leading axis of ``a`` ([V, ...]) into its batch axis; an unbatched ``a`` is broadcast first.
    ``sequence``: ``a`` is [T, B, H] / [B, T, H] (else its batch axis is its first: h0 [B, H], lengths [B])."""
    if not batched:
        a = jnp.broadcast_to(a, (size, *a.shape))
    if sequence and not batch_first:  # [V, T, B, H] -> [T, V*B, H]
        a = jnp.moveaxis(a, 0, 1)
        return a.reshape(a.shape[0], -1, *a.shape[3:])
    return a.reshape(-1, *a.shape[2:])


def _from_batch(a, size, batch_first, sequence):
    """The inverse of :func:`_to_batch`: [T, V*B, H] -> [V, T, B, H] (or [V*B, ...] -> [V, B, ...])."""
    if sequence and not batch_first:
        return jnp.moveaxis(a.reshape(a.shape[0], size, -1, *a.shape[2:]), 1, 0)
    return a.reshape(size, -1, *a.shape[1:])


def _sliced(call, size, in_batched, args):
    """A vmapped ``u``/``b`` runs each slice in turn (each slice is its own recurrence)."""
    batched_args = [a for a, bt in zip(args, in_batched) if bt]

    def one(slices):
        it = iter(slices)
        return call(*[next(it) if bt else a for a, bt in zip(args, in_batched)])

    return jax.lax.map(one, batched_args)


@functools.lru_cache(maxsize=None)
def _forward_primitive(activation, batch_first, reverse, lengths_given):
    """(x, u, b, h0, lengths) -> (h, h_n), with the vmap rule. ``lengths_given``: False when ``lengths`` is all T
    because the caller gave none (the GPU path then copies nothing to the host)."""
    options = dict(activation=activation, batch_first=batch_first, reverse=reverse, lengths_given=lengths_given)

    @custom_vmap
    def forward(x, u, b, h0, lengths):
        return _on_platform(_forward_cpu, _forward_gpu, x, u, b, h0, lengths, **options)

    @forward.def_vmap
    def rule(size, in_batched, x, u, b, h0, lengths):
        if in_batched[1] or in_batched[2]:
            return _sliced(forward, size, in_batched, (x, u, b, h0, lengths)), (True, True)
        h, hn = forward(_to_batch(x, in_batched[0], size, batch_first, True), u, b,
                        _to_batch(h0, in_batched[3], size, batch_first, False),
                        _to_batch(lengths, in_batched[4], size, batch_first, False))
        return (_from_batch(h, size, batch_first, True), _from_batch(hn, size, batch_first, False)), (True, True)

    return forward


@functools.lru_cache(maxsize=None)
def _backward_primitive(activation, batch_first, reverse, groups, lengths_given):
    """(grad_h, h, u, h0, lengths, grad_hn) -> (gx, gu [groups, H], gb [groups, H], gh0), with the vmap rule:
    folding V slices into the batch multiplies the groups, so gu/gb stay one row per slice."""
    options = dict(activation=activation, batch_first=batch_first, reverse=reverse, groups=groups,
                   lengths_given=lengths_given)

    @custom_vmap
    def backward(grad_h, h, u, h0, lengths, grad_hn):
        return _on_platform(_backward_cpu, _backward_gpu, grad_h, h, u, h0, lengths, grad_hn, **options)

    @backward.def_vmap
    def rule(size, in_batched, grad_h, h, u, h0, lengths, grad_hn):
        args = (grad_h, h, u, h0, lengths, grad_hn)
        if in_batched[2]:
            return _sliced(backward, size, in_batched, args), (True,) * 4
        folded = _backward_primitive(activation, batch_first, reverse, groups * size, lengths_given)
        seq = (True, True, False, False, False, False)
        # (an unbatched [1, 1, H] row of grad_h stays one row: the same dL/dh for every folded sequence)
        keep = (2,) if in_batched[0] or grad_h.shape != (1, 1, h.shape[-1]) else (0, 2)
        gx, gu, gb, gh0 = folded(*[a if i in keep else _to_batch(a, bt, size, batch_first, s)
                                   for i, (a, bt, s) in enumerate(zip(args, in_batched, seq))])
        # (the batch is folded slice-major, so group rows come slice-major too)
        return ((_from_batch(gx, size, batch_first, True), gu.reshape(size, groups, -1),
                 gb.reshape(size, groups, -1), _from_batch(gh0, size, batch_first, False)), (True,) * 4)

    return backward


# ----------------------------------------------------------------------------------------------------------------
# 3. The differentiable op and the public functions
# ----------------------------------------------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _recurrence(x, u, b, h0, lengths, activation, batch_first, reverse, lengths_given):
    return _forward_primitive(activation, batch_first, reverse, lengths_given)(x, u, b, h0, lengths)


def _recurrence_fwd(x, u, b, h0, lengths, activation, batch_first, reverse, lengths_given):
    # (symbolic_zeros: each differentiable argument arrives as a CustomVJPPrimal; its value is the array)
    x, u, b, h0, lengths = (a.value for a in (x, u, b, h0, lengths))
    h, hn = _forward_primitive(activation, batch_first, reverse, lengths_given)(x, u, b, h0, lengths)
    return (h, hn), (h, u, h0, lengths)  # the output, never x: derivatives come from h


def _recurrence_bwd(activation, batch_first, reverse, lengths_given, residuals, cotangents):
    h, u, h0, lengths = residuals
    grad_h, grad_hn = cotangents
    # An output the loss does not use has a symbolic zero cotangent. For h ([T, B, H]: usually only h_n is used)
    # the kernels take a [1, 1, H] row of zeros instead of a materialised [T, B, H] (each step reads the row); at
    # T=784, B=64, H=128 float32 that saves filling and reading 26 MB per step.
    if isinstance(grad_h, SymbolicZero):
        grad_h = jnp.zeros((1, 1, h.shape[-1]), h.dtype)
    if isinstance(grad_hn, SymbolicZero):
        grad_hn = jnp.zeros(h0.shape, h.dtype)
    gx, gu, gb, gh0 = _backward_primitive(activation, batch_first, reverse, 1, lengths_given)(
        grad_h, h, u, h0, lengths, grad_hn)
    # (b's type is u's: both [H], given or zeros made alongside)
    return gx, _cotangent_like(gu[0], u), _cotangent_like(gb[0], u), _cotangent_like(gh0, h0), None


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd, symbolic_zeros=True)


def _is_concrete(a) -> bool:
    return isinstance(a, (np.ndarray, Sequence)) or (isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer))


def _prepare(x, u, b, h0, lengths, activation, batch_first, reverse):
    """Check everything on shapes and dtypes (the core's messages), then fill in the optional arrays."""
    for name, a in (("x", x), ("u", u), ("b", b), ("h0", h0)):
        if a is not None and not (isinstance(a, (jax.Array, np.ndarray)) or hasattr(a, "__jax_array__")):
            raise TypeError(f"{name} must be a JAX or NumPy array{' or None' if name in ('b', 'h0') else ''}, "
                            f"got {type(a).__name__}")
    x, u = jnp.asarray(x), jnp.asarray(u)
    b = None if b is None else jnp.asarray(b)
    h0 = None if h0 is None else jnp.asarray(h0)
    if lengths is not None and _is_concrete(lengths):
        if isinstance(lengths, jax.Array):
            lengths = np.asarray(lengths)
        if isinstance(lengths, Sequence) and not isinstance(lengths, (str, bytes)):
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in lengths):
                raise TypeError("lengths must contain integers")
            lengths = np.asarray(lengths, dtype=np.int64).reshape(len(lengths))
    T, B, H, dtype = _validate.check_signature(x, u, b, h0, lengths, activation=activation,
                                               batch_first=batch_first, reverse=reverse)
    lengths_given = lengths is not None
    if lengths is None:
        lengths = np.full(B, T, np.int32)
    lengths = jnp.asarray(lengths).astype(jnp.int32)  # (T < 2**31: an XLA dimension)
    b = jnp.zeros(H, dtype) if b is None else b
    h0 = jnp.zeros((B, H), dtype) if h0 is None else h0
    return x, u, b, h0, lengths, activation, bool(batch_first), bool(reverse), lengths_given


def indrnn_with_state(x, u, b=None, h0=None, *, activation: str = "relu", batch_first: bool = False, lengths=None,
                      reverse: bool = False):
    """IndRNN recurrence ``h_t = act(x_t + u * h_{t-1} + b)`` over already projected input, and its final state.

    Args:
        x: ``[T, B, H]`` (or ``[B, T, H]`` with ``batch_first``), float32/float64 (float64 needs
            ``jax_enable_x64``): the input projection ``W x_t``.
        u: ``[H]`` recurrent weights. b: ``[H]`` bias or None. h0: ``[B, H]`` initial state or None (zeros).
        activation: "relu", "tanh", "sigmoid" or "identity" (static).
        batch_first, reverse: static bools; ``reverse`` runs each sequence from its last valid step to step 0.
        lengths: ``[B]`` integers in ``[0, T]`` or None: a NumPy array, a list, or a JAX array (traced ones too);
            outputs past a sequence's end are 0 and get no gradient.

    Returns:
        ``(h, h_n)``: every step's output, shaped like ``x``, and the ``[B, H]`` final state (``h`` at each
        sequence's last valid step; step 0 with ``reverse``; ``h0`` for a length of 0). Differentiable in
        ``x``, ``u``, ``b`` and ``h0`` through both outputs.
    """
    return _recurrence(*_prepare(x, u, b, h0, lengths, activation, batch_first, reverse))


def indrnn(x, u, b=None, h0=None, *, activation: str = "relu", batch_first: bool = False, lengths=None,
           reverse: bool = False):
    """Like :func:`indrnn_with_state`, returning only ``h`` (shaped like ``x``)."""
    return indrnn_with_state(x, u, b, h0, activation=activation, batch_first=batch_first, lengths=lengths,
                             reverse=reverse)[0]


# Up to this many input features, project() multiplies and adds instead of calling dot.
_BROADCAST_MAX_FEATURES = 4


def project(x, kernel):
    """The input projection ``x @ kernel`` (x ``[..., D]``, kernel ``[D, H]`` -> ``[..., H]``) as the layers built on
    this adapter compute it.

    With few input features (D <= 4: pixel-by-pixel images, the adding problem) it is ``D`` broadcast
    multiply-adds instead of a dot, with its own gradient (:func:`_broadcast_project`): on the CPU, XLA's dot with a
    contraction of 1-2 rows and its gradient took 2-8x longer than the same product written elementwise (measured
    at [64, 784, D] x [D, 128], ``jit(grad)`` for the kernel and the input). Same values up to float rounding of the
    D-term sum."""
    if kernel.shape[0] > _BROADCAST_MAX_FEATURES:
        return x @ kernel
    return _broadcast_project(jnp.asarray(x), jnp.asarray(kernel))  # (Keras variables are not jax types)


def _broadcast_sum(x, kernel):
    out = x[..., 0:1] * kernel[0]
    for k in range(1, kernel.shape[0]):
        out = out + x[..., k:k + 1] * kernel[k]
    return out


@jax.custom_vjp
def _broadcast_project(x, kernel):
    return _broadcast_sum(x, kernel)


def _broadcast_project_fwd(x, kernel):
    return _broadcast_sum(x, kernel), (x, kernel)


def _broadcast_project_bwd(residuals, g):
    # Written out so each gradient is one fused pass over g: left to autodiff, XLA materialised x broadcast to the
    # output's shape (shared by the forward product and the kernel's gradient) and read it back, 2 extra passes.
    x, kernel = residuals
    lead = tuple(range(g.ndim - 1))
    gk = jnp.stack([jnp.sum(x[..., k:k + 1] * g, axis=lead) for k in range(kernel.shape[0])])
    gx = jnp.stack([jnp.sum(g * kernel[k], axis=-1) for k in range(kernel.shape[0])], axis=-1)
    return gx.astype(x.dtype), gk.astype(kernel.dtype)


_broadcast_project.defvjp(_broadcast_project_fwd, _broadcast_project_bwd)
