"""The JAX adapter against its peers, as their users write them (issue 10's targets), on the CPU:

* ``adapter``: ``jit(grad)`` of a loss through :func:`indrnn_core.adapters.jax.indrnn`, gradients for x, u, b, h0;
* ``lax.scan``: the same loss and gradients with the recurrence written as ``jax.lax.scan`` (what a JAX user writes
  without the kernels), ``jit(grad)`` too (target: the adapter >= 2x faster);
* ``kernels``: the raw kernels' forward + backward on NumPy arrays (``indrnn_core.forward``/``backward``): the floor
  the adapter adds its overhead to (target: < 25%), compared with ``jit(vjp)`` through the adapter (``h`` and the
  four gradients for a given ``grad_h``: the same work; a loss would add XLA's own passes over ``h``);
* at T=1: ``jit(indrnn)`` forward per call minus the raw forward per call (target: < 50 us).

Implementations are timed alternately in one process (sample i of each back to back, so load from other processes
hits all alike), median of ``--repeats`` samples; every timed JAX call ends with ``block_until_ready``. Before any
timing, the adapter's gradients are checked against the kernels'.

    python -m benchmarks.jax_adapter_bench [--repeats 21] [--json out.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics

import numpy as np

from .core_bench import machine_info
from .harness import alternate, paired_overhead as _paired_overhead, public as _public


def _functions(T, B, H, seed=0):
    import jax
    import jax.numpy as jnp
    from jax import lax

    import indrnn_core
    from indrnn_core.adapters.jax import indrnn

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    u = rng.uniform(0, 1, H).astype(np.float32)
    b = rng.standard_normal(H).astype(np.float32) * 0.1
    h0 = np.zeros((B, H), np.float32)
    g = rng.standard_normal((T, B, H)).astype(np.float32)

    def scan_indrnn(x, u, b, h0):
        def step(h, x_t):
            h = jax.nn.relu(x_t + u * h + b)
            return h, h
        return lax.scan(step, h0, x)[1]

    def grad_of(f):
        return jax.jit(jax.grad(lambda x, u, b, h0, g: jnp.sum(f(x, u, b, h0) * g), argnums=(0, 1, 2, 3)))

    adapter, scan = grad_of(indrnn), grad_of(scan_indrnn)
    args = tuple(jnp.asarray(a) for a in (x, u, b, h0, g))

    @jax.jit
    def adapter_vjp(x, u, b, h0, g):
        h, vjp = jax.vjp(indrnn, x, u, b, h0)
        return h, vjp(g)

    def kernels():
        h = indrnn_core.forward(x, u, b, h0)
        return indrnn_core.backward(g, h, u, h0)

    # correctness gate: the adapter's gradients are the kernels'
    want = kernels()
    for name, got, w in zip(("gx", "gu", "gb", "gh0"), adapter(*args), want):
        err = float(np.max(np.abs(np.asarray(got) - w)) / (1 + np.max(np.abs(w))))
        if err > 1e-5:
            raise RuntimeError(f"gate: adapter {name} differs from the kernels' by {err:.2e}")
    fns = {"adapter jit(grad)": lambda: jax.block_until_ready(adapter(*args)),
           "lax.scan jit(grad)": lambda: jax.block_until_ready(scan(*args)),
           "adapter jit(vjp)": lambda: jax.block_until_ready(adapter_vjp(*args)),
           "kernels fwd+bwd": kernels}
    forward = jax.jit(lambda x, u, b, h0: indrnn(x, u, b, h0))
    one_step = {"adapter jit forward": lambda: jax.block_until_ready(forward(*args[:4])),
                "kernels forward": lambda: indrnn_core.forward(x, u, b, h0)}
    return fns, one_step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--T", type=int, default=784)
    parser.add_argument("--B", type=int, default=64)
    parser.add_argument("--H", type=int, default=128)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    info = machine_info()
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {info.get('cpu')}, "
          f"{info.get('cores', info.get('cpu_count'))} cores; jax {info.get('versions', {}).get('jax', '?')}")
    fns, _ = _functions(args.T, args.B, args.H)
    t = alternate(fns, args.repeats, max_seconds=args.max_seconds)
    base = t["kernels fwd+bwd"]
    print(f"T={args.T} B={args.B} H={args.H} float32, fwd+grad, median of {base['repeats']} alternating samples:")
    for name, r in t.items():
        print(f"  {name:22s} {r['median_ms']:8.2f} ms  (min {r['min_ms']:.2f})")
    speedup = statistics.median(s / a for a, s in zip(t["adapter jit(grad)"]["samples"],
                                                      t["lax.scan jit(grad)"]["samples"]))
    overhead = _paired_overhead(t["adapter jit(vjp)"], base)
    print(f"  adapter vs lax.scan: {speedup:.2f}x faster (target >= 2x: {'PASS' if speedup >= 2 else 'MISS'})")
    print(f"  adapter jit(vjp) overhead over the kernels: {overhead:+.1%} (target < 25%: "
          f"{'PASS' if overhead < 0.25 else 'MISS'})")
    _, one_step = _functions(1, args.B, args.H)
    s = alternate(one_step, args.repeats, max_seconds=args.max_seconds / 4, calls=200)
    per_call = statistics.median(a - k for a, k in zip(s["adapter jit forward"]["samples"],
                                                        s["kernels forward"]["samples"])) * 1e6
    print(f"T=1 B={args.B} H={args.H}: adapter jit forward {s['adapter jit forward']['median_ms'] * 1e3:.1f} us, "
          f"kernels {s['kernels forward']['median_ms'] * 1e3:.1f} us per call; overhead {per_call:.1f} us "
          f"(target < 50 us: {'PASS' if per_call < 50 else 'MISS'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "fwd_grad": {k: _public(v) for k, v in t.items()},
                       "speedup_vs_scan": speedup, "overhead_vs_kernels": overhead,
                       "t1": {k: _public(v) for k, v in s.items()}, "t1_overhead_us": per_call}, f, indent=1)


if __name__ == "__main__":
    main()
