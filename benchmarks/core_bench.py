"""The core kernels' benchmark: forward, backward and fwd+bwd times beside the memory-bandwidth floor.

The recurrence is memory-bound, so the yardstick is the machine's own copy bandwidth, measured in the same run on
an array the size of ``x``: forward reads ``x`` and writes ``h`` (2 arrays of ``T*B*H`` elements), backward reads
``grad_h`` and ``h`` and writes ``gx`` (3 arrays). ``floor = bytes moved / copy bandwidth`` with
``copy bandwidth = 2 * nbytes / (time of one copy)``; a kernel at 1.0x of its floor moves its bytes as fast as a
plain copy does. On the CPU a second yardstick, the plain-store floor, times ``np.add(src, 1, out=dst)`` instead:
glibc's ``memcpy`` switches to non-temporal stores for large arrays, which skip reading the destination into the
cache first, while NumPy's loops and these kernels use ordinary stores (measured here: +50% time at 300 MB), so at
large T the copy floor is out of reach of any kernel with ordinary stores and the plain-store floor is the one it
can meet.

CPU: NumPy arrays, ``time.perf_counter``, ``np.copyto``. CUDA: numba device arrays, device-to-device copy, GPU time
from CUDA events on one stream, the calls queued behind a spin kernel so that the host's launch cost stays out of
the kernels' times (it is the torch rows' subject). Outputs are preallocated and passed as ``out=`` so allocation is
not timed; the first calls (JIT compilation) are warm-up and not timed either.

Also home of the machine header the other suites share (``machine_info``) and of ``measure_cuda`` (CUDA events
behind a held stream); the timing loop, the summaries and the gate record are ``benchmarks.harness``'s.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import harness
from .configs import Shape
from .harness import GATE_TOLERANCE, GateError, alternate, measure, public, summary  # noqa: F401  (re-exported)

REPO_ROOT = Path(__file__).resolve().parent.parent

# The shape the correctness gate runs at: small and awkward (nothing a multiple of a SIMD width or a block).
GATE_SHAPE = Shape("gate", 29, 3, 21, "correctness gate")
ACTIVATION = "relu"
# ``--time-parallel``: which kernels forward/backward run (``time_parallel=`` None, True, False).
TIME_PARALLEL = {"auto": None, "on": True, "off": False}


# --------------------------------------------------------------------------------------------------------------
# Machine header
# --------------------------------------------------------------------------------------------------------------

def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """Where and with what a run was made: CPU, cores, memory, OS, package versions, date (UTC), git commit."""
    import numba

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "memory_gib": _memory_gib(),
        # Other work on the machine skews every figure: a load near or above the core count means noisy numbers.
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in ("indrnn-core", "numpy", "numba", "llvmlite", "numba-cuda", "jax",
                                              "jaxlib", "torch")},
        "git_commit": _git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": None,
    }


def gpu_info() -> dict:
    """The CUDA device the kernels run on (call only when ``numba.cuda.is_available()``)."""
    from numba import cuda

    import numba

    if numba.config.ENABLE_CUDASIM:  # NUMBA_ENABLE_CUDASIM=1: the code paths run, the times mean nothing
        return {"name": "Numba CUDA simulator (times are not meaningful)", "simulator": True}
    dev = cuda.get_current_device()
    name = getattr(dev, "name", "unknown")
    info = {"name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": ".".join(map(str, getattr(dev, "compute_capability", ()))) or None}
    try:
        ctx = cuda.current_context()
        info["memory_gib"] = round(ctx.get_memory_info().total / 2**30, 1)
    except Exception:  # informative only
        pass
    try:
        from numba.cuda.cudadrv.driver import driver

        v = driver.get_version()
        info["driver_cuda_version"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:
        pass
    return info


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------

def _repeat_count(estimate_s: float, repeats: int, max_seconds: float | None) -> int:
    """At most ``repeats``, fewer when that would take longer than ``max_seconds`` (but never fewer than 3)."""
    if max_seconds is None or estimate_s <= 0:
        return repeats
    return max(min(3, repeats), min(repeats, int(max_seconds / estimate_s)))


_HOLD = []  # [the hold kernel, microseconds per loop iteration], made and calibrated on first use


def _hold_stream(stream, microseconds: float) -> None:
    """Keep ``stream`` busy for about ``microseconds`` with a one-thread spin kernel, so that work queued behind it
    meanwhile runs back to back, at the GPU's own pace, whatever the host's launch cost."""
    from numba import cuda

    from indrnn_core.cuda import _launch

    if _launch.SIMULATOR:  # the simulator runs each launch to completion: nothing to hold
        return
    if not _HOLD:
        @cuda.jit
        def hold(iterations):
            for _ in range(iterations):
                cuda.nanosleep(1000)

        hold[1, 1, stream](1)
        start, end = cuda.event(), cuda.event()
        start.record(stream)
        hold[1, 1, stream](20000)
        end.record(stream)
        end.synchronize()
        _HOLD.extend([hold, max(start.elapsed_time(end) * 1e3 / 20000, 0.05)])
    hold, us_per_iteration = _HOLD
    hold[1, 1, stream](int(microseconds / us_per_iteration) + 1)


def measure_cuda(fn, stream, repeats: int, *, warmup: int = 2, max_seconds: float | None = None) -> dict:
    """GPU time of ``fn()`` (which launches work on ``stream``): a pair of CUDA events around each call, all queued
    behind :func:`_hold_stream` while the host enqueues them, so the host's launch cost (the torch rows and
    ``benchmarks.cuda_probe`` measure that) never shows as GPU idle time between the events."""
    from numba import cuda

    for _ in range(max(1, warmup)):
        fn()
    stream.synchronize()
    start, end = cuda.event(), cuda.event()
    t0 = time.perf_counter()
    start.record(stream)
    fn()
    end.record(stream)
    host_s = time.perf_counter() - t0
    end.synchronize()
    n = _repeat_count(start.elapsed_time(end) / 1e3, repeats, max_seconds)
    n = max(1, min(n, int(1.0 / max(host_s, 1e-6))))  # hold the stream for at most ~2 s
    pairs = [(cuda.event(), cuda.event()) for _ in range(n)]
    _hold_stream(stream, 2 * n * host_s * 1e6 + 2000)
    for start, end in pairs:
        start.record(stream)
        fn()
        end.record(stream)
    stream.synchronize()
    return summary([start.elapsed_time(end) / 1e3 for start, end in pairs])


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------

def make_inputs(shape: Shape, dtype: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A stable problem: ``x``, ``grad_h`` ~ N(0, 1) ``[T, B, H]``; ``u`` in (0, 1) (the papers' hidden-layer
    init); small ``b``; ``h0`` >= 0 ``[B, H]``. Values stay O(1) at any T, so no denormals slow anything down."""
    rng = np.random.default_rng(seed)
    T, B, H = shape.T, shape.B, shape.H
    dt = np.dtype(dtype)
    return {
        "x": rng.standard_normal((T, B, H), dtype=np.float32).astype(dt, copy=False),
        "u": rng.uniform(0.0, 1.0, H).astype(dt),
        "b": (0.1 * rng.standard_normal(H)).astype(dt),
        "h0": np.abs(rng.standard_normal((B, H))).astype(dt),
        "grad_h": rng.standard_normal((T, B, H), dtype=np.float32).astype(dt, copy=False),
    }


