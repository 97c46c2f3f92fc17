"""XLA typed-FFI handlers for the CPU kernels, compiled by Numba (``numba.cfunc``): no C compiler, no host
callback, no Python on the call path.

XLA calls a handler as ``XLA_FFI_Error* handler(XLA_FFI_CallFrame*)`` from its own threads. A handler here reads
the call frame (layout of ``xla/ffi/api/c_api.h``, API major version 0, shipped under ``jax.ffi.include_dir()``),
checks the stage, the number, ranks, dtypes and sizes of its buffers and its attributes, checks ``lengths``
values (they may be traced, so Python never saw them), then calls the compiled kernel entry points
``indrnn_core.cpu.recurrence.run_forward``/``run_backward`` on the buffers in place. Any failure returns an error
made by the API's ``XLA_FFI_Error_Create`` (JAX raises it); a handler never raises and never reads past a buffer.

Version handshake: when XLA registers a handler it calls it with a metadata extension, and the handler writes the
API version it was built for. The version is read from the shipped header when the handler is compiled; a major
version other than 0 (whose struct layouts this file encodes) is refused by :func:`available`, and the adapter
falls back to ``jax.pure_callback``.

Compiling a handler costs 10-30 s (it inlines the kernels), so each (op, dtype) is compiled and registered once,
on first use, and cached on disk by Numba (later processes load it in well under a second). The ``threads``
attribute (how many threads split the batch) is decided while tracing, where the shapes are known: compiled code
that asks Numba's thread pool for its size could not be cached.
"""

from __future__ import annotations

import os
import re
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from indrnn_core.cpu import recurrence as _cpu

KNOWN_MAJOR = 0  # the struct layouts below are those of XLA FFI API 0.x
_STAGE_EXECUTE = 3
_EXT_METADATA = 1
_ATTR_SCALAR = 3
_DT_PRED, _DT_S32, _DT_S64, _DT_F32, _DT_F64 = 1, 4, 5, 11, 12
_ERR_INVALID_ARGUMENT, _ERR_INTERNAL = 3, 13

# Byte offsets in the call frame (64-bit): struct_size 0, extension_start 8, api 16, ctx 24, stage 32,
# args {struct_size 40, ext 48, size 56, types 64, args 72}, rets {.. size 96, types 104, rets 112},
# attrs {.. size 136, types 144, names 152, attrs 160}.
_CALL_FRAME_SIZE = 168
_BUFFER_DTYPE, _BUFFER_DATA, _BUFFER_RANK, _BUFFER_DIMS = 16, 24, 32, 40  # in XLA_FFI_Buffer
_API_ERROR_CREATE = 48  # XLA_FFI_Api: struct_size, ext, api_version (24 bytes), internal_api, Error_Create, ...


def header_version():
    """(major, minor) of the FFI API in the header shipped with the installed jaxlib, or None if unreadable."""
    try:
        import jax.ffi

        with open(os.path.join(jax.ffi.include_dir(), "xla", "ffi", "api", "c_api.h")) as f:
            text = f.read()
    except (OSError, ImportError, AttributeError):
        return None
    major = re.search(r"#define\s+XLA_FFI_API_MAJOR\s+(\d+)", text)
    minor = re.search(r"#define\s+XLA_FFI_API_MINOR\s+(\d+)", text)
    return (int(major.group(1)), int(minor.group(1))) if major and minor else None


def available():
    """``(True, "")`` when the handlers can serve this jaxlib, else ``(False, why)``."""
    version = header_version()
    if version is None:
        return False, "the installed jaxlib ships no readable xla/ffi/api/c_api.h"
    if version[0] != KNOWN_MAJOR:
        return False, (f"the installed jaxlib's XLA FFI API is {version[0]}.{version[1]}; these handlers know "
                       f"major version {KNOWN_MAJOR} only")
    return True, ""


# ---- raw memory access from compiled code ---------------------------------------------------------------------
@intrinsic
def _address(typingctx, ptr):
    """A voidptr as an int64 address."""
    def codegen(context, builder, sig, args):
        return builder.ptrtoint(args[0], ir.IntType(64))
    return types.int64(types.voidptr), codegen


