"""TensorFlow adapter: :func:`indrnn` and :func:`indrnn_with_state`, a ``tf.custom_gradient`` op over the
indrnn_core kernels, for eager code, ``tf.function`` graphs, the CPU and (written, not yet run) CUDA GPUs, and
``tf.distribute`` replicas.

How a call reaches the kernels (measured facts behind each choice: ``../shared/ADAPTER-NOTES.md`` and
``benchmarks/tf_bench.py``):

* **Eager, CPU**: input tensors cross to NumPy by DLPack (``np.from_dlpack``: read-only views, no copy); the
  outputs are NumPy buffers the kernels fill (``out=``), 64-byte aligned, handed to TF by DLPack without a copy.
  TF aborts the process (``Check failed: IsAligned()``) at the next op on an adopted buffer that is not 64-byte
  aligned, so every output comes from :func:`_aligned_empty` (large ones from ``indrnn_core.host_cache``).
* **tf.function**: the same bodies run in a graph callback (``GRAPH_CALLBACK``): ``tf.numpy_function`` where TF
  has no GPU (measured cheaper per call than ``tf.py_function``), ``tf.py_function`` where it has one (it keeps
  GPU tensors on the GPU; ``numpy_function`` is CPU-only). Outputs get every static shape known at trace time.
* **XLA** (``tf.function(jit_compile=True)``, Keras' ``jit_compile``): XLA cannot compile a Python callback; the
  call raises :class:`XlaUnsupportedError` while tracing, saying to compile without XLA.
* **GPU**: a GPU tensor's memory is read by DLPack (``tf.experimental.dlpack.to_dlpack``) into the core's
  :class:`~indrnn_core._device_view.DeviceView`; TF allocates the outputs on the GPU (``Empty``, no fill) and the
  CUDA kernels write them. TF exposes no CUDA stream, so the launch is fenced by explicit synchronisation: every
  device TF drives is synchronised first (TF's queued work made the inputs and may still read memory its
  allocator just handed out as outputs), and the kernels are waited for before TF sees the outputs. This path
  was written without a GPU at hand and has not run on one: the tests run its steps on the CPU, with CPU tensors
  standing in for GPU ones and Numba's CUDA simulator running the CUDA kernels on their memory.

Shapes: ``x``, ``h``: ``[T, B, H]`` (``[B, T, H]`` with ``batch_first=True``); ``u``, ``b``: ``[H]``; ``h0``,
``h_n``: ``[B, H]``; ``lengths``: ``[B]`` integers in ``[0, T]``.

Example::

    >>> import tensorflow as tf
    >>> from indrnn_core.adapters.tensorflow import indrnn_with_state
    >>> x, u = tf.random.normal((50, 4, 16)), tf.Variable(tf.random.uniform((16,)))
    >>> with tf.GradientTape() as tape:
    ...     h, h_n = indrnn_with_state(x, u, lengths=[50, 20, 7, 0])
    ...     loss = tf.reduce_sum(h_n)
    >>> tape.gradient(loss, u).shape
    TensorShape([16])
"""
from __future__ import annotations

import ctypes
import functools
import math

import numpy as np
import tensorflow as tf

import indrnn_core as _core
from indrnn_core import _validate
from indrnn_core._device_view import DeviceView, c_strides

try:  # how tf.function(jit_compile=True) marks the graph it traces: no public API tells
    from tensorflow.python.framework import ops as _tf_ops
    from tensorflow.python.ops import control_flow_util as _tf_control_flow_util
except ImportError:  # pragma: no cover - a TF without these modules: XLA is then caught when TF compiles
    _tf_ops = _tf_control_flow_util = None
try:  # whether any gradient tape is recording (no public API either)
    from tensorflow.python.eager.record import could_possibly_record as _tape_recording
except ImportError:  # pragma: no cover - then every backward is guarded (correct, one more wrapper per call)
    def _tape_recording():
        return True

__all__ = ["indrnn", "indrnn_with_state", "XlaUnsupportedError", "ALIGNMENT"]

