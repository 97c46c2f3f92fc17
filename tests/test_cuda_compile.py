"""The CUDA kernels compile for a real GPU (sm_90, Hopper) through NVVM, even on a machine with no GPU.

The simulator runs the kernels' Python semantics; this checks what it cannot: that Numba's CUDA target types and
lowers every kernel (the shared activation functions, dtype handling, both dtypes) to PTX, and that the float32
kernels do no float64 arithmetic.
"""

import os
import subprocess
import sys

SCRIPT = r"""
import re
from numba import cuda, types
from indrnn_core.cuda import recurrence as r
from indrnn_core.cuda import scan as s
for dt in (types.float32, types.float64):
    r.tiled_forward_kernel, r.tiled_backward_kernel = r.tiled_kernels("native", dt.bitwidth // 8)[:2]
    # Layout "A" (strided), as indrnn_core.cuda._launch compiles them for every array on a real GPU.
    A3, A2, A1 = (types.Array(dt, n, "A") for n in (3, 2, 1))
    L, b, i = types.Array(types.int64, 1, "A"), types.boolean, types.int64
    sigs = {
        "_forward_kernel": (A3, A1, A1, b, A2, b, L, b, b, i, b, A3, A2, b),
        "_backward_kernel": (A3, A3, A1, A2, b, L, b, b, i, b, A2, b, A3, A3, A2),
        "tiled_forward_kernel": (A3, A1, A1, b, A2, b, L, b, b, i, b, A3, A2, b),
        "tiled_backward_kernel": (A3, A3, A1, A2, b, L, b, b, i, b, A2, b, A3, A3, A2),
        "_sum_rows_kernel": (A3, A1, A1),
        "_final_state_kernel": (A3, A2, b, L, b, b, b, A2),
    }
    A4 = types.Array(dt, 4, "A")
    scan_sigs = {  # the time-parallel kernels (indrnn_core.cuda.scan)
        "_forward_maps_kernel": (A3, A1, A1, b, L, b, b, i, b, i, A4),
        "_forward_bounds_kernel": (A4, A3, A1, A1, b, A2, b, L, b, b, i, b, i, A3, A3, A2, b),
        "_forward_run_kernel": (A3, A1, A1, b, L, b, b, i, b, i, A3, A3, A2, b),
        "_backward_maps_kernel": (A3, A3, A1, L, b, b, i, b, i, A4),
        "_backward_bounds_kernel": (A4, A3, A3, A1, L, b, b, i, b, i, A2, b, A3, A3, A2),
        "_backward_run_kernel": (A3, A3, A1, A2, b, L, b, b, i, b, i, A3, A3, A4),
        "_sum_segments_kernel": (A4, A1, A1),
    }
    for name, sig in [*sigs.items(), *scan_sigs.items()]:
        module = s if name in scan_sigs else r
        ptx, _ = cuda.compile_ptx(getattr(module, name).py_func, sig, device=False, cc=(9, 0))
        assert ".entry" in ptx and ".target sm_90" in ptx, name
        # float32 math stays float32: a float64 operation in the chain (an integer literal promotes float32 to
        # float64 in Numba) doubled the latency of every step
        assert dt == types.float64 or not re.search(r"\.f64\b", ptx), (name, re.findall(r"\S+\.f64\b", ptx)[:5])
        print(name, dt, "ok")
"""


def test_kernels_compile_to_ptx_for_sm90():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == 2 * (6 + 7)
