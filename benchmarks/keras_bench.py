"""The Keras suite: one training step (``model.train_on_batch``) of ``IndRNN`` beside ``keras.layers.SimpleRNN``
and ``keras.layers.LSTM`` of the same size, on each Keras backend (torch, jax, tensorflow).

Each model is ``Sequential([Input((T, F)), <recurrent layer>(H), Dense(1)])`` compiled with Adam and MSE (Keras'
defaults otherwise: ``jit_compile="auto"``, which is XLA on jax and plain graphs on tensorflow and eager torch);
one step is forward, backward and the Adam update on a fixed float32 batch ``[B, T, F]``. Default: the pixel-MNIST
shape T=784, B=64, H=128, F=1. Target (issue 12): IndRNN >= 5x faster than SimpleRNN on every backend.

Keras fixes its backend per process, so each backend runs in its own subprocess (this module with ``--worker``).
Within it, the three models alternate within each round (one step of each, in turn, each round starting one
later), so load from other processes on a shared machine hits all of them alike; median of ``--repeats`` rounds
(fewer, but at least 5, once ``--max-seconds`` of rounds have passed) after two warm-up steps each (the first
compiles); progress goes to stderr. Nothing is timed before the IndRNN layer passes a correctness
gate on that backend: its output and its input gradient's sum against a float64 NumPy loop, on a small batch.

    python -m benchmarks.keras_bench                            # every backend, T=784, B=64, H=128
    python -m benchmarks.keras_bench --backends jax --repeats 5 --seq-len 100 --json out.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BACKENDS = ("torch", "jax", "tensorflow")
MODELS = ("IndRNN", "SimpleRNN", "LSTM")
TARGET_SIMPLE_RNN_SPEEDUP = 5.0
MARK = "KERAS-BENCH:"
MIN_REPEATS = 5  # rounds run even past --max-seconds
# Left out by default: Keras 3.15's LSTM on the torch backend took 131 s per step at T=784 here (262 s for its
# first two steps, 2026-11-26): 5 rounds would take 11 minutes. --exclude none times it anyway.
DEFAULT_EXCLUDE = ("torch:LSTM",)


# ---- worker (one backend, in its own process) -------------------------------------------------------------------
def _harness():
    # The worker runs as ``python -m benchmarks.keras_bench``: the package's harness is importable.
    from benchmarks import harness

    return harness

def _gate(keras) -> float:
    """Scaled error of IndRNN's output against a float64 NumPy loop (raises above float32's tolerance)."""
    from indrnn_core.adapters.keras import IndRNN
    from indrnn_core.testing import scaled_error

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 50, 4)).astype("float32")
    layer = IndRNN(16, return_sequences=True,
                   recurrent_initializer=keras.initializers.RandomUniform(-1.0, 1.0, seed=1))
    out = np.asarray(keras.ops.convert_to_numpy(layer(x)), np.float64)
    W, u, b = (np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in layer.weights)
    h = np.zeros((3, 16))
    ref = []
    for t in range(x.shape[1]):
        h = np.maximum(x[:, t].astype(np.float64) @ W + u[0] * h + b, 0.0)
        ref.append(h)
    err = scaled_error(out, np.stack(ref, 1))
    if not err <= 8 * np.finfo(np.float32).eps * 51 * 4:
        raise SystemExit(f"correctness gate failed on {keras.config.backend()}: scaled error {err:.3g}")
    return err


def _worker(args) -> None:
    import keras

    from indrnn_core.adapters.keras import IndRNN

    keras.utils.set_random_seed(0)
    gate_error = _gate(keras)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, args.seq_len, args.features), dtype=np.float32)
    y = rng.random((args.batch, 1), dtype=np.float32)
    layers = {"IndRNN": lambda: IndRNN(args.hidden), "SimpleRNN": lambda: keras.layers.SimpleRNN(args.hidden),
              "LSTM": lambda: keras.layers.LSTM(args.hidden)}
    models = {}
    for name in args.models:
        model = keras.Sequential([keras.Input((args.seq_len, args.features)), layers[name](), keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(1e-4), "mse")
        models[name] = model
    compile_s = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        for _ in range(2):  # the first step traces/compiles
            float(model.train_on_batch(x, y))
        compile_s[name] = time.perf_counter() - t0
        print(f"  {keras.config.backend()} {name}: first two steps {compile_s[name]:.1f} s", file=sys.stderr,
              flush=True)
    names = list(models)

    def progress(r, samples):
        print(f"  {keras.config.backend()} round {r + 1}: " + ", ".join(
            f"{n} {samples[n][-1] * 1e3:.1f} ms" for n in names), file=sys.stderr, flush=True)

    harness = _harness()
    timed = harness.alternate({name: (lambda m=model: float(m.train_on_batch(x, y)))  # float(): the step finished
                               for name, model in models.items()}, args.repeats, warmup=0,
                              max_seconds=args.max_seconds, min_repeats=MIN_REPEATS, deadline=True,
                              between_rounds=gc.collect, on_round=progress)
    samples = {name: t["samples"] for name, t in timed.items()}
    rows = [{"backend": keras.config.backend(), "model": name, "T": args.seq_len, "B": args.batch, "H": args.hidden,
             "F": args.features, "dtype": "float32", "median_ms": statistics.median(ts) * 1e3,
             "min_ms": min(ts) * 1e3, "n": len(ts), "warmup_s": compile_s[name],
             "parameters": models[name].count_params(), "jit_compile": bool(models[name].jit_compile),
             "gate_error": gate_error}
            for name, ts in samples.items()]
    print(MARK + json.dumps(rows), flush=True)


# ---- driver ---------------------------------------------------------------------------------------------------
def _run_backend(backend: str, args) -> list[dict]:
    models = [m for m in args.models if f"{backend}:{m}" not in args.exclude]
    cmd = [sys.executable, "-m", "benchmarks.keras_bench", "--worker", "--seq-len", str(args.seq_len), "--batch",
           str(args.batch), "--hidden", str(args.hidden), "--features", str(args.features), "--repeats",
           str(args.repeats), "--max-seconds", str(args.max_seconds), "--models", *models]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        raise SystemExit(f"{backend} worker failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def format_row(r: dict, base: dict) -> str:
    ratio = base.get((r["backend"], r["model"]))
    speed = "" if r["model"] == "IndRNN" or ratio is None else f"  IndRNN {ratio:.1f}x faster"
    return (f"keras {r['backend']:<10} T={r['T']:<5} B={r['B']:<4} H={r['H']:<4} train_on_batch {r['model']:<9}"
            f" {r['median_ms']:9.1f} ms (min {r['min_ms']:.1f}, n={r['n']}, first 2 steps {r['warmup_s']:.1f} s,"
            f" jit_compile={r['jit_compile']}){speed}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--seq-len", type=int, default=784)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--features", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="per backend: no new round after this many seconds of rounds (at least 5 rounds run)")
    p.add_argument("--exclude", nargs="+", default=list(DEFAULT_EXCLUDE), metavar="BACKEND:MODEL",
                   help="skip these (default: %(default)s; 'none' for nothing)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the machine header and rows here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0

    from .core_bench import machine_info

    machine = machine_info()
    import keras

    machine["versions"]["keras"] = keras.__version__
    print(f"{machine['date']}  {machine['cpu']} ({machine['usable_cores']} of {machine['cores']} cores, load "
          f"{machine['load_average']})  keras {keras.__version__}, git {machine['git_commit']}")
    rows = []
    for backend in args.backends:
        rows += _run_backend(backend, args)
    times = {(r["backend"], r["model"]): r["median_ms"] for r in rows}
    base = {(b, m): times[(b, m)] / times[(b, "IndRNN")] for b, m in times if (b, "IndRNN") in times}
    for r in rows:
        print(format_row(r, base))
    targets = []
    for backend in args.backends:
        ratio = base.get((backend, "SimpleRNN"))
        if ratio is not None and "IndRNN" in args.models:
            ok = ratio >= TARGET_SIMPLE_RNN_SPEEDUP
            targets.append({"backend": backend, "speedup_over_simple_rnn": ratio, "pass": ok})
            print(f"target {backend}: IndRNN train step {ratio:.1f}x faster than SimpleRNN "
                  f"(target >= {TARGET_SIMPLE_RNN_SPEEDUP:g}x)  {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "targets": targets}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
