"""``python -m benchmarks``: time the kernels against the memory floor and their peers.

    python -m benchmarks                                   # mnist and long, float32, CPU: core + jax + torch
    python -m benchmarks --config mnist --only core jax --json out.json
    python -m benchmarks --device cuda --config mnist wide # CUDA kernels, CUDA events, device copy floor
    python -m benchmarks --list                            # the named configs
    python -m benchmarks --config single --only core --time-parallel on off --rounds 5
                                                           # one long sequence: the time-parallel kernels vs the
                                                           #   sequential ones, alternating, median of 5 rounds
    python -m benchmarks report                            # everything over the T sweep -> benchmarks/results/,
                                                           #   BENCHMARKS.md
    python -m benchmarks report --from a.json b.json       # rebuild the report from earlier runs (e.g. CPU + GPU)

Order of work: machine header; the correctness gate of every selected suite (nothing is timed unless every gate
passes: exit status 1); warm-up (JIT compilation) and timing per config; the targets. ``--json`` writes everything.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import shlex
import sys
from pathlib import Path

from . import configs, core_bench
from .core_bench import format_gate

SUITES = ("core", "jax", "torch")
# Issue 2's targets, at configs.TARGET_CONFIG float32 on the CPU.
TARGET_FLOOR_RATIO = 1.5  # fwd+bwd time / memory floor, at most
TARGET_SCAN_SPEEDUP = 3.0  # lax.scan fwd+bwd time / kernel fwd+bwd time, at least
TORCH_MAX_T_CPU = 3000
DEFAULT_REPORT_DIR = core_bench.REPO_ROOT / "benchmarks" / "results"


def _load_torch_bench():
    """``benchmarks.torch_bench`` when it exists; ``None`` when the module itself is absent."""
    try:
        return importlib.import_module("benchmarks.torch_bench")
    except ModuleNotFoundError as exc:
        if exc.name == "benchmarks.torch_bench":
            return None
        raise


def _call_with_supported(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` passing only the keyword arguments ``fn`` accepts (the torch suite's ``run`` is
    owned elsewhere: its contract is ``run(configs, device, repeats)``, extras are a bonus)."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def _speedups(rows: list[dict]) -> None:
    """Fill ``speedup`` (peer time / kernel time) into each jax row that has a matching core row."""
    core = {(r["config"], r["dtype"], r["device"], r["mode"]): r for r in rows
            if r["suite"] == "core" and r.get("time_parallel", "auto") == "auto"}
    for r in rows:
        if r["suite"] == "jax" and r.get("speedup") is None:  # not timed beside the kernels (CUDA): across runs
            k = core.get((r["config"], r["dtype"], r["device"], "fwdbwd" if r["mode"] == "grad" else r["mode"]))
            r["speedup"] = r["median_ms"] / k["median_ms"] if k else None


def targets(rows: list[dict]) -> list[dict]:
    """Issue 2's two targets, measured at ``configs.TARGET_CONFIG`` float32 CPU (empty when that was not run), and
    issue 14's: each single-sequence config's fwd+bwd (automatic choice) within 3x of the floor on the CPU."""
    out = []
    for r in rows:
        if (r.get("suite") == "core" and r.get("config") in configs.GROUPS["single"] and r.get("mode") == "fwdbwd"
                and r.get("device") == "cpu" and r.get("time_parallel", "auto") == "auto"):
            out.append({"suite": "core", "name": "fwd+bwd time / memory floor", "config": r["config"],
                        "dtype": r["dtype"], "device": "cpu", "measured": r["x_floor"], "unit": "x",
                        "target": configs.SINGLE_TARGET_FLOOR_RATIO, "op": "<=",
                        "passed": r["x_floor"] <= configs.SINGLE_TARGET_FLOOR_RATIO})
    out += gpu_targets(rows)
    sel = {(r["suite"], r["mode"]): r for r in rows
           if r.get("config") == configs.TARGET_CONFIG and r.get("dtype") == "float32" and r.get("device") == "cpu"
           and r.get("time_parallel", "auto") == "auto"}
    core = sel.get(("core", "fwdbwd"))
    if core is not None:
        out.append({"suite": "core", "name": "fwd+bwd time / memory floor", "config": configs.TARGET_CONFIG,
                    "dtype": "float32", "device": "cpu", "measured": core["x_floor"], "unit": "x",
                    "target": TARGET_FLOOR_RATIO, "op": "<=", "passed": core["x_floor"] <= TARGET_FLOOR_RATIO})
    # The peer at its best: the faster of jit(vjp) and jit(grad), its speed-up measured in the same rounds.
    peers = [sel[k] for k in (("jax", "fwdbwd"), ("jax", "grad")) if k in sel]
    scan = min(peers, key=lambda r: r["median_ms"]) if peers else None
    if core is not None and scan is not None:
        speedup = scan.get("speedup") or scan["median_ms"] / core["median_ms"]
        out.append({"suite": "core", "name": f"fwd+bwd speed-up over {scan['impl']}", "config": configs.TARGET_CONFIG,
                    "dtype": "float32", "device": "cpu", "measured": speedup, "unit": "x",
                    "target": TARGET_SCAN_SPEEDUP, "op": ">=", "passed": speedup >= TARGET_SCAN_SPEEDUP})
    return out


def gpu_targets(rows: list[dict]) -> list[dict]:
    """Issue 14's GPU targets, from whatever CUDA core rows were run: fwd+bwd (automatic choice) within
    ``GPU_TARGET_FLOOR_RATIO`` of the HBM floor at every config with B x H and T at least the stated minimums; and
    at ``GPU_SCAN_SPEEDUP_CONFIG``, fwd+bwd sequential (``--time-parallel off``) / time-parallel (``on``) at least
    ``GPU_SCAN_SPEEDUP``."""
    out = []
    cuda = [r for r in rows if r.get("suite") == "core" and r.get("device") == "cuda" and r.get("mode") == "fwdbwd"]
    for r in cuda:
        if (r.get("time_parallel", "auto") == "auto" and r["B"] * r["H"] >= configs.GPU_TARGET_MIN_COLUMNS
                and r["T"] >= configs.GPU_TARGET_MIN_STEPS):
            out.append({"suite": "core", "name": "fwd+bwd time / HBM floor", "config": r["config"],
                        "dtype": r["dtype"], "device": "cuda", "measured": r["x_floor"], "unit": "x",
                        "target": configs.GPU_TARGET_FLOOR_RATIO, "op": "<=",
                        "passed": r["x_floor"] <= configs.GPU_TARGET_FLOOR_RATIO})
    by_tp = {(r["config"], r["dtype"], r.get("time_parallel", "auto")): r for r in cuda}
    for (config, dtype, tp), on in by_tp.items():
        off = by_tp.get((config, dtype, "off"))
        if config == configs.GPU_SCAN_SPEEDUP_CONFIG and tp == "on" and off is not None:
            speedup = off["median_ms"] / on["median_ms"]
            out.append({"suite": "core", "name": "fwd+bwd speed-up of the time-parallel kernels over the sequential",
                        "config": config, "dtype": dtype, "device": "cuda", "measured": speedup, "unit": "x",
                        "target": configs.GPU_SCAN_SPEEDUP, "op": ">=", "passed": speedup >= configs.GPU_SCAN_SPEEDUP})
    return out


def _torch_targets(torch_bench, rows: list[dict], dtype: str) -> list[dict]:
    """The torch suite's own targets (if it defines ``targets(rows)``), in this document's target schema."""
    if not hasattr(torch_bench, "targets"):
        return []
    out, seen = [], set()
    for t in torch_bench.targets(rows):
        if t["name"] in seen:  # the same target measured at several configs: the first (the configs' order) counts
            continue
        seen.add(t["name"])
        out.append({"suite": "torch", "name": t["name"], "config": t.get("config", "-"),
                    "dtype": t.get("dtype", dtype), "device": t.get("device", "cpu"), "measured": t["measured"],
                    "unit": t.get("unit", "x"), "target": t["target"], "op": t.get("op", "<"),
                    "passed": bool(t["passed"])})
    return out


def format_target(t: dict) -> str:
    unit = t.get("unit", "x")
    sep = "" if unit == "x" else " "
    at = " ".join(x for x in (t.get("config"), t["dtype"], t["device"]) if x and x != "-")
    return (f"target {t['name']} ({at}): {t['measured']:.2f}{sep}{unit} "
            f"(target {t['op']} {t['target']:g}{sep}{unit})  {'PASS' if t['passed'] else 'MISS'}")


def _torch_gate(torch_bench, dtype: str, device: str) -> dict:
    """The torch suite's gate as a record; its ``GateError`` (or a crash) becomes a failed record."""
    try:
        rec = torch_bench.gate(dtype, device)
    except Exception as exc:
        return {"suite": "torch", "device": device, "dtype": dtype, "checks": {}, "passed": False,
                "exception": f"{type(exc).__name__}: {exc}"}
    rec.setdefault("suite", "torch")
    return rec


