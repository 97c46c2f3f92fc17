"""The TensorFlow suite: fwd+grad of the recurrence through ``indrnn_core.adapters.tensorflow`` beside its peers.

Rows per config (``x``: ``[T, B, H]`` float32 by default; ``mode="fwdbwd"``: forward, then the gradients of
``sum(grad_h * h)`` w.r.t. x, u, b and h0, i.e. the same h, gx, gu, gb, gh0 as the kernels' forward + backward):

* ``indrnn (eager)``: the op in eager code under a ``tf.GradientTape``;
* ``indrnn (tf.function, py_function)`` and ``indrnn (tf.function, numpy_function)``: the same inside a
  ``tf.function``, with each graph callback (``GRAPH_CALLBACK``, read when the function is traced);
* ``tf.scan (tf.function)``: what a TF user writes without the kernels, ``h_t = relu(x_t + u * h_{t-1} + b)``
  stepped by ``tf.scan``, gradients by autodiff (the issue's target: the op >= 3x faster). (The same under
  ``jit_compile=True`` is no contender: XLA's CPU while loop took 4-7 s per call here, so it is not timed);
* ``core kernels (out=)``: ``indrnn_core.forward`` + ``backward`` on preallocated NumPy buffers, the floor of any
  adapter; ``core kernels (out=None)`` allocate their outputs as the adapter must.

``overhead_pct``: median over rounds of (time / kernels' time of the same round) - 1; ``x_scan``: tf.scan's time
/ this row's time. ``mode="call_T1"``: per call at T=1 (same B, H), eager and in a tf.function, fwd+grad, with the
kernels' own per-call time and, as TF's floor, a ``tf.custom_gradient`` function that computes nothing.

The implementations alternate within each round (one call of each, in turn, each round starting one later), so
load from other processes on a shared machine hits all of them alike; median of ``--repeats`` (>= 15) rounds
after two warm-up calls each.
Nothing is timed before every implementation passes the correctness gate against ``indrnn_core.reference``.

    python -m benchmarks.tf_bench                     # mnist: T=784, B=64, H=128 float32
    python -m benchmarks.tf_bench --config tiny --repeats 3 --json out.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import configs, harness
from .core_bench import (GATE_SHAPE, GateError, check_outputs, format_gate, machine_info, make_inputs,
                         reference_outputs)

TARGET_SCAN_SPEEDUP = 3.0  # tf.scan (tf.function) fwd+grad time / the op's, at least (issue 11)
MIN_REPEATS = 15
CALLS_PER_SAMPLE = 50  # T=1 calls per timed sample


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def _implementations(dtype: str) -> dict:
    """name -> function(x, u, b, h0, grad_h) returning (h, [gx, gu, gb, gh0]) (TF tensors or NumPy arrays)."""
    tf = _tf()
    import indrnn_core
    from indrnn_core.adapters import tensorflow as itf

    def op_step(x, u, b, h0, g):
        with tf.GradientTape() as tape:
            tape.watch([x, u, b, h0])
            h = itf.indrnn(x, u, b, h0)
        return h, tape.gradient(h, [x, u, b, h0], output_gradients=g)

    def scan_step(x, u, b, h0, g):
        with tf.GradientTape() as tape:
            tape.watch([x, u, b, h0])
            h = tf.scan(lambda h_prev, x_t: tf.nn.relu(x_t + u * h_prev + b), x, initializer=h0)
        return h, tape.gradient(h, [x, u, b, h0], output_gradients=g)

    def traced(callback):
        """A tf.function of op_step whose graphs use ``callback`` (the setting is read while tracing, which
        happens inside the call for each new input shape)."""
        fn = tf.function(op_step)

        def call(*args):
            old, itf.GRAPH_CALLBACK = itf.GRAPH_CALLBACK, callback
            try:
                return fn(*args)
            finally:
                itf.GRAPH_CALLBACK = old

        return call

    buffers: dict = {}

    def kernels(x, u, b, h0, g):  # preallocated out= buffers, reused across calls (made on the first call)
        key = x.shape
        if key not in buffers:
            buffers[key] = (np.empty_like(x), tuple(np.empty(s, x.dtype) for s in (x.shape, u.shape, u.shape,
                                                                                     h0.shape)))
        h, grads = buffers[key]
        indrnn_core.forward(x, u, b, h0, out=h)
        indrnn_core.backward(g, h, u, h0, out=grads)
        return h, grads

    def kernels_allocating(x, u, b, h0, g):
        h = indrnn_core.forward(x, u, b, h0)
        return h, indrnn_core.backward(g, h, u, h0)

    return {
        "indrnn (eager)": op_step,
        "indrnn (tf.function, py_function)": traced("py_function"),
        "indrnn (tf.function, numpy_function)": traced("numpy_function"),
        "tf.scan (tf.function)": tf.function(scan_step),
        "core kernels (out=)": kernels,
        "core kernels (out=None)": kernels_allocating,
    }


NOOP = "no-op tf.custom_gradient (eager)"


def _noop_custom_gradient():
    """TF's own floor for an eager op with a custom gradient: a ``tf.custom_gradient`` function with the same
    inputs and outputs that computes nothing (its outputs are identities of x and h0), under the same tape."""
    tf = _tf()

    @tf.custom_gradient
    def op(x, u, b, h0):
        def grad(grad_h, grad_hn):
            return grad_h, u, b, grad_hn
        return (tf.identity(x), tf.identity(h0)), grad

    def step(x, u, b, h0, g):
        with tf.GradientTape() as tape:
            tape.watch([x, u, b, h0])
            h = op(x, u, b, h0)[0]
        return h, tape.gradient(h, [x, u, b, h0], output_gradients=g)

    return step


NUMPY_IMPLS = ("core kernels (out=)", "core kernels (out=None)")
BASELINE = "core kernels (out=)"
SCAN = "tf.scan (tf.function)"


def _arguments(inp: dict, numpy: bool):
    keys = ("x", "u", "b", "h0", "grad_h")
    if numpy:
        return [inp[k] for k in keys]
    tf = _tf()
    return [tf.constant(inp[k]) for k in keys]


def _finish(result) -> None:
    """Make sure the work is done (TF's CPU kernels run synchronously in eager code; this also reads the last
    gradient, so nothing is left lazy)."""
    h, grads = result
    np.asarray(grads[-1])


def gate(dtype: str) -> list[dict]:
    """Every implementation against the reference on the gate shape (a wrong peer makes a meaningless speed-up)."""
    inp = make_inputs(GATE_SHAPE, dtype, seed=1234)
    want = reference_outputs(inp)
    records = []
    for name, fn in _implementations(dtype).items():
        h, (gx, gu, gb, gh0) = fn(*_arguments(inp, name in NUMPY_IMPLS))
        got = {k: np.array(v) for k, v in zip(("h", "gx", "gu", "gb", "gh0"), (h, gx, gu, gb, gh0))}
        records.append(check_outputs(f"tf: {name}", "cpu", dtype, got, want))
    return records


def _interleaved(fns: dict, args: dict, repeats: int, calls: int = 1) -> dict:
    """``benchmarks.harness.alternate`` over ``fns`` with their ``args``: ``repeats`` rounds after two warm-up
    calls each, a full GC between rounds (untimed: dead TF tensors release their buffers there, not mid-sample);
    returns name -> samples (seconds per call)."""
    def sample(item, calls):
        fn, a = item
        t0 = time.perf_counter()
        for _ in range(calls):
            result = fn(*a)
        _finish(result)
        return time.perf_counter() - t0

    timed = harness.alternate({name: (fns[name], args[name]) for name in fns}, repeats, warmup=2, calls=calls,
                              sampler=sample, between_rounds=gc.collect)
    return {name: t["samples"] for name, t in timed.items()}


def _row(name, shape, T, dtype, mode, ts, base=None, scan=None) -> dict:
    med = statistics.median(ts)
    row = {"suite": "tf", "impl": name, "config": shape.name, "T": T, "B": shape.B, "H": shape.H, "dtype": dtype,
           "device": "cpu", "mode": mode, "median_ms": med * 1e3, "min_ms": min(ts) * 1e3,
           "max_ms": max(ts) * 1e3, "repeats": len(ts)}
    if base is not None and name != BASELINE:
        row["overhead_pct"] = 100 * statistics.median(a / b - 1 for a, b in zip(ts, base))
    if scan is not None:
        row["x_scan"] = statistics.median(s / a for a, s in zip(ts, scan))
    return row


def run(shapes, dtype: str = "float32", repeats: int = 21, log=print, gated: bool = False) -> list[dict]:
    """Rows for every shape (``benchmarks.configs.Shape``); runs the gate first unless ``gated``."""
    if not gated:
        records = gate(dtype)
        for rec in records:
            log(format_gate(rec))
        if not all(rec["passed"] for rec in records):
            raise GateError("tf gate failed")
    fns = _implementations(dtype)
    rows = []
    for shape in shapes:
        inp = make_inputs(shape, dtype)
        args = {name: _arguments(inp, name in NUMPY_IMPLS) for name in fns}
        samples = _interleaved(fns, args, repeats)
        for name, ts in samples.items():
            row = _row(name, shape, shape.T, dtype, "fwdbwd", ts, samples[BASELINE],
                       samples[SCAN] if name != SCAN else None)
            log(format_row(row))
            rows.append(row)
        # Per call at T=1: the adapter's own cost (the scan peers have nothing to show here).
        one = make_inputs(configs.Shape(shape.name, 1, shape.B, shape.H), dtype)
        t1 = {k: v for k, v in fns.items() if not k.startswith("tf.scan") and k != "core kernels (out=None)"}
        t1[NOOP] = _noop_custom_gradient()
        args1 = {name: _arguments(one, name in NUMPY_IMPLS) for name in t1}
        samples1 = _interleaved(t1, args1, repeats, calls=CALLS_PER_SAMPLE)
        for name, ts in samples1.items():
            row = _row(name, shape, 1, dtype, "call_T1", ts, samples1[BASELINE])
            row["per_call_us"] = row["median_ms"] * 1e3
            log(format_row(row))
            rows.append(row)
    return rows


def targets(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r["mode"] == "fwdbwd" and r["config"] == configs.TARGET_CONFIG and r["impl"].startswith("indrnn ("):
            out.append({"name": f"{r['impl']} fwd+grad speed-up over tf.scan (tf.function)",
                        "measured": r["x_scan"], "target": TARGET_SCAN_SPEEDUP, "unit": "x",
                        "passed": r["x_scan"] >= TARGET_SCAN_SPEEDUP})
    return out


def format_row(r: dict) -> str:
    s = (f"tf {r['config']:>6} T={r['T']:<5} B={r['B']:<4} H={r['H']:<4} {r['mode']:<7} {r['impl']:<38} "
         f"{r['median_ms']:9.3f} ms (min {r['min_ms']:.3f}, n={r['repeats']})")
    if "per_call_us" in r:
        s += f"  {r['per_call_us']:.1f} us/call"
    if "overhead_pct" in r:
        s += f"  {r['overhead_pct']:+.1f}% over kernels"
    if "x_scan" in r:
        s += f"  {r['x_scan']:.2f}x faster than tf.scan"
    return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tf_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="+", default=[configs.TARGET_CONFIG], metavar="NAME",
                   help="names from benchmarks/configs.py (default: mnist)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=int, default=21, help=f"rounds (>= {MIN_REPEATS} for reported figures)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the machine header and rows here")
    args = p.parse_args(argv)
    tf = _tf()
    import numba

    machine = machine_info()
    machine["versions"]["tensorflow"] = tf.__version__
    print(f"{machine['date']}  {machine['cpu']} ({machine['usable_cores']} of {machine['cores']} cores, load "
          f"{machine['load_average']})  tensorflow {tf.__version__}, numba {numba.__version__} "
          f"({numba.get_num_threads()} threads), git {machine['git_commit']}")
    try:
        rows = run(configs.resolve(args.config), args.dtype, args.repeats)
    except GateError as exc:
        print(exc, file=sys.stderr)
        return 1
    for t in targets(rows):
        print(f"target {t['name']}: {t['measured']:.2f}{t['unit']} (target >= {t['target']:g}{t['unit']})  "
              f"{'PASS' if t['passed'] else 'MISS'}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "targets": targets(rows)}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
