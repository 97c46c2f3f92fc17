"""The sequential CPU kernels of an earlier git revision against the working tree's, alternating in one process
(``benchmarks.harness.alternate``), fwd+bwd on the named configs; also whether the outputs are bit-identical.

    python -m benchmarks.compare_revisions 79283ac mnist long tiny

The earlier ``indrnn_core/cpu/recurrence.py`` is taken with ``git show REV:...`` into a temporary folder and imported
as a module of its own (its relative import rewritten), so both versions' ``forward_into``/``backward_into`` run
on the same arrays.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import harness
from .configs import resolve
from .core_bench import REPO_ROOT, make_inputs


def _old_recurrence(rev: str):
    src = subprocess.run(["git", "show", f"{rev}:indrnn_core/cpu/recurrence.py"], cwd=REPO_ROOT, check=True,
                         capture_output=True, text=True).stdout
    src = src.replace("from .. import _activations as A", "from indrnn_core import _activations as A")
    src = src.replace("from . import narrow", "from indrnn_core.cpu import narrow")
    src = src.replace("from ._types import", "from indrnn_core.cpu._types import")
    path = Path(tempfile.mkdtemp()) / f"recurrence_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rev")
    p.add_argument("config", nargs="+")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    from indrnn_core import _activations as A
    from indrnn_core.cpu import recurrence as new

    old = _old_recurrence(args.rev)
    print(f"load average {os.getloadavg()}; {args.rev} against the working tree")
    for shape in resolve(args.config):
        inp = make_inputs(shape, "float32")
        x, u, b, h0, g = (inp[k] for k in ("x", "u", "b", "h0", "grad_h"))
        lengths = np.full(shape.B, shape.T, np.int64)
        outs = {}

        def fwdbwd(module, key):
            o = outs[key] = (np.empty_like(x), np.empty_like(x), np.empty_like(u), np.empty_like(u),
                             np.empty_like(h0))

            def run():
                module.forward_into(x, u, b, h0, lengths, False, A.ACT_RELU, False, o[0])
                module.backward_into(g, o[0], u, h0, lengths, False, A.ACT_RELU, False, None, *o[1:])
            return run

        t = harness.alternate({"old": fwdbwd(old, "old"), "new": fwdbwd(new, "new")}, args.repeats, max_seconds=60)
        same = all(np.array_equal(a, c) for a, c in zip(outs["old"], outs["new"]))
        print(f"{shape.name} T={shape.T} B={shape.B} H={shape.H}: {args.rev} {t['old']['median_ms']:.2f} ms, "
              f"now {t['new']['median_ms']:.2f} ms, now/{args.rev} {harness.paired_ratio(t['new'], t['old']):.3f} "
              f"(median of {t['new']['repeats']} paired rounds), bit-identical={same}")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
