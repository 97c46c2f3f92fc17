"""Sequential and permuted pixel MNIST (T=784) with the IndRNN paper's recipe, from data you already have (nothing
is downloaded): an ``mnist.npz`` (the Keras format: ``x_train [60000, 28, 28]``, ``y_train``, ``x_test``,
``y_test``), or a folder of the four IDX files that MNIST, Fashion-MNIST and KMNIST all ship
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
each gzipped or not; Debian's ``dataset-fashion-mnist`` package installs them under
``/usr/share/datasets/fashion-mnist/``).

Recipe (Li et al. 2018, §4.2): pixels scaled to [-1, 1] and fed one per step; 6 IndRNN layers x 128 ReLU units,
each followed by batch norm over time and dropout 0.1 (one mask per sequence); Linear on the last step; u ~ U(0, b)
in hidden layers and U(1/b, b) in the last, clipped to |u| <= b = 5^(1/784) after every step; Adam lr 2e-4, weight
decay 1e-4 on matrices only, gradient-norm clipping 10, batch 32; 5% of the training images held out for validation.
The learning rate drops 10x when the validation accuracy stalls for ``--lr-patience`` epochs, and the reported test
accuracy is that of the epoch with the best validation accuracy. The paper reports 1.0% test error sequential and
4.0% permuted for this 6-layer network (many epochs on a GPU; a CPU epoch takes hours).

Example::

    $ python -m indrnn_core.examples.mnist --data ~/data/mnist.npz --device cuda
    $ python -m indrnn_core.examples.mnist --data ~/data/mnist.npz --permute
    $ python -m indrnn_core.examples.mnist --data /usr/share/datasets/fashion-mnist/     # an IDX folder
    $ python -m indrnn_core.examples.mnist --data ~/data/mnist.npz --limit 2000 --layers 2 --epochs 3   # a quick try
    $ python -m indrnn_core.examples.mnist --data /usr/share/datasets/fashion-mnist/ --compare lstm --minutes 30

``--compare lstm`` trains an ``nn.LSTM`` (``--lstm-layers`` x ``--hidden``, Adam ``--lstm-lr``, the usual pixel-MNIST
baseline) beside the IndRNN, one step each in turn on the same batches; with ``--minutes`` each model trains until
its own training time reaches the budget (no learning-rate drops: there are no epochs to wait on), so both had the
same time on the same machine under the same load. It writes ``mnist-<variant>-race.{csv,png,json}``: validation
accuracy against training minutes, and each model's test accuracy at the end.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import re
import sys
import time
import zipfile
from collections.abc import Sequence
from typing import Optional

import numpy as np

from indrnn_core.examples import _common

SEQ_LEN = 784
KEYS = ("x_train", "y_train", "x_test", "y_test")
# The IDX files of each array, as MNIST, Fashion-MNIST and KMNIST name them ("t10k" is the test set; some copies
# write "train-images.idx3-ubyte" or "test-..."), gzipped or not.
IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
_IDX_NAME = re.compile(r"^(train|t10k|test)[-_.](images|labels)[-_.]idx([13])[-_.]ubyte(\.gz)?$", re.IGNORECASE)
# IDX element types: the third byte of the magic number -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def build_parser() -> argparse.ArgumentParser:
    int_ = _common.int_at_least
    p = _common.ArgumentParser(
        prog="python -m indrnn_core.examples.mnist",
        description="Sequential (or --permute'd) pixel MNIST, T=784, with the IndRNN paper's 6-layer recipe.",
        formatter_class=_common.HelpFormatter)
    p.add_argument("--data", required=True, metavar="MNIST.NPZ|IDX_FOLDER",
                   help="path to mnist.npz (Keras format: x_train, y_train, x_test, y_test) or to a folder of the "
                        "four IDX files of MNIST, Fashion-MNIST or KMNIST (.gz or not)")
    p.add_argument("--permute", action="store_true", help="permuted MNIST: one fixed random pixel order")
    p.add_argument("--epochs", type=int_(1), default=20, help="passes over the training set")
    p.add_argument("--hidden", type=int_(1), default=128, help="units per layer")
    p.add_argument("--layers", type=int_(1), default=6, help="stacked IndRNN layers")
    p.add_argument("--batch-size", type=int_(1), default=32, help="sequences per training step")
    p.add_argument("--lr", type=_common.positive_float, default=2e-4, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="on weight matrices only (not u, biases, BN)")
    p.add_argument("--dropout", type=_common.probability, default=0.1, help="dropout after each layer")
    p.add_argument("--magnitude", type=_common.positive_float, default=5.0, help="|u| <= magnitude^(1/784)")
    p.add_argument("--lr-patience", type=int_(1), default=3,
                   help="epochs without a better validation accuracy before the learning rate drops 10x")
    p.add_argument("--val-fraction", type=_common.probability, default=0.05,
                   help="share of the training images held out for validation")
    p.add_argument("--limit", type=int_(10), default=None, metavar="N",
                   help="use only the first N training and N test images (a quick try)")
    race = p.add_argument_group(
        "same-time comparison", "--compare lstm trains an nn.LSTM beside the IndRNN on the same batches, one step "
        "each in turn; --minutes gives each model the same training time instead of a number of epochs")
    race.add_argument("--compare", choices=("lstm",), default=None, help="the peer to train beside the IndRNN")
    race.add_argument("--minutes", type=_common.positive_float, default=None,
                      help="training time per model (its own steps only; evaluations not counted)")
    race.add_argument("--eval-minutes", type=_common.positive_float, default=None, metavar="M",
                      help="validation every M minutes of a model's training (default: --minutes/10)")
    race.add_argument("--lstm-layers", type=int_(1), default=1, help="LSTM layers (of --hidden units)")
    race.add_argument("--lstm-lr", type=_common.positive_float, default=1e-3, help="the LSTM's Adam learning rate")
    _common.add_common_flags(p, out=os.path.join("runs", "mnist"))
    return p


def read_idx(path: str) -> np.ndarray:
    """The array in one IDX file (``.gz`` or not): a ValueError naming the file if it is not one, or is cut
    short."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # (gzip.BadGzipFile is an OSError)
        raise ValueError(f"cannot read {path!r} ({exc})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path!r} is not an IDX file (its magic number is {data[:4].hex() or 'missing'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path!r}: IDX header cut short")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    if len(data) != header + int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{path!r}: IDX shape {shape} needs {header + int(np.prod(shape)) * dtype.itemsize} "
                         f"bytes, the file has {len(data)}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_files(folder: str) -> dict:
    """``{key: path}`` of the IDX files in ``folder`` for each of ``KEYS`` that it holds (an uncompressed copy
    preferred to a gzipped one)."""
    found: dict = {}
    for name in sorted(os.listdir(folder), key=lambda n: n.lower().endswith(".gz")):  # plain files first
        match = _IDX_NAME.match(name)
        if match:
            split, kind, rank = match.group(1).lower(), match.group(2).lower(), match.group(3)
            if (kind == "images") == (rank == "3"):
                found.setdefault(f"{'x' if kind == 'images' else 'y'}_{'train' if split == 'train' else 'test'}",
                                 os.path.join(folder, name))
    return found