def _loader(nbtype, bits):
    @intrinsic
    def load(typingctx, addr):
        def codegen(context, builder, sig, args):
            ptr = builder.inttoptr(args[0], ir.IntType(bits).as_pointer())
            return builder.load(ptr)
        return nbtype(types.int64), codegen
    return load


def _storer(nbtype, bits):
    @intrinsic
    def store(typingctx, addr, value):
        def codegen(context, builder, sig, args):
            ptr = builder.inttoptr(args[0], ir.IntType(bits).as_pointer())
            builder.store(context.cast(builder, args[1], sig.args[1], nbtype), ptr)
            return context.get_dummy_value()
        return types.void(types.int64, value), codegen
    return store


_load_i64, _load_i32, _load_u8 = _loader(types.int64, 64), _loader(types.int32, 32), _loader(types.uint8, 8)
_store_i64, _store_i32 = _storer(types.int64, 64), _storer(types.int32, 32)


@intrinsic
def _call_pointer(typingctx, fn, arg):
    """Call the C function at address ``fn`` as ``void* fn(void*)`` with the address ``arg``; its result as int64."""
    def codegen(context, builder, sig, args):
        vp = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(vp, [vp])
        callee = builder.inttoptr(args[0], fnty.as_pointer())
        result = builder.call(callee, [builder.inttoptr(args[1], vp)])
        return builder.ptrtoint(result, ir.IntType(64))
    return types.int64(types.int64, types.int64), codegen


def _pointer_to(nbtype):
    @intrinsic
    def as_pointer(typingctx, addr):
        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(nbtype)))
        return types.CPointer(nbtype)(types.int64), codegen
    return as_pointer


_as_f32, _as_f64 = _pointer_to(types.float32), _pointer_to(types.float64)
_as_i32, _as_i64 = _pointer_to(types.int32), _pointer_to(types.int64)


def _message(text):
    return np.frombuffer(text.encode() + b"\0", dtype=np.uint8)


# Messages as NUL-terminated constants (XLA copies them into its own status).
_MSG_STAGE = _message("indrnn_core FFI handler: called at an unexpected execution stage")
_MSG_FRAME = _message("indrnn_core FFI handler: the XLA call frame is smaller than FFI API 0.x defines")
_MSG_ARITY = _message("indrnn_core FFI handler: wrong number of operands, results or attributes")
_MSG_RANK = _message("indrnn_core FFI handler: an operand or result has the wrong rank or shape "
                     "(x, h and grad_h must be 3-D, u and b [H], h0 and grad_hn [B, H], lengths [B])")
_MSG_DTYPE = _message("indrnn_core FFI handler: an operand or result has the wrong dtype")
_MSG_ATTR = _message("indrnn_core FFI handler: unexpected attributes "
                     "(activation, batch_first, [groups,] reverse, threads)")
_MSG_LENGTHS = _message("indrnn_core: lengths must lie in [0, T] (one integer per sequence)")
_MSG_GROUPS = _message("indrnn_core FFI handler: groups must divide the batch")


_VERSION = header_version() or (KNOWN_MAJOR, 0)
_MAJOR, _MINOR = _VERSION
njit = numba.njit(inline="always")


@njit
def error(frame, message, code):
    api = _load_i64(frame + 16)
    args = np.zeros(4, np.int64)  # XLA_FFI_Error_Create_Args: struct_size, extension_start, message, errc
    args[0] = 28
    args[2] = message.ctypes.data
    args[3] = code
    return _call_pointer(_load_i64(api + _API_ERROR_CREATE), args.ctypes.data)


@njit
def metadata(frame):
    """0 (no error) after answering XLA's registration-time request for the API version, else -1."""
    ext = _load_i64(frame + 8)
    if ext == 0 or _load_i32(ext + 8) != _EXT_METADATA:
        return -1
    md = _load_i64(ext + 24)
    _store_i64(md + 8, 24)  # api_version.struct_size
    _store_i64(md + 16, 0)  # api_version.extension_start
    _store_i32(md + 24, _MAJOR)
    _store_i32(md + 28, _MINOR)
    _store_i32(md + 32, 0)  # traits
    return 0