ALIGNMENT = 64  # bytes: TF's CPU allocator alignment, which it checks on adopted buffers (and aborts on)
# The graph-mode callback, read when a tf.function is traced: "numpy_function" (CPU only; measured the cheaper:
# fwd+grad 9% less time at T=784, B=64, H=128 and 30% less at T=100 than "py_function", whose EagerPyFunc costs
# more per call), "py_function" (keeps GPU tensors on the GPU), or "auto": numpy_function where TF has no GPU,
# py_function where it has one. benchmarks/tf_bench.py times both.
GRAPH_CALLBACK = "auto"


class XlaUnsupportedError(ValueError):
    """Raised while tracing a function that XLA will compile (``jit_compile=True``): XLA cannot run the kernels."""

    # AutoGraph (tf.function's default) re-raises an error from user code as the same type only when that type's
    # __init__ is Exception's; otherwise it turns it into a StagingError nobody can catch by this name.
    __init__ = Exception.__init__


# ----------------------------------------------------------------------------------------------------------------
# 1. Memory: aligned host outputs, DLPack both ways, GPU buffers as DeviceViews
# ----------------------------------------------------------------------------------------------------------------
def _aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data start at a multiple of ``ALIGNMENT`` bytes: a view at an
    offset into a slightly larger byte block (``indrnn_core.host_cache`` serves the large ones, already faulted
    in), which it keeps alive. NumPy's own large allocations were 16 mod 64 here. TF adopts these without a copy,
    in eager code and as a graph callback's results."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = _core.host_cache.empty((nbytes + ALIGNMENT,), np.uint8)
    start = -raw.__array_interface__["data"][0] % ALIGNMENT
    return np.ndarray(shape, dtype, buffer=raw, offset=start)  # (a slice of raw would lose the offset at size 0)


def _to_tf(a: np.ndarray) -> tf.Tensor:
    """An aligned NumPy array as a TF tensor over the same memory (a seam: tests record what crosses here)."""
    return tf.experimental.dlpack.from_dlpack(a.__dlpack__())


def _host(t):
    """A CPU tensor as a read-only NumPy view of its memory (``Tensor.numpy()`` would copy)."""
    return None if t is None else np.from_dlpack(t)


def _host_lengths(lengths):
    """lengths on the host, whatever their device (the kernels take them there); None stays None."""
    return None if lengths is None else lengths.numpy()


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):  # dlpack.h; a DLManagedTensor starts with one
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_KDL_CPU, _KDL_CUDA = 1, 2
# Our own prototype of PyCapsule_GetPointer: setting restype on ctypes.pythonapi's would change it for everyone.
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))


def _dlpack_memory(t):
    """``(pointer, shape, DLPack device type, device id, capsule)`` of tensor ``t``, read from the DLPack capsule
    TF exports for it; the capsule (unconsumed) keeps ``t``'s buffer alive."""
    capsule = tf.experimental.dlpack.to_dlpack(t)
    dl = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    shape = tuple(dl.shape[i] for i in range(dl.ndim))
    if dl.strides:  # TF exports dense row-major tensors; anything else would be misread below
        itemsize = dl.dtype.bits // 8
        strides = tuple(dl.strides[i] * itemsize for i in range(dl.ndim))
        if any(n > 1 and s != c for n, s, c in zip(shape, strides, c_strides(shape, itemsize))):
            raise ValueError(f"TF exported a non-contiguous buffer (shape {shape}); expected a dense tensor")
    return (dl.data or 0) + dl.byte_offset, shape, dl.device.device_type, dl.device.device_id, capsule


def _gpu_view(t, name: str, readonly: bool):
    """GPU tensor ``t`` as the core's CUDA array (a seam: the simulator tests swap in host-backed arrays)."""
    ptr, shape, device_type, _, capsule = _dlpack_memory(t)
    if device_type != _KDL_CUDA:
        raise ValueError(f"{name} is on {t.device}, which TF does not export as CUDA memory (DLPack device type "
                         f"{device_type})")
    return DeviceView.contiguous(ptr, shape, _validate.dtype_of(t), (t, capsule), readonly=readonly)


