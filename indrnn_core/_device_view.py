"""The one holder of a CUDA array the core and every adapter use: pointer, shape, byte strides, dtype, read-only
flag and the owning object. Plain Python (importing it imports no ``numba.cuda``), so an adapter can describe a
framework's GPU buffer without paying for the framework's own ``__cuda_array_interface__`` property, and the CUDA
launchers (``indrnn_core.cuda._launch``) read these fields directly."""

import numpy as np

__all__ = ["DeviceView", "bfloat16", "c_strides", "is_bfloat16"]


class DeviceView:
    """One CUDA array as the launchers take it: ``ptr`` (int), ``shape``/``strides`` (tuples; strides in bytes),
    ``dtype`` (NumPy), ``readonly``, and ``owner`` (the object it came from, kept alive while the view is used).
    It exposes ``__cuda_array_interface__`` itself, so it is a CUDA array wherever one is accepted."""

    __slots__ = ("ptr", "shape", "strides", "dtype", "readonly", "owner")

    def __init__(self, ptr, shape, strides, dtype, readonly, owner):
        self.ptr, self.shape, self.strides, self.dtype, self.readonly, self.owner = (
            ptr, shape, strides, dtype, readonly, owner)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "strides": self.strides, "typestr": self.dtype.str,
                "data": (self.ptr, self.readonly), "version": 3}

    def __repr__(self):
        return f"DeviceView(shape={self.shape}, dtype={self.dtype}, ptr={self.ptr:#x})"

    @classmethod
    def contiguous(cls, ptr, shape, dtype, owner, readonly=False):
        """A view of a C-contiguous buffer at ``ptr`` (e.g. an XLA or TF device buffer)."""
        dtype = np.dtype(dtype)
        return cls(ptr, tuple(shape), c_strides(shape, dtype.itemsize), dtype, readonly, owner)


def c_strides(shape, itemsize):
    """Byte strides of a C-contiguous array of ``shape``."""
    strides, step = [], itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(strides[::-1])


_BFLOAT16 = []  # the dtype, found once


def bfloat16():
    """The NumPy dtype that tags bfloat16 data. NumPy has none: ml_dtypes' ``bfloat16`` (the one JAX and TensorFlow
    use) when it is installed, else a 2-byte structured dtype of our own. Only the tag matters: the CUDA kernels
    read and write bfloat16 as its uint16 bit pattern (``indrnn_core.cuda.recurrence`` says why)."""
    if not _BFLOAT16:
        try:
            import ml_dtypes

            _BFLOAT16.append(np.dtype(ml_dtypes.bfloat16))
        except ImportError:
            _BFLOAT16.append(np.dtype([("bfloat16", "<u2")]))
    return _BFLOAT16[0]


def is_bfloat16(dtype):
    """Whether NumPy ``dtype`` is bfloat16 (ml_dtypes' or the tag of :func:`bfloat16`), without importing anything."""
    return dtype.itemsize == 2 and (dtype.name == "bfloat16" or dtype.names == ("bfloat16",))