# --------------------------------------------------------------------------------------------------------------
# Correctness gate
# --------------------------------------------------------------------------------------------------------------

def check_outputs(suite: str, device: str, dtype: str, got: dict, want: dict) -> dict:
    """Compare named outputs at the gate shape (``harness.check_outputs``); the gate record that goes into the
    JSON."""
    return harness.check_outputs(suite, device, dtype, got, want, shape=(GATE_SHAPE.T, GATE_SHAPE.B, GATE_SHAPE.H),
                                 activation=ACTIVATION)


def reference_outputs(inp: dict) -> dict:
    """``h``, ``gx``, ``gu``, ``gb``, ``gh0`` from ``indrnn_core.reference`` (float64)."""
    from indrnn_core import reference

    h = reference.forward(inp["x"], inp["u"], inp["b"], inp["h0"], activation=ACTIVATION)
    # The reference's backward reads the kernel-independent float64 h, so a wrong forward cannot mask itself.
    gx, gu, gb, gh0 = reference.backward(inp["grad_h"], h, inp["u"], inp["h0"], activation=ACTIVATION)
    return {"h": h, "gx": gx, "gu": gu, "gb": gb, "gh0": gh0}


def gate(dtype: str, device: str = "cpu", time_parallel=("auto",)) -> dict:
    """Run the kernels on a small instance into NaN-filled ``out=`` buffers and compare every output with the
    reference, once per ``time_parallel`` variant (names of ``TIME_PARALLEL``; each output's worst error counts).
    Returns the gate record; ``record["passed"]`` says whether timing may go ahead."""
    records = [_gate_one(dtype, device, TIME_PARALLEL[v]) for v in time_parallel]
    worst = max(records, key=lambda r: (not r["passed"], max(_finite_or_inf(e) for e in r["errors"].values())))
    worst = dict(worst)
    worst["errors"] = {k: max((r["errors"][k] for r in records), key=_finite_or_inf) for k in worst["errors"]}
    worst["time_parallel"] = list(time_parallel)
    worst["passed"] = all(r["passed"] for r in records)
    return worst