def collect(shapes, *, dtype: str, device: str, repeats: int, only=SUITES, max_seconds: float | None = None,
            torch_repeats: int | None = None, torch_max_T: int | None = None, command: str = "",
            log=print, time_parallel=("auto",), rounds: int = 1) -> dict:
    """Gate, time and summarise; returns the results document (what ``--json`` writes). A failed gate leaves
    ``status == "gate_failed"`` and no timings."""
    machine = core_bench.machine_info()
    if device == "cuda":
        machine["gpu"] = core_bench.gpu_info()
    doc = {"schema": 1, "command": command, "machine": machine,
           "settings": {"configs": [s.to_dict() for s in shapes], "dtype": dtype, "device": device,
                        "repeats": repeats, "max_seconds": max_seconds, "suites": list(only),
                        "activation": core_bench.ACTIVATION, "time_parallel": list(time_parallel),
                        "rounds": rounds},
           "status": "ok", "gates": [], "results": [], "targets": [], "skipped": [], "errors": []}
    log(header(machine))

    from . import jax_bench

    suites = list(only)
    torch_bench = None
    if "jax" in suites and not (jax_bench.available() and jax_bench.has_device(device)):
        doc["skipped"].append({"suite": "jax", "reason": f"jax with a {device} backend is not installed"})
    if "torch" in suites:
        if importlib.util.find_spec("torch") is None:
            doc["skipped"].append({"suite": "torch", "reason": "torch is not installed: pip install torch==2.13.0"})
        else:
            torch_bench = _load_torch_bench()
            if torch_bench is None:
                doc["skipped"].append({"suite": "torch", "reason": "benchmarks/torch_bench.py is not there"})
    for s in doc["skipped"]:
        suites.remove(s["suite"])
        log(f"skip  {s['suite']}: {s['reason']}")
    torch_shapes = [s for s in shapes if torch_max_T is None or s.T <= torch_max_T]
    if "torch" in suites and len(torch_shapes) < len(shapes):
        over = " ".join(s.name for s in shapes if s not in torch_shapes)
        note = {"suite": "torch", "reason": f"configs {over} are above --torch-max-T {torch_max_T} "
                                            "(nn.LSTM/nn.RNN take minutes per training step there on a small CPU)"}
        doc["skipped"].append(note)
        log(f"skip  torch at {over}: above --torch-max-T {torch_max_T}")

    # Every gate before any timing: a wrong result has no speed.
    gate_fns = {"core": lambda dt, dev: core_bench.gate(dt, dev, time_parallel), "jax": jax_bench.gate,
                "torch": lambda dt, dev: _torch_gate(torch_bench, dt, dev)}
    for suite in suites:
        rec = gate_fns[suite](dtype, device)
        doc["gates"].append(rec)
        log(format_gate(rec))
    if not all(g["passed"] for g in doc["gates"]):
        doc["status"] = "gate_failed"
        return doc

    if "core" in suites:
        doc["results"] += core_bench.run(shapes, dtype, device, repeats, max_seconds, log=log, gated=True,
                                         time_parallel=time_parallel, rounds=rounds)
        if device == "cpu":
            import numba

            # Known only after a parallel kernel ran; with other work on the cores its thread pool is one cause
            # of millisecond-quantised times.
            try:
                machine["numba_threading_layer"] = numba.threading_layer()
            except ValueError:  # no parallel kernel ran (e.g. a serial path for small batches)
                machine["numba_threading_layer"] = None
    if "jax" in suites:
        doc["results"] += jax_bench.run(shapes, dtype, device, repeats, max_seconds, log=log, gated=True)
    torch_rows = []
    if "torch" in suites:
        extra = {"dtype": dtype, "log": log}
        if max_seconds is not None:
            extra["max_seconds"] = max_seconds
        try:
            torch_rows = _call_with_supported(torch_bench.run, torch_shapes, device, torch_repeats or repeats,
                                              **extra) if torch_shapes else []
        except Exception as exc:  # keep the core and jax figures; the failure is in the document and exit status
            doc["errors"].append({"suite": "torch", "error": f"{type(exc).__name__}: {exc}"})
            log(f"torch suite failed: {type(exc).__name__}: {exc}")
        for r in torch_rows:
            r.setdefault("suite", "torch")
            r.setdefault("device", device)
        doc["results"] += torch_rows
    _speedups(doc["results"])
    doc["targets"] = targets(doc["results"])
    if torch_rows:
        doc["targets"] += _torch_targets(torch_bench, torch_rows, dtype)
    log(summary(doc))
    return doc


