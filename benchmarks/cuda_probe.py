"""``python -m benchmarks.cuda_probe``: where a short CUDA call's time goes (host overhead, not the kernels).

Times, per call on the current GPU: a bare Numba launch of an empty kernel, the pieces the launchers use
(allocation, a small host-to-device copy, viewing a torch tensor), ``indrnn_core.forward``/``backward`` at T=1 and
the torch op at T=1; then cProfiles of ``indrnn_core.forward`` at T=1 on Numba arrays and of the torch adapter's
forward + backward at T=1 on CUDA tensors (the path users take), to find what to trim next.
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
    _kernel_times(x, h, u, ws, gu, gb)
    if "torch indrnn() T=1 + backward" in rows:
        _profile("torch indrnn() T=1 + backward on CUDA tensors", rows["torch indrnn() T=1 + backward"])


@cuda.jit
def _spin(microseconds):
    for _ in range(microseconds):
        cuda.nanosleep(1000)


def _kernel_times(x, h, u, ws, gu, gb, calls=100):
    """GPU time per kernel at T=1 (CUDA events around many launches queued behind a ~20 ms spin kernel, so the
    GPU runs them back to back whatever the host's launch cost): what the host cannot hide at short T."""
    from indrnn_core.cuda import recurrence as r

    def events(fn):
        fn()
        start, end = cuda.event(), cuda.event()
        _spin[1, 1](20000)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return cuda.event_elapsed_time(start, end) * 1e3 / calls

    B, H = x.shape[1], x.shape[2]
    grid, grid_h = (B * H + 255) // 256, (H + 255) // 256
    lengths = cuda.to_device(np.ones(B, np.int64))
    fwd = lambda: r._forward_kernel[grid, 256](x, u, u, False, h[0], False, lengths, False, False, 0, False, h,
                                                h[0], False)
    bwd = lambda: r._backward_kernel[grid, 256](x, h, u, h[0], False, lengths, False, False, 0, False, h[0],
                                                 False, x, ws, h[0])
    rows = lambda: r._sum_rows_kernel[grid_h, 256](ws, gu, gb)
    print("\n== GPU time per launch at T=1 (us, CUDA events; the launches queue back to back) ==")
    for name, fn in (("_forward_kernel", fwd), ("_backward_kernel", bwd), ("_sum_rows_kernel", rows)):
        print(f"{name:<20} {events(fn):8.1f}")


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
