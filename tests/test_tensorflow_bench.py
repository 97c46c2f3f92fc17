"""Smoke test of ``benchmarks/tf_bench.py`` at a tiny shape: the gate passes for every implementation and every row
is there (no timing claims). Run in this process (TF is imported once per test session); the ``benchmarks``
folder lives at the repository root, outside the installed package."""
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tf_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("benchmarks.tf_bench")


def test_tiny_run(tf_bench):
    from benchmarks import configs

    lines = []
    rows = tf_bench.run(configs.resolve(["tiny"]), "float32", repeats=1, log=lines.append)
    gates = [line for line in lines if line.startswith("gate")]
    assert len(gates) == 6 and all("PASS" in line for line in gates)
    fwdbwd = {r["impl"]: r for r in rows if r["mode"] == "fwdbwd"}
    assert set(fwdbwd) == {"indrnn (eager)", "indrnn (tf.function, py_function)",
                           "indrnn (tf.function, numpy_function)", "tf.scan (tf.function)", "core kernels (out=)",
                           "core kernels (out=None)"}
    assert all(r["median_ms"] > 0 and r["repeats"] == 1 for r in rows)
    assert {r["impl"] for r in rows if r["mode"] == "call_T1"} >= {"indrnn (eager)", tf_bench.NOOP}
    assert "x_scan" in fwdbwd["indrnn (eager)"] and "overhead_pct" in fwdbwd["indrnn (eager)"]
    assert tf_bench.targets(rows) == []  # targets are stated at mnist only