def _finite_or_inf(e):
    return float("inf") if e is None or e != e else e


def _gate_one(dtype: str, device: str, time_parallel) -> dict:
    import indrnn_core

    inp = make_inputs(GATE_SHAPE, dtype, seed=1234)
    want = reference_outputs(inp)
    T, B, H = GATE_SHAPE.T, GATE_SHAPE.B, GATE_SHAPE.H
    dt = np.dtype(dtype)
    try:
        if device == "cpu":
            h = np.full((T, B, H), np.nan, dt)
            out = (np.full((T, B, H), np.nan, dt), np.full(H, np.nan, dt), np.full(H, np.nan, dt),
                   np.full((B, H), np.nan, dt))
            indrnn_core.forward(inp["x"], inp["u"], inp["b"], inp["h0"], activation=ACTIVATION, out=h,
                                time_parallel=time_parallel)
            # backward gets the kernel's own h: the pair is what a training step runs.
            gx, gu, gb, gh0 = indrnn_core.backward(inp["grad_h"], h, inp["u"], inp["h0"], activation=ACTIVATION,
                                                   out=out, time_parallel=time_parallel)
            got = {"h": h, "gx": gx, "gu": gu, "gb": gb, "gh0": gh0}
        else:
            got = _gate_cuda(inp, dt, time_parallel)
    except Exception as exc:  # a crash is a failed gate, reported like one
        rec = check_outputs("core", device, dtype, {k: np.full(1, np.nan) for k in want}, want)
        rec["exception"] = f"{type(exc).__name__}: {exc}"
        return rec
    return check_outputs("core", device, dtype, got, want)


def _gate_cuda(inp: dict, dt, time_parallel=None) -> dict:
    import indrnn_core
    from numba import cuda

    stream = cuda.stream()
    d = {k: cuda.to_device(np.ascontiguousarray(v), stream=stream) for k, v in inp.items()}
    T, B, H = inp["x"].shape
    nan = lambda shape: cuda.to_device(np.full(shape, np.nan, dt), stream=stream)  # noqa: E731
    h = nan((T, B, H))
    out = (nan((T, B, H)), nan(H), nan(H), nan((B, H)))
    indrnn_core.forward(d["x"], d["u"], d["b"], d["h0"], activation=ACTIVATION, out=h, stream=stream,
                        time_parallel=time_parallel)
    res = indrnn_core.backward(d["grad_h"], h, d["u"], d["h0"], activation=ACTIVATION, out=out, stream=stream,
                               time_parallel=time_parallel)
    stream.synchronize()
    names = ("gx", "gu", "gb", "gh0")
    got = {"h": h.copy_to_host()}
    for name, arr in zip(names, res):
        got[name] = arr.copy_to_host() if hasattr(arr, "copy_to_host") else np.asarray(arr)
    return got


# --------------------------------------------------------------------------------------------------------------
# Timing runs
# --------------------------------------------------------------------------------------------------------------