def header(machine: dict) -> str:
    v = machine["versions"]
    lines = [f"machine: {machine['cpu']}, {machine['usable_cores']}/{machine['cores']} cores, "
             f"{machine['memory_gib']} GiB, {machine['platform']}, load average {machine['load_average']}",
             "versions: python " + machine["python"] + ", " + ", ".join(f"{k} {x}" for k, x in v.items() if x),
             f"date: {machine['date']}  commit: {machine['git_commit']}  numba threads: {machine['numba_threads']}"]
    if machine.get("gpu"):
        lines.append("gpu: " + ", ".join(f"{k} {x}" for k, x in machine["gpu"].items()))
    return "\n".join(lines)


def summary(doc: dict) -> str:
    """Kernel vs floor and vs scan per config, then the targets."""
    rows = doc["results"]
    lines = ["", "summary (median ms; floor = bytes / the best bandwidth of the run's copy streams; speed-up = peer / "
                 "kernel, timed alternately):"]
    jax_rows = {(r["config"], r["mode"]): r for r in rows if r["suite"] == "jax"}
    for (config, mode), r in list(jax_rows.items()):  # fwd+bwd lines show the faster of jit(vjp) and jit(grad)
        if mode == "grad" and ((config, "fwdbwd") not in jax_rows
                               or r["median_ms"] < jax_rows[(config, "fwdbwd")]["median_ms"]):
            jax_rows[(config, "fwdbwd")] = r
    for r in rows:
        if r["suite"] != "core":
            continue
        tp = r.get("time_parallel", "auto")
        s = (f"  {r['config']:>6} {r['mode']:<6}{'' if tp == 'auto' else f' tp={tp:<3}'} {r['median_ms']:9.3f} ms = "
             f"{r['x_floor']:5.2f}x floor ({r['floor_ms']:.3f} ms)")
        j = jax_rows.get((r["config"], r["mode"]))
        if j is not None and tp == "auto":
            s += f"   {j['impl']} {j['median_ms']:9.3f} ms -> {j['speedup']:5.2f}x"
        lines.append(s)
    lines += [format_target(t) for t in doc["targets"]]
    if not doc["targets"] and doc["results"]:
        lines.append(f"(targets apply to --config {configs.TARGET_CONFIG} --dtype float32 --device cpu)")
    return "\n".join(lines)


