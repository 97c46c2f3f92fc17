"""Smoke tests of the benchmark CLI (``python -m benchmarks``): tiny shapes, seconds, no timing claims.

The CLI lives in the repository's ``benchmarks/`` folder (not in the installed package), so each test runs it as a
subprocess from the repository root, exactly as a user would.
"""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The test extra installs jax, matplotlib and torch, so every suite runs here (nothing is skipped).
SUITES = ["core", "jax"]



def _run(args, *, code=None, timeout=900):
    """``python -m benchmarks ARGS`` from the repository root (or ``python -c CODE``, with ARGS as argv)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "benchmarks", *args] if code is None else [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.json"
    proc = _run(["--config", "tiny", "--repeats", "2", "--only", *SUITES, "--json", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path, proc.stdout


def test_cli_writes_the_results_document(tiny_json):
    path, stdout = tiny_json
    doc = json.loads(path.read_text())
    assert doc["schema"] == 1 and doc["status"] == "ok"
    assert doc["command"].startswith("python -m benchmarks") and "--config tiny" in doc["command"]
    m = doc["machine"]
    for key in ("cpu", "cores", "platform", "python", "versions", "date"):
        assert m[key], key
    assert m["versions"]["numpy"] and m["versions"]["numba"]
    assert doc["settings"]["dtype"] == "float32" and doc["settings"]["device"] == "cpu"

    # The gate ran for every suite, passed, and checked every output by name.
    assert [g["suite"] for g in doc["gates"]] == SUITES
    for g in doc["gates"]:
        assert g["passed"] and {"h", "gx", "gu", "gb", "gh0"} <= set(g["errors"])
        assert all(e <= g["tolerance"] for e in g["errors"].values())

    core = {r["mode"]: r for r in doc["results"] if r["suite"] == "core"}
    assert set(core) == {"fwd", "bwd", "fwdbwd"}
    for mode, r in core.items():
        assert (r["config"], r["T"], r["B"], r["H"]) == ("tiny", 12, 3, 8)
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["repeats"] == 2
        assert r["floor_ms"] > 0 and r["copy_GBps"] > 0 and r["outputs_finite"]
        assert r["x_floor"] == pytest.approx(r["median_ms"] / r["floor_ms"])
        assert r["store_GBps"] > 0 and r["x_store_floor"] == pytest.approx(
            r["median_ms"] * r["store_GBps"] * 1e6 / r["bytes"])
    # fwd moves 2 arrays, bwd 3: the floors keep that ratio.
    assert core["bwd"]["floor_ms"] == pytest.approx(1.5 * core["fwd"]["floor_ms"])
    assert core["fwdbwd"]["floor_ms"] == pytest.approx(core["fwd"]["floor_ms"] + core["bwd"]["floor_ms"])
    # The floor is the best bandwidth of the run's copy streams (single- and all-thread, both kinds of store).
    for r in core.values():
        bw = r["floor_bandwidths"]
        assert len(bw) >= 4 and r["copy_GBps"] == pytest.approx(max(bw.values())) and r["floor_source"] in bw
        assert any("ordinary" in k for k in bw) and any("streaming" in k for k in bw)
    # The peers (jit(forward), jit(vjp), jit(grad)) are timed in the same rounds as the kernels: paired speed-ups.
    scan = {r["mode"]: r for r in doc["results"] if r["suite"] == "jax"}
    assert set(scan) == {"fwd", "fwdbwd", "grad"}
    for mode, r in scan.items():
        assert r["speedup"] > 0 and r["repeats"] >= 2
    # Targets are stated at mnist only; the header and summary are printed.
    assert doc["targets"] == []
    assert "machine:" in stdout and "gate core" in stdout and "PASS" in stdout


def test_gate_failure_refuses_to_time(tmp_path):
    """A kernel that disagrees with the reference gets no timings and exit status 1."""
    path = tmp_path / "bad.json"
    code = (
        "import sys, indrnn_core\n"
        "good = indrnn_core.forward\n"
        "def bad(*a, **k):\n"
        "    h = good(*a, **k)\n"
        "    h[-1] += 0.5\n"  # one wrong step: the gate must see it
        "    return h\n"
        "indrnn_core.forward = bad\n"
        "from benchmarks.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = _run(["--config", "tiny", "--repeats", "2", "--only", "core", "--json", str(path)], code=code)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "refusing to time" in proc.stderr and "FAIL" in proc.stdout
    doc = json.loads(path.read_text())
    assert doc["status"] == "gate_failed" and doc["results"] == []
    (gate,) = doc["gates"]
    assert not gate["passed"] and gate["errors"]["h"] > gate["tolerance"]


def test_literal_shapes_resolve_beside_names():
    from benchmarks import configs

    seq1, custom = configs.resolve(["seq1", "4096,2,4"])
    assert (seq1.T, seq1.B, seq1.H) == (1_000_000, 1, 1)
    assert (custom.name, custom.T, custom.B, custom.H) == ("4096,2,4", 4096, 2, 4)
    for bad in ("4096,2", "4096,0,4", "4096,2,-4", "a,b,c"):
        with pytest.raises(ValueError, match="unknown config"):
            configs.resolve([bad])


def test_bad_config_is_a_usage_error():
    proc = _run(["--config", "no-such-config"])
    assert proc.returncode == 2 and "unknown config 'no-such-config'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_rebuilds_from_json(tiny_json, tmp_path):
    """``report --from`` writes table.md, the time-vs-T plot and BENCHMARKS.md from JSON alone."""
    doc = json.loads(tiny_json[0].read_text())
    # Pretend the tiny rows were a T sweep at the sweep's B and H so the plot has lines to draw.
    rows = []
    for T in (100, 1000):
        for r in doc["results"]:
            r = copy.deepcopy(r)
            r.update(config=f"T{T}", T=T, B=64, H=128)
            rows.append(r)
    # and a suite with its own modes and columns (the torch suite's shape of rows).
    rows += [dict(suite="torch", impl="nn.LSTM", config=f"T{T}", T=T, B=64, H=128, dtype="float32", device="cpu",
                  mode=mode, median_ms=2.0, min_ms=1.5, repeats=3, x_indrnn=4.0)
             for T in (100, 1000) for mode in ("step", "call_T1")]
    doc["results"] += rows
    src = tmp_path / "results.json"
    src.write_text(json.dumps(doc))
    md = tmp_path / "BENCHMARKS.md"
    proc = _run(["report", "--from", str(src), "--out", str(tmp_path / "out"), "--benchmarks-md", str(md)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out" / "time_vs_T.png").stat().st_size > 0
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| tiny | 12 | 3 | 8 |" in table and "| T1000 | 1000 | 64 | 128 |" in table
    assert "### torch: training step" in table and "| x_indrnn |" in table
    text = md.read_text()
    for needle in ("# Benchmarks", "### Machine", doc["machine"]["date"], doc["command"], "### Targets",
                   "out/time_vs_T.png", "memory-bandwidth floor"):
        assert needle in text, needle


def test_cuda_path(tmp_path):
    """``--device cuda``: the gate and the event-timed runs on device arrays (Numba's simulator without a GPU,
    where the code paths run but the event times mean nothing)."""
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    path = tmp_path / "cuda.json"
    # The simulator runs every thread of a block as a Python thread: 32-thread blocks keep this test quick.
    code = (
        "import sys\n"
        "from indrnn_core.cuda import config\n"
        f"config.THREADS_PER_BLOCK = {32 if simulated else 'config.THREADS_PER_BLOCK'}\n"
        "from benchmarks.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = _run(["--device", "cuda", "--config", "tiny", "--repeats", "2", "--only", "core", "--json", str(path)],
                code=code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(path.read_text())
    assert doc["settings"]["device"] == "cuda" and doc["machine"]["gpu"]
    assert [g["suite"] for g in doc["gates"]] == ["core"] and doc["gates"][0]["passed"]
    rows = [r for r in doc["results"] if r["suite"] == "core"]
    assert {r["mode"] for r in rows} == {"fwd", "bwd", "fwdbwd"}
    assert all(r["device"] == "cuda" and r["outputs_finite"] for r in rows)
    if not simulated:
        assert all(r["median_ms"] > 0 and r["floor_ms"] > 0 for r in rows)


def test_a_suite_joins_with_one_module(tmp_path):
    """The CLI runs any ``benchmarks.torch_bench`` that has ``run(configs, device, repeats) -> rows`` (and
    optionally ``gate``): here a stand-in, so the glue is tested without paying for PyTorch."""
    path = tmp_path / "joined.json"
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('benchmarks.torch_bench')\n"
        "def run(configs, device, repeats):\n"
        "    return [dict(impl='stand-in', config=c.name, T=c.T, B=c.B, H=c.H, dtype='float32', mode='step',\n"
        "                 median_ms=1.0, min_ms=1.0, repeats=repeats) for c in configs]\n"
        "fake.run = run\n"
        "fake.gate = lambda dtype, device: {'suite': 'torch', 'device': device, 'dtype': dtype, 'checks': {},\n"
        "                                   'passed': True}\n"
        "sys.modules['benchmarks.torch_bench'] = fake\n"
        "from benchmarks.__main__ import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = _run(["--config", "tiny", "--repeats", "2", "--only", "core", "torch", "--json", str(path)], code=code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(path.read_text())
    assert [g["suite"] for g in doc["gates"]] == ["core", "torch"]
    (row,) = [r for r in doc["results"] if r["suite"] == "torch"]
    assert row["impl"] == "stand-in" and row["config"] == "tiny" and row["device"] == "cpu" and row["repeats"] == 2


def test_torch_suite_rows(tmp_path):
    """The real PyTorch suite at the tiny config: its gate passes and every row the report relies on is there."""
    proc = _run(["--config", "tiny", "--repeats", "1", "--max-seconds", "0.5", "--json", str(tmp_path / "t.json")],
                code="import sys; from benchmarks.torch_bench import main; sys.exit(main(sys.argv[1:]))",
                timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "t.json").read_text())
    impls = {r["mode"]: set() for r in doc["rows"]}
    for r in doc["rows"]:
        impls[r["mode"]].add(r["impl"])
    assert impls["step"] == {"IndRNN (indrnn_core)", "nn.RNN(relu)", "nn.LSTM", "plain-loop IndRNN"}
    assert impls["fwdbwd"] == {
        "core kernels (out=)", "core kernels (out=None)", "core kernels (out=None, no host cache)",
        "autograd floor (bare Function, out=)", "indrnn::forward + indrnn::backward", "indrnn() + autograd"}
    adapter = next(r for r in doc["rows"] if r["impl"] == "indrnn() + autograd")
    assert math.isfinite(adapter["overhead_pct"]) and math.isfinite(adapter["overhead_vs_allocating_pct"])
    assert [t["name"] for t in doc["targets"]] == ["adapter per-call overhead at T=1 (B=3, H=8)"]
    assert {"IndRNNCell step, fwd+bwd", "nn.RNNCell(relu) step, fwd+bwd"} <= impls["call_T1"]