def _rows(shape: Shape, dtype: str, device: str, times: dict, copy: dict | None, nbytes: int, impl: str,
          floor: dict | None = None) -> list[dict]:
    """One row per mode, each with its floor: fwd moves 2 arrays, bwd 3, fwd+bwd 5 (``nbytes`` = one array).
    The bandwidth is ``copy``'s (CUDA: one device-to-device copy) or ``floor``'s (CPU: ``best_floor``, the best of
    several streams; its best ordinary-store stream is the second yardstick, ``x_store_floor``)."""
    if floor is None:
        bandwidth = 2 * nbytes / (copy["median_ms"] / 1e3)  # bytes/s: a copy reads nbytes and writes nbytes
        store_bw = None
    else:
        bandwidth = floor["GBps"] * 1e9
        store_bw = None if floor["ordinary_GBps"] is None else floor["ordinary_GBps"] * 1e9
    rows = []
    for mode, arrays in (("fwd", 2), ("bwd", 3), ("fwdbwd", 5)):
        floor_ms = arrays * nbytes / bandwidth * 1e3
        rows.append({
            "suite": "core", "impl": impl, "device": device, "dtype": dtype, "config": shape.name,
            "T": shape.T, "B": shape.B, "H": shape.H, "mode": mode, **public(times[mode]),
            "bytes": arrays * nbytes, "copy_GBps": bandwidth / 1e9, "floor_ms": floor_ms,
            "x_floor": times[mode]["median_ms"] / floor_ms,
        })
        if floor is not None:
            rows[-1].update(floor_source=floor["source"], floor_bandwidths=floor["bandwidths"])
        if store_bw is not None:
            rows[-1].update(store_GBps=store_bw / 1e9,
                            x_store_floor=times[mode]["median_ms"] / (arrays * nbytes / store_bw * 1e3))
    return rows


def _alternating(fns: dict, repeats: int, rounds: int, max_seconds: float | None, measure_fn) -> dict:
    """{variant: {mode: summary}}: ``rounds`` rounds, each measuring every variant's every mode in turn, in an order
    rotating by one each round (so that other load on the machine hits all variants alike); a variant's figure is
    the median over rounds of the per-round medians (min and max over all calls)."""
    runs = {v: {m: [] for m in modes} for v, modes in fns.items()}
    variants = list(fns)
    for r in range(max(1, rounds)):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:  # each round starts one later
            for mode, fn in fns[v].items():
                runs[v][mode].append(measure_fn(fn, repeats, max_seconds=max_seconds))
    return {v: {m: _median_of(s) for m, s in modes.items()} for v, modes in runs.items()}


def _median_of(summaries: list[dict]) -> dict:
    if len(summaries) == 1:
        return summaries[0]
    return {"median_ms": statistics.median(s["median_ms"] for s in summaries),
            "min_ms": min(s["min_ms"] for s in summaries), "max_ms": max(s["max_ms"] for s in summaries),
            "repeats": sum(s["repeats"] for s in summaries), "rounds": len(summaries)}


def _label(variant: str, device: str) -> str:
    base = "indrnn_core (numba.njit)" if device == "cpu" else "indrnn_core (numba.cuda)"
    return base if variant == "auto" else f"{base} time_parallel={TIME_PARALLEL[variant]}"


def _best_copy(a: dict, b: dict) -> dict:
    """Of two copy measurements around the kernel timings, the faster: the floor is what the memory can do."""
    return a if a["median_ms"] <= b["median_ms"] else b


# ---- the CPU floor: the best bandwidth the machine shows, in the same run as the kernels ------------------------
# Streams of one array's size (read one, write another), each with ordinary or non-temporal stores, on one thread or
# on all of Numba's threads. Non-temporal stores cannot be written in Numba (it has no intrinsic for them); glibc's
# memcpy (np.copyto) uses them above its size threshold, so the copyto rows are the streaming-store rows, and the
# all-thread one runs copyto on one slice per thread from a thread pool (NumPy releases the GIL while it copies).
STORE_KINDS = ("ordinary", "streaming (memcpy)")