def _command(argv) -> str:
    return "python -m benchmarks " + " ".join(shlex.quote(a) for a in argv)


def _common(p: argparse.ArgumentParser, repeats: int) -> None:
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: NumPy arrays on the njit kernels; cuda: device arrays on the CUDA kernels")
    p.add_argument("--repeats", type=int, default=repeats, help="timed calls per measurement (median reported)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="cap on the time of one measurement: fewer repeats (at least 3) for slow calls")
    p.add_argument("--torch-max-T", type=int, default=None, metavar="T",
                   help=f"run the torch suite only at configs with T <= this (default: {TORCH_MAX_T_CPU} on cpu, "
                        "all on cuda): its nn.LSTM training step takes minutes at T=10000 on a 2-core CPU")
    p.add_argument("--time-parallel", nargs="+", choices=tuple(core_bench.TIME_PARALLEL), default=["auto"],
                   metavar="MODE", help="core suite: the kernels' time_parallel= (auto: None, on: True, off: False); "
                                        "several: each is gated and timed, alternating")
    p.add_argument("--rounds", type=int, default=1,
                   help="core suite: measure every --time-parallel variant this many times, alternating; each "
                        "figure is the median of the rounds' medians (for noisy, shared machines)")
    p.add_argument("--only", nargs="+", choices=SUITES, default=list(SUITES), metavar="SUITE",
                   help="suites to run: core (the kernels), jax (lax.scan peer), torch (benchmarks/torch_bench.py)")


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="+", default=["default"], metavar="NAME",
                   help="named configs or groups (see --list), or T,B,H; default: mnist long")
    _common(p, repeats=20)
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results document here")
    p.add_argument("--check-targets", action="store_true", help="exit with status 1 if a target is missed")
    p.add_argument("--list", action="store_true", help="list the named configs and exit")
    return p


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks report",
                                description="Run everything over the T sweep (plus mnist and long), then write "
                                            "OUT/results.json, OUT/table.md, OUT/time_vs_T.png and BENCHMARKS.md.")
    p.add_argument("--out", type=Path, default=DEFAULT_REPORT_DIR, help="output folder (default: %(default)s)")
    p.add_argument("--config", nargs="+", default=["mnist", "long", "sweep"], metavar="NAME")
    _common(p, repeats=10)
    p.set_defaults(max_seconds=3.0)
    p.add_argument("--torch-repeats", type=int, default=5, help="repeats passed to torch_bench.run")
    p.add_argument("--from", dest="from_json", nargs="+", type=Path, metavar="JSON",
                   help="do not run: rebuild the report from these results files (one section each)")
    p.add_argument("--benchmarks-md", type=Path, default=core_bench.REPO_ROOT / "BENCHMARKS.md",
                   help="where to write BENCHMARKS.md (default: %(default)s)")
    return p