# ----------------------------------------------------------------------------------------------------------------
# 2. Running the kernels on concrete tensors (eager code, and the bodies of the graph callbacks)
# ----------------------------------------------------------------------------------------------------------------
def _forward_arrays(x, u, b, h0, lengths, options):
    """NumPy in (read-only views are fine), aligned NumPy out: ``(h, h_n)``."""
    hn_shape = _validate.output_shapes(x.shape, options["batch_first"])[1]
    h, hn = _aligned_empty(x.shape, x.dtype), _aligned_empty(hn_shape, x.dtype)
    _core.forward(x, u, b, h0, lengths=lengths, out=h, final_state_out=hn, **options)
    return h, hn


def _backward_arrays(grad_h, h, u, h0, lengths, grad_hn, options):
    """NumPy in, aligned NumPy out: ``(gx, gu, gb, gh0)``. ``grad_h`` may be a ``[1, 1, H]`` row (see
    :func:`_zero_row`): broadcast without a copy, which the CPU kernels read as one row."""
    if grad_h.shape != h.shape:
        grad_h = np.broadcast_to(grad_h, h.shape)
    out = tuple(_aligned_empty(s, h.dtype) for s in _validate.gradient_shapes(h.shape, options["batch_first"]))
    _core.backward(grad_h, h, u, h0, lengths=lengths, grad_hn=grad_hn, out=out, **options)
    return out


_DEVICE_KINDS: dict = {}  # device string -> ("CPU" | "GPU" | ..., index)


def _device_kind(t):
    name = t.device
    kind = _DEVICE_KINDS.get(name)
    if kind is None:
        spec = tf.DeviceSpec.from_string(name)
        kind = _DEVICE_KINDS[name] = (spec.device_type or "CPU", spec.device_index or 0)
    return kind


def _forward_tensors(x, u, b, h0, lengths, options):
    """Concrete (eager) tensors in, ``(h, h_n)`` tensors out, on ``x``'s device."""
    if _device_kind(x)[0] == "GPU":
        return _forward_gpu(x, u, b, h0, lengths, options)
    h, hn = _forward_arrays(_host(x), _host(u), _host(b), _host(h0), _host_lengths(lengths), options)
    return _to_tf(h), _to_tf(hn)


def _backward_tensors(grad_h, h, u, h0, lengths, grad_hn, options):
    """Concrete tensors in, ``(gx, gu, gb, gh0)`` tensors out, on ``h``'s device."""
    if _device_kind(h)[0] == "GPU":
        return _backward_gpu(grad_h, h, u, h0, lengths, grad_hn, options)
    grads = _backward_arrays(_host(grad_h), _host(h), _host(u), _host(h0), _host_lengths(lengths),
                             _host(grad_hn), options)
    return tuple(_to_tf(g) for g in grads)


def _sync_tf() -> None:
    """Wait for all work TF has queued on its devices (TF offers no stream to order the kernels after it)."""
    tf.test.experimental.sync_devices()


def _gpu_empty(shape, like):
    """An uninitialised TF tensor on ``like``'s GPU (``Empty``: allocation without a fill kernel)."""
    with tf.device(like.device):
        return tf.raw_ops.Empty(shape=tf.constant(shape, tf.int32), dtype=like.dtype, init=False)


def _cuda_ordinal(t) -> int:
    """The CUDA device number of GPU tensor ``t``'s memory, as DLPack reports it (TF's own GPU index may differ,
    e.g. after ``tf.config.set_visible_devices``)."""
    return _dlpack_memory(t)[3]


def _launch_on_gpu(like, launch):
    """Run ``launch()`` (which queues CUDA kernels) on the GPU holding ``like`` between the two synchronisations:
    TF's devices first, our kernels after, so TF never reads an output before the kernels wrote it."""
    from numba import cuda  # pip install indrnn-core[cuda]

    _sync_tf()
    with cuda.gpus[_cuda_ordinal(like)]:
        launch()
        cuda.synchronize()