@njit
def buffer(frame, base, i):
    """The i-th buffer of the args (base 72) or rets (base 112) array."""
    return _load_i64(_load_i64(frame + base) + 8 * i)


@njit
def rank(buf):
    return _load_i64(buf + _BUFFER_RANK)


@njit
def dim(buf, d):
    return _load_i64(_load_i64(buf + _BUFFER_DIMS) + 8 * d)


@njit
def is_float(buf, dt_code):
    return _load_i32(buf + _BUFFER_DTYPE) == dt_code


@njit
def data(buf):
    return _load_i64(buf + _BUFFER_DATA)


@njit
def attr_scalar(frame, i, name_first, name_len, want_dtype):
    """The i-th attribute's scalar value (names sorted), or -1 when its name or type is not the expected."""
    name = _load_i64(_load_i64(frame + 152) + 8 * i)
    if _load_i64(name + 8) != name_len or _load_u8(_load_i64(name)) != name_first:
        return -1
    if _load_i32(_load_i64(frame + 144) + 4 * i) != _ATTR_SCALAR:
        return -1
    scalar = _load_i64(_load_i64(frame + 160) + 8 * i)
    if _load_i32(scalar) != want_dtype:
        return -1
    value = _load_i64(scalar + 8)
    return np.int64(_load_u8(value)) if want_dtype == _DT_PRED else np.int64(_load_i32(value))


@njit
def read_lengths(buf, B, T):
    """lengths as int64 [B], or an empty array when a value lies outside [0, T]."""
    out = np.empty(B, np.int64)
    kind = _load_i32(buf + _BUFFER_DTYPE)
    if kind == _DT_S32:
        src32 = numba.carray(_as_i32(data(buf)), (B,))
        for n in range(B):
            out[n] = src32[n]
    else:
        src64 = numba.carray(_as_i64(data(buf)), (B,))
        for n in range(B):
            out[n] = src64[n]
    for n in range(B):
        if out[n] < 0 or out[n] > T:
            return np.empty(0, np.int64)
    return out


@njit
def check_frame(frame, n_args, n_rets, n_attrs):
    """0, or the error to return."""
    if _load_i64(frame) < _CALL_FRAME_SIZE:
        return error(frame, _MSG_FRAME, _ERR_INTERNAL)
    if _load_i32(frame + 32) != _STAGE_EXECUTE:
        return error(frame, _MSG_STAGE, _ERR_INTERNAL)
    if _load_i64(frame + 56) != n_args or _load_i64(frame + 96) != n_rets or _load_i64(frame + 136) != n_attrs:
        return error(frame, _MSG_ARITY, _ERR_INVALID_ARGUMENT)
    return 0


@njit
def sequence_dims(buf, batch_first):
    """(T, B, H) of a 3-D buffer."""
    if batch_first:
        return dim(buf, 1), dim(buf, 0), dim(buf, 2)
    return dim(buf, 0), dim(buf, 1), dim(buf, 2)


@njit
def vector_ok(buf, n, dt_code):
    return rank(buf) == 1 and dim(buf, 0) == n and is_float(buf, dt_code)


@njit
def state_ok(buf, B, H, dt_code):
    return rank(buf) == 2 and dim(buf, 0) == B and dim(buf, 1) == H and is_float(buf, dt_code)


@njit
def same_3d(a, b):
    return rank(b) == 3 and dim(a, 0) == dim(b, 0) and dim(a, 1) == dim(b, 1) and dim(a, 2) == dim(b, 2)


@njit
def constant_row_ok(buf, H):
    """A [1, 1, H] buffer: grad_h standing for the same dL/dh at every step (the kernels read it so)."""
    return rank(buf) == 3 and dim(buf, 0) == 1 and dim(buf, 1) == 1 and dim(buf, 2) == H


