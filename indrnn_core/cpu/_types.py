"""One compiled type per kernel argument, whoever allocated the arrays.

Numba compiles a kernel once per argument *type*, and an array's type carries its layout (C-contiguous, Fortran or
any strides) and whether it is read-only (what JAX and TensorFlow hand over through DLPack). Passed as they came,
every mix of those across the five inputs and four outputs compiled the parallel kernels again (tens of seconds
each: most of the test suite's time), and a strided array ran a general specialisation (a zero-stride ``grad_h``
measured 2.5x slower than contiguous, 17 against 7 ms at T=784, B=64, H=128). So the launchers hand
the kernels one type per dtype: inputs as C-contiguous read-only arrays (a view when they are contiguous, else one
copy; the kernels never write their inputs), outputs C-contiguous (a contiguous stand-in, copied back after the
launch, for an ``out=`` buffer with other strides). The views cost ~2.4 us per launch (six inputs); passing
writable inputs as they are and read-only ones as read-only instead saved 1.3 us of that, and cost the test suite
6 more minutes of compiling (two types per dtype: 22 against 16 minutes on 2 cores).
"""

import numpy as np


def kernel_inputs(*arrays):
    """C-contiguous read-only versions of ``arrays`` (None stays None): a view of a contiguous array, else a copy.
    A row broadcast over time and batch should be reduced first (``recurrence.constant_row``), or it is copied
    out in full."""
    out = []
    for a in arrays:
        if a is not None:
            flags = a.flags
            if not flags.c_contiguous:
                a = np.ascontiguousarray(a)
                flags = a.flags
            if flags.writeable:
                a = a.view()
                a.setflags(write=False)
        out.append(a)
    return tuple(out)


def kernel_outputs(*arrays):
    """``arrays`` as the kernels write them (None stays None): each C-contiguous array itself, a fresh contiguous
    array of the same shape and dtype for any other; ``copy_back`` then fills the caller's arrays."""
    for a in arrays:
        if a is not None and not a.flags.c_contiguous:
            break
    else:
        return arrays  # the common case
    return tuple(a if a is None or a.flags.c_contiguous else np.empty(a.shape, a.dtype) for a in arrays)


def copy_back(outputs, written) -> None:
    """Copy each stand-in from ``kernel_outputs`` into the caller's array it stood in for."""
    for a, w in zip(outputs, written):
        if w is not a:
            a[...] = w


def launch_forward(run, x, u, b, h0, lengths, reverse, act, batch_first, out, final):
    """Call ``run`` (a launcher's ``_forward_into``, same arguments) with absent ``b``/``h0`` as zeros, the inputs
    from ``kernel_inputs`` and the outputs from ``kernel_outputs``; then copy strided outputs back."""
    B, H = lengths.shape[0], u.shape[0]
    if b is None:
        b = np.zeros(H, dtype=u.dtype)
    if h0 is None:
        h0 = np.zeros((B, H), dtype=u.dtype)
    x, u, b, h0, lengths = kernel_inputs(x, u, b, h0, lengths)
    written = kernel_outputs(out, final)
    run(x, u, b, h0, lengths, reverse, act, batch_first, *written)
    copy_back((out, final), written)


def launch_backward(run, grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, gx, gu, gb, gh0):
    """``launch_forward`` for a launcher's ``_backward_into``: absent ``h0``/``grad_hn`` as zeros."""
    B, H = lengths.shape[0], u.shape[0]
    if h0 is None:
        h0 = np.zeros((B, H), dtype=u.dtype)
    if grad_hn is None:
        grad_hn = np.zeros((B, H), dtype=u.dtype)
    grad_h, h, u, h0, lengths, grad_hn = kernel_inputs(grad_h, h, u, h0, lengths, grad_hn)
    written = kernel_outputs(gx, gu, gb, gh0)
    run(grad_h, h, u, h0, lengths, reverse, act, batch_first, grad_hn, *written)
    copy_back((gx, gu, gb, gh0), written)