def _load_idx_folder(parser: argparse.ArgumentParser, folder: str) -> dict:
    paths = find_idx_files(folder)
    missing = [IDX_NAMES[k] for k in KEYS if k not in paths]
    if missing:
        parser.error(f"argument --data: the folder {folder!r} lacks {', '.join(missing)} (.gz or not); expected the "
                     f"four IDX files of MNIST, Fashion-MNIST or KMNIST")
    try:
        return {k: read_idx(paths[k]) for k in KEYS}
    except ValueError as exc:
        parser.error(f"argument --data: {exc}")


def load(parser: argparse.ArgumentParser, path: str, limit: Optional[int]):
    """Read ``path`` (an ``.npz`` or a folder of IDX files) into ``(x_train [N, 784] float32 in [-1, 1], y_train
    int64, x_test, y_test)`` or exit with a one-line error saying what it must hold."""
    if os.path.isdir(path):
        return _prepare(parser, _load_idx_folder(parser, path), limit)
    if not os.path.isfile(path):
        parser.error(f"argument --data: no file {path!r}; pass the path of an mnist.npz you have "
                     f"(Keras format with arrays {', '.join(KEYS)})")
    try:
        archive = np.load(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        parser.error(f"argument --data: cannot read {path!r} as .npz ({exc})")
    if not isinstance(archive, np.lib.npyio.NpzFile):
        parser.error(f"argument --data: {path!r} holds one array, not an .npz archive with {', '.join(KEYS)}")
    with archive:
        missing = [k for k in KEYS if k not in archive.files]
        if missing:
            parser.error(f"argument --data: {path!r} lacks {', '.join(missing)}; expected arrays "
                         f"{', '.join(KEYS)} (Keras' mnist.npz)")
        arrays = {k: archive[k] for k in KEYS}
    return _prepare(parser, arrays, limit)


def _prepare(parser: argparse.ArgumentParser, arrays: dict, limit: Optional[int]):
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != SEQ_LEN or len(x) != len(y):
            parser.error(f"argument --data: x_{split} must be [N, 28, 28] or [N, 784] with N labels, got "
                         f"{x.shape} images and {y.shape} labels")
        if limit is not None:
            x, y = x[:limit], y[:limit]
        x = x.reshape(len(x), SEQ_LEN).astype(np.float32)
        scale = 255.0 if x.max() > 1.0 else 1.0  # uint8 pixels, or floats already in [0, 1]
        out += [(x / scale * 2.0 - 1.0).astype(np.float32), y.astype(np.int64)]
    return tuple(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error(f"argument --val-fraction: pass a number in (0, 1), got {args.val_fraction}")
    if args.weight_decay < 0:
        parser.error(f"argument --weight-decay: pass a number >= 0, got {args.weight_decay}")
    _common.require_framework(parser, "torch", "indrnn_core.adapters.torch", label="PyTorch")
    import torch

    from indrnn_core.adapters.torch import register_recurrent_clipping
    from indrnn_core.examples import _torch

    device = _common.torch_device(parser, args.device)
    x_train, y_train, x_test, y_test = load(parser, args.data, args.limit)
    out_dir = _common.make_out_dir(parser, args.out)
    rng = np.random.default_rng(args.seed)
    if args.permute:
        order = rng.permutation(SEQ_LEN)
        x_train, x_test = x_train[:, order], x_test[:, order]
    held = rng.permutation(len(x_train))
    n_val = max(1, round(args.val_fraction * len(x_train)))
    val_idx, train_idx = held[:n_val], held[n_val:]

    _common.seed_torch(args.seed)
    model = _torch.StackedIndRNNClassifier(1, args.hidden, args.layers, 10, SEQ_LEN, magnitude=args.magnitude,
                                           batch_norm=True, dropout=args.dropout).to(device)
    optimizer = _torch.adam(model, args.lr, args.weight_decay)
    register_recurrent_clipping(optimizer, model)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1,
                                                           patience=args.lr_patience)

    def tensors(x, y):
        return torch.from_numpy(np.ascontiguousarray(x)).to(device), torch.from_numpy(y).to(device)

    sets = {"train": tensors(x_train[train_idx], y_train[train_idx]),
            "val": tensors(x_train[val_idx], y_train[val_idx]), "test": tensors(x_test, y_test)}
    shuffle = torch.Generator().manual_seed(args.seed)

    def batches(name, generator=None):
        x, y = sets[name]
        size = args.batch_size if generator is not None else 256
        return lambda: ((xb.t().unsqueeze(-1).contiguous(), yb)
                        for xb, yb in _torch.minibatches(x, y, size, generator))

    variant = "permuted" if args.permute else "sequential"
    if args.compare or args.minutes:
        return _race(args, model, optimizer, batches, sets, shuffle, out_dir, variant, len(train_idx))
    start = time.perf_counter()
    history, best = _torch.fit(model, optimizer, batches("train", shuffle), {"val": batches("val")},
                               epochs=args.epochs, grad_clip=10.0,
                               steps_per_epoch=-(-len(train_idx) // args.batch_size), desc=f"{variant} MNIST",
                               quiet=args.quiet, select_on="val", on_epoch=scheduler.step)
    test_acc = _torch.accuracy(model, batches("test")())  # the model now holds the best-validation weights
    seconds = time.perf_counter() - start
    csv_path, png_path = _torch.save_history(
        out_dir, f"mnist-{variant}", history,
        title=f"{variant} MNIST, IndRNN {args.layers}x{args.hidden}: validation accuracy "
              f"(test {test_acc:.4f} at epoch {best['epoch']})")
    print(f"train {len(train_idx)} / val {len(val_idx)} / test {len(x_test)} images; best validation accuracy "
          f"{best['val_acc']:.4f} at epoch {best['epoch']}; test accuracy there {test_acc:.4f}")
    print(f"wrote {csv_path}, {png_path}")
    print(_torch.summary_line(test_acc, args.epochs, seconds))
    return 0


def _lstm_classifier(hidden: int, layers: int, classes: int):
    """The usual pixel-MNIST LSTM baseline, as its users write it: ``nn.LSTM(1, hidden, layers)`` and a Linear on the
    last step, ``[T, B, 1] -> [B, classes]``."""
    from torch import nn

    class _LSTMClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(1, hidden, num_layers=layers)
            self.classifier = nn.Linear(hidden, classes)

        def forward(self, x):
            return self.classifier(self.lstm(x)[0][-1])

    return _LSTMClassifier()


def _race(args, indrnn, indrnn_optimizer, batches, sets, shuffle, out_dir: str, variant: str, n_train: int) -> int:
    """Train the IndRNN and (with --compare) a peer on the same batches, one step each in turn, each until its own
    training time reaches --minutes (or for --epochs): both see the same data under the same machine load. Every
    --eval-minutes of a model's training its validation accuracy is recorded; at the end, its test accuracy."""
    import torch
    from torch import nn

    from indrnn_core.examples import _torch

    models = {"indrnn": (indrnn, indrnn_optimizer)}
    if args.compare:
        _common.seed_torch(args.seed)
        lstm = _lstm_classifier(args.hidden, args.lstm_layers, 10).to(indrnn.classifier.weight.device)
        models["lstm"] = (lstm, torch.optim.Adam(lstm.parameters(), lr=args.lstm_lr))
    budget = args.minutes * 60.0 if args.minutes else None
    eval_every = (args.eval_minutes or (args.minutes or 10.0) / 10) * 60.0
    watches = {name: _common.Stopwatch() for name in models}
    steps = {name: 0 for name in models}
    next_eval = {name: eval_every for name in models}
    rows = []  # model, step, epoch, train_minutes, train_loss, val_acc
    losses = {name: [] for name in models}
    steps_per_epoch = -(-n_train // args.batch_size)

    def evaluate(name: str, epoch: float) -> None:
        model = models[name][0]
        _torch.recalibrate_batch_norm(model, batches("train", shuffle)())
        acc = _torch.accuracy(model, batches("val")())
        rows.append((name, steps[name], round(epoch, 3), round(watches[name].seconds / 60, 3),
                     float(np.mean(losses[name][-50:])) if losses[name] else float("nan"), acc))

    for name in models:
        evaluate(name, 0.0)
    active = list(models)
    bar = _common.progress(None if budget else args.epochs * steps_per_epoch, f"{variant} race", args.quiet)
    epoch = 0
    while active and (budget or epoch < args.epochs):
        for xb, yb in batches("train", shuffle)():
            for name in list(active):
                model, optimizer = models[name]
                model.train()
                with watches[name]:
                    loss = nn.functional.cross_entropy(model(xb), yb)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                    optimizer.step()
                    losses[name].append(loss.item())
                steps[name] += 1
                out_of_time = budget is not None and watches[name].seconds >= budget
                if watches[name].seconds >= next_eval[name] or out_of_time:
                    next_eval[name] += eval_every
                    evaluate(name, steps[name] / steps_per_epoch)
                if out_of_time:
                    active.remove(name)
            bar.set_postfix({n: f"{watches[n].seconds / 60:.1f}min acc {[r for r in rows if r[0] == n][-1][5]:.3f}"
                             for n in models}, refresh=False)
            bar.update(1)
            if not active:
                break
        epoch += 1
    bar.close()
    for name in models:  # the last evaluation must hold the final weights (an --epochs run ends between evaluations)
        if [r for r in rows if r[0] == name][-1][1] != steps[name]:
            evaluate(name, steps[name] / steps_per_epoch)

    results = {}
    for name, (model, _) in models.items():
        results[name] = {"test_acc": _torch.accuracy(model, batches("test")()), "steps": steps[name],
                         "epochs": round(steps[name] / steps_per_epoch, 3),
                         "train_minutes": round(watches[name].seconds / 60, 2),
                         "parameters": sum(p.numel() for p in model.parameters())}
    stem = os.path.join(out_dir, f"mnist-{variant}-race")
    csv_path = _common.write_csv(stem + ".csv", ["model", "step", "epoch", "train_minutes", "train_loss", "val_acc"],
                                 rows)
    label = {"indrnn": f"IndRNN {args.layers}x{args.hidden}", "lstm": f"LSTM {args.lstm_layers}x{args.hidden}"}
    curves = {f"{label[n]}: test {results[n]['test_acc']:.4f}":
              ([r[3] for r in rows if r[0] == n], [r[5] for r in rows if r[0] == n]) for n in models}
    png_path = _common.plot_curves(stem + ".png", curves, xlabel="training minutes (each model its own)",
                                   ylabel="validation accuracy",
                                   title=f"{variant} {os.path.basename(os.path.normpath(args.data))}, T={SEQ_LEN}")
    with open(stem + ".json", "w") as f:
        json.dump({"config": {k: v for k, v in vars(args).items()}, "results": results}, f, indent=2)
    for name, r in results.items():
        print(f"{name}: test_acc={r['test_acc']:.4f} steps={r['steps']} epochs={r['epochs']} "
              f"train_minutes={r['train_minutes']} parameters={r['parameters']}")
    print(f"wrote {csv_path}, {png_path}, {stem}.json")
    print(_torch.summary_line(results["indrnn"]["test_acc"], int(results["indrnn"]["epochs"]),
                              watches["indrnn"].seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