def _forward_gpu(x, u, b, h0, lengths, options):
    hn_shape = _validate.output_shapes(tuple(x.shape), options["batch_first"])[1]
    h, hn = _gpu_empty(tuple(x.shape), x), _gpu_empty(hn_shape, x)  # allocated before the sync (see above)
    views = [None if t is None else _gpu_view(t, n, True) for t, n in zip((x, u, b, h0), ("x", "u", "b", "h0"))]
    h_view, hn_view = _gpu_view(h, "h", False), _gpu_view(hn, "h_n", False)
    host_lengths = _host_lengths(lengths)
    _launch_on_gpu(x, lambda: _core.forward(
        *views, lengths=host_lengths, out=h_view, final_state_out=hn_view, **options))
    return h, hn


def _backward_gpu(grad_h, h, u, h0, lengths, grad_hn, options):
    if grad_h.shape != h.shape:  # a zero row (see _zero_row): the CUDA kernels read full arrays
        grad_h = tf.broadcast_to(grad_h, h.shape)
    shapes = _validate.gradient_shapes(tuple(h.shape), options["batch_first"])
    grads = [_gpu_empty(s, h) for s in shapes]
    workspace = _gpu_empty((2, *shapes[3]), h)  # the gu/gb partial sums, from TF's allocator too
    names = ("grad_h", "h", "u", "h0", "grad_hn")
    ins = [None if t is None else _gpu_view(t, n, True) for t, n in zip((grad_h, h, u, h0, grad_hn), names)]
    outs = tuple(_gpu_view(g, n, False) for g, n in zip(grads, ("gx", "gu", "gb", "gh0")))
    ws = _gpu_view(workspace, "workspace", False)
    host_lengths = _host_lengths(lengths)
    _launch_on_gpu(h, lambda: _core.backward(
        ins[0], ins[1], ins[2], ins[3], grad_hn=ins[4], lengths=host_lengths, out=outs, workspace=ws, **options))
    return tuple(grads)


# ----------------------------------------------------------------------------------------------------------------
# 3. The op: tf.custom_gradient, eager or through a graph callback
# ----------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _tf_has_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))  # fixed once TF has initialised its devices


def _graph_callback() -> str:
    if GRAPH_CALLBACK == "auto":
        return "py_function" if _tf_has_gpu() else "numpy_function"
    if GRAPH_CALLBACK not in ("py_function", "numpy_function"):
        raise ValueError(f"GRAPH_CALLBACK must be 'auto', 'py_function' or 'numpy_function', got {GRAPH_CALLBACK!r}")
    return GRAPH_CALLBACK


def _callback(fn_eager, fn_numpy, inputs, dtypes):
    """Call the kernels from a graph: ``tf.py_function`` (``fn_eager`` gets EagerTensors) or
    ``tf.numpy_function`` (``fn_numpy`` gets NumPy arrays, which arrive writable: never write them)."""
    if _graph_callback() == "numpy_function":
        outputs = tf.numpy_function(fn_numpy, inputs, Tout=dtypes, stateful=False)
    else:
        outputs = tf.py_function(fn_eager, inputs, Tout=dtypes)
    # The op's gradient is the custom one: TF must never differentiate the callback itself (py_function has a
    # gradient of its own, which a tape outside the tf.function would otherwise reach and fail in).
    return [tf.stop_gradient(t) for t in outputs]


def _first_derivatives_only(backward):
    """``backward`` as a ``tf.custom_gradient`` function whose own gradient raises."""
    @tf.custom_gradient
    def guarded(*tensors):
        def refuse(*_):
            raise NotImplementedError(
                "indrnn has first derivatives only, in reverse mode: its gradient (computed by the kernels) cannot "
                "be differentiated again (a GradientTape watching another tape's gradient of indrnn, or forward "
                "mode: tf.autodiff.ForwardAccumulator, which TF computes by differentiating the gradient)")
        return backward(*tensors), refuse
    return guarded


def _set_shapes(tensors, shapes):
    for t, s in zip(tensors, shapes):
        t.set_shape(s)


