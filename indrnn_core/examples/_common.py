"""Shared plumbing of the example scripts: argument parsing with one-line errors, framework checks, seeding,
progress bars, CSV files and plots.

Nothing here imports a deep-learning framework at import time: a framework is imported only after the command line
has been checked, so a missing one gets a one-line error instead of a traceback.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

# Installation hints per framework, named in the errors.
INSTALL_HINTS = {
    "torch": "pip install 'indrnn-core[torch]'",
    "jax": "pip install 'indrnn-core[jax]'",
    "flax": "pip install 'indrnn-core[flax]'",
    "tensorflow": "pip install 'indrnn-core[tensorflow]'",
}


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line on stderr (no usage block) with exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` unless the default is None/False or the help text already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action)


# ------------------------------------------------------------------------------------------------------------------
# argparse value types: each names what to pass, argparse adds the flag ("argument --steps: ...")
# ------------------------------------------------------------------------------------------------------------------
def int_at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"pass an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"pass an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"pass a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"pass a positive number, got {text}")
    return value


def probability(text: str) -> float:
    """An argparse type: a float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"pass a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"pass a number in [0, 1), got {text}")
    return value


def add_common_flags(parser: argparse.ArgumentParser, *, out: str, seed: int = 0) -> None:
    """The flags every example shares: --seed, --device, --out, --quiet."""
    parser.add_argument("--seed", type=int_at_least(0), default=seed,
                        help="random seed; the same seed gives the same numbers (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="'cpu', 'cuda', 'cuda:1', ... or 'auto' = cuda when available (default: %(default)s)")
    parser.add_argument("--out", default=out, metavar="DIR",
                        help="folder for the CSV and the plot (created if missing; default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# ------------------------------------------------------------------------------------------------------------------
# frameworks and devices
# ------------------------------------------------------------------------------------------------------------------
def require_framework(parser: argparse.ArgumentParser, name: str, adapter: Optional[str] = None,
                      install: Optional[str] = None, label: Optional[str] = None):
    """Import package ``name`` (then the module ``adapter`` built on it) or exit with a one-line error naming the
    install command (``install``, by default from :data:`INSTALL_HINTS`) and the package as ``label`` (default
    ``name``). Returns the imported ``adapter`` module (the package itself when ``adapter`` is None)."""
    hint = install or INSTALL_HINTS.get(name, f"pip install {name}")
    if importlib.util.find_spec(name) is None:
        parser.error(f"{label or repr(name)} is not installed: {hint}")
    try:
        module = importlib.import_module(name)
        if adapter is not None:
            module = importlib.import_module(adapter)
    except ImportError as exc:  # installed but broken (e.g. a missing shared library)
        parser.error(f"cannot import {adapter or name} ({exc}); reinstall with {hint}")
    return module


def torch_device(parser: argparse.ArgumentParser, name: str):
    """Resolve --device for PyTorch ('auto' -> cuda when available) or exit with a one-line error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        parser.error(f"argument --device: pass 'cpu', 'cuda', 'cuda:N' or 'auto', got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {name!r} asked for CUDA but torch sees no GPU here; pass --device cpu")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"argument --device: only 'cpu' and 'cuda' devices are supported, got {name!r}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        parser.error(f"argument --device: {name!r} does not exist ({torch.cuda.device_count()} GPU(s) visible)")
    return device


def seed_torch(seed: int) -> None:
    """Seed PyTorch's generators (CPU and all GPUs)."""
    import torch

    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------------------------
# output: progress, CSV, plots, the summary line
# ------------------------------------------------------------------------------------------------------------------
def progress(total: int, desc: str, quiet: bool = False):
    """A tqdm progress bar on stderr (a no-op object when ``quiet``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=quiet, file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                leave=True)


def make_out_dir(parser: argparse.ArgumentParser, path: str) -> str:
    """Create --out (with parents) or exit with a one-line error."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        parser.error(f"argument --out: cannot create folder {path!r}: {exc.strerror}")
    return path


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Write ``rows`` under ``header``; None cells are left empty. Returns ``path``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
    return path


def plot_curves(path: str, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str,
                ylabel: str, title: str, baseline: Optional[tuple[float, str]] = None, logy: bool = False,
                faint: Optional[Mapping[str, tuple[Sequence[float], Sequence[float]]]] = None,
                ymax: Optional[float] = None) -> str:
    """Save a line plot (PNG) of ``curves`` (label -> (x, y)), with optional ``faint`` companions of the same
    labels (e.g. the noisy training loss behind the test curve) and a dashed ``baseline`` (value, label).
    ``ymax`` caps the y axis (e.g. so a huge loss at initialisation does not squash the rest of the curve).

    Uses matplotlib's object API with the Agg canvas: no display, no global pyplot state."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.2), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    colours = {}
    for label, (x, y) in curves.items():
        (line,) = ax.plot(x, y, label=label, linewidth=1.8, marker="o" if len(x) <= 30 else None, markersize=3)
        colours[label] = line.get_color()
    for label, (x, y) in (faint or {}).items():
        ax.plot(x, y, color=colours.get(label), alpha=0.25, linewidth=0.8)
    if baseline is not None:
        ax.axhline(baseline[0], color="grey", linestyle="--", linewidth=1.2, label=baseline[1])
    if logy:
        ax.set_yscale("log")
    if ymax is not None and ax.get_ylim()[1] > ymax:
        ax.set_ylim(top=ymax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.savefig(path)
    return path


class Stopwatch:
    """Accumulates the wall time spent inside ``with watch:`` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start
        return False