@njit
def lengths_ok(buf, B):
    kind = _load_i32(buf + _BUFFER_DTYPE)
    return rank(buf) == 1 and dim(buf, 0) == B and (kind == _DT_S32 or kind == _DT_S64)



@njit
def _forward_body(frame, as_data, dt_code):
    """operands x, u, b, h0, lengths; results h, h_n; attributes activation, batch_first, reverse, threads."""
    if metadata(frame) == 0:
        return 0
    err = check_frame(frame, 5, 2, 4)
    if err != 0:
        return err
    act = attr_scalar(frame, 0, 97, 10, _DT_S32)  # "activation"
    batch_first = attr_scalar(frame, 1, 98, 11, _DT_PRED)  # "batch_first"
    reverse = attr_scalar(frame, 2, 114, 7, _DT_PRED)  # "reverse"
    threads = attr_scalar(frame, 3, 116, 7, _DT_S32)  # "threads"
    if act < 0 or act > 3 or batch_first < 0 or reverse < 0 or threads < 1:
        return error(frame, _MSG_ATTR, _ERR_INVALID_ARGUMENT)
    x, u, b, h0, lengths = (buffer(frame, 72, 0), buffer(frame, 72, 1), buffer(frame, 72, 2),
                            buffer(frame, 72, 3), buffer(frame, 72, 4))
    h, hn = buffer(frame, 112, 0), buffer(frame, 112, 1)
    if rank(x) != 3:
        return error(frame, _MSG_RANK, _ERR_INVALID_ARGUMENT)
    T, B, H = sequence_dims(x, batch_first != 0)
    if not (is_float(x, dt_code) and is_float(h, dt_code)):
        return error(frame, _MSG_DTYPE, _ERR_INVALID_ARGUMENT)
    if not (vector_ok(u, H, dt_code) and vector_ok(b, H, dt_code) and state_ok(h0, B, H, dt_code)
            and state_ok(hn, B, H, dt_code) and same_3d(x, h) and lengths_ok(lengths, B)):
        return error(frame, _MSG_RANK, _ERR_INVALID_ARGUMENT)
    lens = read_lengths(lengths, B, T)
    if lens.shape[0] != B:
        return error(frame, _MSG_LENGTHS, _ERR_INVALID_ARGUMENT)
    shape = (dim(x, 0), dim(x, 1), dim(x, 2))
    out_hn = numba.carray(as_data(data(hn)), (B, H))
    h0_arr = numba.carray(as_data(data(h0)), (B, H))
    if T == 0:  # no step: the final state is h0
        out_hn[:, :] = h0_arr
        return 0
    _cpu.run_forward(numba.carray(as_data(data(x)), shape), numba.carray(as_data(data(u)), (H,)),
                     numba.carray(as_data(data(b)), (H,)), h0_arr, lens, reverse != 0, act, batch_first != 0,
                     numba.carray(as_data(data(h)), shape), out_hn, True, min(threads, max(B, 1)))
    return 0