def _is_zero_fill(t) -> bool:
    """Whether graph tensor ``t`` comes from an op that fills zeros (``ZerosLike``, or ``Fill``/``Const`` of 0: what
    TF's gradient code makes for an output the loss does not use), judged from the graph without running it. False
    for eager tensors (their values exist already; reading them all to find out would cost a pass)."""
    try:
        op = t.op
    except AttributeError:  # an eager tensor (or not a tensor)
        return False
    if op.type == "ZerosLike":
        return True
    if op.type in ("Fill", "Const"):
        value = tf.get_static_value(op.inputs[1] if op.type == "Fill" else t)
        return value is not None and not np.any(value)
    return False


def _zero_row(h):
    """A ``[1, 1, H]`` row of zeros standing for an all-zero dL/dh: the CPU kernels read it at every step, which
    saves filling and reading a [T, B, H] array (26 MB at T=784, B=64, H=128 float32)."""
    row = tf.zeros(tf.stack([1, 1, tf.shape(h)[-1]]), h.dtype)
    row.set_shape([1, 1, h.shape[-1]])
    return row


@functools.lru_cache(maxsize=None)
def _op(has_b: bool, has_h0: bool, has_lengths: bool, activation: str, batch_first: bool, reverse: bool):
    """The ``tf.custom_gradient`` function for one combination of present inputs and options; it takes the
    present tensors in the order ``x, u, [b], [h0], [lengths]`` and returns ``(h, h_n)``."""
    options = {"activation": activation, "batch_first": batch_first, "reverse": reverse}

    def unpack(tensors):
        it = iter(tensors)
        x, u = next(it), next(it)
        b = next(it) if has_b else None
        h0 = next(it) if has_h0 else None
        lengths = next(it) if has_lengths else None
        return x, u, b, h0, lengths

    @tf.autograph.experimental.do_not_convert
    def forward_eager(*tensors):  # the py_function body
        x, u, b, h0, lengths = unpack(tensors)
        _validate.check_signature(x, u, b, h0, _host_lengths(lengths), **options)  # shapes unknown when traced
        return _forward_tensors(x, u, b, h0, lengths, options)

    @tf.autograph.experimental.do_not_convert
    def forward_numpy(*arrays):  # the numpy_function body
        x, u, b, h0, lengths = unpack(arrays)
        _validate.check_signature(x, u, b, h0, lengths, **options)
        return _forward_arrays(x, u, b, h0, lengths, options)

    @tf.custom_gradient
    def op(*tensors):
        x, u, b, h0, lengths = unpack(tensors)
        if tf.executing_eagerly():
            h, hn = _forward_tensors(x, u, b, h0, lengths, options)  # checked by indrnn_with_state already
        else:
            h, hn = _callback(forward_eager, forward_numpy, list(tensors), [x.dtype, x.dtype])
            if x.shape.rank is not None:
                _set_shapes((h, hn), _validate.output_shapes(tuple(x.shape), batch_first))

        def grad(grad_h, grad_hn):
            # An output nobody used gets None, or zeros that TF's gradient code fills in: the kernels take a
            # [1, 1, H] row of zeros for it instead (the zeros op, left without consumers, is pruned from a graph).
            if grad_h is None or _is_zero_fill(grad_h):
                grad_h = _zero_row(h)
            grad_h = tf.convert_to_tensor(grad_h)
            present = [t for t in (grad_h, h, u, h0, lengths, grad_hn) if t is not None]

            def parts(values):
                it = iter(values)
                g, hh, uu = next(it), next(it), next(it)
                hh0 = next(it) if has_h0 else None
                ll = next(it) if has_lengths else None
                ghn = next(it) if grad_hn is not None else None
                return g, hh, uu, hh0, ll, ghn

            @tf.autograph.experimental.do_not_convert
            def backward_eager(*tensors):
                g, hh, uu, hh0, ll, ghn = parts(tensors)
                return _backward_tensors(g, hh, uu, hh0, ll, ghn, options)

            @tf.autograph.experimental.do_not_convert
            def backward_numpy(*arrays):
                g, hh, uu, hh0, ll, ghn = parts(arrays)
                return _backward_arrays(g, hh, uu, hh0, ll, ghn, options)

            def run_backward(*tensors):
                if tf.executing_eagerly():
                    return _backward_tensors(*parts(tensors), options)
                grads = _callback(backward_eager, backward_numpy, list(tensors), [h.dtype] * 4)
                if h.shape.rank is not None:
                    _set_shapes(grads, _validate.gradient_shapes(tuple(h.shape), batch_first))
                return tuple(grads)

            # Another tape watching this gradient would get None for a second derivative (the kernels are no TF
            # ops): there, the backward refuses to be differentiated instead. Otherwise (the usual case) no wrapper.
            run = _first_derivatives_only(run_backward) if _tape_recording() else run_backward
            gx, gu, gb, gh0 = run(*present)
            return [gx, gu] + ([gb] if has_b else []) + ([gh0] if has_h0 else []) + ([None] if has_lengths else [])

        return (h, hn), grad

    return op


