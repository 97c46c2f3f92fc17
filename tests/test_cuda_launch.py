"""How the CUDA launchers read arrays (``indrnn_core.cuda._launch``), checked without a GPU.

On a real GPU every CUDA array is read once into a ``DeviceView`` (pointer, shape, byte strides, dtype, read-only
flag) from its ``__cuda_array_interface__``, and the kernels are launched from those fields. The views are built
from plain host objects exposing the interface here (nothing is dereferenced); the launches themselves run in
``test_kernels.py`` and the torch tests on a real GPU, against the float64 reference.
"""

import numpy as np
import pytest

from indrnn_core.cuda import _launch


class Interface:
    """A host object exposing the CUDA array interface of a NumPy array (only read, never dereferenced)."""

    def __init__(self, a, *, readonly=False, strides="numpy", mask=None):
        self.a = a
        self.__cuda_array_interface__ = {
            "shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, readonly), "version": 3,
            "strides": a.strides if strides == "numpy" else strides, "mask": mask}


@pytest.fixture
def real_gpu_views(monkeypatch):
    monkeypatch.setattr(_launch, "SIMULATOR", False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_view_reads_pointer_shape_strides_dtype(real_gpu_views, dtype):
    base = np.zeros((5, 4, 6), dtype)
    for a in (base, base[1:, ::2, 3:], base.transpose(2, 0, 1), base[:0]):
        v = _launch.view(Interface(a))
        assert (v.ptr, v.shape, v.strides, v.dtype, v.readonly) == (a.ctypes.data, a.shape, a.strides, a.dtype, False)
        assert v.ndim == a.ndim and v.size == a.size
        assert _launch.view(v) is v


def test_view_of_c_contiguous_interface_without_strides(real_gpu_views):
    """The interface may leave strides out for C-contiguous data: they are computed, in bytes."""
    a = np.zeros((3, 4, 5), np.float32)
    assert _launch.view(Interface(a, strides=None)).strides == a.strides == (80, 20, 4)


def test_view_keeps_read_only_flag_and_owner(real_gpu_views):
    obj = Interface(np.zeros(3))
    assert _launch.view(obj).owner is obj
    assert _launch.view(Interface(np.zeros(3), readonly=True)).readonly


def test_view_rejects_masked_arrays(real_gpu_views):
    with pytest.raises(ValueError, match="x must not be a masked CUDA array"):
        _launch.view(Interface(np.zeros(3), mask=(0, False)), "x")


def test_view_round_trips_its_own_interface(real_gpu_views):
    v = _launch.view(Interface(np.zeros((2, 3), np.float64)[:, ::2], readonly=True))
    w = _launch.view(type("Obj", (), {"__cuda_array_interface__": v.__cuda_array_interface__})())
    assert (w.ptr, w.shape, w.strides, w.dtype, w.readonly) == (v.ptr, v.shape, v.strides, v.dtype, v.readonly)


def test_signature_types_every_array_as_strided(real_gpu_views):
    from numba import types

    x = _launch.view(Interface(np.zeros((2, 3, 4), np.float32)))
    lengths = _launch.view(Interface(np.zeros(3, np.int64)))
    assert _launch._signature((x, lengths, True, 2)) == (
        types.Array(types.float32, 3, "A"), types.Array(types.int64, 1, "A"), types.boolean, types.int64)
    with pytest.raises(TypeError, match="float"):
        _launch._signature((1.5,))


GPU = pytest.mark.skipif(_launch.SIMULATOR, reason="needs a real CUDA GPU (the simulator launches through Numba)")


@GPU
def test_real_gpu_launches_take_the_direct_path():
    """On a GPU the kernels are launched from cached compiled kernels, not Numba's per-call dispatcher, and a
    Numba array, a foreign CUDA array (read through its interface) and a strided view all give the reference."""
    from numba import cuda

    import indrnn_core
    from indrnn_core.reference import forward as reference

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 5))
    u = rng.uniform(-1, 1, 5)
    expected = reference(x, u)
    d_x, d_u = cuda.to_device(x), cuda.to_device(u)
    foreign = type("Foreign", (), {"__cuda_array_interface__": property(lambda self: d_x.__cuda_array_interface__)})
    wide = cuda.to_device(np.repeat(x, 2, axis=2))  # x at odd columns: a strided view
    for x_arg in (d_x, foreign(), wide[:, :, 1::2]):
        np.testing.assert_allclose(indrnn_core.forward(x_arg, d_u).copy_to_host(), expected, rtol=1e-12)
    assert _launch._core_launch is not None
    forward_kernel = indrnn_core.cuda.recurrence._sequential("native", np.dtype(np.float64), 3 * 5, 0)[0]
    assert any(key[0] is forward_kernel for key in _launch._KERNELS)


def test_streams_of_every_kind_give_the_reference():
    """``stream=``: None, 0, a Numba stream, and (on a real GPU) its raw handle as an int, as torch passes one."""
    from numba import cuda

    import indrnn_core
    from indrnn_core import reference

    rng = np.random.default_rng(1)
    x, u = rng.standard_normal((5, 2, 3)), rng.uniform(-1, 1, 3)
    ref_h = reference.forward(x, u)
    ref_grads = reference.backward(x, ref_h, u)
    stream = cuda.stream()
    streams = [None, 0, stream] + ([] if _launch.SIMULATOR else [_launch._handle(stream)])
    for s in streams:
        d_x, d_u = cuda.to_device(x), cuda.to_device(u)
        h = indrnn_core.forward(d_x, d_u, stream=s)
        gx, gu, gb, gh0 = indrnn_core.backward(d_x, h, d_u, stream=s)
        cuda.synchronize()
        np.testing.assert_allclose(h.copy_to_host(), ref_h, rtol=1e-12)
        for got, want in zip((gx, gu, gb, gh0), ref_grads):
            np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-10, atol=1e-12)
