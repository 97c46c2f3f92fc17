"""``python -m benchmarks.cuda_probe``: where a short CUDA call's time goes (host overhead, not the kernels).

Times, per call on the current GPU: a bare Numba launch of an empty kernel, the pieces the launchers use
(allocation, a small host-to-device copy, viewing a torch tensor), ``indrnn_core.forward``/``backward`` at T=1 and
the torch op at T=1; then cProfiles of ``indrnn_core.forward`` at T=1 on Numba arrays and of the torch adapter's
forward + backward at T=1 on CUDA tensors (the path users take), to find what to trim next. The kernels' own GPU
time comes from Nsight Compute: ``ncu --clock-control none python -m benchmarks.kernel_ncu``.
"""

import cProfile
import pstats
import sys
import time

import numpy as np
from numba import cuda

import indrnn_core
import indrnn_core.cuda  # noqa: F401  (first: its numba-cuda/NumPy 2.5 fix must precede any compilation)


def per_call_us(fn, n=300):
    for _ in range(5):
        fn()
    cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


@cuda.jit
def _empty_kernel(a):
    pass


def main():
    B, H = 64, 128
    rng = np.random.default_rng(0)
    x = cuda.to_device(rng.standard_normal((1, B, H)).astype(np.float32))
    u = cuda.to_device(rng.uniform(-1, 1, H).astype(np.float32))
    h = cuda.device_array((1, B, H), np.float32)
    gx, gu, gb, gh0 = (cuda.device_array(s, np.float32) for s in ((1, B, H), (H,), (H,), (B, H)))
    small = np.zeros(B, np.int64)
    ws = cuda.device_array((2, B, H), np.float32)
    rows = {
        "empty kernel launch": lambda: _empty_kernel[1, 32](u),
        "cuda.device_array((2,B,H))": lambda: cuda.device_array((2, B, H), np.float32),
        "cuda.to_device(int64[B])": lambda: cuda.to_device(small),
        "indrnn_core.forward T=1 (out=)": lambda: indrnn_core.forward(x, u, out=h),
        "indrnn_core.backward T=1 (out=)": lambda: indrnn_core.backward(x, h, u, out=(gx, gu, gb, gh0)),
        "indrnn_core.backward T=1 (out=, workspace=)":
            lambda: indrnn_core.backward(x, h, u, out=(gx, gu, gb, gh0), workspace=ws),
    }
    try:
        import torch

        from indrnn_core.adapters.torch import indrnn

        xt = torch.randn(1, B, H, device="cuda")
        ut = torch.rand(H, device="cuda")
        rows["cuda.as_cuda_array(torch tensor)"] = lambda: cuda.as_cuda_array(xt, sync=False)
        rows["torch indrnn() T=1, no grad"] = lambda: indrnn(xt, ut)
        ug = ut.clone().requires_grad_()
        rows["torch indrnn() T=1 + backward"] = lambda: indrnn(xt, ug).sum().backward()
    except (ImportError, AssertionError, RuntimeError):  # no torch, or a CPU-only torch
        pass
    for name, fn in rows.items():
        print(f"{name:<44} {per_call_us(fn):9.1f} us/call")
    _profile("indrnn_core.forward T=1 on Numba arrays", lambda: indrnn_core.forward(x, u, out=h))
    _profile("indrnn_core.backward T=1 on Numba arrays", rows["indrnn_core.backward T=1 (out=, workspace=)"])
    if "torch indrnn() T=1 + backward" in rows:
        _profile("torch indrnn() T=1 + backward on CUDA tensors", rows["torch indrnn() T=1 + backward"])


def _profile(title, fn, calls=200):
    fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    cuda.synchronize()
    prof.disable()
    print(f"\n== cProfile: {title}, {calls} calls ==")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
