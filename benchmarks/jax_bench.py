"""The peer: the same recurrence as ``jax.lax.scan``, jit-compiled, as JAX users write it, timed alternately with
the kernels in one process (``benchmarks.harness.alternate``).

``h_t = relu(x_t + u * h_{t-1} + b)`` stepped by ``lax.scan``, gradients by autodiff, three ways:

* ``fwd``: ``jit(forward)``, against the kernels' forward;
* ``fwdbwd``: ``jit`` of ``jax.vjp``: ``h`` and ``gx, gu, gb, gh0`` for a given ``grad_h`` (the same five arrays as
  the kernels' forward + backward), against the kernels' forward + backward;
* ``grad``: ``jit(grad)`` of ``sum(h * grad_h)`` for x and u only (what a training step asks for; XLA may drop
  the rest), against the kernels' forward + backward.

Each row's ``speedup`` is the peer's time over the kernels' in the same rounds (median of per-round ratios).
Compilation happens in the warm-up and is not timed; every timed JAX call ends with ``block_until_ready``.
"""

from __future__ import annotations

import numpy as np

from .configs import Shape
from .core_bench import (ACTIVATION, GATE_SHAPE, GateError, check_outputs, format_gate, format_row, make_inputs,
                         reference_outputs)
from .harness import alternate, paired_ratio, public

IMPL = {"fwd": "jax.lax.scan (jit)", "fwdbwd": "jax.lax.scan (jit(vjp))",
        "grad": "jax.lax.scan (jit(grad) for x, u)"}


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax") is not None


def _functions(dtype: str):
    import jax
    import jax.numpy as jnp
    from jax import lax

    if dtype == "float64":
        # Without x64 JAX silently computes in float32; the flag must be on before the arrays are made.
        jax.config.update("jax_enable_x64", True)

    def forward(x, u, b, h0):
        def step(h, x_t):
            h = jnp.maximum(x_t + u * h + b, 0)
            return h, h

        _, h = lax.scan(step, h0, x)
        return h

    def forward_backward(x, u, b, h0, grad_h):
        h, vjp = jax.vjp(forward, x, u, b, h0)
        return h, vjp(grad_h)

    def loss(x, u, b, h0, grad_h):
        return jnp.sum(forward(x, u, b, h0) * grad_h)

    return jax.jit(forward), jax.jit(forward_backward), jax.jit(jax.grad(loss, argnums=(0, 1)))


def _device(device: str):
    import jax

    if device == "cpu":
        return jax.devices("cpu")[0]
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:  # a CPU-only jaxlib
        return None


def gate(dtype: str, device: str = "cpu") -> dict:
    """The scan peer against the reference on the gate instance (a wrong peer makes a meaningless speed-up)."""
    import jax

    assert ACTIVATION == "relu"  # the scan above hard-codes relu
    inp = make_inputs(GATE_SHAPE, dtype, seed=1234)
    want = reference_outputs(inp)
    fwd, fwdbwd, grad = _functions(dtype)
    dev = _device(device)
    args = [jax.device_put(inp[k], dev) for k in ("x", "u", "b", "h0", "grad_h")]
    h, (gx, gu, gb, gh0) = fwdbwd(*args)
    gx2, gu2 = grad(*args)
    got = {"h": np.asarray(h), "gx": np.asarray(gx), "gu": np.asarray(gu), "gb": np.asarray(gb),
           "gh0": np.asarray(gh0), "h (fwd only)": np.asarray(fwd(*args[:4])), "gx (grad)": np.asarray(gx2),
           "gu (grad)": np.asarray(gu2)}
    want["h (fwd only)"], want["gx (grad)"], want["gu (grad)"] = want["h"], want["gx"], want["gu"]
    return check_outputs("jax", device, dtype, got, want)


def has_device(device: str) -> bool:
    """Whether this jaxlib can run on ``device`` ("cpu" always; "cuda" needs a CUDA jaxlib and a GPU)."""
    return _device(device) is not None


def run(shapes: list[Shape], dtype: str, device: str, repeats: int, max_seconds: float | None = None,
        log=print, gated: bool = False) -> list[dict]:
    """Rows (fwd and fwdbwd) for every shape. Runs the gate first unless ``gated=True``; raises ``GateError`` if
    the scan disagrees with the reference."""
    import jax

    dev = _device(device)
    if dev is None:
        raise RuntimeError(f"jax has no {device} backend here (only {jax.default_backend()})")
    if not gated:
        rec = gate(dtype, device)
        if not rec["passed"]:
            raise GateError(format_gate(rec))
    fns = _functions(dtype)
    rows = []
    for shape in shapes:
        for mode, t in _time_shape(shape, dtype, dev, fns, repeats, max_seconds, device).items():
            row = {"suite": "jax", "impl": IMPL[mode], "device": device, "dtype": dtype, "config": shape.name,
                   "T": shape.T, "B": shape.B, "H": shape.H, "mode": mode, **t}
            same = "" if row["speedup"] is None else f"  kernels {row['speedup']:.2f}x faster (same rounds)"
            log(format_row(row) + same)
            rows.append(row)
    return rows


def _time_shape(shape, dtype, dev, fns, repeats, max_seconds, device) -> dict:
    """{mode: timing with ``speedup``}: the three peers and the kernels' forward and forward + backward, alternating
    in the same rounds; the shape's arrays are freed on return, before the next (possibly larger) shape."""
    import jax

    import indrnn_core

    fwd, fwdbwd, grad = fns
    inp = make_inputs(shape, dtype)
    x, u, b, h0, g = (jax.device_put(inp[k], dev) for k in ("x", "u", "b", "h0", "grad_h"))
    timed = {"jax fwd": lambda: jax.block_until_ready(fwd(x, u, b, h0)),
             "jax fwdbwd": lambda: jax.block_until_ready(fwdbwd(x, u, b, h0, g)),
             "jax grad": lambda: jax.block_until_ready(grad(x, u, b, h0, g))}
    if device == "cpu":  # the kernels on NumPy arrays, preallocated outputs (as core_bench times them)
        nx, nu, nb, nh0, ng = (inp[k] for k in ("x", "u", "b", "h0", "grad_h"))
        h = np.empty_like(nx)
        out = (np.empty_like(nx), np.empty_like(nu), np.empty_like(nu), np.empty_like(nh0))

        def kernels_fwd():
            indrnn_core.forward(nx, nu, nb, nh0, activation=ACTIVATION, out=h)

        def kernels_fwdbwd():
            kernels_fwd()
            indrnn_core.backward(ng, h, nu, nh0, activation=ACTIVATION, out=out)

        timed.update({"kernels fwd": kernels_fwd, "kernels fwdbwd": kernels_fwdbwd})
    t = alternate(timed, repeats, max_seconds=max_seconds * len(timed) if max_seconds else None, min_repeats=3)
    out_rows = {}
    for mode, base in (("fwd", "kernels fwd"), ("fwdbwd", "kernels fwdbwd"), ("grad", "kernels fwdbwd")):
        r = public(t[f"jax {mode}"])
        r["speedup"] = paired_ratio(t[f"jax {mode}"], t[base]) if base in t else None
        out_rows[mode] = r
    return out_rows
