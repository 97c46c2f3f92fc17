"""Packaging promises: the import is light, the public API is there, the init helpers follow the papers."""

import importlib
import subprocess
import sys

import numpy as np
import pytest

import indrnn_core
from indrnn_core import init


def test_import_loads_no_framework_and_not_numba_cuda():
    code = ("import sys, indrnn_core, indrnn_core.adapters; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'jax', 'tensorflow', 'keras') "
            "or m.startswith('numba.cuda')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api():
    for name in ("forward", "backward", "final_state", "reference", "init"):
        assert hasattr(indrnn_core, name)
    importlib.import_module("indrnn_core.adapters")  # ships from the top-level adapters/ folder


def test_recurrent_bound_follows_the_paper():
    assert init.recurrent_bound(784, 5.0) == pytest.approx(5.0 ** (1 / 784))
    assert init.recurrent_bound(1000) == pytest.approx(2.0 ** (1 / 1000))
    assert init.recurrent_bound(1, 2.0) == 2.0
    assert init.recurrent_bound(392.5, 5.0) == pytest.approx(5.0 ** (1 / 392.5))  # e.g. a mean length
    for bad in (0, -3, -2.5, float("inf"), float("nan"), True, "784"):
        with pytest.raises(ValueError, match="seq_len"):
            init.recurrent_bound(bad)
    with pytest.raises(ValueError, match="magnitude"):
        init.recurrent_bound(10, 0.0)


def test_ranges_and_clip():
    bound = init.recurrent_bound(100)
    assert init.hidden_range(bound) == (0.0, bound)
    low, high = init.last_layer_range(bound)
    assert low == pytest.approx(1 / bound) and high == bound and 0 < low < 1 < high
    u = init.uniform_(np.empty(1000), low, high, rng=0)
    assert ((u >= low) & (u <= high)).all() and u.std() > 0
    v = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    assert init.clip_(v, 1.0) is v
    np.testing.assert_array_equal(v, [-1.0, -0.5, 0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="bound"):
        init.clip_(v, -1.0)
