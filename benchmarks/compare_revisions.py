"""The CPU kernels of an earlier git revision against the working tree's, alternating in one process
(``benchmarks.harness.alternate``), fwd+bwd through the public ``forward``/``backward`` on the named configs (or
``T,B,H`` shapes); also whether the outputs are bit-identical.

    python -m benchmarks.compare_revisions 79283ac mnist long tiny
    python -m benchmarks.compare_revisions 5d65e50 seq1 1000000,1,2 --time-parallel on
    python -m benchmarks.compare_revisions 5d65e50 seq1 --time-parallel on --split
    python -m benchmarks.compare_revisions 5d65e50 seq1 --time-parallel on --dtype float64

``--split`` times forward and backward apart (the backward on one shared ``h``), alternating all four calls.

The earlier ``indrnn_core`` package is taken with ``git archive REV indrnn_core`` into a temporary folder and
imported under another name (``indrnn_core_REV``: the kernels import each other relatively), so both versions run
on the same arrays. ``--time-parallel`` is passed to both (``off``, the default: the sequential kernels).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from . import harness
from .configs import resolve
from .core_bench import REPO_ROOT, TIME_PARALLEL, make_inputs


def old_package(rev: str):
    """``indrnn_core`` as of git revision ``rev``, imported as a package of its own."""
    archive = subprocess.run(["git", "archive", rev, "indrnn_core"], cwd=REPO_ROOT, check=True,
                             capture_output=True).stdout
    folder = Path(tempfile.mkdtemp())
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    name = "indrnn_core_" + re.sub(r"\W", "_", rev)
    (folder / "indrnn_core").rename(folder / name)
    spec = importlib.util.spec_from_file_location(name, folder / name / "__init__.py",
                                                  submodule_search_locations=[str(folder / name)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rev")
    p.add_argument("config", nargs="+")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--time-parallel", choices=list(TIME_PARALLEL), default="off",
                   help="forward/backward's time_parallel for both versions (default: off, the sequential kernels)")
    p.add_argument("--split", action="store_true", help="forward and backward timed apart")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = p.parse_args(argv)
    import indrnn_core as new

    old = old_package(args.rev)
    time_parallel = TIME_PARALLEL[args.time_parallel]
    print(f"load average {os.getloadavg()}; {args.rev} against the working tree, time_parallel={time_parallel}, "
          f"{args.dtype}")
    for shape in resolve(args.config):
        inp = make_inputs(shape, args.dtype)
        x, u, b, h0, g = (inp[k] for k in ("x", "u", "b", "h0", "grad_h"))
        outs = {}

        def fwdbwd(module, key):
            o = outs[key] = (np.empty_like(x), np.empty_like(x), np.empty_like(u), np.empty_like(u),
                             np.empty_like(h0))

            def run():
                module.forward(x, u, b, h0, out=o[0], time_parallel=time_parallel)
                module.backward(g, o[0], u, h0, out=o[1:], time_parallel=time_parallel)
            return run

        label = f"{shape.name} T={shape.T} B={shape.B} H={shape.H}"
        if args.split:
            h = new.forward(x, u, b, h0, time_parallel=time_parallel)
            fns = {}
            for key, module in (("old", old), ("new", new)):
                o = outs[key] = (np.empty_like(x), np.empty_like(x), np.empty_like(u), np.empty_like(u),
                                 np.empty_like(h0))
                fns[key, "fwd"] = lambda m=module, o=o: m.forward(x, u, b, h0, out=o[0], time_parallel=time_parallel)
                fns[key, "bwd"] = lambda m=module, o=o: m.backward(g, h, u, h0, out=o[1:], time_parallel=time_parallel)
            t = harness.alternate(fns, args.repeats, max_seconds=60)
            same = all(np.array_equal(a, c, equal_nan=True) for a, c in zip(outs["old"], outs["new"]))
            for mode in ("fwd", "bwd"):
                _report(f"{label} {mode}", args.rev, t["old", mode], t["new", mode], same)
            continue
        t = harness.alternate({"old": fwdbwd(old, "old"), "new": fwdbwd(new, "new")}, args.repeats, max_seconds=60)
        same = all(np.array_equal(a, c, equal_nan=True) for a, c in zip(outs["old"], outs["new"]))
        _report(label, args.rev, t["old"], t["new"], same)
    print(f"load average {os.getloadavg()}")
    return 0


def _report(label, rev, old, new, same):
    print(f"{label}: {rev} {old['median_ms']:.2f} ms, now {new['median_ms']:.2f} ms, "
          f"now/{rev} {harness.paired_ratio(new, old):.3f} (median of {new['repeats']} paired rounds), "
          f"bit-identical={same}")


if __name__ == "__main__":
    sys.exit(main())
