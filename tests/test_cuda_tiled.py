"""The two kinds of sequential CUDA kernel give identical results.

Inputs of at most ``config.TILED_MAX_COLUMNS`` columns (every other test's) run the block-tiled kernels; larger ones
the one-thread-per-column kernels. Both apply the same step formulas in the same order, so their outputs must be
equal bit for bit: this runs each case through both (the threshold patched) and compares, which also tests the
column kernels against the reference through the tiled kernels' own tests. Under the simulator the tiled blocks are
tiny (``recurrence.tiled_geometry``), so the cases' lengths cross several tiles and tile tails.
"""

import numpy as np
import pytest

CASES = {  # T, B, H, lengths, reverse, batch_first, activation (simulator tiles: 16 visits forward, 8 backward)
    "plain": (37, 2, 3, None, False, False, "relu"),
    "lengths": (35, 3, 2, [35, 16, 0], False, False, "tanh"),
    "lengths-reverse": (33, 3, 2, [33, 17, 1], True, False, "relu"),
    "batch-first": (19, 2, 3, [19, 8], False, True, "sigmoid"),
    "batch-first-reverse": (17, 2, 3, None, True, True, "identity"),
    "columns-past-a-block": (9, 3, 7, [9, 5, 2], False, False, "relu"),  # 21 columns: 3 blocks of 8 lanes
}


@pytest.fixture
def both_kernels():
    from indrnn_core.cuda import config

    def run(fn):
        old = config.TILED_MAX_COLUMNS
        try:
            out = []
            for threshold in (1 << 62, 0):  # tiled, then columns
                config.TILED_MAX_COLUMNS = threshold
                out.append(fn())
            return out
        finally:
            config.TILED_MAX_COLUMNS = old

    return run


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("case", list(CASES))
def test_tiled_and_column_kernels_agree_bit_for_bit(case, dtype, both_kernels):
    from numba import cuda

    import indrnn_core

    T, B, H, lengths, reverse, batch_first, act = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    shape = (B, T, H) if batch_first else (T, B, H)
    x, grad_h = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    param = np.float32 if dtype == np.float16 else dtype
    u, b = rng.uniform(-1.2, 1.2, H).astype(param), (rng.standard_normal(H) * 0.1).astype(param)
    h0, grad_hn = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    kw = dict(lengths=None if lengths is None else np.array(lengths, np.int64), reverse=reverse,
              batch_first=batch_first, activation=act)
    d = {k: cuda.to_device(v) for k, v in dict(x=x, g=grad_h, u=u, b=b, h0=h0, ghn=grad_hn).items()}

    def fwd_bwd():
        h = cuda.to_device(np.full(shape, np.nan, dtype))  # NaN: an unwritten element shows
        indrnn_core.forward(d["x"], d["u"], d["b"], d["h0"], out=h, **kw)
        grads = indrnn_core.backward(d["g"], h, d["u"], d["h0"], grad_hn=d["ghn"], **kw)
        return [h.copy_to_host(), *(a.copy_to_host() for a in grads)]

    tiled, columns = both_kernels(fwd_bwd)
    for name, a, c in zip(("h", "gx", "gu", "gb", "gh0"), tiled, columns):
        assert not np.isnan(a).any(), name
        np.testing.assert_array_equal(a, c, err_msg=name)
