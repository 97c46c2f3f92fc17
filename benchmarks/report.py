"""Turn results documents (what ``python -m benchmarks --json`` writes) into tables, plots and BENCHMARKS.md.

Everything here reads only the JSON, so the report can be rebuilt without rerunning anything (one section per
document, e.g. the CPU run here and a GPU run made elsewhere):
``python -m benchmarks report --from benchmarks/results/cpu/results.json benchmarks/results/gpu/results.json``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from . import configs

MODE_NAMES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward", "step": "training step",
              "call_T1": "per-call cost at T=1"}
SUITE_MODE_CAPTIONS = {
    ("torch", "step"): "One layer (H inputs, H units) forward + backward with parameter gradients, input projection "
                       "included; `x_indrnn` = time / IndRNN's time.",
    ("torch", "fwdbwd"): "The recurrence alone through the torch adapter; `overhead_pct` = extra time over the raw "
                         "kernels on preallocated buffers, `overhead_vs_allocating_pct` = extra time over the kernels "
                         "allocating their outputs on every call (`out=None`, as the adapter must; on the CPU large "
                         "outputs come from `indrnn_core.host_cache`, and the no-cache row shows fresh pages from "
                         "the OS instead). The autograd floor row is "
                         "the kernels on preallocated buffers inside a bare `autograd.Function`: torch's own "
                         "per-op autograd cost, which any autograd-integrated op pays.",
    ("torch", "call_T1"): "Per-call cost at T=1: `overhead_us` = adapter - raw kernel.",
}


# --------------------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------------------

def _finite(obj):
    """JSON has no inf/NaN: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(doc: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(doc), indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------------

def _fmt(v, digits=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.3g}"
        return f"{v:.{digits}f}"
    return str(v)


def md_table(headers: list[str], rows: list[list], numeric: bool = True) -> str:
    """A GitHub table; columns after the first are right-aligned when ``numeric``."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    align = ["---" if i == 0 or not numeric else "---:" for i in range(len(headers))]
    return "\n".join([line(headers), "| " + " | ".join(align) + " |"] + [line(r) for r in rows])


def _by(rows, suite):
    """{(config, dtype, device): {mode: row}} for one suite, configs in first-seen order."""
    out: dict = {}
    for r in rows:
        if r.get("suite") == suite:
            out.setdefault((r["config"], r["dtype"], r["device"]), {})[r["mode"]] = r
    return out


def core_table(rows: list[dict]) -> str:
    body = []
    for (config, dtype, device), m in _by(rows, "core").items():
        any_row = next(iter(m.values()))
        body.append([config, any_row["T"], any_row["B"], any_row["H"], dtype, device]
                    + [_fmt(m[k]["median_ms"]) if k in m else "–" for k in ("fwd", "bwd", "fwdbwd")]
                    + [_fmt(any_row["copy_GBps"], 1)]
                    + [_fmt(m["fwdbwd"]["floor_ms"]) if "fwdbwd" in m else "–"]
                    + [f"{m[k]['x_floor']:.2f}x" if k in m else "–" for k in ("fwd", "bwd", "fwdbwd")]
                    + [_fmt(any_row.get("store_GBps"), 1),
                       f"{m['fwdbwd']['x_store_floor']:.2f}x" if "x_store_floor" in m.get("fwdbwd", {}) else "–"])
    return md_table(["config", "T", "B", "H", "dtype", "device", "fwd ms", "bwd ms", "fwd+bwd ms", "copy GB/s",
                     "floor fwd+bwd ms", "fwd / floor", "bwd / floor", "fwd+bwd / floor", "plain-store GB/s",
                     "fwd+bwd / plain-store floor"], body)


def scan_table(rows: list[dict]) -> str:
    body = []
    for (config, dtype, device), m in _by(rows, "jax").items():
        any_row = next(iter(m.values()))
        body.append([config, any_row["T"], any_row["B"], any_row["H"], dtype, device]
                    + [_fmt(m[k]["median_ms"]) if k in m else "–" for k in ("fwd", "fwdbwd")]
                    + [f"{m[k]['speedup']:.2f}x" if k in m and m[k].get("speedup") else "–"
                       for k in ("fwd", "fwdbwd")])
    return md_table(["config", "T", "B", "H", "dtype", "device", "lax.scan fwd ms", "lax.scan fwd+bwd ms",
                     "kernel speed-up fwd", "kernel speed-up fwd+bwd"], body)


_LEADING = ("impl", "config", "T", "B", "H", "dtype", "device", "mode", "median_ms", "min_ms", "repeats")
_DROP = {"suite", "max_ms", "name", "seconds_median", "seconds_min"}  # duplicates of impl / the ms columns


def generic_table(rows: list[dict]) -> str:
    """Any rows (the torch suite's): the usual columns first, then whatever scalar fields they carry."""
    keys = [k for k in _LEADING if any(k in r for r in rows)]
    for r in rows:
        for k, v in r.items():
            if k not in keys and k not in _DROP and not isinstance(v, (dict, list)):
                keys.append(k)
    return md_table(keys, [[_fmt(r.get(k)) for k in keys] for r in rows])


def _with_unit(v, unit: str) -> str:
    return f"{_fmt(v, 2)}{unit}" if unit == "x" else f"{_fmt(v, 2)} {unit}"


def targets_table(targets: list[dict]) -> str:
    return md_table(["target", "at", "measured", "target", "result"],
                    [[t["name"], " ".join(x for x in (t.get("config"), t["dtype"], t["device"]) if x and x != "-"),
                      _with_unit(t["measured"], t.get("unit", "x")),
                      f"{t['op']} {_with_unit(t['target'], t.get('unit', 'x'))}", "PASS" if t["passed"] else "MISS"]
                     for t in targets])


def raw_tables(doc: dict) -> str:
    rows = doc["results"]
    parts = []
    if any(r.get("suite") == "core" for r in rows):
        parts += ["### Kernels (indrnn_core) vs the memory-bandwidth floor", "",
                  "Median ms per call with preallocated `out=` buffers. Floor = bytes moved (fwd: read x, write h; "
                  "bwd: read grad_h and h, write gx) / copy bandwidth, measured in the same run as "
                  "2 x nbytes / (time of one copy of an x-sized array). On the CPU the copy bandwidth is the best "
                  "the machine shows in the same run among five streams of an x-sized array: `np.copyto` on one "
                  "thread and on all threads (glibc's memcpy: non-temporal stores for large arrays), `np.add`, a "
                  "Numba copy loop on one thread and a Numba `prange` copy on all threads (ordinary stores; Numba "
                  "cannot express non-temporal stores); the plain-store floor is the best of the ordinary-store "
                  "streams (what kernels with ordinary stores can meet). Before issue 14 the CPU floor was one "
                  "single-thread `np.copyto`, which is slower than the all-thread copies: ratios from earlier "
                  "runs are flattering by up to ~2x. On CUDA "
                  "the times (kernels and copy) are GPU time: CUDA events, the calls queued behind a spin kernel, so "
                  "the host's launch cost stays out (the torch rows include it).", "",
                  core_table(rows), ""]
    if any(r.get("suite") == "jax" for r in rows):
        parts += ["### jax.lax.scan doing the same recurrence", "",
                  "jit-compiled, as JAX users write it: fwd+bwd via `jax.vjp` returns the same h, gx, gu, gb, gh0; "
                  "grad is `jit(grad)` of sum(h * grad_h) for x and u; each timed alternately with the kernels in "
                  "the same rounds; speed-up = scan time / kernel time (median of per-round ratios on the CPU).",
                  "", scan_table(rows), ""]
    other = [r for r in rows if r.get("suite") not in ("core", "jax")]
    for suite, mode in dict.fromkeys((r.get("suite"), r.get("mode")) for r in other):
        caption = SUITE_MODE_CAPTIONS.get((suite, mode), "")
        parts += [f"### {suite}: {MODE_NAMES.get(mode, mode)}", ""] + ([caption, ""] if caption else [])
        parts += [generic_table([r for r in other if (r.get("suite"), r.get("mode")) == (suite, mode)]), ""]
    if doc.get("skipped"):
        parts += ["Skipped: " + "; ".join(f"{s['suite']} ({s['reason']})" for s in doc["skipped"]), ""]
    return "\n".join(parts)


def machine_table(doc: dict) -> str:
    m = doc["machine"]
    layer = f", {m['numba_threading_layer']} threading layer" if m.get("numba_threading_layer") else ""
    rows = [["CPU", f"{m['cpu']} ({m['usable_cores']} of {m['cores']} cores usable, "
                    f"{m['numba_threads']} numba threads{layer})"],
            ["memory", f"{m['memory_gib']} GiB"],
            ["load average at start (1, 5, 15 min)", ", ".join(map(str, m.get("load_average") or [])) or "–"],
            ["OS", m["platform"]], ["python", m["python"]],
            ["packages", ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)],
            ["git commit", m.get("git_commit") or "–"], ["date (UTC)", m["date"]]]
    if m.get("gpu"):
        rows.insert(1, ["GPU", ", ".join(f"{k} {v}" for k, v in m["gpu"].items())])
    return md_table(["", ""], rows, numeric=False)


# --------------------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------------------

def _sweep_rows(rows: list[dict]) -> list[dict]:
    """Rows at the sweep's batch and width (mnist included: same B, H) that a time-vs-T line can join; per-call
    rows (the torch suite's ``call_T1``, at T=1) are not about T."""
    B, H = configs.SWEEP[0].B, configs.SWEEP[0].H
    return [r for r in rows if r.get("B") == B and r.get("H") == H and "T" in r and r.get("median_ms")
            and r.get("mode") in PLOT_PANELS]


# mode -> panel; a panel without rows is left out.
PLOT_PANELS = {"fwd": "forward (recurrence)", "fwdbwd": "forward + backward (recurrence)",
               "step": "training step (one layer, fwd + bwd)"}


def _label(r: dict) -> str:
    impl = r.get("impl") or r.get("name") or "?"
    return impl if r.get("suite") in ("core", "jax") else f"{r.get('suite')}: {impl}"


def plot_time_vs_T(doc: dict, path) -> Path | None:
    """Log-log panels of median time vs T (forward; forward + backward; a training step when the torch suite
    ran), one line per implementation, the memory floor dashed. None when the document has no sweep rows."""
    rows = _sweep_rows(doc["results"])
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict = {}
    for r in rows:
        lines.setdefault((r["mode"], _label(r)), []).append((r["T"], r["median_ms"]))
        if r.get("suite") == "core" and "floor_ms" in r:
            lines.setdefault((r["mode"], "memory floor (copy bandwidth)"), []).append((r["T"], r["floor_ms"]))
    modes = [m for m in PLOT_PANELS if any(k[0] == m for k in lines)]
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.8), squeeze=False)
    axes = dict(zip(modes, axes[0]))
    for (mode, label), pts in lines.items():
        pts = sorted(set(pts))
        style = (dict(linestyle="--", marker="x", color="black") if label.startswith("memory floor")
                 else dict(marker="o", markersize=4))
        axes[mode].plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
    for mode, ax in axes.items():
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(PLOT_PANELS[mode], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[modes[0]].set_ylabel("median time per call (ms)")
    m = doc["machine"]
    where = (m.get("gpu") or {}).get("name") or f"{m['cpu']}, {m['usable_cores']} cores"
    B, H = configs.SWEEP[0].B, configs.SWEEP[0].H
    fig.suptitle(f"IndRNN, B={B}, H={H}, {doc['settings']['dtype']}, {doc['settings']['device']} ({where}), "
                 f"{m['date'][:10]}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------

def _gate_text(g: dict) -> str:
    errs = [e for e in (g.get("errors") or g.get("checks") or {}).values() if e is not None]
    worst = f"worst error {max(errs):.1e}" if errs else "no figures"
    tol = f", tol {g['tolerance']:.0e}" if "tolerance" in g else ""
    return f"{g['suite']} {'passed' if g['passed'] else 'FAILED'} ({worst}{tol})"


def _title(doc: dict) -> str:
    s = doc["settings"]
    m = doc["machine"]
    where = (m.get("gpu") or {}).get("name") if s["device"] == "cuda" else m["cpu"]
    return f"{s['device'].upper()} {s['dtype']}: {where}"


def _plot_names(docs: list[dict]) -> list[str]:
    names, seen = [], set()
    for i, doc in enumerate(docs):
        dev = doc["settings"]["device"]
        name = "time_vs_T.png" if dev == "cpu" else f"time_vs_T_{dev}.png"
        if name in seen:
            name = name.replace(".png", f"_{i + 1}.png")
        seen.add(name)
        names.append(name)
    return names


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def benchmarks_md(docs: list[dict], sources: list, plots: list, md_path: Path) -> str:
    md_dir = Path(md_path).parent
    out = ["# Benchmarks", "",
           "Generated from the benchmark's own JSON output by `python -m benchmarks report`; do not edit by hand. "
           "To rebuild this file from the same JSON: `python -m benchmarks report --from "
           + " ".join(_rel(s, md_dir) for s in sources) + "`.", "",
           "What is measured: the element-wise IndRNN recurrence `h_t = relu(x_t + u * h_{t-1} + b)` (forward) and "
           "its BPTT (backward) as the `indrnn_core` kernels run it, beside (1) the memory-bandwidth floor of the "
           "same machine, measured in the same run, and (2) `jax.lax.scan` doing the same recurrence, plus the "
           "PyTorch suite (`benchmarks/torch_bench.py`) when present. Every implementation must match "
           "`indrnn_core.reference` on a small instance (the correctness gate) before anything is timed.", ""]
    for doc, src, plot in zip(docs, sources, plots):
        out += [f"## {_title(doc)}", "",
                f"- date (UTC): {doc['machine']['date']}",
                f"- command: `{doc.get('command') or 'python -m benchmarks'}`",
                f"- data: [{_rel(src, md_dir)}]({_rel(src, md_dir)})", "",
                "### Machine", "", machine_table(doc), ""]
        gates = doc.get("gates") or []
        if gates:
            out += ["Correctness gate (before any timing): " + "; ".join(_gate_text(g) for g in gates) + ".", ""]
        out += ["### Targets", ""]
        if doc.get("targets"):
            out += [targets_table(doc["targets"]), ""]
        else:
            out += [f"No targets in this run (they are set at `{configs.TARGET_CONFIG}` float32 on the CPU).", ""]
        if plot is not None:
            out += ["### Time vs sequence length", "", f"![time vs T]({_rel(plot, md_dir)})", ""]
        out += [raw_tables(doc)]
    return "\n".join(out).rstrip() + "\n"


def write_all(docs: list[dict], sources: list, out_dir, md_path) -> list[Path]:
    """table.md, one time-vs-T plot per document (in ``out_dir``), and BENCHMARKS.md at ``md_path``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    plots = []
    for doc, name in zip(docs, _plot_names(docs)):
        p = plot_time_vs_T(doc, out_dir / name)
        plots.append(p)
        if p is not None:
            written.append(p)
    table = out_dir / "table.md"
    table.write_text("\n".join(f"## {_title(doc)}\n\n" + "\n".join(t for t in (
        targets_table(doc["targets"]) + "\n" if doc.get("targets") else "", raw_tables(doc)) if t)
        for doc in docs))
    written.append(table)
    md_path = Path(md_path)
    md_path.write_text(benchmarks_md(docs, sources, plots, md_path))
    written.append(md_path)
    return written