@njit
def _backward_body(frame, as_data, dt_code, dtype):
    """operands grad_h, h, u, h0, lengths, grad_hn; results gx, gu [G, H], gb [G, H], gh0; attributes activation,
    batch_first, groups, reverse, threads. Sequences g*B/G .. (g+1)*B/G-1 form group g, whose gu/gb rows sum them
    alone (vmap folds its axis into the batch and needs one sum per vmapped slice). grad_h is h's shape or a
    [1, 1, H] row (the adapter's stand-in for a symbolic zero: the same dL/dh at every step)."""
    if metadata(frame) == 0:
        return 0
    err = check_frame(frame, 6, 4, 5)
    if err != 0:
        return err
    act = attr_scalar(frame, 0, 97, 10, _DT_S32)  # "activation"
    batch_first = attr_scalar(frame, 1, 98, 11, _DT_PRED)  # "batch_first"
    groups = attr_scalar(frame, 2, 103, 6, _DT_S32)  # "groups"
    reverse = attr_scalar(frame, 3, 114, 7, _DT_PRED)  # "reverse"
    threads = attr_scalar(frame, 4, 116, 7, _DT_S32)  # "threads"
    if act < 0 or act > 3 or batch_first < 0 or reverse < 0 or groups < 1 or threads < 1:
        return error(frame, _MSG_ATTR, _ERR_INVALID_ARGUMENT)
    grad_h, h, u, h0, lengths, grad_hn = (buffer(frame, 72, 0), buffer(frame, 72, 1), buffer(frame, 72, 2),
                                          buffer(frame, 72, 3), buffer(frame, 72, 4), buffer(frame, 72, 5))
    gx, gu, gb, gh0 = buffer(frame, 112, 0), buffer(frame, 112, 1), buffer(frame, 112, 2), buffer(frame, 112, 3)
    if rank(h) != 3:
        return error(frame, _MSG_RANK, _ERR_INVALID_ARGUMENT)
    T, B, H = sequence_dims(h, batch_first != 0)
    if not (is_float(grad_h, dt_code) and is_float(h, dt_code) and is_float(gx, dt_code)):
        return error(frame, _MSG_DTYPE, _ERR_INVALID_ARGUMENT)
    if B % groups != 0:
        return error(frame, _MSG_GROUPS, _ERR_INVALID_ARGUMENT)
    if not ((same_3d(h, grad_h) or constant_row_ok(grad_h, H)) and same_3d(h, gx) and vector_ok(u, H, dt_code)
            and state_ok(h0, B, H, dt_code) and state_ok(grad_hn, B, H, dt_code) and state_ok(gh0, B, H, dt_code)
            and state_ok(gu, groups, H, dt_code) and state_ok(gb, groups, H, dt_code) and lengths_ok(lengths, B)):
        return error(frame, _MSG_RANK, _ERR_INVALID_ARGUMENT)
    lens = read_lengths(lengths, B, T)
    if lens.shape[0] != B:
        return error(frame, _MSG_LENGTHS, _ERR_INVALID_ARGUMENT)
    shape = (dim(h, 0), dim(h, 1), dim(h, 2))
    grad_shape = (dim(grad_h, 0), dim(grad_h, 1), dim(grad_h, 2))
    grad_h_arr, h_arr = numba.carray(as_data(data(grad_h)), grad_shape), numba.carray(as_data(data(h)), shape)
    gx_arr = numba.carray(as_data(data(gx)), shape)
    u_arr = numba.carray(as_data(data(u)), (H,))
    h0_arr, grad_hn_arr = numba.carray(as_data(data(h0)), (B, H)), numba.carray(as_data(data(grad_hn)), (B, H))
    gu_arr, gb_arr = numba.carray(as_data(data(gu)), (groups, H)), numba.carray(as_data(data(gb)), (groups, H))
    gh0_arr = numba.carray(as_data(data(gh0)), (B, H))
    # One kernel pass over the whole batch into per-sequence float64 partials, then each group's rows summed in a
    # fixed order, as run_backward sums them (groups=1 gives its exact result).
    gu_part, gb_part = np.empty((B, H), np.float64), np.empty((B, H), np.float64)
    block_part = np.empty((2, B, H), dtype)
    threads = min(threads, max(B, 1))
    if threads == 1:
        _cpu._backward_serial(grad_h_arr, h_arr, u_arr, h0_arr, lens, reverse != 0, act, batch_first != 0,
                              grad_hn_arr, gx_arr, gu_part, gb_part, gh0_arr, block_part)
    else:
        _cpu._backward_parallel(grad_h_arr, h_arr, u_arr, h0_arr, lens, reverse != 0, act, batch_first != 0,
                                grad_hn_arr, gx_arr, gu_part, gb_part, gh0_arr, block_part, threads)
    per = B // groups
    for g in range(groups):
        _cpu._sum_rows(gu_part[g * per:(g + 1) * per], gb_part[g * per:(g + 1) * per], gu_arr[g], gb_arr[g])
    return 0


# The handlers, one per (op, dtype): module-level functions, so Numba can cache each compiled cfunc on disk
# (compiling one takes 10-30 s; loading it from the cache well under one).
def _forward_float32(frame_ptr):
    return _forward_body(_address(frame_ptr), _as_f32, _DT_F32)


