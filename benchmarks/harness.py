"""The one timing harness every suite uses (core, jax, jax adapter, torch, tensorflow, keras): one loop
(:func:`alternate`), one shape type (:class:`benchmarks.configs.Shape`), one pass/fail gate (:func:`check_outputs`,
:func:`require`).

:func:`alternate` times several implementations of the same work in one process, one sample of each in turn per
round, each round starting one later (what a call leaves behind -- a thread pool spinning after a parallel region,
XLA's, TF's and torch's included -- falls on every implementation in turn, not always on the next one), so load
from other processes on a shared machine hits all of them alike. A sample is ``calls`` calls; GC is off while a
round runs. Figures are medians over samples; paired ratios (:func:`paired_ratio`) compare samples of the same
round.
"""

from __future__ import annotations

import gc
import statistics
import time

import numpy as np

from .configs import Shape  # noqa: F401  (the shape type of every suite)

# Relative to max(1, |reference|): float32 keeps ~7 digits, and a few dozen steps of accumulation lose a few.
GATE_TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


class GateError(RuntimeError):
    """An implementation disagreed with the reference: its speed is not worth reporting."""


def summary(seconds: list[float]) -> dict:
    """Median, min and max of a list of times in seconds, as milliseconds (and seconds), with the samples."""
    med = statistics.median(seconds)
    return {"median_ms": med * 1e3, "min_ms": min(seconds) * 1e3, "max_ms": max(seconds) * 1e3,
            "repeats": len(seconds), "seconds_median": med, "seconds_min": min(seconds), "samples": list(seconds)}


def public(t: dict) -> dict:
    """A summary without its raw samples (for tables and JSON rows)."""
    return {k: v for k, v in t.items() if k != "samples"}


def wall_clock(sync=None):
    """The default sampler: wall clock around ``calls`` calls, ``sync()`` (e.g. ``block_until_ready``, a device
    synchronise) inside the timed region after them when given."""
    def sample(fn, calls):
        t0 = time.perf_counter()
        for _ in range(calls):
            result = fn()
        if sync is not None:
            sync(result)
        return time.perf_counter() - t0

    return sample


def alternate(fns: dict, repeats: int, *, warmup: int = 2, max_seconds: float | None = None, min_repeats: int = 1,
              calls: int = 1, sampler=None, between_rounds=None, on_round=None, deadline: bool = False) -> dict:
    """Time each of ``fns`` (name -> zero-argument callable) alternately: ``warmup`` untimed samples of each, then up
    to ``repeats`` rounds of one sample of each (rotating order). Fewer rounds (never fewer than ``min_repeats``)
    when the warm-up's last samples say all rounds would take longer than ``max_seconds``, or (``deadline``) once
    ``max_seconds`` of rounds have passed. ``sampler(fn, calls)`` -> seconds (default :func:`wall_clock`);
    ``between_rounds()`` runs untimed after each round (GC on meanwhile); ``on_round(r, samples)`` reports progress.
    Returns name -> :func:`summary` of the per-call times."""
    sampler = sampler or wall_clock()
    estimate = 0.0
    for fn in fns.values():
        t = 0.0
        for _ in range(warmup):
            t = sampler(fn, calls)
        estimate += t
    n = repeats
    if max_seconds is not None and estimate > 0:
        n = max(min(min_repeats, repeats), min(repeats, int(max_seconds / estimate)))
    n = max(1, n)
    samples: dict = {name: [] for name in fns}
    names = list(fns)
    gc_was_enabled = gc.isenabled()
    start = time.perf_counter()
    try:
        for r in range(n):
            if deadline and r >= min_repeats and max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
            gc.disable()
            for name in names[r % len(names):] + names[:r % len(names)]:
                samples[name].append(sampler(fns[name], calls) / calls)
            if gc_was_enabled:
                gc.enable()
            if between_rounds is not None:
                between_rounds()
            if on_round is not None:
                on_round(r, samples)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: summary(ts) for name, ts in samples.items()}


def measure(fn, repeats: int, *, warmup: int = 2, max_seconds: float | None = None, sync=None,
            min_repeats: int = 3) -> dict:
    """One implementation through :func:`alternate` (``sync()`` takes no argument here)."""
    sampler = wall_clock(None if sync is None else (lambda _result: sync()))
    return alternate({"": fn}, repeats, warmup=warmup, max_seconds=max_seconds, min_repeats=min_repeats,
                     sampler=sampler)[""]


def paired_ratio(t: dict, base: dict) -> float:
    """Median over rounds of (sample / the baseline's sample of the same round): robust to load drifting."""
    return statistics.median(a / b for a, b in zip(t["samples"], base["samples"]))


def paired_overhead(t: dict, base: dict) -> float:
    """:func:`paired_ratio` - 1."""
    return paired_ratio(t, base) - 1


# ---- the gate ---------------------------------------------------------------------------------------------------

def scaled_errors(got: dict, want: dict) -> dict:
    """name -> ``indrnn_core.testing.scaled_error`` of each output ``want`` names."""
    from indrnn_core.testing import scaled_error

    return {k: scaled_error(np.asarray(got[k]), want[k]) for k in want}


def check_outputs(suite: str, device: str, dtype: str, got: dict, want: dict, *, shape=None,
                  tolerance: float | None = None, **extra) -> dict:
    """The gate record of one implementation: every named output against the reference."""
    errors = scaled_errors(got, want)
    tol = GATE_TOLERANCE[dtype] if tolerance is None else tolerance
    rec = {"suite": suite, "device": device, "dtype": dtype, "tolerance": tol, "errors": errors,
           "passed": all(e <= tol for e in errors.values())}
    if shape is not None:
        rec["shape"] = list(shape)
    rec.update(extra)
    return rec


def require(records, format_record=None) -> None:
    """Raise :class:`GateError` unless every gate record passed (a record or a list of them)."""
    records = [records] if isinstance(records, dict) else list(records)
    failed = [r for r in records if not r["passed"]]
    if failed:
        fmt = format_record or (lambda r: f"{r.get('suite')}: {r.get('errors') or r.get('checks')}")
        raise GateError("gate failed: " + "; ".join(fmt(r) for r in failed))
