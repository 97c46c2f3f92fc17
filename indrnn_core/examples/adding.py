"""``indrnn-adding``: train an IndRNN on the adding problem, optionally beside an LSTM on the same batches.

The adding problem (Hochreiter & Schmidhuber 1997; the IndRNN paper's first experiment): each input step has two
channels, a value drawn from U(0, 1) and a marker channel holding exactly one 1 in each half of the sequence; the
target is the sum of the two marked values. Always answering 1 scores the baseline MSE 1/6 = 0.167, so a model
below it has learnt to carry the marked values across the sequence.

Recipe (Li et al. 2018; see ``--help``): 2 IndRNN layers x 128 ReLU units, the output of the last step through
Linear(1), MSE; layer-1 u ~ U(0, 2^(1/T)), last-layer u ~ U(2^(-1/T), 2^(1/T)), u clipped to [-2^(1/T), 2^(1/T)]
after every optimiser step; input weights ~ N(0, 1e-3) with 1e-3 read as the variance (std 0.0316); Adam with
gradient-norm clipping 10; batches of 50, freshly drawn at every step; a fixed test set of 1000 sequences. Tuned
for minutes instead of hours: lr 5e-4 (the paper: 2e-4) falling along a cosine to 5e-5 over 1500 steps; at T=500
the test MSE passes 0.01 after roughly 700-900 steps (seeds 0 and 1) and ends near 0.001-0.002.

Frameworks join through :data:`FRAMEWORKS`: one entry naming the package to import and a backend module
exposing ``resolve_device(parser, name)`` and ``build(kind, config, device)`` (see ``_adding_torch``). The data,
the loop, the progress bar, the CSV, the plot and the summary line are shared.

Example::

    $ indrnn-adding                      # defaults: T=500, 1500 steps, 3-5 minutes on a 2-core CPU
    $ indrnn-adding --compare lstm       # the same batches through an nn.LSTM of the same width and depth
    $ indrnn-adding --seq-len 1000 --steps 5000 --device cuda
    $ indrnn-adding --framework jax      # the same run in JAX: the Flax layer, optax's Adam
    $ indrnn-adding --seq-len 5000 --steps 8000 --until 4000 --out runs/T5000   # half of a long run, then
    $ indrnn-adding --seq-len 5000 --steps 8000 --out runs/T5000 --resume       # the rest (same numbers)

A checkpoint (``checkpoint.pkl`` in ``--out``: every model's weights and optimiser state, the batch stream and the
curves so far) is written at each evaluation, so a run killed in between resumes from its last evaluation.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from indrnn_core.examples import _common

BASELINE = 1.0 / 6.0  # Var(U1 + U2) for U1, U2 ~ U(0, 1): the MSE of always predicting the mean, 1


@dataclass(frozen=True)
class Framework:
    """How ``--framework NAME`` is served: ``package`` must be importable; ``backend`` is the module with
    ``resolve_device`` and ``build``; ``install`` is the command named when ``package`` is missing."""

    package: str
    backend: str
    install: str


# Each framework joins with one entry and one backend module of the same shape as _adding_torch.
FRAMEWORKS: dict[str, Framework] = {
    "torch": Framework("torch", "indrnn_core.examples._adding_torch", _common.INSTALL_HINTS["torch"]),
    "jax": Framework("flax", "indrnn_core.examples._adding_jax", _common.INSTALL_HINTS["flax"]),
    "keras": Framework("keras", "indrnn_core.examples._adding_keras", "pip install 'indrnn-core[keras]'"),
}
COMPARE_MODELS = ("lstm",)


@dataclass(frozen=True)
class Config:
    """Everything a backend needs to build a model and its optimiser."""

    seq_len: int
    hidden: int
    layers: int
    lr: float
    grad_clip: float
    input_std: float
    magnitude: float
    seed: int


def adding_batch(rng: np.random.Generator, batch_size: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch of the adding problem, time-major.

    Returns x ``[T, B, 2]`` float32 (channel 0: values ~ U(0, 1); channel 1: one marker in ``[0, T//2)`` and one in
    ``[T//2, T)``) and y ``[B]`` float32 (the sum of the two marked values).

    >>> x, y = adding_batch(np.random.default_rng(0), 4, 10)
    >>> x.shape, y.shape, x[:, :, 1].sum(0).tolist()
    ((10, 4, 2), (4,), [2.0, 2.0, 2.0, 2.0])
    """
    half = seq_len // 2
    x = np.zeros((seq_len, batch_size, 2), np.float32)
    x[:, :, 0] = rng.random((seq_len, batch_size), dtype=np.float32)
    cols = np.arange(batch_size)
    first = rng.integers(0, half, batch_size)
    second = rng.integers(half, seq_len, batch_size)
    x[first, cols, 1] = 1.0
    x[second, cols, 1] = 1.0
    y = x[first, cols, 0] + x[second, cols, 0]
    return x, y