# ----------------------------------------------------------------------------------------------------------------
# 4. Public functions: checks with the core's messages at trace time, then the op
# ----------------------------------------------------------------------------------------------------------------
def _tensor(name: str, value, integer: bool = False):
    """``value`` as a dense tensor; ragged and sparse tensors get a TypeError saying what to pass instead."""
    if value is None:
        return None
    if isinstance(value, tf.RaggedTensor):
        hint = ("pad the batch (x.to_tensor()) and pass lengths=x.row_lengths()" if name == "x"
                else "pass a dense tensor")
        raise TypeError(f"{name} must be a dense tensor, got a tf.RaggedTensor: {hint}")
    if isinstance(value, tf.SparseTensor):
        raise TypeError(f"{name} must be a dense tensor, got a tf.SparseTensor: tf.sparse.to_dense() it first")
    if isinstance(value, (np.ndarray, list, tuple)) and integer:
        return value  # host lengths: checked (values too) before they become a tensor
    return tf.convert_to_tensor(value)


def _in_xla_context() -> bool:
    if tf.executing_eagerly() or _tf_control_flow_util is None:
        return False
    return _tf_control_flow_util.GraphOrParentsInXlaContext(_tf_ops.get_default_graph())


def _check_static(x, u, b, h0, lengths, options):
    """The core's checks on what is known now: everything in eager code and for fully known static shapes (the
    common case in a tf.function); with unknown dimensions, dtypes and ranks now and the rest when the graph runs
    (inside the callback: a ``tf.errors.InvalidArgumentError`` carrying the same message)."""
    symbolic_lengths = lengths is not None and isinstance(lengths, (tf.Tensor, tf.Variable))
    if symbolic_lengths and tf.executing_eagerly():
        lengths, symbolic_lengths = lengths.numpy(), False  # concrete: its values are checked now too
    known = [t for t in (x, u, b, h0) + ((lengths,) if symbolic_lengths else ()) if t is not None]
    if all(t.shape.is_fully_defined() for t in known):
        _validate.check_signature(x, u, b, h0, lengths, **options)
        return
    _validate.activation_code(options["activation"])
    _validate.check_dtype({"x": x, "u": u, "b": b, "h0": h0})
    if x.shape.rank is not None:
        _validate.sequence_shape("x", x, options["batch_first"])
    if lengths is not None:
        dt = _validate.dtype_of(lengths) if symbolic_lengths else np.asarray(lengths).dtype
        if dt.kind not in "iu":
            raise TypeError(f"lengths must have an integer dtype, got {dt}")


def _check_devices(named) -> None:
    """Eager tensors must share one device kind (TF copies between devices inside graphs by itself)."""
    kinds = {name: _device_kind(t) for name, t in named.items() if t is not None}
    if len(set(kinds.values())) > 1:
        where = ", ".join(f"{name} on {kind}:{index}" for name, (kind, index) in kinds.items())
        raise ValueError(f"all arrays must be on one device, got {where}")