def _report(argv) -> int:
    from . import report

    args = report_parser().parse_args(argv)
    if args.from_json:
        try:
            docs = [json.loads(p.read_text()) for p in args.from_json]
        except (OSError, ValueError) as exc:
            report_parser().error(f"--from: cannot read a results document: {exc}")
        sources = list(args.from_json)
    else:
        try:
            shapes = configs.resolve(args.config)
        except ValueError as exc:
            report_parser().error(str(exc))
        if args.device == "cuda" and (problem := _cuda_problem()):
            report_parser().error(problem)
        doc = collect(shapes, dtype=args.dtype, device=args.device, repeats=args.repeats, only=args.only,
                      max_seconds=args.max_seconds, torch_repeats=args.torch_repeats,
                      torch_max_T=_torch_max_T(args),
                      command=_command(["report", *argv]),
                      time_parallel=tuple(dict.fromkeys(args.time_parallel)), rounds=args.rounds)
        args.out.mkdir(parents=True, exist_ok=True)
        report.write_json(doc, args.out / "results.json")
        if doc["status"] != "ok":
            print(f"correctness gate failed: nothing timed; see {args.out / 'results.json'}", file=sys.stderr)
            return 1
        if doc["errors"]:
            print("a suite failed part-way (see 'errors' in results.json); the report shows the rest",
                  file=sys.stderr)
        docs, sources = [doc], [args.out / "results.json"]
    written = report.write_all(docs, sources, args.out, args.benchmarks_md)
    for path in written:
        print(f"wrote {path}")
    return 1 if any(d.get("errors") for d in docs) else 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        return _report(argv[1:])
    parser = run_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(configs.describe())
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        shapes = configs.resolve(args.config)
    except ValueError as exc:
        parser.error(str(exc))
    if args.device == "cuda":
        problem = _cuda_problem()
        if problem:
            parser.error(problem)
    doc = collect(shapes, dtype=args.dtype, device=args.device, repeats=args.repeats, only=args.only,
                  max_seconds=args.max_seconds, torch_max_T=_torch_max_T(args), command=_command(argv),
                  time_parallel=tuple(dict.fromkeys(args.time_parallel)), rounds=args.rounds)
    if args.json:
        from .report import write_json

        write_json(doc, args.json)
        print(f"wrote {args.json}")
    if doc["status"] == "gate_failed":
        print("correctness gate failed: refusing to time (see the gate lines above)", file=sys.stderr)
        return 1
    if doc["errors"]:
        return 1
    if args.check_targets and not all(t["passed"] for t in doc["targets"]):
        return 1
    return 0


def _torch_max_T(args) -> int | None:
    if args.torch_max_T is not None:
        return args.torch_max_T
    return TORCH_MAX_T_CPU if args.device == "cpu" else None


def _cuda_problem() -> str | None:
    """Why ``--device cuda`` cannot run here, or None."""
    try:
        from numba import cuda
    except ImportError:
        return "--device cuda needs numba-cuda: pip install 'indrnn-core[cuda]'"
    if not cuda.is_available():
        return "--device cuda: no usable CUDA GPU/driver found (numba.cuda.is_available() is False)"
    return None


if __name__ == "__main__":
    sys.exit(main())