def build_parser() -> argparse.ArgumentParser:
    int_ = _common.int_at_least
    p = _common.ArgumentParser(
        prog="indrnn-adding",
        description="Train an IndRNN on the adding problem (baseline MSE 0.167) and plot its test MSE; "
                    "--compare lstm trains an LSTM of the same size on the same batches.",
        formatter_class=_common.HelpFormatter)
    p.add_argument("--framework", default="torch", choices=sorted(FRAMEWORKS), help="deep-learning framework")
    p.add_argument("--seq-len", type=int_(2), default=500, metavar="T", help="sequence length")
    p.add_argument("--steps", type=int_(1), default=1500, help="training steps (one fresh batch each)")
    p.add_argument("--batch-size", type=int_(1), default=50, help="sequences per training step")
    p.add_argument("--hidden", type=int_(1), default=128, help="units per layer")
    p.add_argument("--layers", type=int_(1), default=2, help="stacked IndRNN layers")
    p.add_argument("--lr", type=_common.positive_float, default=5e-4, help="Adam learning rate")
    p.add_argument("--lr-decay", type=_common.positive_float, default=0.1, metavar="FACTOR",
                   help="the learning rate falls along a cosine from --lr to --lr x FACTOR at the last step "
                        "(1: constant)")
    p.add_argument("--grad-clip", type=_common.positive_float, default=10.0, help="gradient-norm clipping")
    p.add_argument("--input-std", type=_common.positive_float, default=1e-3 ** 0.5,
                   help="standard deviation of the normal init of the IndRNN input weights (default: %(default).3g, "
                        "the paper's N(0, 1e-3) read as a variance; a std of 1e-3 learns several times slower)")
    p.add_argument("--magnitude", type=_common.positive_float, default=2.0,
                   help="|u| is clipped to magnitude^(1/T)")
    p.add_argument("--compare", choices=COMPARE_MODELS, default=None,
                   help="also train this model (same width, depth, optimiser and batches)")
    p.add_argument("--test-size", type=int_(1), default=1000, help="sequences in the fixed test set")
    p.add_argument("--eval-every", type=int_(1), default=None, metavar="N",
                   help="steps between test evaluations (default: steps/20); a checkpoint is saved at each")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose checkpoint is in --out (same flags; --device may differ)")
    p.add_argument("--until", type=int_(1), default=None, metavar="STEP",
                   help="stop after this step, save a checkpoint and the outputs so far (resume with --resume); "
                        "the learning-rate schedule still spans --steps")
    _common.add_common_flags(p, out=os.path.join("runs", "adding"))
    return p


def cosine_lr(lr: float, decay: float, step: int, steps: int) -> float:
    """The learning rate of ``step`` (1-based): a half cosine from ``lr`` at step 1 to ``lr * decay`` at ``steps``.

    >>> cosine_lr(1.0, 0.1, 1, 5), cosine_lr(1.0, 0.1, 3, 5), cosine_lr(1.0, 0.1, 5, 5)
    (1.0, 0.55, 0.1)
    """
    progress = (step - 1) / max(steps - 1, 1)
    return lr * (decay + (1 - decay) * 0.5 * (1 + math.cos(math.pi * progress)))


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