# Not converted by AutoGraph (tf.function's source rewriter): nothing here needs it, and it would re-read this
# file's source at trace time.
@tf.autograph.experimental.do_not_convert
def indrnn_with_state(x, u, b=None, h0=None, *, activation: str = "relu", batch_first: bool = False, lengths=None,
                      reverse: bool = False):
    """IndRNN recurrence ``h_t = act(x_t + u * h_{t-1} + b)`` over already projected input, and its final state.

    Args:
        x: ``[T, B, H]`` (``[B, T, H]`` with ``batch_first``), float32 or float64: the input projection ``W x_t``.
        u: ``[H]`` recurrent weights. b: ``[H]`` bias or None. h0: ``[B, H]`` initial state or None (zeros).
            Tensors, ``tf.Variable``s or anything ``tf.convert_to_tensor`` takes, all of one dtype.
        activation: "relu", "tanh", "sigmoid" or "identity".
        lengths: ``[B]`` integers in ``[0, T]`` (a list, NumPy array or integer tensor) or None: sequence ``b``
            runs over its first ``lengths[b]`` steps; later outputs are 0 and get no gradient. Use it for ragged
            batches (``x.to_tensor()``, ``lengths=x.row_lengths()``).
        reverse: run each sequence from its last valid step down to step 0.

    Returns:
        ``(h, h_n)``: every step's output, shaped like ``x``, and the ``[B, H]`` final state (step
        ``lengths[b]-1``, step 0 when ``reverse``, ``h0`` for a sequence of length 0). Gradients flow to ``x``,
        ``u``, ``b`` and ``h0`` through both.

    Works in eager code and in ``tf.function`` (not with ``jit_compile=True``: :class:`XlaUnsupportedError`), on
    the CPU and on CUDA GPUs (with ``indrnn-core[cuda]``), and inside ``tf.distribute`` replicas. First
    derivatives only, in reverse mode: differentiating the gradient again, or forward mode
    (``tf.autodiff.ForwardAccumulator``), raises ``NotImplementedError``.

    Example::

        >>> h, h_n = indrnn_with_state(tf.ones((3, 1, 2)), tf.fill([2], 0.5))
        >>> h[:, 0, 0].numpy(), h_n.shape
        (array([1.  , 1.5 , 1.75], dtype=float32), TensorShape([1, 2]))
    """
    x = _tensor("x", x)
    u, b, h0 = _tensor("u", u), _tensor("b", b), _tensor("h0", h0)
    lengths = _tensor("lengths", lengths, integer=True)
    options = {"activation": activation, "batch_first": _validate.check_flag("batch_first", batch_first),
               "reverse": _validate.check_flag("reverse", reverse)}
    _validate.activation_code(activation)
    if _in_xla_context():
        raise XlaUnsupportedError(
            "indrnn cannot run under XLA (tf.function(jit_compile=True), or Keras' jit_compile): its kernels are "
            "Numba code that TensorFlow calls back into Python for (tf.numpy_function or tf.py_function), which "
            "XLA cannot compile. Pass "
            "jit_compile=False (tf.function's default; Keras: model.compile(..., jit_compile=False)), or compile "
            "only the code around this call with XLA.")
    _check_static(x, u, b, h0, lengths, options)
    if tf.executing_eagerly():
        _check_devices({"x": x, "u": u, "b": b, "h0": h0})
    if lengths is not None and not isinstance(lengths, (tf.Tensor, tf.Variable)):
        lengths = tf.constant(np.asarray(lengths))
    if tf.executing_eagerly() and not _tape_recording():  # inference: no tape to tell of a gradient
        return _forward_tensors(x, u, b, h0, lengths, options)
    op = _op(b is not None, h0 is not None, lengths is not None, activation, options["batch_first"],
             options["reverse"])
    return op(*[t for t in (x, u, b, h0, lengths) if t is not None])


@tf.autograph.experimental.do_not_convert
def indrnn(x, u, b=None, h0=None, *, activation: str = "relu", batch_first: bool = False, lengths=None,
           reverse: bool = False):
    """Like :func:`indrnn_with_state`, returning only ``h`` (shaped like ``x``).

    Example::

        >>> indrnn(tf.ones((3, 1, 2)), tf.fill([2], 0.5))[:, 0, 0].numpy()
        array([1.  , 1.5 , 1.75], dtype=float32)
    """
    return indrnn_with_state(x, u, b, h0, activation=activation, batch_first=batch_first, lengths=lengths,
                             reverse=reverse)[0]