def _forward_float64(frame_ptr):
    return _forward_body(_address(frame_ptr), _as_f64, _DT_F64)


def _backward_float32(frame_ptr):
    return _backward_body(_address(frame_ptr), _as_f32, _DT_F32, np.float32)


def _backward_float64(frame_ptr):
    return _backward_body(_address(frame_ptr), _as_f64, _DT_F64, np.float64)


_HANDLERS = {("forward", "float32"): _forward_float32, ("forward", "float64"): _forward_float64,
             ("backward", "float32"): _backward_float32, ("backward", "float64"): _backward_float64}


def threads_for(size, batch):
    """The ``threads`` attribute of a call over ``batch`` sequences of ``size`` elements in all: the CPU module's
    rule (serial below ``PARALLEL_MIN_ELEMENTS``), decided while tracing, where the shapes are known. Numba's
    workqueue threading layer must not be entered from several threads at once (XLA calls handlers from its own),
    so without omp or tbb the handlers run serially."""
    if size < _cpu.PARALLEL_MIN_ELEMENTS or not _threads_safe():
        return 1
    return max(1, min(batch, numba.get_num_threads()))


_THREADS_SAFE = []


def _threads_safe():
    if not _THREADS_SAFE:
        _THREADS_SAFE.append(_threading_layer_is_safe())
    return _THREADS_SAFE[0]


def _threading_layer_is_safe():
    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:  # no parallel region has run yet: run a tiny one to find out which layer loads
        _touch_threads(np.zeros(2))
        return numba.threading_layer() in ("omp", "tbb")


@numba.njit(parallel=True)
def _touch_threads(a):
    for i in numba.prange(a.shape[0]):
        a[i] += 1


def _kernel_sources_digest() -> str:
    """A digest of the kernel sources a handler inlines (the CPU recurrence and the activations)."""
    import hashlib

    from indrnn_core import _activations

    digest = hashlib.sha256()
    for module in (_cpu, _activations):
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _drop_stale_cache(handler) -> None:
    """Numba keys a function's disk cache on its own source file only, but a handler inlines the kernels of
    ``indrnn_core.cpu.recurrence``: after those change (a ``git pull`` into an editable install), the cached handler
    would keep running the old kernels. A digest of their sources, kept beside the cache index, drops the index
    (Numba then recompiles) when they differ. Uses Numba's cache locator (not public API): if it moved, nothing is
    dropped, as plain Numba caching would do."""
    try:
        from numba.core.caching import FunctionCache

        cache = FunctionCache(handler)
        index = os.path.join(cache._cache_path, cache._cache_file._index_name)
        stamp, digest = index + ".kernels", _kernel_sources_digest()
        try:
            with open(stamp) as f:
                fresh = f.read() == digest
        except OSError:
            fresh = False
        if not fresh:
            if os.path.exists(index):
                os.remove(index)
            with open(stamp, "w") as f:
                f.write(digest)
    except Exception:  # (an unwritable or relocated cache: Numba's own rules apply)
        pass


_LOCK = threading.Lock()
_REGISTERED: dict = {}  # (op, dtype name) -> (target name, cfunc): the cfunc must outlive every call


def target(op, dtype):
    """The registered FFI target name for ``op`` and ``dtype`` (compiled and registered on first use)."""
    key = (op, np.dtype(dtype).name)
    entry = _REGISTERED.get(key)
    if entry is None:
        with _LOCK:
            entry = _REGISTERED.get(key)
            if entry is None:
                import jax.ffi

                # A cached handler calls the parallel kernels without passing through a Numba dispatcher, which is
                # what starts Numba's thread pool: start it here (calling into a pool never started crashes).
                _threads_safe()
                _drop_stale_cache(_HANDLERS[key])
                handler = numba.cfunc(types.voidptr(types.voidptr), cache=True)(_HANDLERS[key])
                name = f"indrnn_core_{op}_{key[1]}"
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler.address), platform="cpu")
                entry = _REGISTERED[key] = (name, handler)
    return entry[0]