# Flags that define a run: a checkpoint resumes only under the same values (--device, --out, --quiet and --until
# may change between the parts of a run).
RUN_FLAGS = ("framework", "seq_len", "steps", "batch_size", "hidden", "layers", "lr", "lr_decay", "grad_clip",
             "input_std", "magnitude", "compare", "test_size", "eval_every", "seed")
CHECKPOINT = "checkpoint.pkl"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a killed run leaves the previous checkpoint intact)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump({"version": CHECKPOINT_VERSION, **state}, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def load_checkpoint(parser: argparse.ArgumentParser, path: str, run: dict) -> dict:
    """The checkpoint at ``path``, after checking it belongs to a run with the flags ``run``; a one-line error
    naming the differing flags otherwise. A checkpoint is a pickle: resume only runs you made yourself."""
    if not os.path.exists(path):
        parser.error(f"argument --resume: no checkpoint at {path} (start the run without --resume first)")
    with open(path, "rb") as f:
        state = pickle.load(f)
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        parser.error(f"argument --resume: {path} is not a version-{CHECKPOINT_VERSION} indrnn-adding checkpoint")
    differ = [f"--{k.replace('_', '-')} {state['run'].get(k)!r} (given {v!r})" for k, v in run.items()
              if state["run"].get(k) != v]
    if differ:
        parser.error("argument --resume: the checkpoint was made with other flags: " + "; ".join(differ))
    return state


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``indrnn-adding`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status (0)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.eval_every = args.eval_every or max(1, args.steps // 20)
    if args.until is not None and args.until > args.steps:
        parser.error(f"argument --until: pass a step <= --steps ({args.steps}), got {args.until}")
    run = {k: getattr(args, k) for k in RUN_FLAGS}
    checkpoint_path = os.path.join(args.out, CHECKPOINT)
    resumed = load_checkpoint(parser, checkpoint_path, run) if args.resume else None
    framework = FRAMEWORKS[args.framework]
    backend = _common.require_framework(parser, framework.package, framework.backend, framework.install,
                                        label=f"framework {args.framework!r}")
    device = backend.resolve_device(parser, args.device)
    out_dir = _common.make_out_dir(parser, args.out)

    config = Config(seq_len=args.seq_len, hidden=args.hidden, layers=args.layers, lr=args.lr,
                    grad_clip=args.grad_clip, input_std=args.input_std, magnitude=args.magnitude, seed=args.seed)
    names = ["indrnn"] + ([args.compare] if args.compare else [])
    models = {name: backend.build(name, config, device) for name in names}
    watches = {name: _common.Stopwatch() for name in names}

    # Independent streams: the training batches and the test set depend on the seed only (not on --steps or on
    # which models run), so every model sees the same data.
    train_seed, test_seed = np.random.SeedSequence(args.seed).spawn(2)
    train_rng = np.random.default_rng(train_seed)
    x_test, y_test = adding_batch(np.random.default_rng(test_seed), args.test_size, args.seq_len)

    # Everything the loop accumulates: a checkpoint is exactly this, the models' states and the batch stream.
    log = {"rows": [],  # model, step, train_loss, test_mse, seconds
           "test_curves": {name: ([], []) for name in names},
           "loss_curves": {name: ([], []) for name in names},
           "latest": {}, "smoothed": {name: None for name in names}, "losses": {}}

    def evaluate(step: int) -> None:
        for name in names:
            with watches[name]:
                mse = models[name].test_mse(x_test, y_test)
            log["latest"][name] = mse
            log["test_curves"][name][0].append(step)
            log["test_curves"][name][1].append(mse)

    def checkpoint(step: int) -> None:
        save_checkpoint(checkpoint_path, {
            "run": run, "step": step, "rng": train_rng.bit_generator.state, "log": log,
            "seconds": {n: watches[n].seconds for n in names},
            "models": {n: models[n].get_state() for n in names}})

    if resumed is None:
        first = 1
        evaluate(0)
        for name in names:
            log["rows"].append((name, 0, None, f"{log['latest'][name]:.6g}", f"{watches[name].seconds:.3f}"))
    else:
        first = resumed["step"] + 1
        train_rng.bit_generator.state = resumed["rng"]
        log = resumed["log"]
        for name in names:
            watches[name].seconds = resumed["seconds"][name]
            models[name].set_state(resumed["models"][name])
    last = args.until or args.steps
    latest, smoothed, losses = log["latest"], log["smoothed"], log["losses"]
    bar = _common.progress(last - first + 1, f"adding T={args.seq_len}", args.quiet)
    for step in range(first, last + 1):
        x, y = adding_batch(train_rng, args.batch_size, args.seq_len)
        lr = cosine_lr(args.lr, args.lr_decay, step, args.steps)
        for name in names:
            with watches[name]:
                models[name].set_lr(lr)
                losses[name] = models[name].train_step(x, y)
            prev = smoothed[name]
            smoothed[name] = losses[name] if prev is None or math.isnan(prev) else 0.95 * prev + 0.05 * losses[name]
            log["loss_curves"][name][0].append(step)
            log["loss_curves"][name][1].append(losses[name])
        evaluated = step % args.eval_every == 0 or step == last
        if evaluated:
            evaluate(step)
        for name in names:
            log["rows"].append((name, step, f"{losses[name]:.6g}", f"{latest[name]:.6g}" if evaluated else None,
                                f"{watches[name].seconds:.3f}"))
        if evaluated:
            checkpoint(step)
        postfix = {"loss": _fmt(smoothed["indrnn"]), "test_mse": _fmt(latest["indrnn"])}
        if args.compare:
            postfix[f"{args.compare}_mse"] = _fmt(latest[args.compare])
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
    bar.close()
    if first > last:  # resumed a run that had already reached --until / --steps: rewrite the outputs only
        last = first - 1

    csv_path = _common.write_csv(os.path.join(out_dir, "adding.csv"),
                                 ["model", "step", "train_loss", "test_mse", "seconds"], log["rows"])
    labels = {name: f"{'IndRNN' if name == 'indrnn' else name.upper()} ({models[name].num_parameters:,} params)"
              for name in names}
    png_path = _common.plot_curves(
        os.path.join(out_dir, "adding.png"),
        {labels[n]: log["test_curves"][n] for n in names},
        faint={labels[n]: _thin(*log["loss_curves"][n]) for n in names},
        baseline=(BASELINE, "baseline 0.167"), logy=True, ymax=2.0, xlabel="training step",
        ylabel="MSE (test; training faint)",
        title=f"Adding problem, T={args.seq_len}, batch {args.batch_size}, {args.hidden}x{args.layers}")
    summary = {
        "config": {**asdict(config), "lr_decay": args.lr_decay, "steps": args.steps, "batch_size": args.batch_size,
                   "framework": args.framework, "device": str(device), "test_size": args.test_size},
        "steps_done": last,
        "baseline": BASELINE,
        "results": {n: {"test_mse": latest[n], "seconds": round(watches[n].seconds, 3),
                        "parameters": models[n].num_parameters,
                        "first_step_below_0.01": next((s for s, m in zip(*log["test_curves"][n]) if m < 0.01), None)}
                    for n in names},
    }
    json_path = os.path.join(out_dir, "adding.json")
    with open(json_path, "w") as f:
        json.dump(summary, f, indent=2)

    for name in names:
        print(f"{name}: test_mse={_fmt(latest[name])} parameters={models[name].num_parameters} "
              f"seconds={watches[name].seconds:.1f}")
    print(f"wrote {csv_path}, {png_path}, {json_path}")
    if last < args.steps:
        print(f"stopped after step {last} of {args.steps}; continue with the same flags and --resume")
    print(f"test_mse={_fmt(latest['indrnn'])} baseline=0.167 steps={last} "
          f"seconds={watches['indrnn'].seconds:.1f}")
    sys.stdout.flush()
    return 0


def _thin(x: list, y: list, points: int = 400) -> tuple[list, list]:
    """Block means of a long noisy curve (the per-step training loss), for a readable plot."""
    if len(x) <= points:
        return x, y
    size = math.ceil(len(x) / points)
    xs = [x[min(i + size, len(x)) - 1] for i in range(0, len(x), size)]
    ys = [float(np.mean(y[i:i + size])) for i in range(0, len(y), size)]
    return xs, ys


if __name__ == "__main__":
    sys.exit(main())
