"""``ncu --clock-control none -k regex:kernel python -m benchmarks.kernel_ncu``: a few launches of each CUDA kernel
at T=1 and T=100 (B=64, H=128, float32) through ``indrnn_core``, for Nsight Compute to time one by one; with
arguments, at those T instead (``python -m benchmarks.kernel_ncu 10000``)."""

import sys

import numpy as np
from numba import cuda

import indrnn_core

B, H = 64, 128
rng = np.random.default_rng(0)
for T in [int(a) for a in sys.argv[1:]] or (1, 100):
    x = cuda.to_device(rng.standard_normal((T, B, H)).astype(np.float32))
    u = cuda.to_device(rng.uniform(-1, 1, H).astype(np.float32))
    ws = cuda.device_array((2, B, H), np.float32)
    for _ in range(2):
        h = indrnn_core.forward(x, u)
        indrnn_core.backward(x, h, u, workspace=ws)
cuda.synchronize()