def _numba_copies():
    from numba import njit, prange

    @njit(cache=True)
    def copy_1(src, dst):
        for i in range(src.shape[0]):
            dst[i] = src[i]

    @njit(cache=True, parallel=True)
    def copy_all(src, dst, chunks):
        n = src.shape[0]
        for c in prange(chunks):
            for i in range(c * n // chunks, (c + 1) * n // chunks):
                dst[i] = src[i]

    return copy_1, copy_all


def floor_streams(src: np.ndarray, dst: np.ndarray) -> dict:
    """name -> zero-argument callable moving ``src`` into ``dst`` (same size: bytes moved = 2 * nbytes). The names
    say threads and stores; every callable is warmed up (compiled) here."""
    import concurrent.futures

    import numba

    copy_1, copy_all = _numba_copies()
    s, d = src.reshape(-1), dst.reshape(-1)
    threads = numba.get_num_threads()
    pool = concurrent.futures.ThreadPoolExecutor(threads)
    bounds = [(c * s.size // threads, (c + 1) * s.size // threads) for c in range(threads)]

    def copyto_all():
        list(pool.map(lambda lh: np.copyto(d[lh[0]:lh[1]], s[lh[0]:lh[1]]), bounds))

    fns = {
        "np.copyto, 1 thread, streaming (memcpy)": lambda: np.copyto(dst, src),
        f"np.copyto, {threads} threads, streaming (memcpy)": copyto_all,
        "np.add(src, 1), 1 thread, ordinary": lambda: np.add(src, 1, out=dst),
        "numba copy, 1 thread, ordinary": lambda: copy_1(s, d),
        f"numba prange copy, {threads} threads, ordinary": lambda: copy_all(s, d, threads),
    }
    for fn in fns.values():
        fn()
    return fns


def measure_floor(fns: dict, repeats: int, max_seconds: float | None) -> dict:
    """name -> timing summary of each floor stream (alternating, as the kernels are)."""
    return alternate(fns, max(repeats, 10), max_seconds=max_seconds, min_repeats=3)


def best_floor(*measurements: dict, nbytes: int) -> dict:
    """The floor record from one or more ``measure_floor`` results (e.g. before and after the kernels): every
    stream's best bandwidth (GB/s) and the best of all, which is the floor, with its name."""
    bw = {}
    for m in measurements:
        for name, t in m.items():
            bw[name] = max(bw.get(name, 0.0), 2 * nbytes / (t["median_ms"] / 1e3) / 1e9)
    best = max(bw, key=bw.get)
    ordinary = max((v for k, v in bw.items() if k.endswith("ordinary")), default=None)
    return {"GBps": bw[best], "source": best, "bandwidths": bw, "ordinary_GBps": ordinary}


def run_shape_cpu(shape: Shape, dtype: str, repeats: int, max_seconds: float | None = None,
                  time_parallel=("auto",), rounds: int = 1) -> list[dict]:
    import indrnn_core

    inp = make_inputs(shape, dtype)
    x, u, b, h0, g = inp["x"], inp["u"], inp["b"], inp["h0"], inp["grad_h"]
    h = np.empty_like(x)
    out = (np.empty_like(x), np.empty_like(u), np.empty_like(u), np.empty_like(h0))
    src, dst = np.ones_like(x), np.empty_like(x)
    streams = floor_streams(src, dst)

    def modes(tp):
        def fwd():
            indrnn_core.forward(x, u, b, h0, activation=ACTIVATION, out=h, time_parallel=tp)

        def bwd():
            indrnn_core.backward(g, h, u, h0, activation=ACTIVATION, out=out, time_parallel=tp)

        def fwdbwd():
            fwd()
            bwd()

        return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwdbwd}

    fns = {v: modes(TIME_PARALLEL[v]) for v in time_parallel}

    for v in fns.values():  # compile (cached kernels load) before the floor timing so both see a warm process
        v["fwdbwd"]()
    floor_before = measure_floor(streams, repeats, max_seconds)
    times = _alternating(fns, repeats, rounds, max_seconds, measure)
    floor_after = measure_floor(streams, repeats, max_seconds)
    floor = best_floor(floor_before, floor_after, nbytes=x.nbytes)
    finite = bool(np.isfinite(h).all() and np.isfinite(out[0]).all())
    rows = []
    for v in fns:
        rows += _rows(shape, dtype, "cpu", times[v], None, x.nbytes, _label(v, "cpu"), floor=floor)
        for r in rows[-3:]:
            r["outputs_finite"], r["time_parallel"] = finite, v
    return rows


def run_shape_cuda(shape: Shape, dtype: str, repeats: int, max_seconds: float | None = None,
                   time_parallel=("auto",), rounds: int = 1) -> list[dict]:
    import indrnn_core
    from numba import cuda

    stream = cuda.stream()
    inp = make_inputs(shape, dtype)
    d = {k: cuda.to_device(np.ascontiguousarray(v), stream=stream) for k, v in inp.items()}
    x, u, b, h0, g = d["x"], d["u"], d["b"], d["h0"], d["grad_h"]
    h = cuda.device_array_like(x, stream=stream)
    out = (cuda.device_array_like(x, stream=stream), cuda.device_array_like(u, stream=stream),
           cuda.device_array_like(u, stream=stream), cuda.device_array_like(h0, stream=stream))
    src = cuda.to_device(np.ones(x.shape, x.dtype), stream=stream)
    dst = cuda.device_array_like(src, stream=stream)
    stream.synchronize()

    def modes(tp):
        def fwd():
            indrnn_core.forward(x, u, b, h0, activation=ACTIVATION, out=h, stream=stream, time_parallel=tp)

        def bwd():
            indrnn_core.backward(g, h, u, h0, activation=ACTIVATION, out=out, stream=stream, time_parallel=tp)

        def fwdbwd():
            fwd()
            bwd()

        return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwdbwd}

    def copy():
        dst.copy_to_device(src, stream=stream)  # device-to-device cuMemcpyAsync on the same stream

    fns = {v: modes(TIME_PARALLEL[v]) for v in time_parallel}
    for v in fns.values():
        v["fwdbwd"]()
    stream.synchronize()
    copy_before = measure_cuda(copy, stream, max(repeats, 10), max_seconds=max_seconds)
    times = _alternating(fns, repeats, rounds, max_seconds,
                         lambda fn, n, max_seconds: measure_cuda(fn, stream, n, max_seconds=max_seconds))
    copy_after = measure_cuda(copy, stream, max(repeats, 10), max_seconds=max_seconds)
    finite = bool(np.isfinite(h.copy_to_host()).all() and np.isfinite(out[0].copy_to_host()).all())
    rows = []
    for v in fns:
        rows += _rows(shape, dtype, "cuda", times[v], _best_copy(copy_before, copy_after), x.nbytes,
                      _label(v, "cuda"))
        for r in rows[-3:]:
            r["outputs_finite"], r["time_parallel"] = finite, v
    return rows


def run(shapes: list[Shape], dtype: str, device: str, repeats: int, max_seconds: float | None = None,
        log=print, gated: bool = False, time_parallel=("auto",), rounds: int = 1) -> list[dict]:
    """Rows (fwd, bwd, fwdbwd) for every shape and ``time_parallel`` variant (names of ``TIME_PARALLEL``), the
    variants measured in ``rounds`` alternating rounds. Runs the correctness gate first unless the caller already
    did (``gated=True``); raises ``GateError`` when the kernels disagree with the reference."""
    if not gated:
        rec = gate(dtype, device, time_parallel)
        if not rec["passed"]:
            raise GateError(format_gate(rec))
    runner = run_shape_cpu if device == "cpu" else run_shape_cuda
    rows = []
    for shape in shapes:
        shape_rows = runner(shape, dtype, repeats, max_seconds, time_parallel=time_parallel, rounds=rounds)
        for r in shape_rows:
            log(format_row(r))
        rows.extend(shape_rows)
    return rows


def format_gate(rec: dict) -> str:
    """One line per gate record: the core/jax records carry ``errors`` and ``tolerance``, others ``checks``."""
    errs = rec.get("errors") or rec.get("checks") or {}
    shown = ", ".join(f"{k}={_e(v)}" for k, v in errs.items())
    status = "PASS" if rec["passed"] else "FAIL"
    where = f" T,B,H={tuple(rec['shape'])}" if "shape" in rec else ""
    tol = f" (tol {rec['tolerance']:.0e})" if "tolerance" in rec else ""
    extra = f" ({rec['exception']})" if rec.get("exception") else ""
    return f"gate {rec['suite']:<5} {rec['device']} {rec['dtype']}{where}: {status}  {shown}{tol}{extra}"


def _e(v) -> str:
    return "nan" if v is None else f"{v:.1e}"


def format_row(r: dict) -> str:
    tp = f" tp={r['time_parallel']:<4}" if r.get("time_parallel", "auto") != "auto" else ""
    s = (f"{r['suite']:<5} {r['config']:>6} T={r['T']:<6} B={r['B']:<4} H={r['H']:<5}{tp} {r['mode']:<6} "
         f"{r['median_ms']:10.3f} ms (min {r['min_ms']:.3f}, n={r['repeats']})")
    if "floor_ms" in r:
        s += f"  floor {r['floor_ms']:.3f} ms ({r['copy_GBps']:.1f} GB/s)  {r['x_floor']:.2f}x floor"
    if "x_store_floor" in r:
        s += f", {r['x_store_floor']:.2f}x ordinary-store floor ({r['store_GBps']:.1f} GB/s)"
    if "floor_source" in r:
        s += f"; floor from {r['floor_source']}"
    return s
