"""``python -m benchmarks.cuda_variants``: the CUDA kernels' tunable choices against each other, in one process.

For each config: the sequential kernels with ``config.TILED_MAX_COLUMNS`` forcing each kind (block-tiled against one
thread per column), and at the single-sequence configs the time-parallel kernels at several ``CUDA_SEGMENT``
lengths; each fwd+bwd timed with CUDA events (``core_bench.measure_cuda``), the variants alternating for
``--rounds`` rounds, the median of the rounds' medians reported against the HBM floor of the same run (a
device-to-device copy of x: forward floor = its time, backward 1.5x, fwd+bwd 2.5x). Outputs of every variant are
compared with the column kernels' first (bit-identical for the tiled kernels, within the scan's tolerance for the
time-parallel ones).
"""

import argparse
import statistics

import numpy as np

from . import configs
from .core_bench import make_inputs, measure_cuda

DEFAULT_CONFIGS = ("wide", "T1000", "T3000", "T10000", "long", "mnist", "seq256")
SEGMENTS = (64, 128, 256, 512, 1024)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", nargs="+", default=list(DEFAULT_CONFIGS), help="config names or T,B,H")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)

    from numba import cuda

    import indrnn_core
    from indrnn_core import time_parallel as tp
    from indrnn_core.cuda import config

    default_tiled = config.TILED_MAX_COLUMNS
    stream = cuda.stream()
    shapes = configs.resolve(args.config)
    for shape in shapes:
        inp = make_inputs(shape, "float32")
        d = {k: cuda.to_device(np.ascontiguousarray(v), stream=stream) for k, v in inp.items()}
        x, u, b, h0, g = d["x"], d["u"], d["b"], d["h0"], d["grad_h"]
        h = cuda.device_array_like(x, stream=stream)
        grads = (cuda.device_array_like(x, stream=stream), cuda.device_array_like(u, stream=stream),
                 cuda.device_array_like(u, stream=stream), cuda.device_array_like(h0, stream=stream))
        dst = cuda.device_array_like(x, stream=stream)

        def variant(tiled, segment=None):
            def fwdbwd():
                config.TILED_MAX_COLUMNS = 1 << 62 if tiled else 0
                if segment is not None:
                    tp.CUDA_SEGMENT = segment
                on = segment is not None
                indrnn_core.forward(x, u, b, h0, out=h, stream=stream, time_parallel=on)
                indrnn_core.backward(g, h, u, h0, out=grads, stream=stream, time_parallel=on)
            return fwdbwd

        fns = {"columns": variant(False), "tiled": variant(True)}
        if shape.B * shape.H <= 1024:
            fns.update({f"scan seg={s}": variant(True, s) for s in SEGMENTS})
        want = None
        for name, fn in fns.items():  # gate: every variant's outputs against the column kernels'
            fn()
            got = [h.copy_to_host(), *(a.copy_to_host() for a in grads)]
            if want is None:
                want = got
                continue
            err = max(float(np.max(np.abs(a - w)) / (1 + np.max(np.abs(w)))) for a, w in zip(got, want))
            print(f"{shape.name:>7} gate {name}: scaled max error {err:.1e}", flush=True)
        times = {name: [] for name in fns}
        copies = []
        for _ in range(args.rounds):
            copies.append(measure_cuda(lambda: dst.copy_to_device(x, stream=stream), stream, 20)["seconds_median"])
            for name, fn in fns.items():
                times[name].append(measure_cuda(fn, stream, args.repeats)["seconds_median"])
        copy = min(copies)
        base = statistics.median(times["columns"])
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"{shape.name:>7} T={shape.T} B={shape.B} H={shape.H} {name:>14} fwd+bwd {t * 1e3:8.3f} ms  "
                  f"{t / (2.5 * copy):6.2f}x floor  {base / t:6.2f}x columns", flush=True)
    config.TILED_MAX_COLUMNS = default_tiled


if __name__ == "__main__":
    main()
