"""Named shape configs for the benchmarks: ``--config NAME`` picks one (or a group such as ``sweep``).

Shapes are time-major ``[T, B, H]`` (the kernels' fast layout). Every suite (core, jax, torch) receives the same
``Shape`` objects, so a row of one suite lines up with the rows of the others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Shape:
    """One benchmark problem: ``T`` steps, ``B`` sequences, ``H`` hidden units (``x``, ``h``: ``[T, B, H]``)."""

    name: str
    T: int
    B: int
    H: int
    note: str = ""

    @property
    def elements(self) -> int:
        return self.T * self.B * self.H

    def to_dict(self) -> dict:
        return asdict(self)


# The speed targets of issue 2 are stated at `mnist` float32 on the 2-core CPU.
TARGET_CONFIG = "mnist"

CONFIGS: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("tiny", 12, 3, 8, "smoke tests: awkward small sizes, finishes in milliseconds"),
        Shape("mnist", 784, 64, 128, "sequential MNIST (the papers' pixel-by-pixel task)"),
        Shape("long", 10_000, 16, 256, "long sequences (adding problem scale)"),
        # One thread per (b, h) column on CUDA: an H100 needs ~2.7e5 columns to fill its SMs; mnist has 8192.
        Shape("wide", 1_000, 256, 1024, "GPU-sized: enough (b, h) columns to fill an H100"),
        # A single long sequence: too few columns to fill the cores, the time-parallel kernels' subject (issue 14).
        Shape("seq1", 1_000_000, 1, 1, "one sequence, one unit: per-step overhead and one core"),
        Shape("seq16", 1_000_000, 1, 16, "one sequence, 16 units"),
        Shape("seq256", 100_000, 1, 256, "one sequence, 256 units"),
    )
}

# Sequence lengths 100..10,000 at the mnist batch and width: the report's time-vs-T plot.
SWEEP_T = (100, 300, 1_000, 3_000, 10_000)
SWEEP = tuple(Shape(f"T{t}", t, 64, 128, "T sweep at B=64, H=128") for t in SWEEP_T)
CONFIGS.update({s.name: s for s in SWEEP})

GROUPS: dict[str, tuple[str, ...]] = {
    "sweep": tuple(s.name for s in SWEEP),
    "default": ("mnist", "long"),
    "single": ("seq1", "seq16", "seq256"),
}

# Issue 14's CPU target: fwd+bwd of each single-sequence config within this factor of the memory floor.
SINGLE_TARGET_FLOOR_RATIO = 3.0
# Issue 14's GPU targets: fwd+bwd within this factor of the HBM floor at every config with B x H >= the first
# number and T >= the second; and at ``seq256`` the time-parallel kernels at least this much faster than the
# sequential ones (both measured in one run by ``.ci/gpu``).
GPU_TARGET_FLOOR_RATIO = 1.5
GPU_TARGET_MIN_COLUMNS, GPU_TARGET_MIN_STEPS = 1024, 1000
GPU_SCAN_SPEEDUP_CONFIG = "seq256"
GPU_SCAN_SPEEDUP = 30.0


def literal(name: str) -> Shape | None:
    """``"T,B,H"`` (three positive integers) as an unnamed shape; None for anything else."""
    parts = name.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        return None
    return Shape(name, *(int(p) for p in parts), "given as T,B,H")


def resolve(names) -> list[Shape]:
    """Config and group names, or literal ``T,B,H`` shapes -> the shapes, in order, without duplicates. Unknown
    names raise ``ValueError``."""
    shapes: list[Shape] = []
    for name in names:
        expanded = GROUPS.get(name, (name,))
        for n in expanded:
            shape = CONFIGS.get(n) or literal(n)
            if shape is None:
                known = ", ".join(list(CONFIGS) + list(GROUPS))
                raise ValueError(f"unknown config {n!r}; known: {known}, or T,B,H (three positive integers)")
            if shape not in shapes:
                shapes.append(shape)
    return shapes


def describe() -> str:
    """A listing for ``--list``."""
    lines = [f"{s.name:>7}  T={s.T:<6} B={s.B:<4} H={s.H:<5} {s.note}" for s in CONFIGS.values()]
    lines += [f"{g:>7}  = {' '.join(members)}" for g, members in GROUPS.items()]
    return "\n".join(lines)
