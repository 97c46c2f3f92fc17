"""``python -m benchmarks.chunk_sweep CHUNK``: CUDA kernel time (events) per config with the kernels' look-ahead
``CHUNK`` set before they compile, to choose it. Prints one line per config: fwd ms, bwd ms."""

import sys

import numpy as np
from numba import cuda

import indrnn_core
from indrnn_core.cuda import recurrence

recurrence.CHUNK = int(sys.argv[1])  # read when the kernels compile, on first launch
CONFIGS = {"mnist": (784, 64, 128), "wide": (1000, 256, 1024), "T3000": (3000, 64, 128),
           "T10000": (10000, 64, 128), "long": (10000, 16, 256)}


def timed(fn, n=20):
    fn()
    start, end = cuda.event(), cuda.event()
    start.record()
    for _ in range(n):
        fn()
    end.record()
    end.synchronize()
    return cuda.event_elapsed_time(start, end) / n


rng = np.random.default_rng(0)
for name, (T, B, H) in CONFIGS.items():
    x = cuda.to_device(rng.standard_normal((T, B, H)).astype(np.float32))
    u = cuda.to_device(rng.uniform(-1, 1, H).astype(np.float32))
    h, g = cuda.device_array_like(x), cuda.device_array_like(x)
    gu, gb, gh0 = (cuda.device_array(shape, np.float32) for shape in (H, H, (B, H)))
    ws = cuda.device_array((2, B, H), np.float32)
    fwd = timed(lambda: indrnn_core.forward(x, u, out=h))
    bwd = timed(lambda: indrnn_core.backward(x, h, u, out=(g, gu, gb, gh0), workspace=ws))
    floor = 5 * x.nbytes / 3.0e12 * 1e3  # fwd reads x, writes h; bwd reads grad_h and h, writes gx; at ~3 TB/s
    print(f"CHUNK={recurrence.CHUNK:<3} {name:<7} fwd {fwd:7.3f} ms  bwd {bwd:7.3f} ms  fwd+bwd {fwd + bwd:7.3f} ms"
          f"  = {(fwd + bwd) / floor:5.2f}x the 3 TB/s floor")
