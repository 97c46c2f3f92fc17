"""The peer: the same recurrence as ``jax.lax.scan``, jit-compiled, forward and fwd+bwd (``jax.vjp``).

This is what a JAX user writes without the kernels: ``h_t = relu(x_t + u * h_{t-1} + b)`` stepped by ``lax.scan``,
gradients by autodiff. The fwd+bwd function returns the same five arrays as the kernels' forward + backward
(``h`` and ``gx, gu, gb, gh0`` for a given ``grad_h``), so both sides do the same work. Compilation happens in the
warm-up and is not timed; every timed call ends with ``block_until_ready``.
"""

from __future__ import annotations

import numpy as np

from .configs import Shape
from .core_bench import (ACTIVATION, GATE_SHAPE, GateError, check_outputs, format_gate, format_row, make_inputs,
                         measure, reference_outputs)

IMPL = "jax.lax.scan (jit)"


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

    return jax.jit(forward), jax.jit(forward_backward)


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
    fwd, fwdbwd = _functions(dtype)
    dev = _device(device)
    args = [jax.device_put(inp[k], dev) for k in ("x", "u", "b", "h0", "grad_h")]
    h, (gx, gu, gb, gh0) = fwdbwd(*args)
    got = {"h": np.asarray(h), "gx": np.asarray(gx), "gu": np.asarray(gu), "gb": np.asarray(gb),
           "gh0": np.asarray(gh0), "h (fwd only)": np.asarray(fwd(*args[:4]))}
    want["h (fwd only)"] = want["h"]
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
    fwd, fwdbwd = _functions(dtype)
    rows = []
    for shape in shapes:
        for mode, t in _time_shape(shape, dtype, dev, fwd, fwdbwd, repeats, max_seconds).items():
            row = {"suite": "jax", "impl": IMPL, "device": device, "dtype": dtype, "config": shape.name,
                   "T": shape.T, "B": shape.B, "H": shape.H, "mode": mode, **t}
            log(format_row(row))
            rows.append(row)
    return rows


def _time_shape(shape, dtype, dev, fwd, fwdbwd, repeats, max_seconds) -> dict:
    """{mode: timing}; the shape's arrays are freed on return, before the next (possibly larger) shape."""
    import jax

    inp = make_inputs(shape, dtype)
    x, u, b, h0, g = (jax.device_put(inp[k], dev) for k in ("x", "u", "b", "h0", "grad_h"))
    del inp
    return {"fwd": _measure_jax(lambda: fwd(x, u, b, h0), repeats, max_seconds),
            "fwdbwd": _measure_jax(lambda: fwdbwd(x, u, b, h0, g), repeats, max_seconds)}


def _measure_jax(call, repeats: int, max_seconds: float | None) -> dict:
    import jax

    return measure(lambda: jax.block_until_ready(call()), repeats, max_seconds=max_seconds)
